package cluster

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/rendezvous"
)

// FuzzMessages: whatever a node on NATS sends decodes to an error or to
// a request or reply that passes its checks, with no panic.
func FuzzMessages(f *testing.F) {
	peer := sptest.NewIdentity(f).PeerID()
	req, _ := json.Marshal(&request{V: Version, Node: "https://a.example", NodeID: "n", Asker: candidates{Peer: peer, Local: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:1")}}})
	rep, _ := json.Marshal(&reply{V: Version, Status: statusAccepted, Target: &candidates{Peer: peer}})
	f.Add(req)
	f.Add(rep)
	f.Add([]byte(`{"v":1,"node_id":"x","asker":{"peer":"00"}}`))
	sp, _ := json.Marshal(&spent{V: Version, NodeID: "n", Spent: 1})
	f.Add(sp)
	f.Fuzz(func(t *testing.T, data []byte) {
		var r request
		if r.decode(data) == nil {
			if len(r.Asker.Local) > rendezvous.MaxAddrs || r.Asker.Peer.IsZero() || r.NodeID == "" {
				t.Fatalf("a request that should not pass: %+v", r)
			}
		}
		var p reply
		if p.decode(data) == nil && p.Status == statusAccepted && p.Target == nil {
			t.Fatal("accepted without candidates")
		}
		var m spent
		if m.decode(data) == nil && (m.Spent != 1 || m.NodeID == "" || len(m.NodeID) > maxNodeID) {
			t.Fatalf("a spent message that should not pass: %+v", m)
		}
	})
}
