package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// baseline is the running baseline server (./baseline).
type baseline struct {
	Process
	addr  string // its HTTPS address
	roots *x509.CertPool
}

// buildBaseline builds ./baseline and returns the binary's path.
func buildBaseline(ctx context.Context, b *testing.B) string {
	b.Helper()
	return goBuild(ctx, b, "./baseline", "the baseline server")
}

// startBaseline runs the baseline server; it is stopped, by closing its
// standard input, when the benchmark ends.
func startBaseline(b *testing.B, bin string) *baseline {
	b.Helper()
	cmd := exec.Command(bin)
	stdout := startChild(b, "the baseline server", cmd)

	// It prints "https ADDR", "admin ADDR" and "cert BASE64-DER".
	lines := make(chan map[string]string, 1)
	go func() {
		m := map[string]string{}
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 64<<10)
		for len(m) < 3 && sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), " ")
			m[k] = v
		}
		lines <- m
		io.Copy(io.Discard, stdout)
	}()
	var m map[string]string
	select {
	case m = <-lines:
	case <-time.After(10 * time.Second):
		b.Fatal("the baseline server did not print its addresses within 10s")
	}
	der, err := base64.StdEncoding.DecodeString(m["cert"])
	if err != nil || m["https"] == "" || m["admin"] == "" {
		b.Fatalf("the baseline server printed %q", m)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		b.Fatalf("the baseline server's certificate: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return &baseline{Process: Process{Admin: m["admin"], PID: cmd.Process.Pid}, addr: m["https"], roots: roots}
}

// measureBaseline holds n idle HTTP/2 connections to the baseline server,
// each with one finished request, and measures what they cost it.
func measureBaseline(ctx context.Context, b *testing.B, bin string, n int) growth {
	b.Helper()
	bl := startBaseline(b, bin)
	g := growth{name: "TLS+HTTP/2 conn (bare net/http)", n: n}
	g.before = mustSample(ctx, b, bl.Process)
	writeProfiles(ctx, b, bl.Process, "baseline-0")

	var protos http.Protocols
	protos.SetHTTP2(true)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: bl.roots}, Protocols: &protos}
	start := time.Now()
	conns, failures, err := setUp(ctx, n, func(ctx context.Context, _ int) (*http.ClientConn, error) {
		return bl.dial(ctx, tr)
	})
	defer func() {
		for _, cc := range conns {
			cc.Close()
		}
	}()
	if err != nil {
		b.Fatalf("opened %d of %d connections to the baseline server: %v", len(conns), n, err)
	}
	fmt.Printf("opened %d idle HTTP/2 connections to the baseline server in %v (%d failed attempts)\n", n, time.Since(start).Round(time.Millisecond), failures)
	time.Sleep(settleTime)
	g.after = mustSample(ctx, b, bl.Process)
	writeProfiles(ctx, b, bl.Process, "baseline-1-conns")
	return g
}

// dial opens an HTTP/2 connection and makes one request on it, so that
// both ends have finished setting it up.
func (bl *baseline) dial(ctx context.Context, tr *http.Transport) (*http.ClientConn, error) {
	cc, err := tr.NewClientConn(ctx, "https", bl.addr)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+bl.addr+"/", nil)
	if err == nil {
		var resp *http.Response
		if resp, err = cc.RoundTrip(req); err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.ProtoMajor != 2 {
				err = fmt.Errorf("answered over HTTP/%d", resp.ProtoMajor)
			}
		}
	}
	if err != nil {
		cc.Close()
		return nil, err
	}
	return cc, nil
}
