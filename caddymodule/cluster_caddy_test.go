package caddymodule_test

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/natstest"
	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/rendezvous"
)

const natsToken = "test-cluster-token-0123456789"

// startNATS runs a real nats-server in the test's process, at port (0:
// any), until the test ends.
func startNATS(t *testing.T, port int) *natsserver.Server { return natstest.Start(t, port, natsToken) }

// clusterCaddyfile is siteCaddyfile's super peer as a node of cluster
// "test" at NATS_URL, calling itself NODE_URL.
const clusterCaddyfile = `{
	admin {ADMIN}
	https_port {PORT}
	http_port {HTTP_PORT}
	skip_install_trust
	storage file_system {DIR}/data
	netsody {
		cluster {
			name test
			url NODE_URL
			nats NATS_URL
			nats_token ` + natsToken + `
		}
	}
}
localhost {
	netsody_superpeer {
		max_sessions MAX
	}
}
`

func clusterConfig(ns *natsserver.Server, nodeURL string, max int) string {
	return strings.NewReplacer("NATS_URL", ns.ClientURL(), "NODE_URL", nodeURL, "MAX", strconv.Itoa(max)).Replace(clusterCaddyfile)
}

// natsConns returns the IDs of the clients connected to ns.
func natsConns(t *testing.T, ns *natsserver.Server) []uint64 {
	t.Helper()
	cz, err := ns.Connz(&natsserver.ConnzOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for _, c := range cz.Conns {
		ids = append(ids, c.Cid)
	}
	return ids
}

// askThroughNATS sends an introduction request for target as another
// node would, and returns the reply's status ("" for no responders).
func askThroughNATS(t *testing.T, nc *nats.Conn, target identity.PeerID) string {
	t.Helper()
	req, _ := json.Marshal(map[string]any{"v": 1, "node": "https://other.example", "node_id": "test",
		"asker": map[string]any{"peer": newIdentity(t).PeerID(), "observed": "198.51.100.9:4000"}})
	msg, err := nc.Request("netsody.test.v1.peer."+target.String(), req, 5*time.Second)
	if err == nats.ErrNoResponders {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	var r struct{ Status string }
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		t.Fatal(err)
	}
	return r.Status
}

// A node of a cluster makes its devices reachable through NATS; a
// reload that keeps the cluster options keeps the NATS connection and
// every session; one that changes them moves the devices to a new
// connection; one that removes them leaves the cluster, keeping the
// sessions.
func TestClusterReloadKeepsConnection(t *testing.T) {
	ns := startNATS(t, 0)
	c := testcaddy.Start(t, clusterConfig(ns, "https://node-1.example", 100))
	// Without consent (no OnRequest), the device is introduced at once:
	// a request through NATS is accepted.
	d := register(t, c, "127.0.0.1", rendezvous.TransportH3)
	nc, err := nats.Connect(ns.ClientURL(), nats.Token(natsToken))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := askThroughNATS(t, nc, d.id.PeerID()); got != "accepted" {
		t.Fatalf("a request through NATS: %q, want accepted", got)
	}
	conns := natsConns(t, ns)
	if len(conns) != 2 {
		t.Fatalf("%d NATS clients, want the node's and the test's", len(conns))
	}

	c.Reload(t, clusterConfig(ns, "https://node-1.example", 200))
	if got := natsConns(t, ns); !same(got, conns) {
		t.Errorf("a reload with the same cluster options: NATS clients %v, were %v", got, conns)
	}
	if err := d.s.Err(); err != nil {
		t.Fatalf("the session ended: %v", err)
	}

	c.Reload(t, clusterConfig(ns, "https://node-1b.example", 200))
	waitForNATS(t, ns, 2)
	if got := natsConns(t, ns); same(got, conns) {
		t.Errorf("a reload with new cluster options kept the NATS connection %v", got)
	}
	if err := d.s.Err(); err != nil {
		t.Fatalf("the session ended: %v", err)
	}
	if got := askThroughNATS(t, nc, d.id.PeerID()); got != "accepted" {
		t.Errorf("after moving to a new connection, a request through NATS: %q, want accepted", got)
	}

	c.Reload(t, testcaddy.Global+"localhost {\n\tnetsody_superpeer\n}\n")
	waitForNATS(t, ns, 1)
	if err := d.s.Err(); err != nil {
		t.Fatalf("the session ended when the cluster was removed: %v", err)
	}
	if got := askThroughNATS(t, nc, d.id.PeerID()); got != "" {
		t.Errorf("without a cluster, the device is still reachable through NATS: %q", got)
	}
}

func same(a, b []uint64) bool { return slices.Equal(a, b) }

// waitForNATS waits for n clients at ns.
func waitForNATS(t *testing.T, ns *natsserver.Server, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(natsConns(t, ns)) != n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("NATS clients %v, want %d", natsConns(t, ns), n)
		}
	}
}
