package peer

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/sptest"
)

// waitRelay waits until the connection is relayed over transport tr.
func waitRelay(t testing.TB, c *Conn, tr RelayTransport, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(10 * time.Millisecond) {
		if p := c.Path(); p.Kind == PathRelay && p.Relay == tr {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("path is %s after %v, want a relay over %s", c.Path(), within, tr)
		}
	}
}

// fastConn connects two relay-only devices through s, b echoing, and
// waits until the connection is relayed over the fast path.
func fastConn(t *testing.T, s *sptest.Servers) (a, b *Device, c *Conn) {
	t.Helper()
	a, b = newDevice(t, s, relayOnly), newDevice(t, s, relayOnly)
	echo(t, b)
	c = dial(t, a, b)
	roundTrip(t, c, "hello")
	waitRelay(t, c, RelayFast, 5*time.Second)
	return a, b, c
}

// A relayed connection moves onto the fast path once validated, and a
// transfer over it arrives intact; the super peer forwarded it there.
func TestRelayFastPath(t *testing.T) {
	s, rl := superPeerServer(t)
	a, _, c := fastConn(t, s)
	before := rl.Stats().FastPath.Datagrams.Load()
	echoTransfer(t, c, 4<<20, 16, func(int) {})
	if p := c.Path(); p.Relay != RelayFast {
		t.Fatalf("path %s after the transfer, want the fast path", p)
	}
	if n := rl.Stats().FastPath.Datagrams.Load() - before; n < 1000 {
		t.Fatalf("%d datagrams forwarded on the fast path during 4 MB", n)
	}
	if st := a.Status(); st.Peers[0].RelayTransport != RelayFast {
		t.Fatalf("status says %q, want fast", st.Peers[0].RelayTransport)
	}
}

// With the fast path blocked at the socket the connection stays on
// HTTP/3 datagrams; blocked mid-transfer it falls back within a second
// and the transfer completes intact; unblocked, it returns to the fast
// path after the hysteresis.
func TestRelayFastPathBlocked(t *testing.T) {
	s, _ := superPeerServer(t)
	var cut atomic.Bool
	cut.Store(true)
	blockable := func(c *Config) { c.cutFast = cut.Load }
	a, b := newDevice(t, s, relayOnly, blockable), newDevice(t, s, relayOnly)
	echo(t, b)
	c := dial(t, a, b)
	roundTrip(t, c, "hello")
	waitRelay(t, c, RelayH3, 5*time.Second)
	echoTransfer(t, c, 1<<20, 4, func(int) {})
	if p := c.Path(); p.Relay != RelayH3 {
		t.Fatalf("path %s with the fast path blocked, want HTTP/3 datagrams", p)
	}

	cut.Store(false)
	waitRelay(t, c, RelayFast, fastPathRetryMax+fastPathHold+3*time.Second)

	var fellBack time.Duration
	echoTransfer(t, c, 8<<20, 32, func(i int) {
		if i != 8 {
			return
		}
		cut.Store(true)
		start := time.Now()
		for c.Path().Relay == RelayFast {
			if time.Since(start) > 5*time.Second {
				t.Fatal("still on the blocked fast path after 5s")
			}
			time.Sleep(5 * time.Millisecond)
		}
		fellBack = time.Since(start)
	})
	if fellBack > time.Second {
		t.Errorf("fell back after %v, want within a second", fellBack)
	}
	cut.Store(false)
	start := time.Now()
	waitRelay(t, c, RelayFast, fastPathRetryMax+fastPathHold+3*time.Second)
	if back := time.Since(start); back < fastPathHold {
		t.Errorf("back on the fast path after %v, before the hysteresis (%v)", back, fastPathHold)
	}
}

// A NAT in front of the fast path that rebinds mid-transfer: the super
// peer challenges the new source, the device answers, and the transfer
// goes on over the fast path, intact.
func TestRelayFastPathRebinding(t *testing.T) {
	s, rl := superPeerServer(t)
	var (
		once sync.Once
		nat  *sptest.UDPProxy
	)
	behindNAT := func(c *Config) {
		c.fastPathVia = func(ap netip.AddrPort) netip.AddrPort {
			once.Do(func() { nat = sptest.StartUDPProxy(t, ap, nil) })
			return nat.Addr()
		}
	}
	a, b := newDevice(t, s, relayOnly, behindNAT), newDevice(t, s, relayOnly)
	echo(t, b)
	c := dial(t, a, b)
	roundTrip(t, c, "hello")
	waitRelay(t, c, RelayFast, 5*time.Second)
	echoTransfer(t, c, 8<<20, 32, func(i int) {
		if i == 8 {
			nat.Rebind()
		}
	})
	if n := rl.Stats().FastPath.Rebindings.Load(); n == 0 {
		t.Fatal("the super peer never re-validated the device's new address")
	}
	waitRelay(t, c, RelayFast, 5*time.Second)
}

// An idle relayed connection on the fast path costs no wakeups of the
// fast path's loop beyond its keepalives: over an idle second it ticks a
// few times at most (the connection's QUIC keepalives wake it), where it
// ticked every fastPathTick; packets sent wake it, and the fast path
// carries them.
func TestIdleFastPathSleeps(t *testing.T) {
	s, _ := superPeerServer(t)
	a, b, c := fastConn(t, s)
	p := a.peer(b.PeerID(), false)
	p.mu.Lock()
	f := p.paths.relay.fast.Load()
	p.mu.Unlock()
	for i := 0; i < 500 && !f.asleep.Load(); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	const idle = 20 * fastPathTick
	before := f.ticks.Load()
	time.Sleep(idle)
	if n := f.ticks.Load() - before; n > 4 {
		t.Errorf("%d ticks of the fast path's loop over an idle %v, want a few at most", n, idle)
	}
	before = f.ticks.Load()
	echoTransfer(t, c, 256<<10, 4, func(int) {})
	// Woken, it ticks fastPathTick later, perhaps after the transfer.
	for i := 0; i < 200 && f.ticks.Load() == before; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if f.ticks.Load() == before {
		t.Error("packets sent did not wake the fast path's loop")
	}
	if p := c.Path(); p.Relay != RelayFast {
		t.Fatalf("path %s after the idle time, want the fast path", p)
	}
}
