package rendezvous

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/quic-go/quic-go/quicvarint"
)

// relayOnly makes a dialled session one for relays only.
func relayOnly(c *ClientConfig) { c.RelayOnly = true }

// whoami returns the registration the server finds on s's connection,
// or nil if it finds none live.
func (ts *testServer) whoami(t *testing.T, s *Session) *Registration {
	t.Helper()
	req := mustRequest(t, http.MethodGet, "https://"+s.Authority()+whoamiPath)
	var rt http.RoundTripper = s.HTTP3()
	if s.Transport() == TransportH2 {
		rt = s.HTTP2()
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil // the session ended, and its connection with it
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	return <-ts.regs
}

// The relay-only extension round-trips; an older super peer's decoder
// (Protocol's extensions alone) skips it and reads the same
// registration; one that carries a value is malformed.
func TestRelayOnlyFrame(t *testing.T) {
	want := Register{Peer: newIdentity(t).PeerID(), ProofOfWork: 7, Protocol: ours, RelayOnly: true}
	b := want.frame()[frameHeaderLen:]
	var got Register
	if err := got.decode(b); err != nil || !got.RelayOnly || got.Protocol != ours || got.Peer != want.Peer {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	// As an older super peer reads it.
	d := decoder{t: FrameRegister, b: b}
	d.peer()
	d.take(64)
	d.u32()
	d.addrs()
	old := protocolV1
	d.extensions(old.decodeExtension)
	if d.err != nil || old != ours {
		t.Fatalf("an older decoder read %+v, %v", old, d.err)
	}
	// A version-1 register carries no extension, so no flag.
	v1 := Register{Peer: want.Peer, Protocol: protocolV1, RelayOnly: true}
	if err := got.decode(v1.frame()[frameHeaderLen:]); err != nil || got.RelayOnly {
		t.Fatalf("version 1: %+v, %v", got, err)
	}
	withValue := quicvarint.Append((&Register{Peer: want.Peer, Protocol: ours}).frame()[frameHeaderLen:], extRelayOnly)
	withValue = append(quicvarint.Append(withValue, 1), 0)
	if err := got.decode(withValue); !errors.Is(err, errMalformed) {
		t.Errorf("relay-only with a value: %v, want malformed", err)
	}
}

// A device's ordinary session and its session for relays only live side
// by side at one super peer: neither replaces the other (before, the
// second replaced the first, and a device whose relay node was also its
// failover flapped between them). A second session of a kind replaces
// the first of that kind only.
func TestRelayOnlyBesideOrdinary(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{})
	id := newIdentity(t)
	ordinary := ts.dial(t, TransportH3, id)
	ro := ts.dial(t, TransportH2, id, relayOnly)
	if !ro.RelayOnly() || ordinary.RelayOnly() {
		t.Fatalf("RelayOnly: %v for the relay-only session, %v for the ordinary one", ro.RelayOnly(), ordinary.RelayOnly())
	}
	// A replaced session is ended before the newer one is answered, so
	// both vouch for their connections now or one was replaced.
	if reg := ts.whoami(t, ordinary); reg == nil || reg.PeerID() != id.PeerID() {
		t.Fatalf("the ordinary session was replaced by the relay-only one: %v", ordinary.Err())
	}
	if reg := ts.whoami(t, ro); reg == nil || reg.PeerID() != id.PeerID() {
		t.Fatalf("the relay-only session does not vouch for its connection: %v", ro.Err())
	}

	ro2 := ts.dial(t, TransportH3, id, relayOnly)
	select {
	case <-ro.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a second relay-only session did not replace the first")
	}
	var e *Error
	if !errors.As(ro.Err(), &e) || e.Code != ErrCodeReplaced {
		t.Errorf("the first relay-only session ended with %v, want replaced", ro.Err())
	}
	ordinary2 := ts.dial(t, TransportH2, id)
	select {
	case <-ordinary.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a second ordinary session did not replace the first")
	}
	if ts.whoami(t, ro2) == nil || ts.whoami(t, ordinary2) == nil {
		t.Fatalf("sessions of different kinds replaced each other: %v, %v", ro2.Err(), ordinary2.Err())
	}
	if reg, all := ts.rv.Sessions(); reg != 2 || all != 2 {
		t.Errorf("Sessions() = %d registered, %d in all; want 2, 2", reg, all)
	}
	kinds := map[bool]int{}
	for _, info := range ts.rv.SessionList() {
		if info.Registered && info.Peer == id.PeerID() {
			kinds[info.RelayOnly]++
		}
	}
	if kinds[false] != 1 || kinds[true] != 1 {
		t.Errorf("SessionList shows %d ordinary and %d relay-only sessions of the device, want 1 and 1", kinds[false], kinds[true])
	}
}

// A session for relays only is never introduced to another device, at
// its node or through the cluster, and joins no cluster; it may ask for
// a relay to a peer at its node (and the relay finds it for the peer's
// leg), but its lookups of peers elsewhere do not cross the cluster.
func TestRelayOnlyNotIntroduced(t *testing.T) {
	cfg := Config{ConsentTimeout: 2 * time.Second}
	n1, n2, mesh := twoNodes(t, cfg)

	// A device held only at n2, for relays only.
	devID := newIdentity(t)
	roCands := make(chan Candidates, 4)
	roReqs := make(chan Request, 4)
	ro := n2.dial(t, TransportH3, devID, relayOnly, func(c *ClientConfig) {
		c.OnCandidates = func(m Candidates) { roCands <- m }
		c.OnRequest = func(r Request) { roReqs <- r }
	})
	if n := mesh.joinedAt(devID.PeerID()); n != 0 {
		t.Fatalf("the relay-only session joined the cluster %d times", n)
	}
	here := n2.dial(t, TransportH3, newIdentity(t))
	_, offline, _ := lookup(t, here, newIdentity(t).PeerID())
	if offline == nil || offline.Code != ErrCodePeerNotFound {
		t.Fatalf("an offline peer: %v", offline)
	}
	_, e, _ := lookup(t, here, devID.PeerID())
	sameAsOffline(t, "a relay-only session looked up at its node", e, offline)
	there := n1.dial(t, TransportH3, newIdentity(t))
	_, e, _ = lookup(t, there, devID.PeerID())
	sameAsOffline(t, "a relay-only session looked up through the cluster", e, offline)
	noFrames(t, "the relay-only session was introduced", roCands)
	noFrames(t, "the relay-only session was asked", roReqs)

	// It asks for a relay to a peer at its node, which gets its
	// candidates there.
	yes := true
	target := n2.consenting(t, TransportH3, &yes)
	c, err := ro.Introduce(t.Context(), target.cfg.Identity.PeerID(), IntroduceOptions{Relay: true})
	if err != nil || !c.Relay || c.Peer != target.cfg.Identity.PeerID() {
		t.Fatalf("the relay-only session's relay request: %+v, %v", c, err)
	}
	<-roCands // the answer, which OnCandidates sees too
	select {
	case m := <-target.cands:
		if m.Peer != devID.PeerID() || !m.Relay {
			t.Errorf("the target got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the target got no candidates")
	}
	// The target's relay leg towards the device finds it.
	targetReg := n2.whoami(t, target.Session)
	if targetReg == nil {
		t.Fatal("the target is not registered")
	}
	if found, err := n2.rv.LookUp(targetReg, devID.PeerID()); !found || err != nil {
		t.Errorf("the relay's lookup of the relay-only device: %v, %v", found, err)
	}

	// Its lookup of a peer at another node does not cross the cluster.
	far := n1.dial(t, TransportH3, newIdentity(t))
	asked := n2.rv.Stats().ClusterAsked.Load()
	_, e, _ = lookup(t, ro, far.cfg.Identity.PeerID())
	if e == nil || e.Code != ErrCodePeerNotFound {
		t.Errorf("a relay-only session's lookup of a peer at another node: %v", e)
	}
	if n := n2.rv.Stats().ClusterAsked.Load(); n != asked {
		t.Errorf("it asked the cluster %d times", n-asked)
	}

	// With its ordinary session at n1, the device is found through the
	// cluster there, and its relay-only session still not asked.
	home := n1.dial(t, TransportH3, devID)
	_, e, _ = lookup(t, here, devID.PeerID())
	if e != nil {
		t.Errorf("the device's ordinary session through the cluster: %v", e)
	}
	noFrames(t, "the relay-only session was introduced", roCands)
	if home.Err() != nil || ro.Err() != nil {
		t.Errorf("sessions ended: %v, %v", home.Err(), ro.Err())
	}
}

// Per-target limits hold across the cluster: a device registered at n1
// that holds a relay-only session at n2 gets no more introductions than
// n1's IntroductionBurst, whichever node its askers use (before, n2
// introduced it from the relay-node session under a limit of its own:
// twice as many).
func TestRelayOnlyPerTargetLimit(t *testing.T) {
	const burst = 2
	cfg := Config{IntroductionRate: 1e-6, IntroductionBurst: burst}
	n1, n2, _ := twoNodes(t, cfg)
	devID := newIdentity(t)
	n1.dial(t, TransportH3, devID)
	n2.dial(t, TransportH3, devID, relayOnly)

	introduced := 0
	for _, n := range []*testServer{n1, n2} {
		for range burst + 1 {
			asker := n.dial(t, TransportH3, newIdentity(t))
			if _, e, _ := lookup(t, asker, devID.PeerID()); e == nil {
				introduced++
			} else if e.Code != ErrCodeRateLimited {
				t.Errorf("refused with %v, want rate limited", e)
			}
		}
	}
	if introduced != burst {
		t.Errorf("the device was introduced %d times, want its node's burst %d", introduced, burst)
	}
}

// The other direction: a peer at the relay node that asks its node for a
// relay to the device is not introduced to the relay-only session there;
// the introduction crosses the cluster to the device's own node, whose
// reply names that node as the device's relay node (the peer's rule
// then picks where to relay), and the device learns the peer's node.
func TestRelayOnlyReverseDirection(t *testing.T) {
	cfg := Config{ConsentTimeout: 2 * time.Second}
	n1, n2 := newTestServer(t, "127.0.0.1", cfg), newTestServer(t, "127.0.0.1", cfg)
	var mesh memCluster
	const url1, url2 = "https://sp-1.example.com", "https://sp-2.example.com"
	n1.rv.SetCluster(newNamedNode(&mesh, n1.rv, url1, url2))
	n2.rv.SetCluster(newNamedNode(&mesh, n2.rv, url2, url1))
	devID := newIdentity(t)
	homeCands := make(chan Candidates, 4)
	n1.dial(t, TransportH3, devID, func(c *ClientConfig) { c.OnCandidates = func(m Candidates) { homeCands <- m } })
	roCands := make(chan Candidates, 4)
	n2.dial(t, TransportH3, devID, relayOnly, func(c *ClientConfig) { c.OnCandidates = func(m Candidates) { roCands <- m } })
	peer := n2.dial(t, TransportH3, newIdentity(t))

	c, err := peer.Introduce(t.Context(), devID.PeerID(), IntroduceOptions{Relay: true})
	if err != nil || c.RelayNode != url1 || c.Relay {
		t.Fatalf("the peer's relay request: %+v, %v; want the device's node %s named, no relay here", c, err, url1)
	}
	select {
	case m := <-homeCands:
		if m.Peer != peer.cfg.Identity.PeerID() || m.RelayNode != url2 {
			t.Errorf("the device's own session got %+v, want the peer with relay node %s", m, url2)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the device's own session got no candidates")
	}
	noFrames(t, "the relay-only session was introduced", roCands)
}
