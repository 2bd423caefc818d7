package peer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/netsody/superpeer"
	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/relay"
	"github.com/quic-go/quic-go/http3"
)

// TestMain fails the run if goroutines leaked, and removes the Caddy
// binary that the cluster tests build (testcaddy.Main).
func TestMain(m *testing.M) {
	testcaddy.Main(m)
}

// superPeerServer is a super peer without Caddy on loopback: rendezvous
// and relay behind HTTP/2 and HTTP/3 on one port.
func superPeerServer(t testing.TB, keepalive ...time.Duration) (*sptest.Servers, *relay.Server) {
	t.Helper()
	var cfg superpeer.Config
	if len(keepalive) > 0 {
		cfg.Rendezvous.KeepaliveInterval, cfg.Rendezvous.SessionTimeout = keepalive[0], 10*keepalive[0]
	}
	s, sp := newSuperPeer(t, cfg)
	return s, sp.Relay()
}

// newSuperPeer is superPeerServer with a configuration, and the super
// peer itself.
func newSuperPeer(t testing.TB, cfg superpeer.Config) (*sptest.Servers, *superpeer.Server) {
	t.Helper()
	sp := superpeer.New(cfg)
	s := sptest.Start(t, "127.0.0.1", sp, followRebinding)
	t.Cleanup(func() { sp.Close() })
	serveFastPath(t, sp.Relay())
	return s, sp
}

// serveFastPath serves rl's fast path on a loopback port of its own until
// the test ends; devices find it in their bindings.
func serveFastPath(t testing.TB, rl *relay.Server) {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); rl.ServeFastPath(conn) }()
	t.Cleanup(func() { conn.Close(); <-done })
}

// allowAny makes a device accept every peer.
func allowAny(c *Config) { c.AllowAny = true }

func newDevice(t testing.TB, s *sptest.Servers, mod ...func(*Config)) *Device {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return openDevice(t, Config{Identity: id, SuperPeers: []string{s.H3URL}, RootCAs: s.Pool, ListenAddr: "127.0.0.1:0"}, 5*time.Second, mod...)
}

// openDevice starts a device of cfg, changed by mod, closed when the
// test ends, and waits up to within for its sessions.
func openDevice(t testing.TB, cfg Config, within time.Duration, mod ...func(*Config)) *Device {
	t.Helper()
	for _, m := range mod {
		m(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for _, sp := range d.sps {
		if _, err := sp.wait(ctx); err != nil {
			t.Fatalf("no session with %s: %v", sp.url, err)
		}
	}
	return d
}

// echo serves one connection: every stream's bytes come back.
func echo(t *testing.T, d *Device) {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { <-done })
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second) // ends as the test does
		defer cancel()
		c, err := d.Accept(ctx)
		if err != nil {
			return
		}
		for {
			str, err := c.AcceptStream(ctx)
			if err != nil {
				return
			}
			go func(str *quic.Stream) {
				io.Copy(str, str)
				str.Close()
			}(str)
		}
	}()
}

// dial connects a to b, which accepts a as its application would
// (Config.Allow).
func dial(t testing.TB, a, b *Device) *Conn {
	t.Helper()
	b.Allow(a.PeerID())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, b.PeerID())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseWithError(0, "") })
	return c
}

// roundTrip sends msg on a new stream and checks the echo.
func roundTrip(t testing.TB, c *Conn, msg string) { sptest.RoundTrip(t, c, msg) }

// echoTransfer streams size random bytes to the echo at the other end of
// c in chunks, calling between(i) after chunk i, and checks that what comes
// back hashes the same.
func echoTransfer(t *testing.T, c *Conn, size, chunks int, between func(i int)) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	want := sha256.Sum256(data)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	str, err := c.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan [32]byte, 1)
	go func() {
		h := sha256.New()
		io.Copy(h, str)
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		got <- sum
	}()
	chunk := size / chunks
	for i := range chunks {
		if _, err := str.Write(data[i*chunk : (i+1)*chunk]); err != nil {
			t.Fatal(err)
		}
		between(i)
	}
	str.Close()
	select {
	case sum := <-got:
		if sum != want {
			t.Fatal("the echoed bytes differ from those sent")
		}
	case <-ctx.Done():
		t.Fatalf("transfer did not finish; path %s", c.Path())
	}
}

func waitPath(t testing.TB, c *Conn, kind PathKind, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); c.Path().Kind != kind; {
		if time.Now().After(deadline) {
			t.Fatalf("path is %s after %v, want %s", c.Path(), within, kind)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// followRebinding lets rendezvous sessions follow a device's QUIC
// connection to a new address, as the Caddy module does.
func followRebinding(s *http3.Server) { s.ConnContext = superpeer.ConnContext }
