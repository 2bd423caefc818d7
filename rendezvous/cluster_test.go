package rendezvous

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
)

// memCluster is a Cluster for the servers of one process: what package
// cluster does over NATS, through a map. down makes it unreachable.
type memCluster struct {
	mu     sync.Mutex
	joined map[identity.PeerID][]*Server
	down   bool
}

func (m *memCluster) node(srv *Server) Cluster { return &memNode{m: m, srv: srv} }

type memNode struct {
	m   *memCluster
	srv *Server
}

func (n *memNode) Join(peer identity.PeerID) func() {
	n.m.mu.Lock()
	defer n.m.mu.Unlock()
	if n.m.joined == nil {
		n.m.joined = make(map[identity.PeerID][]*Server)
	}
	n.m.joined[peer] = append(n.m.joined[peer], n.srv)
	return func() {
		n.m.mu.Lock()
		defer n.m.mu.Unlock()
		for i, s := range n.m.joined[peer] {
			if s == n.srv {
				n.m.joined[peer] = append(n.m.joined[peer][:i:i], n.m.joined[peer][i+1:]...)
				break
			}
		}
	}
}

func (n *memNode) Introduce(ctx context.Context, req ClusterRequest) (ClusterAnswer, error) {
	n.m.mu.Lock()
	down := n.m.down
	var to *Server
	for _, s := range n.m.joined[req.Target] {
		if s != n.srv {
			to = s
		}
	}
	n.m.mu.Unlock()
	if down {
		return ClusterAnswer{}, fmt.Errorf("memCluster: %w", ErrClusterUnavailable)
	}
	if to == nil {
		return ClusterAnswer{}, nil // no responders
	}
	answers := make(chan ClusterAnswer, 1)
	to.IntroduceFromCluster(req, func(a ClusterAnswer) { answers <- a })
	select {
	case a := <-answers:
		return a, nil
	case <-ctx.Done():
		return ClusterAnswer{}, ctx.Err()
	}
}

// twoNodes runs two servers of cfg that share their devices through
// mesh, a memCluster.
func twoNodes(t *testing.T, cfg Config) (n1, n2 *testServer, mesh *memCluster) {
	t.Helper()
	n1, n2, mesh = newTestServer(t, "127.0.0.1", cfg), newTestServer(t, "127.0.0.1", cfg), new(memCluster)
	n1.rv.SetCluster(mesh.node(n1.rv))
	n2.rv.SetCluster(mesh.node(n2.rv))
	return n1, n2, mesh
}

func (m *memCluster) joinedAt(peer identity.PeerID) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.joined[peer])
}

// With RequireConsent, a device at another node that does not ask for
// consent is answered as an offline one, as at the asker's own node.
func TestRequireConsentAcrossCluster(t *testing.T) {
	n1, n2, _ := twoNodes(t, Config{RequireConsent: true})
	asker := n1.dial(t, TransportH3, newIdentity(t))
	old := n2.dial(t, TransportH2, newIdentity(t), func(c *ClientConfig) {
		c.announce = &Protocol{Version: ProtocolVersion, Capabilities: CapObserved}
	})
	_, offline, _ := lookup(t, asker, newIdentity(t).PeerID())
	c, e, _ := lookup(t, asker, old.cfg.Identity.PeerID())
	if c.Observed.IsValid() {
		t.Errorf("the asker got the device's address: %+v", c)
	}
	sameAsOffline(t, "a device without consent at another node", e, offline)
}

// Devices at two nodes of a cluster find each other: the target is
// asked at its node, and on acceptance both get each other's candidates;
// a decline and an offline peer are answered as on one node; an
// unreachable cluster gets its own refusal, and the session goes on.
func TestClusterIntroduction(t *testing.T) {
	const timeout = 500 * time.Millisecond
	cfg := Config{ConsentTimeout: timeout}
	n1, n2, mesh := twoNodes(t, cfg)

	askerCands := make(chan Candidates, 4)
	asker := n1.dial(t, TransportH3, newIdentity(t), func(c *ClientConfig) { c.OnCandidates = func(m Candidates) { askerCands <- m } })
	yes, no := true, false
	target := n2.consenting(t, TransportH3, &yes)
	if n := mesh.joinedAt(target.cfg.Identity.PeerID()); n != 1 {
		t.Fatalf("the target joined the cluster %d times, want once", n)
	}

	c, e, _ := lookup(t, asker, target.cfg.Identity.PeerID())
	if e != nil || !c.Initiator || c.Observed != target.Observed() || c.Relay {
		t.Fatalf("accepted across nodes: %+v, %v", c, e)
	}
	if r := target.request(t); r.Peer != asker.cfg.Identity.PeerID() {
		t.Errorf("the target was asked for %s", r.Peer.Short())
	}
	select {
	case m := <-target.cands:
		if m.Initiator || m.Peer != asker.cfg.Identity.PeerID() || m.Observed != asker.Observed() {
			t.Errorf("the target got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the target got no candidates")
	}

	_, offline, _ := lookup(t, asker, newIdentity(t).PeerID())
	if offline == nil || offline.Code != ErrCodePeerNotFound {
		t.Fatalf("offline across the cluster: %v", offline)
	}
	decliner := n2.consenting(t, TransportH2, &no)
	_, e, _ = lookup(t, asker, decliner.cfg.Identity.PeerID())
	sameAsOffline(t, "a decline at another node", e, offline)
	silent := n2.consenting(t, TransportH2, nil)
	_, e, took := lookup(t, asker, silent.cfg.Identity.PeerID())
	sameAsOffline(t, "no answer at another node", e, offline)
	if took < timeout {
		t.Errorf("no answer refused after %v, before the consent timeout %v", took, timeout)
	}

	mesh.mu.Lock()
	mesh.down = true
	mesh.mu.Unlock()
	_, e, _ = lookup(t, asker, target.cfg.Identity.PeerID())
	if e == nil || e.Code != ErrCodeRateLimited || e.Message != msgClusterUnavailable {
		t.Errorf("with the cluster down: %v, want %q", e, msgClusterUnavailable)
	}
	if n := n1.rv.Stats().ClusterUnavailable.Load(); n != 1 {
		t.Errorf("ClusterUnavailable = %d, want 1", n)
	}
	// Local service goes on.
	local := n1.consenting(t, TransportH2, &yes)
	if _, e, _ := lookup(t, asker, local.cfg.Identity.PeerID()); e != nil {
		t.Errorf("a local introduction with the cluster down: %v", e)
	}

	target.Close()
	waitFor(t, "the target's session to leave the cluster", func() bool { return mesh.joinedAt(target.cfg.Identity.PeerID()) == 0 })
}

// A target that leaves while a device at another node waits for its
// answer is answered at once, as on one node; one that changes clusters
// (a reload with new cluster options) is reachable through the new one
// only.
func TestClusterTargetLeavesAndMoves(t *testing.T) {
	cfg := Config{ConsentTimeout: 5 * time.Second}
	n1, n2, mesh := twoNodes(t, cfg)
	asker := n1.dial(t, TransportH2, newIdentity(t))
	target := n2.consenting(t, TransportH2, nil)

	errs := make(chan *Error, 1)
	go func() { _, e, _ := lookup(t, asker, target.cfg.Identity.PeerID()); errs <- e }()
	target.request(t)
	start := time.Now()
	target.Close()
	if e := <-errs; e == nil || e.Code != ErrCodePeerNotFound {
		t.Errorf("the target left: %v", e)
	}
	if took := time.Since(start); took >= cfg.ConsentTimeout {
		t.Errorf("the target left, and the asker was told after %v", took)
	}

	other := n2.consenting(t, TransportH2, nil)
	var next memCluster
	n2.rv.SetCluster(next.node(n2.rv))
	if mesh.joinedAt(other.cfg.Identity.PeerID()) != 0 || next.joinedAt(other.cfg.Identity.PeerID()) != 1 {
		t.Errorf("after SetCluster: joined the old cluster %d times, the new one %d, want 0 and 1",
			mesh.joinedAt(other.cfg.Identity.PeerID()), next.joinedAt(other.cfg.Identity.PeerID()))
	}
	n2.rv.SetCluster(nil)
	if next.joinedAt(other.cfg.Identity.PeerID()) != 0 {
		t.Error("SetCluster(nil) left the device in the cluster")
	}
}

// Requests from other nodes are held under the target's limits: the
// requests waiting for one device's answer stay within its pending
// slots, whichever node asks, and the rest are refused as busy.
func TestClusterRequestsBoundedPerTarget(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{ConsentTimeout: 5 * time.Second, IntroductionRate: 1e6, IntroductionBurst: 1e6})
	target := ts.consenting(t, TransportH2, nil)
	var mu sync.Mutex
	got := map[ClusterStatus]int{}
	const n = 3 * maxPendingPerTarget
	var wg sync.WaitGroup
	wg.Add(n)
	for range n {
		ts.rv.IntroduceFromCluster(ClusterRequest{Target: target.cfg.Identity.PeerID(), Asker: Candidates{Peer: newIdentity(t).PeerID()}},
			func(a ClusterAnswer) { mu.Lock(); got[a.Status]++; mu.Unlock(); wg.Done() })
	}
	mu.Lock()
	busy := got[ClusterBusy]
	mu.Unlock()
	if busy != n-maxPendingPerTarget {
		t.Errorf("%d of %d requests from other nodes refused at once, want %d", busy, n, n-maxPendingPerTarget)
	}
	target.Close() // answers those that wait
	wg.Wait()
	if got[ClusterNotFound] != maxPendingPerTarget {
		t.Errorf("%d answered not found when the target left, want %d", got[ClusterNotFound], maxPendingPerTarget)
	}
}
