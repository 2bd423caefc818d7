package peer

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/netsody/superpeer/rendezvous"
)

// Status is a device's view of its super peers and peers: "which super
// peers do I reach?", and "am I relayed or direct?". Its JSON is what
// netsody-peer serves on /status.
type Status struct {
	PeerID     string            `json:"peer_id"`
	LocalAddr  string            `json:"local_addr"` // the first socket's
	Sockets    []string          `json:"sockets"`    // one per address family
	SuperPeers []SuperPeerStatus `json:"super_peers"`
	Peers      []PeerStatus      `json:"peers"`
	Refusals   Refusals          `json:"refusals"`
	// NAT is what the device learned of its NAT's behaviour (mapping.go):
	// "why am I relayed?" starts here.
	NAT MappingStatus `json:"nat"`
}

// Refusals count what the device's accept policy refused since it
// started: how much strangers ask of it, and whether real peers are
// turned away for want of room (Busy).
type Refusals struct {
	Declined  uint64 `json:"declined"`   // requests declined and candidates ignored, for any reason
	Busy      uint64 `json:"busy"`       // requests declined: every Accept slot and queue place taken
	TimedOut  uint64 `json:"timed_out"`  // Accept calls without an answer within AcceptTimeout
	Cooling   uint64 `json:"cooling"`    // requests declined without asking: the peer's last call timed out
	Dropped   uint64 `json:"dropped"`    // requests unanswered: a super peer sent more than maxAnswersQueued
	Handshake uint64 `json:"handshakes"` // QUIC handshake packets dropped from addresses no accepted peer's
}

// SuperPeerStatus is the state of the device's session with one super
// peer.
type SuperPeerStatus struct {
	URL       string  `json:"url"`
	Connected bool    `json:"connected"`
	RTTMillis float64 `json:"rtt_ms"`              // smoothed, from the registration on
	Family    string  `json:"family,omitempty"`    // "ipv4" or "ipv6"
	Transport string  `json:"transport,omitempty"` // "h3" or "h2"
	// TransportReason says why Transport is "h2": HTTP/3 stopped
	// answering, or lost the race when the session opened.
	TransportReason string `json:"transport_reason,omitempty"`
	Observed        string `json:"observed,omitempty"` // this device's address as the super peer sees it
	Error           string `json:"error,omitempty"`    // why it is not connected
	Draining        bool   `json:"draining,omitempty"` // it drains: no relay goes through it (FrameMove)
	// STUNPort is the super peer's STUN port (FrameRegistered), 0 if it
	// named none; STUNObserved is this device's address as the last
	// Binding response from it named it, and STUNRTTMillis that request's
	// round trip.
	STUNPort      uint16  `json:"stun_port,omitempty"`
	STUNObserved  string  `json:"stun_observed,omitempty"`
	STUNRTTMillis float64 `json:"stun_rtt_ms,omitempty"`
	// Temporary says that it is a relay node, not one of
	// Config.SuperPeers: a node of a cluster that holds ForPeers, where
	// the device is registered for the life of its relays to them
	// (docs/DEVICE.md, "Which super peer relays"). ForPeers are their
	// peer IDs, in order, comma-separated: a string, so that the status
	// (and SuperPeerEvent) stays comparable.
	Temporary bool   `json:"temporary,omitempty"`
	ForPeers  string `json:"for_peers,omitempty"`
}

// PeerStatus is the current path to one peer.
type PeerStatus struct {
	PeerID    string   `json:"peer_id"`
	Path      PathKind `json:"path"`                 // "direct", "relay" or "none"
	Addr      string   `json:"addr,omitempty"`       // the direct address
	SuperPeer string   `json:"super_peer,omitempty"` // the relaying super peer
	Transport string   `json:"transport,omitempty"`  // the relay leg's transport
	// RelayTransport is how relayed packets travel now: "fast" (the
	// relay's UDP fast path), "h3" or "h2" (the leg's own).
	RelayTransport RelayTransport `json:"relay_transport,omitempty"`
	// RelayReason says why RelayTransport is not a better one, when it
	// moved there by measurement (Path.Why).
	RelayReason string  `json:"relay_reason,omitempty"`
	RTTMillis   float64 `json:"rtt_ms,omitempty"` // of the direct path
	// Reason says why the path is what it is, when the device chose it
	// for a reason (PathReasonBothDependent).
	Reason string `json:"reason,omitempty"`
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// status is the super peer's entry of Status.SuperPeers.
func (sp *superPeer) status() SuperPeerStatus {
	s := SuperPeerStatus{URL: sp.url, Temporary: sp.relayNode}
	sp.mu.Lock()
	sess, lastErr := sp.sess, sp.lastErr
	s.Draining = sp.draining
	why := sp.transportWhy
	sp.mu.Unlock()
	switch {
	case sess != nil:
		s.Connected = true
		s.RTTMillis = millis(sess.RTT())
		s.Transport = string(sess.Transport())
		if sess.Transport() == rendezvous.TransportH2 {
			s.TransportReason = why
		}
		s.Observed = sess.Observed().String()
		s.STUNPort = sess.STUNPort()
		if remote, err := netip.ParseAddrPort(sess.RemoteAddr().String()); err == nil {
			s.Family = "ipv6"
			if remote.Addr().Unmap().Is4() {
				s.Family = "ipv4"
			}
		}
	case lastErr != nil:
		s.Error = lastErr.Error()
	}
	if sp.relayNode {
		s.ForPeers = sp.dev.relayNodeHolders(sp)
	}
	if v, ok := sp.dev.mapping.stunView(sp.url); ok && s.Connected {
		s.STUNObserved, s.STUNRTTMillis = v.Mapped.String(), v.RTTMillis
	}
	return s
}

// Status returns the device's current status.
func (d *Device) Status() Status {
	st := Status{PeerID: d.id.String(), LocalAddr: d.LocalAddr().String()}
	for _, a := range d.LocalAddrs() {
		st.Sockets = append(st.Sockets, a.String())
	}
	for _, sp := range d.sps {
		st.SuperPeers = append(st.SuperPeers, sp.status())
	}
	st.SuperPeers = append(st.SuperPeers, d.relayNodeStatus()...)
	peers := d.peerList()
	for _, p := range peers {
		path := p.path()
		ps := PeerStatus{PeerID: p.id.String(), Path: path.Kind, SuperPeer: path.SuperPeer, Transport: string(path.Transport), RelayTransport: path.Relay, RelayReason: path.Why, RTTMillis: millis(path.RTT), Reason: path.Reason}
		if path.Addr.IsValid() {
			ps.Addr = path.Addr.String()
		}
		st.Peers = append(st.Peers, ps)
	}
	slices.SortFunc(st.Peers, func(a, b PeerStatus) int { return strings.Compare(a.PeerID, b.PeerID) })
	r := &d.policy.refusals
	st.Refusals = Refusals{
		Declined: r.declined.Load(), Busy: r.busy.Load(), TimedOut: r.timedOut.Load(),
		Cooling: r.cooling.Load(), Dropped: r.dropped.Load(), Handshake: d.sock.strangers.Load(),
	}
	st.NAT = d.mapping.status()
	return st
}

// peerList returns the peers the device knows now.
func (d *Device) peerList() []*peerState {
	d.mu.Lock()
	defer d.mu.Unlock()
	peers := make([]*peerState, 0, len(d.peers))
	for _, p := range d.peers {
		peers = append(peers, p)
	}
	return peers
}
