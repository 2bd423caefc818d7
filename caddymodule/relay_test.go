package caddymodule_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/time/rate"

	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

// dialRelay opens d's relay session towards peer on d's own connection.
func dialRelay(ctx context.Context, d *device, peer *device) (net.PacketConn, error) {
	if d.s.Transport() == rendezvous.TransportH3 {
		return relay.DialH3(ctx, d.s.HTTP3(), d.s.Authority(), peer.id.PeerID()) // masque-go's own client
	}
	return relay.DialH2(ctx, d.s.HTTP2(), d.s.Authority(), peer.id.PeerID())
}

// relayPair does what two device libraries do: A asks the rendezvous for
// B, B hears of it, and both open their relay sessions towards each other.
func relayPair(t *testing.T, a, b *device) (net.PacketConn, net.PacketConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lookup(t, a, b)
	type res struct {
		c   net.PacketConn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := dialRelay(ctx, a, b); ch <- res{c, err} }()
	cb, err := dialRelay(ctx, b, a)
	if err != nil {
		t.Fatalf("relay B→A: %v", err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatalf("relay A→B: %v", r.err)
	}
	t.Cleanup(func() { r.c.Close(); cb.Close() })
	return r.c, cb
}

// transfer sends size bytes of 1200-byte datagrams from one end to the
// other with a window, so that a receiver's queue never overflows, and
// returns how many datagrams arrived and a hash of what arrived in order.
func transfer(t *testing.T, from, to net.PacketConn, size int) (sent, got int, sum [32]byte) {
	t.Helper()
	// quic-go's HTTP/3 layer queues at most 32 datagrams per stream and
	// drops beyond that without a trace, at the relay and at a device
	// alike; a device's own QUIC treats that as loss and slows down. The
	// test keeps fewer in flight, so that any loss is the relay's.
	const dgram, window = 1200, 24
	n := (size + dgram - 1) / dgram
	var (
		mu       sync.Mutex
		received int
		cond     = sync.NewCond(&mu)
		done     = make(chan struct{})
		h        = sha256.New()
	)
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			m, _, err := to.ReadFrom(buf)
			if err != nil {
				return
			}
			h.Write(buf[:m])
			mu.Lock()
			received++
			r := received
			cond.Broadcast()
			mu.Unlock()
			if r == n {
				return
			}
		}
	}()
	pkt := make([]byte, dgram)
	deadline := time.Now().Add(60 * time.Second)
	pace := rate.NewLimiter(sendRate, 64<<10)
	for i := range n {
		pace.WaitN(context.Background(), dgram)
		mu.Lock()
		// Wait for room in the window; a datagram lost on the way must
		// not stall the rest, so give up waiting after a while.
		for wait := time.Now().Add(250 * time.Millisecond); i-received >= window && time.Now().Before(wait) && time.Now().Before(deadline); {
			waitCond(cond, 50*time.Millisecond)
		}
		mu.Unlock()
		binary.BigEndian.PutUint64(pkt, uint64(i))
		if _, err := from.WriteTo(pkt, nil); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		to.Close()
		<-done
	}
	mu.Lock()
	defer mu.Unlock()
	copy(sum[:], h.Sum(nil))
	return n, received, sum
}

// sendRate keeps transfers below the relay's default budget per device
// (relay.DefaultDeviceRate), below which no datagram should be lost, and
// within what a loaded 2-core machine relays under the race detector.
const sendRate = min(relay.DefaultDeviceRate*4/5, 20_000_000)

// waitCond waits on c (its lock held) for at most d.
func waitCond(c *sync.Cond, d time.Duration) {
	t := time.AfterFunc(d, c.Broadcast)
	c.Wait()
	t.Stop()
}

func expectedSum(n int) [32]byte {
	h := sha256.New()
	pkt := make([]byte, 1200)
	for i := range n {
		binary.BigEndian.PutUint64(pkt, uint64(i))
		h.Write(pkt)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// Two devices relay 10 MB each way through Caddy over every pairing of
// transports; every datagram arrives, in order.
func TestRelayThroughCaddy(t *testing.T) {
	c := startSite(t, "site")
	for _, tc := range []struct {
		name string
		a, b rendezvous.Transport
	}{
		{"h3-h3", rendezvous.TransportH3, rendezvous.TransportH3},
		{"h2-h2", rendezvous.TransportH2, rendezvous.TransportH2},
		{"h3-h2", rendezvous.TransportH3, rendezvous.TransportH2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := register(t, c, "127.0.0.1", tc.a), register(t, c, "127.0.0.1", tc.b)
			ca, cb := relayPair(t, a, b)
			const size = 10 << 20
			for _, dir := range []struct {
				name     string
				from, to net.PacketConn
			}{{"A→B", ca, cb}, {"B→A", cb, ca}} {
				start := time.Now()
				before := relayMetrics(t, c)
				sent, got, sum := transfer(t, dir.from, dir.to, size)
				after := relayMetrics(t, c)
				relayed := after["netsody_superpeer_relay_datagrams_total"] - before["netsody_superpeer_relay_datagrams_total"]
				t.Logf("%s %s: sent %d, relayed %.0f, arrived %d (%.1f MB/s)", tc.name, dir.name, sent, relayed, got, float64(got*1200)/time.Since(start).Seconds()/1e6)
				if got != sent {
					drops := map[string]float64{}
					for k, v := range after {
						if strings.HasPrefix(k, "netsody_superpeer_relay_dropped_total") && v != before[k] {
							drops[k] = v - before[k]
						}
					}
					t.Errorf("%s: %d of %d datagrams arrived; the relay forwarded %.0f and dropped %v", dir.name, got, sent, relayed, drops)
				} else if sum != expectedSum(sent) {
					t.Errorf("%s: datagrams arrived changed or out of order", dir.name)
				}
			}
		})
	}
}

// relayMetrics scrapes the super peer's Prometheus metrics from Caddy's
// admin endpoint.
func relayMetrics(t *testing.T, c *testcaddy.Caddy) map[string]float64 {
	t.Helper()
	return c.Metrics(t)
}

// With GODEBUG=http2xconnect=1 in Caddy's process, HTTP/2 relay legs may
// use RFC 8441 extended CONNECT; they pair with HTTP/3 and POST legs.
func TestRelayExtendedConnectH2(t *testing.T) {
	c := testcaddy.Start(t, siteCaddyfile, "GODEBUG=http2xconnect=1")
	writeSite(t, c, "x")
	// net/http's client will not send :protocol; x/net's will.
	xnet := func(cfg *rendezvous.ClientConfig) {
		cfg.NewH2Conn = func(tc *tls.Conn) (rendezvous.H2Conn, error) { return new(http2.Transport).NewClientConn(tc) }
	}
	for _, other := range []rendezvous.Transport{rendezvous.TransportH3, rendezvous.TransportH2} {
		a, b := register(t, c, "127.0.0.1", rendezvous.TransportH2, xnet), register(t, c, "127.0.0.1", other)
		lookup(t, a, b)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		type res struct {
			c   net.PacketConn
			err error
		}
		ch := make(chan res, 1)
		go func() {
			c, err := relay.DialH2Connect(ctx, a.s.HTTP2(), a.s.Authority(), b.id.PeerID())
			ch <- res{c, err}
		}()
		cb, err := dialRelay(ctx, b, a)
		if err != nil {
			t.Fatalf("B (%s): %v", other, err)
		}
		r := <-ch
		cancel()
		if r.err != nil {
			t.Fatalf("A (extended CONNECT): %v", r.err)
		}
		sent, got, sum := transfer(t, r.c, cb, 1<<20)
		if got != sent || sum != expectedSum(sent) {
			t.Errorf("extended CONNECT → %s: %d of %d arrived intact", other, got, sent)
		}
		r.c.Close()
		cb.Close()
	}
	// Without the setting, Go's HTTP/2 server does not offer extended
	// CONNECT, and the client says so.
	plain := startSite(t, "x")
	a, b := register(t, plain, "127.0.0.1", rendezvous.TransportH2, xnet), register(t, plain, "127.0.0.1", rendezvous.TransportH2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := relay.DialH2Connect(ctx, a.s.HTTP2(), a.s.Authority(), b.id.PeerID()); err == nil || !strings.Contains(err.Error(), "extended connect not supported") {
		t.Errorf("extended CONNECT without the setting: %v", err)
	}
}

// The relay needs consent through Caddy too, and refuses what is not a
// peer.
func TestRelayRefusalsThroughCaddy(t *testing.T) {
	c := testcaddy.Start(t, testcaddy.Global+`
localhost {
	netsody_superpeer {
		relay {
			pair_timeout 500ms
		}
	}
	respond "x"
}
`)
	a, b := register(t, c, "127.0.0.1", rendezvous.TransportH3), register(t, c, "127.0.0.1", rendezvous.TransportH2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, d := range []*device{a, b} {
		other := b
		if d == b {
			other = a
		}
		_, err := dialRelay(ctx, d, other) // the other never consents
		var ref *relay.RefusedError
		if !errors.As(err, &ref) || ref.Status != 504 {
			t.Errorf("%s without consent: %v, want 504", d.s.Transport(), err)
		}
	}
	m := relayMetrics(t, c)
	if m["netsody_superpeer_relay_pair_timeouts_total"] != 2 || m[`netsody_superpeer_relay_refused_total{status="504"}`] != 2 {
		t.Errorf("metrics do not count the refusals: %v", m)
	}
}
