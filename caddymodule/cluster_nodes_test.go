package caddymodule_test

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/peer"
)

// clusterName is the one name the three nodes serve, which the devices'
// resolver maps to all of them.
const clusterName = "sp.cluster.test"

// nodeCaddyfile is a node of cluster "test", on {HOST} and the shared
// port, with the shared storage (and so one internal CA).
const nodeCaddyfile = testcaddy.NodeGlobal + `	netsody {
		cluster {
			name test
			url https://NODE.cluster.test:{PORT}
			nats NATS_URL
			nats_token {env.NETSODY_TEST_NATS_TOKEN}
		}
	}
}
localhost, ` + clusterName + ` {
	tls internal
	netsody_superpeer
}
`

// startCluster runs three Caddy processes, the nodes of one cluster, on
// 127.0.0.2, .3 and .4 and one port, sharing their devices through ns.
func startCluster(t *testing.T, ns *natsserver.Server) ([]*testcaddy.Caddy, []netip.Addr) {
	t.Helper()
	return startNodes(t, testcaddy.Binary(t), func(int, netip.Addr) (string, string) { return "", ns.ClientURL() })
}

// clusterHosts are the nodes' addresses.
var clusterHosts = []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.4")}

// startNodes runs bin as the three nodes; nats gives each node's extra
// global options and the NATS URL it connects to.
func startNodes(t *testing.T, bin string, nats func(i int, host netip.Addr) (global, url string)) ([]*testcaddy.Caddy, []netip.Addr) {
	t.Helper()
	port := testcaddy.FreePort(t)
	data := t.TempDir()
	nodes := make([]*testcaddy.Caddy, len(clusterHosts))
	for i, h := range clusterHosts {
		global, url := nats(i, h)
		cfg := strings.NewReplacer("NATS_URL", url, "NODE", "node-"+strconv.Itoa(i+1), "\tnetsody {", global+"\tnetsody {").Replace(nodeCaddyfile)
		nodes[i] = testcaddy.StartNodeBinary(t, bin, h.String(), port, data, cfg, secretsEnv...)
	}
	checkNoSecrets(t, nodes[0])
	return nodes, clusterHosts
}

// The cluster's secrets come from the environment ({env.…} in the
// Caddyfile, expanded at provisioning), so that Caddy's JSON config,
// which its admin endpoint shows and its autosave keeps, holds the
// placeholder, not the secret.
var secretsEnv = []string{"NETSODY_TEST_NATS_TOKEN=" + natsToken, "NETSODY_TEST_ROUTE_PASSWORD=" + routePassword}

const routePassword = "s3cret-route-password"

// checkNoSecrets checks that c's JSON config holds no secret of
// secretsEnv, and the placeholder instead.
func checkNoSecrets(t *testing.T, c *testcaddy.Caddy) {
	t.Helper()
	resp, err := http.Get("http://" + c.Admin + "/config/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), natsToken) || strings.Contains(string(b), routePassword) {
		t.Errorf("a NATS secret is in Caddy's JSON config: %s", b)
	}
	if !strings.Contains(string(b), "{env.NETSODY_TEST_NATS_TOKEN}") {
		t.Errorf("the config holds no placeholder for the NATS token: %s", b)
	}
}

// roundRobin resolves clusterName to every node, starting at first, as
// round-robin DNS answers different clients.
func roundRobin(hosts []netip.Addr, first int) func(context.Context, string) ([]netip.Addr, error) {
	return func(_ context.Context, host string) ([]netip.Addr, error) {
		if host != clusterName {
			return nil, &dnsError{host}
		}
		var out []netip.Addr
		for i := range hosts {
			out = append(out, hosts[(first+i)%len(hosts)])
		}
		return out, nil
	}
}

type dnsError struct{ host string }

func (e *dnsError) Error() string { return "no such host " + e.host }

// clusterDevice starts a device whose super peer is the cluster's one
// name, resolved from the node at first on, accepting allow.
func clusterDevice(t *testing.T, c *testcaddy.Caddy, hosts []netip.Addr, first int, id *identity.Identity, allow identity.PeerID) *peer.Device {
	t.Helper()
	d, err := peer.New(peer.Config{
		Identity: id, SuperPeers: []string{"https://" + clusterName + ":" + strconv.Itoa(c.Port)},
		RootCAs: c.Roots, ListenAddr: "127.0.0.1:0", Allow: []identity.PeerID{allow},
		LookupNetIP: roundRobin(hosts, first),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if st := d.Status().SuperPeers; len(st) > 0 && st[0].Connected {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session with the cluster within 15s: %+v", d.Status().SuperPeers)
		}
	}
}

// directTo reports whether d reaches p directly.
func directTo(d *peer.Device, p identity.PeerID) bool {
	for _, st := range d.Status().Peers {
		if st.PeerID == p.String() && st.Path == peer.PathDirect {
			return true
		}
	}
	return false
}

// devicesAt returns how many devices node c holds.
func devicesAt(t *testing.T, c *testcaddy.Caddy) int {
	return int(c.Metrics(t)["netsody_superpeer_devices"])
}

// Three Caddy processes behind one name share their devices through an
// external nats-server: two devices registered at different nodes find
// each other (with consent, at the target's node), go direct on
// loopback, and a transfer's SHA-256 matches.
func TestClusterThreeNodes(t *testing.T) {
	ns := startNATS(t, 0)
	nodes, hosts := startCluster(t, ns)
	checkAcrossNodes(t, nodes, hosts)
}

// The same with a NATS server embedded in each node (netsody_nats),
// routed to its siblings.
func TestClusterThreeNodesEmbeddedNATS(t *testing.T) {
	nodes, hosts := startEmbeddedCluster(t)
	checkAcrossNodes(t, nodes, hosts)
}

// startEmbeddedCluster starts three nodes, each with its own embedded
// NATS server (netsody_nats) routed to the two others.
func startEmbeddedCluster(t *testing.T) ([]*testcaddy.Caddy, []netip.Addr) {
	t.Helper()
	nodes, hosts, _, _ := embeddedCluster(t, nil)
	return nodes, hosts
}

// natsTLS are the PEM files of the embedded NATS servers' tls option.
type natsTLS struct{ ca, cert, key string }

// embeddedCluster is startEmbeddedCluster, with TLS for clients and
// routes if tls is set; it returns the servers' client and route ports
// too.
func embeddedCluster(t *testing.T, tls *natsTLS) (nodes []*testcaddy.Caddy, hosts []netip.Addr, natsPort, routePort string) {
	t.Helper()
	bin := testcaddy.BinaryWithTags(t, "netsody_natsembed")
	natsPort, routePort = strconv.Itoa(testcaddy.FreePort(t)), strconv.Itoa(testcaddy.FreePort(t))
	nodes, hosts = startNodes(t, bin, func(i int, h netip.Addr) (string, string) {
		var routes []string
		for _, o := range clusterHosts {
			if o != h {
				routes = append(routes, "nats-route://"+o.String()+":"+routePort)
			}
		}
		global := "\tnetsody_nats {\n\t\tlisten " + h.String() + ":" + natsPort + "\n\t\ttoken {env.NETSODY_TEST_NATS_TOKEN}" +
			"\n\t\tcluster_listen " + h.String() + ":" + routePort + "\n\t\troutes " + strings.Join(routes, " ") +
			"\n\t\troute_auth node {env.NETSODY_TEST_ROUTE_PASSWORD}\n"
		if tls == nil {
			return global + "\t}\n", "nats://" + h.String() + ":" + natsPort
		}
		global += "\t\ttls " + tls.cert + " " + tls.key + " " + tls.ca + "\n\t}\n"
		// The cluster block's NATS URL line, and the CA its client verifies the server with.
		return global, "tls://" + h.String() + ":" + natsPort + "\n\t\t\tnats_tls_ca " + tls.ca
	})
	return nodes, hosts, natsPort, routePort
}

// checkAcrossNodes registers two devices at nodes 1 and 2 through the
// cluster's one name, and checks that they connect directly and carry a
// transfer intact.
func checkAcrossNodes(t *testing.T, nodes []*testcaddy.Caddy, hosts []netip.Addr) {
	t.Helper()
	for i, n := range nodes {
		for deadline := time.Now().Add(15 * time.Second); n.Metrics(t)["netsody_superpeer_cluster_connected"] != 1; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("node %d not connected to NATS within 15s", i+1)
			}
		}
	}
	idA, idB := sptest.NewIdentity(t), sptest.NewIdentity(t)
	a := clusterDevice(t, nodes[0], hosts, 0, idA, idB.PeerID())
	b := clusterDevice(t, nodes[0], hosts, 1, idB, idA.PeerID())
	if devicesAt(t, nodes[0]) != 1 || devicesAt(t, nodes[1]) != 1 || devicesAt(t, nodes[2]) != 0 {
		t.Fatalf("devices at the nodes: %d, %d, %d; want 1, 1, 0",
			devicesAt(t, nodes[0]), devicesAt(t, nodes[1]), devicesAt(t, nodes[2]))
	}

	acceptEcho(t, b)
	dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer dcancel()
	conn, err := a.Dial(dctx, b.PeerID())
	if err != nil {
		t.Fatalf("dial across nodes: %v", err)
	}
	defer conn.CloseWithError(0, "")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if directTo(a, b.PeerID()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not direct within 10s: %+v", a.Status().Peers)
		}
	}
	echoTransfer(t, conn, 8<<20, nil)

	m0, m1 := nodes[0].Metrics(t), nodes[1].Metrics(t)
	if m0[`netsody_superpeer_cluster_introductions_total{result="asked"}`] < 1 {
		t.Errorf("node 1 asked no other node: %v", m0)
	}
	if m1[`netsody_superpeer_cluster_served_total{result="served"}`] < 1 {
		t.Errorf("node 2 served no request: %v", m1)
	}
	if m0["netsody_superpeer_cluster_connected"] != 1 {
		t.Errorf("netsody_superpeer_cluster_connected = %v", m0["netsody_superpeer_cluster_connected"])
	}
}
