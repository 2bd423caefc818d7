package natlab

import (
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/peer"
)

// A cluster in the lab (docs/CLUSTER.md): three nodes, each a Caddy on a
// public host of its own, behind one name (sp.cluster.test, which the
// devices resolve to every node through peer.Config.LookupNetIP: the lab
// has no DNS), each also reachable at its own name (node-N.cluster.test,
// its relay node URL). Node 1 embeds the NATS server (netsody_nats) that
// every node connects to; they share one storage directory, and so one
// internal CA.
const (
	labClusterName  = "sp.cluster.test"
	labClusterToken = "lab-cluster-token-0123456789"
	labNodeCaddy    = `{
	admin {IP}:2019
	https_port 443
	http_port 80
	skip_install_trust
	storage file_system {DIR}/data
	grace_period 2s
	auto_https disable_redirects
{NATS}	netsody {
		cluster {
			name labcluster
			url https://{NODE}
			nats nats://{NATS_IP}:4222
			nats_token ` + labClusterToken + `
		}
	}
}

https://{IP}, https://` + labClusterName + `, https://{NODE} {
	tls internal
	netsody_superpeer
}
`
)

// startLabCluster starts the three nodes and waits until each is
// connected to NATS. It returns them and the names the devices resolve.
func startLabCluster(t *testing.T, lab *Lab) ([]*labSuperPeer, map[string][]netip.Addr) {
	t.Helper()
	bin := e2eCaddyBinaryTags(t, t.TempDir(), "netsody_natsembed")
	dir := t.TempDir()
	var nodes []*labSuperPeer
	hosts := map[string][]netip.Addr{}
	var natsIP netip.Addr
	for i := range 3 {
		h, err := lab.AddPublicHost("node" + strconv.Itoa(i+1))
		if err != nil {
			t.Fatal(err)
		}
		name := "node-" + strconv.Itoa(i+1) + ".cluster.test"
		hosts[name] = []netip.Addr{h.Addr()}
		hosts[labClusterName] = append(hosts[labClusterName], h.Addr())
		nats := ""
		if i == 0 {
			natsIP = h.Addr()
			nats = "\tnetsody_nats {\n\t\tlisten " + h.Addr().String() + ":4222\n\t\ttoken " + labClusterToken + "\n\t}\n"
		}
		caddyfile := strings.NewReplacer("{DIR}", dir, "{NATS}", nats, "{NODE}", name, "{NATS_IP}", natsIP.String(),
			"{IP}", h.Addr().String()).Replace(labNodeCaddy)
		sp := &labSuperPeer{host: h, url: "https://" + name, dir: dir, logs: &testcaddy.SyncBuffer{}, done: make(chan struct{})}
		sp.run(t, bin, "Caddyfile-"+strconv.Itoa(i+1), caddyfile) // node 1 alone first: it makes the CA
		nodes = append(nodes, sp)
	}
	for i, n := range nodes {
		for deadline := time.Now().Add(20 * time.Second); !n.clusterConnected(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("node %d not connected to NATS within 20s", i+1)
			}
		}
	}
	return nodes, hosts
}

// clusterConnected reports whether the node's metric
// netsody_superpeer_cluster_connected is 1, from its admin endpoint
// ({IP}:2019), asked from inside its namespace: the connection is made
// on the namespace's thread (Host.Do), and read there.
func (sp *labSuperPeer) clusterConnected() bool {
	connected := false
	sp.host.Do(func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(sp.host.Addr(), 2019).String(), 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET /metrics HTTP/1.0\r\nHost: "+sp.host.Addr().String()+":2019\r\n\r\n"); err != nil {
			return err
		}
		body, err := io.ReadAll(io.LimitReader(c, 4<<20))
		connected = strings.Contains(string(body), "\nnetsody_superpeer_cluster_connected 1\n")
		return err
	})
	return connected
}

// firstAt returns hosts with the cluster's name resolving to node first
// on, as round-robin DNS answers different clients.
func firstAt(hosts map[string][]netip.Addr, first int) map[string][]netip.Addr {
	out := map[string][]netip.Addr{}
	for k, v := range hosts {
		out[k] = v
	}
	all := hosts[labClusterName]
	out[labClusterName] = append(append([]netip.Addr(nil), all[first:]...), all[:first]...)
	return out
}

// TestE2EClusterRelay: the NAT lab's symmetric pair (no direct path) with
// its devices registered at different nodes of a cluster, A at node 1
// and B at node 2 through the one name. A relays through B's node,
// registered there for the relay (a temporary super peer in its status),
// and both transfers' SHA-256 match at B and back at A.
func TestE2EClusterRelay(t *testing.T) {
	lab := NewForTest(t, Options{Name: "clrelay", DisableIPv6: true})
	nodes, hosts := startLabCluster(t, lab)
	ha, hb, _, _ := buildE2ECase(t, lab, 0, e2eCase{a: Symmetric, b: Symmetric})
	roots := []string{nodes[0].rootFile()}
	sps := []string{"https://" + labClusterName}

	b := startDevice(t, hb, e2eDeviceConfig{Role: "echo", SuperPeers: sps, RootCAs: roots, Hosts: firstAt(hosts, 1)})
	readyB, err := b.wait("ready", 0, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	a := startDevice(t, ha, e2eDeviceConfig{
		Role: "dial", SuperPeers: sps, RootCAs: roots, Hosts: firstAt(hosts, 0),
		Peer: readyB.PeerID, Size: e2eSize, Want: string(peer.PathRelay), Within: e2eRelaySettle, Settle: e2eRelaySettle,
	})
	out, err := a.wait("result", 0, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	node2 := nodes[1].url
	if out.Path.Kind != string(peer.PathRelay) || out.Path.SuperPeer != node2 {
		t.Errorf("A's path: %s, want relayed through B's node %s", out.Path, node2)
	}
	held := false
	for _, st := range out.SuperPeers {
		held = held || st.Temporary && st.URL == node2 && st.Connected && st.ForPeers == readyB.PeerID
	}
	if !held {
		t.Errorf("A's super peers: %+v, want %s held for B", out.SuperPeers, node2)
	}
	for i, tr := range out.Transfers {
		atB := false
		for n := range len(out.Transfers) {
			if s, err := b.wait("stream", n, 10*time.Second); err == nil && s.SHA256 == tr.Sent && s.Bytes == e2eSize {
				atB = true
			}
		}
		if !atB || tr.Echoed != tr.Sent || tr.Bytes != e2eSize {
			t.Errorf("transfer %d: SHA-256 at B matches: %v; echo back at A: %d bytes, matches: %v", i+1, atB, tr.Bytes, tr.Echoed == tr.Sent)
		}
	}
	var steps []string
	for _, s := range out.Timeline {
		steps = append(steps, s.At.Round(time.Millisecond).String()+" "+s.Path.String())
	}
	t.Logf("A's path: %s", strings.Join(steps, " → "))
}
