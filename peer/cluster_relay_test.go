package peer

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/natstest"
	"github.com/netsody/superpeer/internal/testcaddy"
)

// A cluster of three Caddy processes behind one name (docs/CLUSTER.md),
// for the relay between devices at different nodes: each node also
// answers to its own name, node-N.cluster.test, its relay node URL.
const (
	relayClusterName  = "sp.cluster.test"
	relayClusterToken = "relay-cluster-token-0123456789"
	relayNodeCaddy    = testcaddy.NodeGlobal + `	netsody {
		cluster {
			name relaytest
			url https://NODE.cluster.test:{PORT}
			nats NATS_URL
			nats_token ` + relayClusterToken + `
		}
	}
}
localhost, ` + relayClusterName + `, NODE.cluster.test {
	tls internal
	netsody_superpeer
}
`
)

var relayClusterHosts = []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.4")}

// startRelayCluster runs the three nodes on one port, sharing their
// devices through ns.
func startRelayCluster(t *testing.T, ns *natsserver.Server) []*testcaddy.Caddy {
	t.Helper()
	port := testcaddy.FreePort(t)
	data := t.TempDir()
	nodes := make([]*testcaddy.Caddy, len(relayClusterHosts))
	for i, h := range relayClusterHosts {
		cfg := strings.NewReplacer("NATS_URL", ns.ClientURL(), "NODE", "node-"+strconv.Itoa(i+1)).Replace(relayNodeCaddy)
		nodes[i] = testcaddy.StartNodeBinary(t, testcaddy.Binary(t), h.String(), port, data, cfg)
	}
	for i, n := range nodes {
		for deadline := time.Now().Add(20 * time.Second); n.Metrics(t)["netsody_superpeer_cluster_connected"] != 1; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("node %d not connected to NATS within 20s", i+1)
			}
		}
	}
	return nodes
}

// nodeURL is node i's own URL (0-based), its relay node URL.
func nodeURL(nodes []*testcaddy.Caddy, i int) string {
	return "https://node-" + strconv.Itoa(i+1) + ".cluster.test:" + strconv.Itoa(nodes[i].Port)
}

// clusterResolver resolves the cluster's name to every node, starting at
// first (round-robin DNS), and node-N.cluster.test to node N.
func clusterResolver(first int) func(context.Context, string) ([]netip.Addr, error) {
	return func(_ context.Context, host string) ([]netip.Addr, error) {
		if host == relayClusterName {
			var out []netip.Addr
			for i := range relayClusterHosts {
				out = append(out, relayClusterHosts[(first+i)%len(relayClusterHosts)])
			}
			return out, nil
		}
		for i, h := range relayClusterHosts {
			if host == "node-"+strconv.Itoa(i+1)+".cluster.test" {
				return []netip.Addr{h}, nil
			}
		}
		return nil, errors.New("no such host " + host)
	}
}

// clusterRelayDevice is a device of the cluster's one name, resolved
// from node first on, whose direct paths are cut.
func clusterRelayDevice(t *testing.T, nodes []*testcaddy.Caddy, first int, mod ...func(*Config)) *Device {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Identity: id, SuperPeers: []string{"https://" + relayClusterName + ":" + strconv.Itoa(nodes[0].Port)},
		RootCAs: nodes[0].Roots, ListenAddr: "127.0.0.1:0", LookupNetIP: clusterResolver(first),
		cutDirect: func() bool { return true },
	}
	return openDevice(t, cfg, 20*time.Second, mod...)
}

// eventually waits up to within for ok, failing with what() then.
func eventually(t *testing.T, within time.Duration, ok func() bool, what func() string) {
	t.Helper()
	for deadline := time.Now().Add(within); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what())
		}
	}
}

// relayNodeEntry is d's status entry of the relay node at url, if any.
func relayNodeEntry(d *Device, url string) (SuperPeerStatus, bool) {
	for _, s := range d.Status().SuperPeers {
		if s.Temporary && s.URL == url {
			return s, true
		}
	}
	return SuperPeerStatus{}, false
}

// relayAtNode2 connects a to b, at node 2 (1-based), and waits for the
// connection to relay through that node, whose URL it returns too.
func relayAtNode2(t *testing.T, nodes []*testcaddy.Caddy, a, b *Device) (*Conn, string) {
	t.Helper()
	echo(t, b)
	c := dial(t, a, b)
	waitPath(t, c, PathRelay, 30*time.Second)
	node2 := nodeURL(nodes, 1)
	if p := c.Path(); p.SuperPeer != node2 {
		t.Fatalf("relayed through %q, want the target's node %q", p.SuperPeer, node2)
	}
	return c, node2
}

// Two devices registered at different nodes of a cluster, their direct
// path cut, relay through the target's node: the asker learns it from
// its own node's introduction (CapRelayNode), registers there for the
// relay (a temporary super peer in its Status, for the peer), and both
// legs meet on that node. A transfer's SHA-256 matches; the relayed bytes
// never cross NATS; once the peer is forgotten, the relay node goes.
func TestClusterRelayThroughTargetsNode(t *testing.T) {
	ns := natstest.Start(t, 0, relayClusterToken)
	nodes := startRelayCluster(t, ns)
	shortIdle := func(c *Config) { c.PeerIdleTimeout = 3 * time.Second }
	a := clusterRelayDevice(t, nodes, 0, shortIdle) // at node 1
	b := clusterRelayDevice(t, nodes, 1)            // at node 2
	for i, want := range []float64{1, 1, 0} {
		if got := nodes[i].Metrics(t)["netsody_superpeer_devices"]; got != want {
			t.Fatalf("devices at node %d: %v, want %v", i+1, got, want)
		}
	}
	varz := func() *natsserver.Varz {
		v, err := ns.Varz(nil)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := varz()

	c, node2 := relayAtNode2(t, nodes, a, b)
	const size = 4 << 20
	echoTransfer(t, c, size, 16, func(int) {})

	// Status: which node relays, and that A holds it for B alone.
	var relayed PeerStatus
	for _, p := range a.Status().Peers {
		if p.PeerID == b.PeerID().String() {
			relayed = p
		}
	}
	if relayed.Path != PathRelay || relayed.SuperPeer != node2 {
		t.Errorf("A's status of B: %+v, want relayed through %s", relayed, node2)
	}
	st, ok := relayNodeEntry(a, node2)
	if !ok || !st.Connected || st.ForPeers != b.PeerID().String() {
		t.Errorf("A's relay node entry: %+v (found %v), want connected, for B", st, ok)
	}
	if s := a.Status().SuperPeers[0]; s.Temporary {
		t.Errorf("A's configured super peer shows as temporary: %+v", s)
	}
	if got := nodes[1].Metrics(t)["netsody_superpeer_devices"]; got != 2 {
		t.Errorf("devices at node 2 while relaying: %v, want 2 (B, and A for the relay)", got)
	}

	// Relayed bytes never cross NATS: the transfer's 8 MiB (both ways)
	// went through node 2 alone; NATS carried introductions only.
	after := varz()
	if crossed := after.InBytes - before.InBytes; crossed > size/16 {
		t.Errorf("NATS carried %d bytes during a %d-byte relayed transfer", crossed, size)
	}

	// The connection ends; A forgets B when idle, and drops the node.
	c.CloseWithError(0, "")
	eventually(t, 30*time.Second, func() bool { _, held := relayNodeEntry(a, node2); return !held },
		func() string { return "A still holds the relay node" })
	eventually(t, 30*time.Second, func() bool { return nodes[1].Metrics(t)["netsody_superpeer_devices"] == 1 },
		func() string { return "node 2 still holds A's session" })
}

// A device relaying through a node it holds as its relay node, whose own
// session then fails over to that very node (its node dies, and the
// cluster's name leads to the relay node next), holds both sessions
// there side by side: the relay node's registration is for relays only
// (rendezvous.ClientConfig.RelayOnly), so neither replaces the other.
// Before, the two replaced each other on every redial, and the device
// flapped between them. The relay carries on throughout.
func TestClusterRelayNodeIsFailover(t *testing.T) {
	ns := natstest.Start(t, 0, relayClusterToken)
	nodes := startRelayCluster(t, ns)
	a := clusterRelayDevice(t, nodes, 0) // at node 1, then node 2
	b := clusterRelayDevice(t, nodes, 1) // at node 2
	c, node2 := relayAtNode2(t, nodes, a, b)

	nodes[0].Stop(t)
	devices := func(i int) float64 { return nodes[i].Metrics(t)["netsody_superpeer_devices"] }
	eventually(t, 30*time.Second, func() bool { return devices(1) == 3 && a.Status().SuperPeers[0].Connected },
		func() string {
			return "node 2 holds " + strconv.Itoa(int(devices(1))) + " sessions, want 3 (B, A's own, A's for relays)"
		})
	// Settled: no more registrations at node 2 (the two sessions of A
	// replaced each other there every redial, before).
	regs := func() float64 { return nodes[1].Metrics(t)["netsody_superpeer_registrations_total"] }
	before := regs()
	echoTransfer(t, c, 1<<20, 16, func(int) {})
	time.Sleep(2 * time.Second) // a quiet spell, long enough for redials to show
	if n := regs() - before; n != 0 || devices(1) != 3 || devices(2) != 0 {
		t.Errorf("after failing over to its relay node: %v registrations more at node 2, %v sessions there, %v at node 3; want 0, 3, 0",
			n, devices(1), devices(2))
	}
	if p := c.Path(); p.Kind != PathRelay || p.SuperPeer != node2 {
		t.Errorf("path after the failover: %+v, want relayed through %s", p, node2)
	}
}
