package peer

import (
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netsody/superpeer"
	"github.com/netsody/superpeer/internal/sptest"
)

func addrOf(url string) netip.AddrPort {
	return netip.MustParseAddrPort(strings.TrimPrefix(url, "https://"))
}

func relayOnly(c *Config) { c.RelayOnly = true }

// Two super peers, one 80 ms further away: both devices relay through
// the nearer one, whichever order they list them in.
func TestRelayViaNearestSuperPeer(t *testing.T) {
	near, _ := superPeerServer(t)
	far, _ := superPeerServer(t)
	farURL := "https://" + sptest.UDPDelay(t, addrOf(far.H3URL), 20*time.Millisecond).String() // 20 ms each way, each leg: +80 ms both legs
	for _, order := range [][]string{{near.H3URL, farURL}, {farURL, near.H3URL}} {
		sps := func(c *Config) { c.SuperPeers = order; relayOnly(c) }
		a, b := newDevice(t, near, sps), newDevice(t, near, sps)
		echo(t, b)
		c := dial(t, a, b)
		roundTrip(t, c, "via the nearest")
		if p := c.Path(); p.Kind != PathRelay || p.SuperPeer != near.H3URL {
			t.Errorf("order %v: path %s, want relay via %s", order, p, near.H3URL)
		}
		for _, sp := range a.Status().SuperPeers {
			t.Logf("super peer %s: connected %v, RTT %.1f ms", sp.URL, sp.Connected, sp.RTTMillis)
		}
	}
}

// When latencies change, the relay moves to the super peer that is now
// clearly nearer, without breaking the connection.
func TestRelayMovesToNearerSuperPeer(t *testing.T) {
	s1, _ := superPeerServer(t, 100*time.Millisecond)
	s2, _ := superPeerServer(t, 100*time.Millisecond)
	var d1, d2 atomic.Int64
	d2.Store(int64(15 * time.Millisecond))
	u1 := "https://" + sptest.UDPDelayFunc(t, addrOf(s1.H3URL), func() time.Duration { return time.Duration(d1.Load()) }).String()
	u2 := "https://" + sptest.UDPDelayFunc(t, addrOf(s2.H3URL), func() time.Duration { return time.Duration(d2.Load()) }).String()
	cfg := func(c *Config) {
		c.SuperPeers = []string{u1, u2}
		c.RelayOnly = true
		// A relay check introduces the peer again through every super
		// peer, which answers a device one lookup of a peer a second
		// (rendezvous.DefaultLookupRate): checks more often than that
		// would be refused.
		c.RelayCheckInterval = time.Second
	}
	a, b := newDevice(t, s1, cfg), newDevice(t, s1, cfg)
	echo(t, b)
	c := dial(t, a, b)
	roundTrip(t, c, "x")
	if p := c.Path(); p.SuperPeer != u1 {
		t.Fatalf("path %s, want relay via %s", p, u1)
	}
	d1.Store(int64(15 * time.Millisecond))
	d2.Store(0)
	deadline := time.Now().Add(15 * time.Second)
	for c.Path().SuperPeer != u2 {
		if time.Now().After(deadline) {
			t.Fatalf("relay still %s after latencies changed", c.Path())
		}
		time.Sleep(50 * time.Millisecond)
	}
	roundTrip(t, c, "after the move")
	// With equal latencies, hysteresis keeps it where it is.
	d1.Store(0)
	time.Sleep(2 * time.Second)
	if p := c.Path(); p.SuperPeer != u2 {
		t.Errorf("relay moved to %s although %s is as near", p.SuperPeer, u2)
	}
}

// One super peer stops in the middle of a relayed transfer: the transfer
// completes, intact, through the other.
func TestSuperPeerStopsMidTransfer(t *testing.T) {
	s1, rl1 := superPeerServer(t)
	s2, _ := superPeerServer(t)
	both := func(c *Config) { c.SuperPeers = []string{s1.H3URL, s2.H3URL}; relayOnly(c) }
	a, b := newDevice(t, s1, both), newDevice(t, s1, both)
	echo(t, b)
	c := dial(t, a, b)
	roundTrip(t, c, "warm up")
	first := c.Path().SuperPeer

	echoTransfer(t, c, 10<<20, 10, func(i int) {
		if i == 3 { // stop the super peer that relays
			if first == s1.H3URL {
				rl1.Close()
				s1.Close()
			} else {
				s2.Close()
			}
		}
	})
	if p := c.Path(); p.Kind != PathRelay || p.SuperPeer == first {
		t.Errorf("path %s after %s stopped", p, first)
	}
	t.Logf("10 MB intact; relay moved from %s to %s", first, c.Path().SuperPeer)
}

// A device whose UDP is blocked registers over HTTP/2 and its first
// relayed byte arrives within about a second.
func TestUDPBlockedFallsBackToH2(t *testing.T) {
	s, _ := superPeerServer(t)
	blocked := "https://" + sptest.UDPBlocked(t, addrOf(s.H2URL)).String()
	b := newDevice(t, s, relayOnly)
	echo(t, b)
	start := time.Now()
	a := newDevice(t, s, relayOnly, func(c *Config) { c.SuperPeers = []string{blocked} })
	registered := time.Since(start)
	c := dial(t, a, b)
	roundTrip(t, c, "first byte")
	first := time.Since(start)
	if st := a.Status().SuperPeers[0]; st.Transport != "h2" {
		t.Fatalf("transport %q, want h2", st.Transport)
	}
	if p := c.Path(); p.Kind != PathRelay || p.Transport != "h2" {
		t.Fatalf("path %s", p)
	}
	t.Logf("UDP blocked: registered over HTTP/2 after %v, first relayed byte echoed after %v", registered.Round(time.Millisecond), first.Round(time.Millisecond))
	if first > 3*time.Second {
		t.Errorf("first relayed byte after %v, want about a second", first)
	}
}

// A device racing HTTP/3 against HTTP/2 registers once, on the winner: a
// registration on the loser would replace the winner's at the super peer
// and end it.
func TestRaceRegistersOnce(t *testing.T) {
	sp := superpeer.New(superpeer.Config{})
	s := sptest.Start(t, "127.0.0.1", sp, followRebinding)
	t.Cleanup(func() { sp.Close() })
	const devices = 8
	for range devices {
		// No head start: both transports dial at once, and both come up.
		newDevice(t, s, func(c *Config) { c.H3HeadStart = time.Nanosecond })
	}
	// A loser that registered would have replaced a winner by now, or
	// shortly: give it the time a registration takes on loopback.
	time.Sleep(200 * time.Millisecond)
	if n := sp.Rendezvous().Stats().Registrations.Load(); n != devices {
		t.Errorf("%d registrations for %d devices, want one each", n, devices)
	}
	if reg, _ := sp.Rendezvous().Sessions(); reg != devices {
		t.Errorf("%d devices registered, want %d", reg, devices)
	}
}
