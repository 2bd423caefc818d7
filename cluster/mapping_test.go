package cluster

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/rendezvous"
)

// The NAT mapping each device reported (FrameMapping) travels with an
// introduction across nodes both ways, as on one node: two devices that
// both map per destination learn it of each other and skip punching.
func TestMappingAcrossNodes(t *testing.T) {
	_, _, _, asker, target := twoNodes(t)
	if !asker.Protocol().Capabilities.Has(rendezvous.CapMapping) {
		t.Fatal("the node does not take a device's mapping")
	}

	askerNAT := rendezvous.Mapping{Mapping: rendezvous.MappingDependent}
	targetNAT := rendezvous.Mapping{Mapping: rendezvous.MappingDependent, Filtering: rendezvous.FilteringAddressPortDependent}
	if err := target.SetMapping(targetNAT); err != nil {
		t.Fatal(err)
	}
	// The target's frames are handled in order: once a lookup of its own
	// is answered, its node holds its mapping.
	if _, e := target.introduce(t, sptest.NewIdentity(t).PeerID()); e == nil || e.Code != rendezvous.ErrCodePeerNotFound {
		t.Fatalf("the target's lookup of nobody: %v", e)
	}
	if err := asker.SetMapping(askerNAT); err != nil {
		t.Fatal(err)
	}

	c, e := asker.introduce(t, target.id.PeerID())
	if e != nil {
		t.Fatalf("across nodes: %v", e)
	}
	if c.PeerNAT != targetNAT {
		t.Errorf("the asker learned the target's mapping as %+v, want %+v", c.PeerNAT, targetNAT)
	}
	select {
	case m := <-target.cands:
		if m.Peer != asker.id.PeerID() || m.PeerNAT != askerNAT {
			t.Errorf("the target got %+v, want the asker's mapping %+v", m, askerNAT)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the target got no candidates")
	}
}

// A node takes "nat" only from a node that announced capMapping, and a
// value it does not know as unknown; an unknown mapping is not sent.
func TestMappingInMessages(t *testing.T) {
	peer := sptest.NewIdentity(t).PeerID()
	c := fromCandidates(rendezvous.Candidates{Peer: peer, PeerNAT: rendezvous.Mapping{Mapping: rendezvous.MappingIndependent, Filtering: rendezvous.FilteringIndependent}})
	data, err := json.Marshal(&request{V: Version, Caps: capabilities, Node: "https://n", NodeID: "x", Asker: c})
	if err != nil {
		t.Fatal(err)
	}
	var r request
	if err := r.decode(data); err != nil {
		t.Fatal(err)
	}
	if got := r.Asker.rendezvous(r.Caps).PeerNAT; got != (rendezvous.Mapping{Mapping: rendezvous.MappingIndependent, Filtering: rendezvous.FilteringIndependent}) {
		t.Errorf("round trip: %+v", got)
	}
	if got := r.Asker.rendezvous(0).PeerNAT; got != (rendezvous.Mapping{}) {
		t.Errorf("taken from a node without capMapping: %+v", got)
	}
	later := candidates{Peer: peer, NAT: &natMapping{Mapping: 9, Filtering: 200}}
	if got := later.rendezvous(capMapping).PeerNAT; got != (rendezvous.Mapping{}) {
		t.Errorf("values this version does not know: %+v, want unknown", got)
	}
	if none := fromCandidates(rendezvous.Candidates{Peer: peer}); none.NAT != nil {
		t.Errorf("an unknown mapping is sent: %+v", none.NAT)
	}
}
