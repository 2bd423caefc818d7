package cluster

import (
	"testing"
	"time"

	"github.com/netsody/superpeer/rendezvous"
)

// A device registered at two nodes (its own list naming both) has one
// introduction budget, not one per node: introductions spent at one node
// are spent at the other too (spent messages over NATS), so askers at
// the second node find it spent.
func TestIntroductionBudgetSharedAcrossNodes(t *testing.T) {
	ns := startNATS(t, 0)
	cfg := rendezvous.Config{ConsentTimeout: 2 * time.Second, IntroductionRate: 0.001, IntroductionBurst: 2}
	n1, n2 := startNode(t, ns, "test", cfg), startNode(t, ns, "test", cfg)
	yes := true
	target := n1.device(t, &yes)
	// The same device at node 2: a second session of its identity.
	n2.deviceAs(t, target.id, &yes)
	flush(t, n1, n2)

	served := 0
	ask := func(n *node) {
		t.Helper()
		asker := n.device(t, &yes)
		if _, e := asker.introduce(t, target.id.PeerID()); e == nil {
			served++
		} else if e.Code != rendezvous.ErrCodeRateLimited {
			t.Fatalf("introduction: %v, want served or rate limited", e)
		}
	}
	ask(n1)
	ask(n1)
	waitFor(t, "node 2 to hear node 1's two spent introductions", func() bool { return n2.node.Stats().SpentHeard.Load() >= 2 })
	ask(n2)
	ask(n2)
	if served != 2 {
		t.Fatalf("the device was introduced %d times across its two nodes, want its budget of 2", served)
	}
}
