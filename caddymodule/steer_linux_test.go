package caddymodule

import (
	"context"
	"crypto/tls"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/sys/unix"

	"github.com/netsody/superpeer/internal/sptest"
)

// A socket that joins the endpoint's port, as Caddy's own HTTP/3 socket
// does in a reload that removes the super peer, takes none of the
// endpoint's connections' packets: every client's close reaches the
// endpoint, whose graceful shutdown then ends at once. Without steering
// the kernel hands about half of the connections to the new socket, which
// never reads them, and the shutdown waits for its timeout.
func TestEndpointKeepsConnectionsWhenASocketJoinsThePort(t *testing.T) {
	const clients = 8 // all on the endpoint's socket by chance: 1 in 256
	ctx := t.Context()
	ep := testEndpoint(t)
	if !ep.steered {
		t.Fatal("the endpoint does not steer its packets")
	}
	cert, roots := sptest.Cert(t)
	ep.mu.Lock()
	ep.regs = []*registration{{ep: ep, srv: &caddyhttp.Server{}, tlsCfg: &tls.Config{Certificates: []tls.Certificate{cert}}}}
	ep.mu.Unlock()
	addr := ep.sock.LocalAddr().String()

	var conns []*quic.Conn
	for range clients {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := quic.DialAddr(dctx, addr, &tls.Config{RootCAs: roots, ServerName: "localhost", NextProtos: []string{http3.NextProtoH3}}, nil)
		dcancel()
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		return serr
	}}
	joined, err := lc.ListenPacket(ctx, "udp", addr) // never read, as if its QUIC dropped them
	if err != nil {
		t.Fatal(err)
	}
	defer joined.Close()
	for _, c := range conns {
		c.CloseWithError(0, "")
	}
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	defer scancel()
	ep.ln.Close()
	start := time.Now()
	if err := ep.h3.Shutdown(sctx); err != nil {
		t.Fatalf("the endpoint's shutdown: %v after %v: the close of some of %d connections went to the other socket", err, time.Since(start), clients)
	}
}
