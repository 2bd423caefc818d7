package caddymodule

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/rendezvous"
)

// Through the real Caddy, a session must register within
// register_timeout of its connection's accept: a stranger that holds a
// connection idle and then opens a session is ended at once, over HTTP/2
// (the handler's ConnContext on Caddy's server) and HTTP/3 (the
// endpoint's).
func TestRegisterDeadlineFromConnectionStart(t *testing.T) {
	const deadline = time.Second
	const idle = deadline + 500*time.Millisecond
	c := testcaddy.Start(t, testcaddy.Global+`
localhost {
	netsody_superpeer {
		register_timeout 1s
	}
	respond "x"
}
`)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	addr := "127.0.0.1:" + strconv.Itoa(c.Port)
	tlsConf := &tls.Config{RootCAs: c.Roots, ServerName: "localhost"}
	target, _ := url.Parse("https://localhost:" + strconv.Itoa(c.Port) + rendezvous.Path)
	newRequest := func() *http.Request {
		pr, pw := io.Pipe()
		t.Cleanup(func() { pw.Close() })
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, target.String(), pr)
		req.Header.Set("Content-Type", rendezvous.ContentType)
		return req
	}
	// ended checks that the session's response ends at once after start.
	ended := func(tr string, body io.Reader, start time.Time) {
		t.Helper()
		io.Copy(io.Discard, body)
		if took := time.Since(start); took >= deadline/2 {
			t.Errorf("%s: the late session ended %v after its request, want at once (its connection is %v old)", tr, took, idle)
		}
	}

	var start time.Time
	var p http.Protocols
	p.SetHTTP2(true)
	h2 := &http.Transport{TLSClientConfig: tlsConf, Protocols: &p,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			time.Sleep(idle) // the connection, idle before its handshake
			start = time.Now()
			return conn, err
		}}
	defer h2.CloseIdleConnections()
	resp, err := h2.RoundTrip(newRequest())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ended("h2", resp.Body, start)

	conn, err := quic.DialAddr(ctx, addr, &tls.Config{RootCAs: c.Roots, ServerName: "localhost", NextProtos: []string{http3.NextProtoH3}}, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	cc := (&http3.Transport{}).NewClientConn(conn)
	time.Sleep(idle) // the connection, idle
	start = time.Now()
	str, err := cc.OpenRequestStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := newRequest()
	req.Body = http.NoBody
	if err := str.SendRequestHeader(req); err != nil {
		t.Fatal(err)
	}
	if _, err := str.ReadResponse(); err != nil {
		t.Fatal(err)
	}
	ended("h3", str, start)
}
