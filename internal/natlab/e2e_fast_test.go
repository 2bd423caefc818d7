package natlab

import (
	"fmt"
	"testing"

	"github.com/netsody/superpeer/relay"
)

// blockFastPath drops, at each NAT, what its devices send to the super
// peers' fast-path port (relay.DefaultFastPathPort, which the lab's Caddy
// serves): a firewall that lets UDP 443 through and nothing else of the
// super peer's. The devices must end on HTTP/3 datagrams.
func blockFastPath(t *testing.T, nats ...*NAT) {
	t.Helper()
	ruleset := fmt.Sprintf(`
table inet natlab_nofast {
	chain forward {
		type filter hook forward priority filter - 1; policy accept;
		oifname "wan" udp dport %d drop
	}
}
`, relay.DefaultFastPathPort)
	for _, n := range nats {
		if n == nil {
			continue
		}
		if err := applyNFT(n.router.ns, ruleset); err != nil {
			t.Fatalf("blocking the fast path at %s: %v", n.router.name, err)
		}
	}
}
