package peer

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/sptest"
)

// Two devices that can reach each other connect directly.
func TestDirect(t *testing.T) {
	s, _ := superPeerServer(t)
	a, b := newDevice(t, s), newDevice(t, s)
	echo(t, b)
	c := dial(t, a, b)
	if c.Peer() != b.PeerID() {
		t.Fatalf("connected to %s", c.Peer().Short())
	}
	roundTrip(t, c, "hello")
	waitPath(t, c, PathDirect, 5*time.Second)
	roundTrip(t, c, "hello again, directly")
}

// With RelayOnly, traffic goes through the super peer's relay.
func TestRelayOnly(t *testing.T) {
	s, rl := superPeerServer(t)
	relayOnly := func(c *Config) { c.RelayOnly = true }
	a, b := newDevice(t, s, relayOnly), newDevice(t, s, relayOnly)
	echo(t, b)
	c := dial(t, a, b)
	roundTrip(t, c, "through the relay")
	if p := c.Path(); p.Kind != PathRelay {
		t.Fatalf("path %s, want relay", p)
	}
	if rl.Stats().Datagrams.Load() == 0 {
		t.Fatal("the relay carried nothing")
	}
}

// A transfer keeps going, byte for byte, while its path moves from the
// relay to a direct path and back when the direct path is cut.
func TestSwitchMidTransfer(t *testing.T) {
	s, _ := superPeerServer(t)
	var block atomic.Bool
	block.Store(true)
	cut := func(c *Config) {
		c.cutDirect = block.Load
		c.DirectTimeout = 1500 * time.Millisecond
		c.PunchInterval = 300 * time.Millisecond
	}
	a, b := newDevice(t, s, cut), newDevice(t, s, cut)
	echo(t, b)
	c := dial(t, a, b)
	waitPath(t, c, PathRelay, 10*time.Second)

	var paths []PathKind
	echoTransfer(t, c, 10<<20, 20, func(i int) {
		switch i {
		case 5: // open the direct path
			block.Store(false)
			waitPath(t, c, PathDirect, 10*time.Second)
			paths = append(paths, PathDirect)
		case 12: // cut it
			block.Store(true)
			waitPath(t, c, PathRelay, 10*time.Second)
			paths = append(paths, PathRelay)
		}
	})
	t.Logf("10 MB echoed intact across paths relay → %v", paths)
}

// A device that holds another key than the one asked for is refused.
func TestWrongPeerRefused(t *testing.T) {
	// The check itself: a certificate of one key against another ID.
	id1, _ := identity.Generate()
	id2, _ := identity.Generate()
	cert, err := certificate(id1)
	if err != nil {
		t.Fatal(err)
	}
	err = tlsConfig(cert, id2.PeerID()).VerifyPeerCertificate(cert.Certificate, nil)
	if !errors.Is(err, ErrWrongPeer) {
		t.Fatalf("err = %v, want ErrWrongPeer", err)
	}
	if err := tlsConfig(cert, id1.PeerID()).VerifyPeerCertificate(cert.Certificate, nil); err != nil {
		t.Fatalf("right key refused: %v", err)
	}
}

func TestStatus(t *testing.T) {
	s, _ := superPeerServer(t)
	a, b := newDevice(t, s), newDevice(t, s)
	echo(t, b)
	c := dial(t, a, b)
	roundTrip(t, c, "x")
	waitPath(t, c, PathDirect, 5*time.Second)
	st := a.Status()
	if len(st.SuperPeers) != 1 || !st.SuperPeers[0].Connected || st.SuperPeers[0].Family != "ipv4" || st.SuperPeers[0].Transport != "h3" {
		t.Errorf("super peers: %+v", st.SuperPeers)
	}
	if len(st.Peers) != 1 || st.Peers[0].PeerID != b.PeerID().String() || st.Peers[0].Path != "direct" || st.Peers[0].Addr == "" {
		t.Errorf("peers: %+v", st.Peers)
	}
}

// A peer is forgotten a while after its last connection ends: no more
// punching, no relay, no entry in the status.
func TestIdlePeerForgotten(t *testing.T) {
	s, _ := superPeerServer(t)
	idle := func(c *Config) { c.PeerIdleTimeout = 300 * time.Millisecond }
	a, b := newDevice(t, s, idle), newDevice(t, s, idle)
	echo(t, b)
	c := dial(t, a, b)
	roundTrip(t, c, "x")
	time.Sleep(time.Second)
	if n := len(a.Status().Peers); n != 1 {
		t.Fatalf("%d peers while connected, want 1", n)
	}
	c.CloseWithError(0, "done")
	deadline := time.Now().Add(10 * time.Second)
	for len(a.Status().Peers) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("peer not forgotten: %+v", a.Status().Peers)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// And it can be reached again.
	echo(t, b)
	roundTrip(t, dial(t, a, b), "again")
}

// A device has one socket per address family: it reaches a super peer
// over IPv6, reports it so, and connects to another device directly.
func TestOneSocketPerFamily(t *testing.T) {
	s4, _ := superPeerServer(t)
	s6 := sptest.Start(t, "::1", s4.H2.Config.Handler) // the same super peer, over IPv6
	both := func(c *Config) {
		c.ListenAddr, c.ListenAddr6 = "127.0.0.1:0", "[::1]:0"
		c.SuperPeers = []string{s6.H3URL}
	}
	a, b := newDevice(t, s4, both), newDevice(t, s4, both)
	st := a.Status()
	if len(st.Sockets) != 2 {
		t.Fatalf("sockets %v, want one IPv4 and one IPv6", st.Sockets)
	}
	if sp := st.SuperPeers[0]; !sp.Connected || sp.Family != "ipv6" {
		t.Fatalf("super peer %+v, want connected over ipv6", sp)
	}
	echo(t, b)
	c := dial(t, a, b)
	roundTrip(t, c, "two families")
	waitPath(t, c, PathDirect, 5*time.Second)
	t.Logf("sockets %v; path %s", st.Sockets, c.Path())
}

// A device whose NAT rebinds hears it from the super peer (OnSuperPeer,
// Status), and the peer it is connected to is introduced to it again, with
// the new address among its candidates.
func TestRebindingReintroduces(t *testing.T) {
	s, _ := superPeerServer(t, 500*time.Millisecond) // the device pings this often: its next packet
	nat := sptest.StartUDPProxy(t, addrOf(s.H3URL), nil)
	events := make(chan SuperPeerStatus, 16)
	a := newDevice(t, s, func(c *Config) {
		c.SuperPeers = []string{"https://" + nat.Addr().String()}
		c.OnSuperPeer = func(st SuperPeerStatus) { events <- st }
	})
	select {
	case st := <-events:
		if !st.Connected || st.Transport != "h3" {
			t.Fatalf("first super peer event %+v, want connected over h3", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no super peer event within 5s of registering")
	}
	b := newDevice(t, s)
	echo(t, b)
	c := dial(t, a, b)
	roundTrip(t, c, "before")

	moved := nat.Rebind()
	if len(moved) != 1 {
		t.Fatalf("the NAT rebound %d mappings, want 1", len(moved))
	}
	select {
	case st := <-events:
		if st.Observed != moved[0].String() {
			t.Fatalf("super peer event %+v, want observed %v", st, moved[0])
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no super peer event within 5s of the rebinding; status %+v", a.Status().SuperPeers)
	}
	if got := a.Status().SuperPeers[0].Observed; got != moved[0].String() {
		t.Errorf("status says observed %s, want %v", got, moved[0])
	}
	pa := b.peer(a.PeerID(), false)
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(pa.candidates(), moved[0]) {
		if time.Now().After(deadline) {
			t.Fatalf("B's candidates for A are %v, without A's new mapping %v", pa.candidates(), moved[0])
		}
		time.Sleep(10 * time.Millisecond)
	}
	roundTrip(t, c, "after")
}

// A device whose local addresses change (another network, a new lease)
// announces them: the peer it is connected to gets them as candidates.
func TestLocalAddrsChange(t *testing.T) {
	s, _ := superPeerServer(t)
	var local atomic.Pointer[[]netip.AddrPort]
	a := newDevice(t, s, func(c *Config) {
		c.AddrCheckInterval = 50 * time.Millisecond
		c.LocalAddrs = func(port uint16) []netip.AddrPort {
			if as := local.Load(); as != nil {
				return *as
			}
			return []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)}
		}
	})
	b := newDevice(t, s)
	echo(t, b)
	c := dial(t, a, b)
	roundTrip(t, c, "before")

	moved := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), a.LocalAddr().Port())
	local.Store(&[]netip.AddrPort{moved})
	pa := b.peer(a.PeerID(), false)
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(pa.candidates(), moved) {
		if time.Now().After(deadline) {
			t.Fatalf("B's candidates for A are %v, without A's new local address %v", pa.candidates(), moved)
		}
		time.Sleep(10 * time.Millisecond)
	}
	roundTrip(t, c, "after")
}

// A new path carries the last packets sent over the old one again, so
// that loss recovery at both ends need not wait for a probe timeout.
func TestNewPathResendsTail(t *testing.T) {
	s, _ := superPeerServer(t)
	d := newDevice(t, s)
	other, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	p := d.peer(other.PeerID(), true)
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	oldPath, newPath := listen(), listen()
	setDirect := func(c *net.UDPConn) {
		p.mu.Lock()
		p.directValidatedLocked(c.LocalAddr().(*net.UDPAddr).AddrPort(), time.Millisecond)
		p.mu.Unlock()
	}
	read := func(c *net.UDPConn, n int) []string {
		t.Helper()
		var got []string
		buf := make([]byte, 1500)
		for range n {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			k, _, err := c.ReadFromUDP(buf)
			if err != nil {
				t.Fatalf("after %q: %v", got, err)
			}
			got = append(got, string(buf[:k]))
		}
		return got
	}

	setDirect(oldPath)
	var sent []string
	for i := range 6 {
		sent = append(sent, fmt.Sprintf("\x40packet %d", i)) // QUIC's fixed bit, as a QUIC packet has
		p.send([]byte(sent[i]))
	}
	read(oldPath, 6)
	setDirect(newPath)
	got := read(newPath, tailLen)
	slices.Sort(got) // resent in order, but nothing promises the order of arrival
	if want := sent[len(sent)-tailLen:]; !slices.Equal(got, want) {
		t.Fatalf("the new path got %q, want the last %d packets %q", got, tailLen, want)
	}
}

// Once a direct path has settled, it is pinged at the keepalive interval
// (1 s), not faster: a punch from a known address is no news.
func TestSettledDirectPathIsQuiet(t *testing.T) {
	s, _ := superPeerServer(t)
	var calls [2]atomic.Int64 // cutDirect is asked once per punch sent or handled
	counting := func(i int) func(*Config) {
		return func(c *Config) {
			c.FastPunchFor = 300 * time.Millisecond
			c.cutDirect = func() bool { calls[i].Add(1); return false }
		}
	}
	a, b := newDevice(t, s, counting(0)), newDevice(t, s, counting(1))
	echo(t, b)
	c := dial(t, a, b)
	waitPath(t, c, PathDirect, 5*time.Second)
	time.Sleep(time.Second) // past fast punching
	before := [2]int64{calls[0].Load(), calls[1].Load()}
	time.Sleep(2 * time.Second)
	for i, name := range []string{"A", "B"} {
		// Per second: its own ping, the peer's ping and the pong to its
		// own: about 6 in 2 s.
		if n := calls[i].Load() - before[i]; n > 20 {
			t.Errorf("%s handled or sent %d punches in 2 s on a settled direct path, want about 6", name, n)
		} else {
			t.Logf("%s: %d punches in 2 s", name, n)
		}
	}
	roundTrip(t, c, "still direct")
}

// Close may be called twice at once: both return, once, the device is
// closed.
func TestCloseTwiceAtOnce(t *testing.T) {
	s, _ := superPeerServer(t)
	d := newDevice(t, s)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { d.Close() })
	}
	wg.Wait()
	select {
	case <-d.closed:
	default:
		t.Fatal("not closed")
	}
}
