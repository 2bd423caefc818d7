package relay

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/rendezvous"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testServer is a super peer without Caddy: rendezvous and relay behind a
// real HTTP/2 and HTTP/3 server on loopback.
type testServer struct {
	*sptest.Servers
	rv *rendezvous.Server
	rl *Server
}

func newTestServer(t testing.TB, cfg Config) *testServer {
	t.Helper()
	ts := &testServer{rv: rendezvous.NewServer(rendezvous.Config{})}
	cfg.Auth = ts.rv
	ts.rl = NewServer(cfg)
	mux := http.NewServeMux()
	mux.Handle(rendezvous.Path, ts.rv)
	mux.Handle(PathPrefix, ts.rl)
	ts.Servers = sptest.Start(t, "127.0.0.1", mux)
	t.Cleanup(func() { ts.rl.Close(); ts.rv.Close() })
	return ts
}

type device struct {
	id *identity.Identity
	s  *rendezvous.Session
}

func (ts *testServer) device(t testing.TB, tr rendezvous.Transport) *device {
	t.Helper()
	return ts.deviceWith(t, func(c *rendezvous.ClientConfig) {
		if tr == rendezvous.TransportH2 {
			c.URL, c.Transport = ts.H2URL, tr
		}
	})
}

// deviceWith registers a new device over HTTP/3 with a client
// configuration that mod may change.
func (ts *testServer) deviceWith(t testing.TB, mod func(*rendezvous.ClientConfig)) *device {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := rendezvous.ClientConfig{Identity: id, URL: ts.H3URL, Transport: rendezvous.TransportH3, TLSConfig: &tls.Config{RootCAs: ts.Pool}}
	mod(&cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := rendezvous.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &device{id: cfg.Identity, s: s}
}

// dial opens d's relay session towards peer over d's own transport.
func (d *device) dial(ctx context.Context, peer identity.PeerID) (net.PacketConn, error) {
	if d.s.Transport() == rendezvous.TransportH3 {
		return DialH3(ctx, d.s.HTTP3(), d.s.Authority(), peer)
	}
	return DialH2(ctx, d.s.HTTP2(), d.s.Authority(), peer)
}

// pair opens relay sessions A→B and B→A at once and returns both ends.
func pair(t testing.TB, a, b *device) (net.PacketConn, net.PacketConn) {
	t.Helper()
	return pairDial(t, func(ctx context.Context) (net.PacketConn, error) { return a.dial(ctx, b.id.PeerID()) },
		func(ctx context.Context) (net.PacketConn, error) { return b.dial(ctx, a.id.PeerID()) })
}

// pairDial opens two sides of a relay session at once with dialA and
// dialB, and returns both ends.
func pairDial(t testing.TB, dialA, dialB func(context.Context) (net.PacketConn, error)) (net.PacketConn, net.PacketConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	type res struct {
		c   net.PacketConn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := dialA(ctx)
		ch <- res{c, err}
	}()
	cb, err := dialB(ctx)
	if err != nil {
		t.Fatalf("B→A: %v", err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatalf("A→B: %v", r.err)
	}
	t.Cleanup(func() { r.c.Close(); cb.Close() })
	return r.c, cb
}
