package peer

// Attacks on a device by strangers: each test fails without the
// protection it names (checked by removing it).

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/rendezvous"
)

// newSinks binds n sinks on 127.0.0.x (loopback, punched only because
// the super peer is on loopback too) that count punch messages.
func newSinks(t *testing.T, n int) *sptest.Sinks {
	return sptest.NewSinks(t, sptest.Loopback4(n), isPunch)
}

// newID makes a fresh identity.
func newID(t testing.TB) *identity.Identity {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// strangerSession registers id with the super peer over HTTP/3,
// announcing addrs: all a stranger needs is a key.
func strangerSession(t *testing.T, s *sptest.Servers, id *identity.Identity, addrs []netip.AddrPort) *rendezvous.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sess, err := rendezvous.Dial(ctx, rendezvous.ClientConfig{
		Identity: id, URL: s.H3URL, Transport: rendezvous.TransportH3,
		TLSConfig: &tls.Config{RootCAs: s.Pool}, LocalAddrs: addrs,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	return sess
}

// stranger registers with the super peer under a fresh identity,
// announcing addrs as its local addresses, and asks to be introduced to
// victim: it needs nothing but a key.
func stranger(t *testing.T, s *sptest.Servers, addrs []netip.AddrPort, victim identity.PeerID) *rendezvous.Session {
	t.Helper()
	sess := strangerSession(t, s, newID(t), addrs)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := sess.Introduce(ctx, victim, rendezvous.IntroduceOptions{}); err != nil {
		t.Fatal(err)
	}
	return sess
}

// A stranger (three, here: identities are free) announcing a victim's
// addresses as its own gets the victim at most the device's paced
// budget: DefaultPunchRate pings a second in all, above a burst, and
// DefaultPunchTries per address. Unpaced, every address got 20 pings a second. The device
// accepts anyone (AllowAny): the pacing holds whatever the policy.
func TestStrangersGetPacedBudget(t *testing.T) {
	s, _ := superPeerServer(t)
	d := newDevice(t, s, allowAny)
	const n, each = 42, rendezvous.MaxAddrs - 2
	sk := newSinks(t, n)
	start := time.Now()
	for i := 0; i < n; i += each {
		stranger(t, s, sk.Addrs(i, min(i+each, n)), d.PeerID())
	}
	const window = 3 * time.Second
	time.Sleep(window - time.Since(start))
	elapsed := time.Since(start)
	sum, most := sk.Total()
	budget := int64(punchBurst + DefaultPunchRate*elapsed.Seconds() + 1)
	t.Logf("%d punches to %d addresses in %v (budget %d), at most %d to one", sum, n, elapsed.Round(time.Millisecond), budget, most)
	if sum > budget {
		t.Errorf("%d punches to the strangers' addresses in %v, want at most %d", sum, elapsed, budget)
	}
	if most > DefaultPunchTries {
		t.Errorf("an address got %d punches, want at most %d per introduction", most, DefaultPunchTries)
	}
	if sum == 0 {
		t.Error("no punch at all: the test measures nothing")
	}
}

// Config.PunchRate and Config.PunchTries replace the defaults: a device
// set to 5 pings a second and 2 tries sends strangers' addresses no more,
// where the defaults would allow 20 a second and 5 each.
func TestPunchPacingConfigured(t *testing.T) {
	const rate, tries = 5, 2
	s, _ := superPeerServer(t)
	d := newDevice(t, s, allowAny, func(c *Config) { c.PunchRate, c.PunchTries = rate, tries })
	const n, each = 30, rendezvous.MaxAddrs - 2
	sk := newSinks(t, n)
	start := time.Now()
	for i := 0; i < n; i += each {
		stranger(t, s, sk.Addrs(i, min(i+each, n)), d.PeerID())
	}
	time.Sleep(2*time.Second - time.Since(start))
	elapsed := time.Since(start)
	sum, most := sk.Total()
	budget := int64(punchBurst + rate*elapsed.Seconds() + 1)
	t.Logf("%d punches to %d addresses in %v (budget %d), at most %d to one", sum, n, elapsed.Round(time.Millisecond), budget, most)
	if sum > budget || most > tries {
		t.Errorf("%d punches in %v, %d to one address; want at most %d, and %d per address", sum, elapsed, most, budget, tries)
	}
	if sum == 0 {
		t.Error("no punch at all: the test measures nothing")
	}
}

// A stranger that introduced itself and left costs nothing once its
// addresses have had their tries: no punch, no punch loop; even on a
// device that accepts anyone.
func TestStrangerThatLeftCostsNothing(t *testing.T) {
	s, _ := superPeerServer(t)
	d := newDevice(t, s, allowAny)
	sk := newSinks(t, 3)
	sess := stranger(t, s, sk.Addrs(0, 3), d.PeerID())
	sess.Close()
	// The tries: 0, 1, 3, 7 and 15 fast intervals after the introduction.
	time.Sleep(DefaultFastPunchInterval*(1<<DefaultPunchTries) + 200*time.Millisecond)
	before, _ := sk.Total()
	time.Sleep(1500 * time.Millisecond)
	after, most := sk.Total()
	if after != before {
		t.Errorf("%d punches to a stranger's addresses after its tries, want none", after-before)
	}
	if most != DefaultPunchTries {
		t.Errorf("an address got %d punches, want %d", most, DefaultPunchTries)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.peers {
		p.mu.Lock()
		running := p.punch.running
		p.mu.Unlock()
		if running {
			t.Error("the stranger's punch loop still runs")
		}
	}
}

// countingWriter counts the punches a peer sends, by address.
type countingWriter struct {
	mu   sync.Mutex
	sent map[netip.AddrPort]int
}

func (w *countingWriter) writeUDP(b []byte, to netip.AddrPort) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sent[to]++
	return len(b), nil
}

// countedPeer is a device with a peer it accepts and has state for,
// whose punches are counted, not sent.
func countedPeer(t *testing.T) (*Device, *identity.Identity, *peerState, *countingWriter) {
	s, _ := superPeerServer(t)
	d := newDevice(t, s)
	other, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	d.Allow(other.PeerID())
	p := d.peer(other.PeerID(), true)
	w := &countingWriter{sent: map[netip.AddrPort]int{}}
	p.out = w
	return d, other, p, w
}

// A device sends nothing to an address in a class it never punches, or
// may not punch from where it stands, whoever names it.
func TestRefusedClassesGetNothing(t *testing.T) {
	d, other, p, w := countedPeer(t)
	global := netip.MustParseAddrPort("192.0.2.7:9")
	refused := []netip.AddrPort{
		netip.MustParseAddrPort("0.0.0.0:9"),
		netip.MustParseAddrPort("224.0.0.251:5353"),
		netip.MustParseAddrPort("255.255.255.255:9"),
		netip.MustParseAddrPort("192.0.2.8:0"),
		netip.MustParseAddrPort("127.0.0.1:22"), // the super peer is not on loopback, here
		netip.MustParseAddrPort("10.99.0.1:80"), // no LAN of the device's
		netip.MustParseAddrPort("169.254.169.254:80"),
		netip.MustParseAddrPort("100.64.0.1:53"),
	}
	d.onCandidates(d.sps[0], false, rendezvous.Candidates{Peer: other.PeerID(), Observed: global, LocalAddrs: refused})
	p.onPing(punch{typ: punchPing, sender: other.PeerID(), receiver: d.id}, refused[5])
	time.Sleep(300 * time.Millisecond)
	if got := p.candidates(); len(got) != 1 || got[0] != global {
		t.Errorf("candidates %v, want only %v", got, global)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for to, n := range w.sent {
		if to != global && to != refused[5] { // the pong answers the ping where it came from
			t.Errorf("%d punches to %v", n, to)
		}
	}
	if w.sent[refused[5]] > 1 {
		t.Errorf("%d punches to %v, which pinged once: want only the pong", w.sent[refused[5]], refused[5])
	}
	if w.sent[global] == 0 {
		t.Error("no punch to the global candidate: the test measures nothing")
	}
}

// A ping from an address the device did not know adds it, with tries of
// its own, but restarts nothing: the addresses whose tries are spent stay
// quiet.
func TestPingFromNewAddressRestartsNothing(t *testing.T) {
	d, other, p, w := countedPeer(t)
	cands := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:9"), netip.MustParseAddrPort("192.0.2.2:9")}
	d.onCandidates(d.sps[0], false, rendezvous.Candidates{Peer: other.PeerID(), LocalAddrs: cands})
	spent := DefaultFastPunchInterval*(1<<DefaultPunchTries) + 200*time.Millisecond
	time.Sleep(spent)
	fresh := netip.MustParseAddrPort("192.0.2.3:9")
	p.onPing(punch{typ: punchPing, sender: other.PeerID(), receiver: d.id}, fresh)
	time.Sleep(spent)
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range cands {
		if w.sent[a] != DefaultPunchTries {
			t.Errorf("%v got %d punches, want its %d tries and no more", a, w.sent[a], DefaultPunchTries)
		}
	}
	if n := w.sent[fresh]; n != 1+DefaultPunchTries {
		t.Errorf("the new address got %d punches, want a pong and %d tries", n, DefaultPunchTries)
	}
}

// sendPunches sends n pings from a socket on loopback to d, signed by
// from.
func sendPunches(t *testing.T, c *net.UDPConn, d *Device, from *identity.Identity, n int) {
	t.Helper()
	for i := range n {
		b := (&punch{typ: punchPing, sender: from.PeerID(), receiver: d.id, nonce: uint64(i)}).encode(from)
		if _, err := c.WriteToUDPAddrPort(b, d.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
}

// Punches from senders the device does not accept cost no signature
// check; an accepted sender's are checked at most verifyBurst at once
// from one source.
func TestPunchVerificationsBounded(t *testing.T) {
	s, _ := superPeerServer(t)
	d := newDevice(t, s)
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 20 {
		id, err := identity.Generate()
		if err != nil {
			t.Fatal(err)
		}
		sendPunches(t, c, d, id, 10)
	}
	known, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	d.Allow(known.PeerID())
	d.peer(known.PeerID(), true)
	sendPunches(t, c, d, known, 1) // read after the strangers': the socket is read in order
	waitFor(t, "the known peer's ping verified", func() bool { return d.verified.Load() >= 1 })
	if n := d.verified.Load(); n != 1 {
		t.Fatalf("%d signatures checked, want 1: the strangers' 200 pings cost some", n)
	}

	start := time.Now()
	sendPunches(t, c, d, known, 4*verifyBurst)
	time.Sleep(100 * time.Millisecond)
	budget := uint64(1 + verifyBurst + verifyRate*time.Since(start).Seconds() + 1)
	if n := d.verified.Load(); n > budget {
		t.Errorf("%d signatures checked from one source, want at most %d", n, budget)
	} else {
		t.Logf("%d signatures checked of %d pings from one source", n, 1+4*verifyBurst)
	}
}

// waitFor waits up to 5 s for cond.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5 s: %s", what)
		}
	}
}

// Introductions of new peers are taken at most IntroductionRate a
// second (above a burst), and the device tracks at most MaxPeers: a
// super peer, or strangers through it, cannot grow its table and
// goroutines without bound.
func TestPeerTableBounded(t *testing.T) {
	s, _ := superPeerServer(t)
	introduce := func(d *Device, n int) {
		for i := range n {
			id := identity.PeerID{byte(i >> 8), byte(i), 0xee}
			d.onCandidates(d.sps[0], true, rendezvous.Candidates{Peer: id, LocalAddrs: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:9")}})
		}
	}
	peers := func(d *Device) int {
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.peers)
	}

	capped := newDevice(t, s, allowAny, func(c *Config) { c.MaxPeers, c.IntroductionRate = 8, 1000 })
	introduce(capped, 30)
	if n := peers(capped); n != 8 {
		t.Errorf("%d peers after 30 introductions, want MaxPeers = 8", n)
	}
	echo(t, capped) // a peer with a connection is never the one forgotten
	other := newDevice(t, s)
	c := dial(t, other, capped)
	roundTrip(t, c, "kept")
	introduce(capped, 30)
	if n := peers(capped); n != 8 || capped.peer(other.PeerID(), false) == nil {
		t.Errorf("%d peers, with the connected one %v; want 8 with it", n, capped.peer(other.PeerID(), false) != nil)
	}

	paced := newDevice(t, s, allowAny, func(c *Config) { c.IntroductionRate = 5 })
	start := time.Now()
	introduce(paced, 200)
	budget := int(introductionBurst + 5*time.Since(start).Seconds() + 1)
	if n := peers(paced); n > budget {
		t.Errorf("%d peers after 200 introductions at once, want at most %d", n, budget)
	}
	if paced.introsDropped.Load() == 0 {
		t.Error("dropped introductions are not counted")
	}
}
