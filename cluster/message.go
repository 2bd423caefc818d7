package cluster

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

// The messages between nodes (docs/CLUSTER.md, "Messages"): JSON objects
// of at most maxMessage bytes, each with the sender's protocol version
// and capabilities. A receiver ignores fields it does not know, and uses
// a capability only if the other end announced it; a change that older
// nodes cannot ignore goes to a new subject (subjectVersion).

const (
	// Version is the cluster protocol version this package speaks.
	Version = 1
	// subjectVersion names the subjects of Version 1; a node that speaks
	// a later, incompatible version subscribes to both during an upgrade.
	subjectVersion = "v1"
	// capMapping: the node sends and reads a device's NAT mapping in
	// candidates ("nat"), issue 13's FrameMapping, so that two devices
	// that both map per destination skip punching across nodes as on
	// one. A receiver takes "nat" only from a sender that announced it.
	capMapping = 1 << 0
	// capabilities are this node's.
	capabilities = capMapping
)

// Reply statuses.
const (
	statusAccepted = "accepted"
	statusNotFound = "not_found"
	statusBusy     = "busy"
)

// request is an introduction request: subject peerSubject(target).
type request struct {
	V      int        `json:"v"`
	Caps   uint64     `json:"caps"`
	Node   string     `json:"node"`    // the asking node's public URL
	NodeID string     `json:"node_id"` // the asking node's connection, for per-node bounds
	Asker  candidates `json:"asker"`
	Relay  bool       `json:"relay,omitempty"`
}

// spent tells the other nodes holding a device that this node spent one
// of its introductions (rendezvous.ClusterSpender): a publish on the
// device's subject, without a reply subject, which nodes of earlier
// versions drop unread.
type spent struct {
	V      int    `json:"v"`
	Caps   uint64 `json:"caps"`
	NodeID string `json:"node_id"` // the spending node's connection: it skips its own
	Spent  int    `json:"spent"`   // introductions spent: 1
}

func (m *spent) decode(data []byte) error {
	if err := decode(data, m); err != nil {
		return err
	}
	if m.V < 1 {
		return fmt.Errorf("version %d", m.V)
	}
	if len(m.NodeID) == 0 || len(m.NodeID) > maxNodeID {
		return fmt.Errorf("a node ID of %d bytes", len(m.NodeID))
	}
	if m.Spent != 1 {
		return fmt.Errorf("%d introductions spent, want 1", m.Spent)
	}
	return nil
}

// reply answers a request.
type reply struct {
	V      int         `json:"v"`
	Caps   uint64      `json:"caps"`
	Node   string      `json:"node"` // the answering node's public URL: a relay candidate
	Status string      `json:"status"`
	Reason string      `json:"reason,omitempty"`
	Target *candidates `json:"target,omitempty"`
}

// candidates is how to reach a device, as its node sees it.
type candidates struct {
	Peer     identity.PeerID  `json:"peer"`
	RTT      uint64           `json:"rtt_us,omitempty"`
	Observed netip.AddrPort   `json:"observed"`
	Local    []netip.AddrPort `json:"local,omitempty"`
	// NAT is the device's NAT as it reported it (FrameMapping); absent
	// while unknown. Sent with capMapping.
	NAT *natMapping `json:"nat,omitempty"`
}

// natMapping is rendezvous.Mapping in a message: the numbers of
// PROTOCOL.md's FrameMapping, values a receiver does not know being
// unknown.
type natMapping struct {
	Mapping   uint8 `json:"mapping"`
	Filtering uint8 `json:"filtering,omitempty"`
}

func fromCandidates(c rendezvous.Candidates) candidates {
	out := candidates{Peer: c.Peer, RTT: uint64(c.PeerRTT.Microseconds()), Observed: c.Observed, Local: c.LocalAddrs}
	if c.PeerNAT != (rendezvous.Mapping{}) {
		out.NAT = &natMapping{Mapping: uint8(c.PeerNAT.Mapping), Filtering: uint8(c.PeerNAT.Filtering)}
	}
	return out
}

// check refuses what a node may not say of a device: more local
// addresses than a device may announce, or a peer RTT beyond reason.
func (c *candidates) check() error {
	if c.Peer.IsZero() {
		return fmt.Errorf("no peer ID")
	}
	if len(c.Local) > rendezvous.MaxAddrs {
		return fmt.Errorf("%d local addresses, at most %d allowed", len(c.Local), rendezvous.MaxAddrs)
	}
	if c.RTT > uint64(time.Hour.Microseconds()) {
		return fmt.Errorf("an RTT of %d µs", c.RTT)
	}
	return nil
}

// rendezvous converts c from a sender that announced caps: its NAT
// mapping is taken only with capMapping.
func (c *candidates) rendezvous(caps uint64) rendezvous.Candidates {
	out := rendezvous.Candidates{Peer: c.Peer, PeerRTT: time.Duration(c.RTT) * time.Microsecond, Observed: c.Observed, LocalAddrs: c.Local}
	if c.NAT != nil && caps&capMapping != 0 {
		out.PeerNAT = rendezvous.Mapping{Mapping: rendezvous.NATMapping(c.NAT.Mapping), Filtering: rendezvous.NATFiltering(c.NAT.Filtering)}.Known()
	}
	return out
}

// decode decodes a message of at most maxMessage bytes into v.
func decode(data []byte, v any) error {
	if len(data) > maxMessage {
		return fmt.Errorf("a message of %d bytes, more than %d", len(data), maxMessage)
	}
	return json.Unmarshal(data, v)
}

func (r *request) decode(data []byte) error {
	if err := decode(data, r); err != nil {
		return err
	}
	if r.V < 1 {
		return fmt.Errorf("version %d", r.V)
	}
	if len(r.NodeID) == 0 || len(r.NodeID) > maxNodeID {
		return fmt.Errorf("a node ID of %d bytes", len(r.NodeID))
	}
	return r.Asker.check()
}

func (r *reply) decode(data []byte) error {
	if err := decode(data, r); err != nil {
		return err
	}
	if r.V < 1 {
		return fmt.Errorf("version %d", r.V)
	}
	if r.Status == statusAccepted {
		if r.Target == nil {
			return fmt.Errorf("accepted without the target's candidates")
		}
		return r.Target.check()
	}
	return nil
}
