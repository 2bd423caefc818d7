package rendezvous

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go/quicvarint"
)

// namedNode is a memNode that names its node as package cluster does:
// the asker's URL in the request, and answer as the answering node's.
type namedNode struct {
	memNode
	url    string
	answer atomic.Pointer[string]
}

func newNamedNode(m *memCluster, srv *Server, url, answer string) *namedNode {
	n := &namedNode{memNode: memNode{m: m, srv: srv}, url: url}
	n.answer.Store(&answer)
	return n
}

func (n *namedNode) Introduce(ctx context.Context, req ClusterRequest) (ClusterAnswer, error) {
	req.Node = n.url
	a, err := n.memNode.Introduce(ctx, req)
	a.Node = *n.answer.Load()
	return a, err
}

// The relay node extension round-trips; one that is not an https URL
// of a host, or too long, makes the frame malformed.
func TestRelayNodeFrame(t *testing.T) {
	peer := newIdentity(t).PeerID()
	want := Candidates{Peer: peer, Observed: netip.MustParseAddrPort("192.0.2.1:1"), RelayNode: "https://sp-2.example.com:8443"}
	var got Candidates
	if err := got.decode(want.frame()[frameHeaderLen:]); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	base := (&Candidates{Peer: peer}).frame()[frameHeaderLen:]
	for _, bad := range []string{"http://sp.example.com", "https://", "https://u:p@sp.example.com", "https://sp.example.com/x",
		"https://sp.example.com?q", "sp.example.com", "https://" + strings.Repeat("a", MaxRelayNodeURL) + ".com"} {
		in := append(append(append([]byte(nil), base...), extCandRelayNode), quicvarint.Append(nil, uint64(len(bad)))...)
		in = append(in, bad...)
		var c Candidates
		if err := c.decode(in); !errors.Is(err, errMalformed) {
			t.Errorf("relay node %q: err = %v, want malformed", bad, err)
		}
	}
}

// Across nodes, each device that announced CapRelayNode learns the
// other's node: the asker the target's, the target the asker's. A
// device that did not is told none, and neither is told a node that is
// not a URL a device may dial.
func TestClusterNamesRelayNode(t *testing.T) {
	cfg := Config{ConsentTimeout: 2 * time.Second}
	n1, n2 := newTestServer(t, "127.0.0.1", cfg), newTestServer(t, "127.0.0.1", cfg)
	var mesh memCluster
	const url1, url2 = "https://sp-1.example.com", "https://sp-2.example.com:8443"
	node1 := newNamedNode(&mesh, n1.rv, url1, url2)
	n1.rv.SetCluster(node1)
	n2.rv.SetCluster(newNamedNode(&mesh, n2.rv, url2, url1))
	yes := true
	target := n2.consenting(t, TransportH3, &yes)
	targetCands := func() Candidates {
		t.Helper()
		select {
		case c := <-target.cands:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("the target got no candidates")
			return Candidates{}
		}
	}

	asker := n1.dial(t, TransportH3, newIdentity(t))
	c, e, _ := lookup(t, asker, target.cfg.Identity.PeerID())
	if e != nil || c.RelayNode != url2 || c.Relay {
		t.Fatalf("the asker got %+v, %v; want relay node %s", c, e, url2)
	}
	if c := targetCands(); c.RelayNode != url1 {
		t.Errorf("the target got relay node %q, want the asker's node %s", c.RelayNode, url1)
	}

	old := n1.dial(t, TransportH3, newIdentity(t), func(c *ClientConfig) {
		c.announce = &Protocol{Version: ProtocolVersion, Capabilities: supportedCaps &^ CapRelayNode}
	})
	if c, e, _ := lookup(t, old, target.cfg.Identity.PeerID()); e != nil || c.RelayNode != "" {
		t.Errorf("a device without CapRelayNode got %+v, %v", c, e)
	}
	targetCands()

	for _, hostile := range []string{"http://sp-2.example.com", "https://" + strings.Repeat("a", MaxRelayNodeURL), "https://x/../y"} {
		node1.answer.Store(&hostile)
		if c, e, _ := lookup(t, asker, target.cfg.Identity.PeerID()); e != nil || c.RelayNode != "" {
			t.Errorf("node named %q: the asker got %+v, %v", hostile, c, e)
		}
		targetCands()
	}
}
