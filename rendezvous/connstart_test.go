package rendezvous

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// A stranger that opens a connection, holds it idle, and only then opens
// a session has RegisterTimeout from the connection's start, not a fresh
// one from its late request: over HTTP/3 (ConnContext) and HTTP/2
// (ConnStarted as the server's ConnContext), the late session ends at
// once, expired.
func TestRegisterDeadlineFromConnectionStart(t *testing.T) {
	// A fresh deadline would end the late session deadline after its
	// request, the one from the connection's start at once: took <
	// deadline tells them apart with all of deadline as slack for a
	// loaded machine (no tighter timing is asserted).
	const deadline = 1500 * time.Millisecond
	const idle = deadline + 300*time.Millisecond
	ts := newTestServer(t, "127.0.0.1", Config{RegisterTimeout: deadline})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("h3", func(t *testing.T) {
		conn, err := quic.DialAddr(ctx, ts.PC.LocalAddr().String(),
			&tls.Config{RootCAs: ts.Pool, NextProtos: []string{http3.NextProtoH3}}, &quic.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseWithError(0, "")
		cc := (&http3.Transport{}).NewClientConn(conn)
		time.Sleep(idle) // the connection, idle
		start := time.Now()
		str, err := cc.OpenRequestStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		target, _ := url.Parse(ts.H3URL + Path)
		if err := str.SendRequestHeader(newSessionRequest(target, http.NoBody)); err != nil {
			t.Fatal(err)
		}
		if _, err := str.ReadResponse(); err != nil {
			t.Fatal(err)
		}
		var hdr [frameHeaderLen]byte
		f, err := readFrame(str, &hdr)
		var e Error
		if err != nil || f.typ != FrameError || e.decode(f.payload) != nil || e.Code != ErrCodeExpired {
			t.Fatalf("the late session got %v %v (%v), want expired", f.typ, e, err)
		}
		if took := time.Since(start); took >= deadline {
			t.Errorf("the late session ended %v after its request, want well before the %v a fresh deadline gives (its connection is %v old)", took, deadline, idle)
		}
	})

	t.Run("h2", func(t *testing.T) {
		h2 := httptest.NewUnstartedServer(ts.rv)
		h2.EnableHTTP2 = true
		h2.Config.ConnContext = ConnStarted
		h2.StartTLS()
		defer h2.Close()
		pool := x509.NewCertPool()
		pool.AddCert(h2.Certificate())
		var start time.Time
		s, err := open(ctx, ClientConfig{Identity: newIdentity(t), URL: h2.URL, Transport: TransportH2, TLSConfig: &tls.Config{RootCAs: pool},
			DialTCP: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				time.Sleep(idle) // the connection, idle
				start = time.Now()
				return c, err
			}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		wantError(t, s, ErrCodeExpired)
		if took := time.Since(start); took >= deadline {
			t.Errorf("the late session ended %v after its TLS handshake began, want well before the %v a fresh deadline gives (its connection is %v old)", took, deadline, idle)
		}
	})
}
