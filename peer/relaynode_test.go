package peer

import (
	"context"
	"net/netip"
	"strconv"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/time/rate"

	"github.com/netsody/superpeer/identity"
)

// newPeerIDs returns n fresh peers' states at d.
func newPeers(t *testing.T, d *Device, n int) []*peerState {
	t.Helper()
	var out []*peerState
	for range n {
		id, err := identity.Generate()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d.peer(id.PeerID(), true))
	}
	return out
}

// heldRelayNodes is how many relay nodes d holds.
func heldRelayNodes(d *Device) int {
	d.relayNodes.mu.Lock()
	defer d.relayNodes.mu.Unlock()
	return len(d.relayNodes.byURL)
}

// A super peer may name any node: the device takes only https URLs of a
// host, holds at most maxRelayNodes, opens new ones at relayNodeRate,
// one per peer, shares one among the peers at that node, and once no
// relay needs them drops them with every goroutine they ran.
func TestRelayNodesBounded(t *testing.T) {
	s, _ := superPeerServer(t)
	// Every node name resolves to a port where nothing answers.
	nowhere := func(ctx context.Context, host string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	d := newDevice(t, s, func(c *Config) { c.LookupNetIP = nowhere })
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	node := func(i int) string { return "https://node-" + strconv.Itoa(i) + ".example.com:9" }
	peers := newPeers(t, d, 3*maxRelayNodes)

	for _, bad := range []string{"http://node.example.com", "https://node.example.com/path", "https://u@node.example.com", "node.example.com"} {
		if _, err := d.relayNodeFor(peers[0], bad); err == nil {
			t.Errorf("relay node %q taken", bad)
		}
	}
	if sp, err := d.relayNodeFor(peers[0], s.H3URL); err != nil || sp != d.sps[0] || heldRelayNodes(d) != 0 {
		t.Errorf("a configured super peer named: %v, %v, %d held", sp == d.sps[0], err, heldRelayNodes(d))
	}

	// Paced: a burst, then one a second.
	for i, p := range peers[:relayNodeBurst+2] {
		_, err := d.relayNodeFor(p, node(i))
		if (err == nil) != (i < relayNodeBurst) {
			t.Errorf("relay node %d of a burst: %v", i, err)
		}
	}
	// Bounded in all, however fast they may come.
	d.relayNodes.mu.Lock()
	d.relayNodes.pace = rate.NewLimiter(rate.Inf, 0)
	d.relayNodes.mu.Unlock()
	for i, p := range peers {
		d.relayNodeFor(p, node(i))
	}
	if n := heldRelayNodes(d); n != maxRelayNodes {
		t.Fatalf("%d relay nodes held, want at most %d", n, maxRelayNodes)
	}
	if st := d.Status().SuperPeers; len(st) != 1+maxRelayNodes || !st[1].Temporary || len(st[1].ForPeers) != len(peers[0].id.String()) {
		t.Errorf("status: %+v", st)
	}

	held := d.relayNodeOf(peers[0])
	for _, q := range peers {
		d.settleRelayNode(q) // no relay runs, none is opened
	}
	if n := heldRelayNodes(d); n != 0 || held.ctx.Err() == nil {
		t.Fatalf("%d relay nodes held with no relay; the first closed: %v", n, held.ctx.Err() != nil)
	}

	// One per peer: a peer named at another node lets the first go;
	// peers at one node share it.
	p, q, r := peers[0], peers[1], peers[2]
	a, _ := d.relayNodeFor(p, node(1))
	b, _ := d.relayNodeFor(p, node(2))
	if a.ctx.Err() == nil || d.relayNodeOf(p) != b || heldRelayNodes(d) != 1 {
		t.Errorf("a peer moved to another node: the first closed %v, %d held", a.ctx.Err() != nil, heldRelayNodes(d))
	}
	c1, _ := d.relayNodeFor(q, node(3))
	c2, _ := d.relayNodeFor(r, node(3))
	if c1 != c2 || heldRelayNodes(d) != 2 {
		t.Errorf("two peers at one node: shared %v, %d held", c1 == c2, heldRelayNodes(d))
	}
	d.settleRelayNode(q)
	if c1.ctx.Err() != nil {
		t.Error("a relay node closed while a peer holds it")
	}
	for _, x := range []*peerState{p, r} {
		d.settleRelayNode(x)
	}
	if n := heldRelayNodes(d); n != 0 || b.ctx.Err() == nil || c1.ctx.Err() == nil {
		t.Errorf("%d relay nodes held with no relay", n)
	}
}
