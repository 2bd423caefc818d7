package peer

// The device's NAT mapping behaviour (docs/DEVICE.md, "NAT mapping"):
// learned from its one socket, told to its super peers, and used to skip
// punching that cannot work.
//
// What the device compares. Each destination its socket talks to sees it
// at some public address and port (its NAT's mapping towards that
// destination): every super peer's HTTP/3 session on 443 (the session's
// observed address), and every super peer's STUN port (a Binding
// response's XOR-MAPPED-ADDRESS), which names it in FrameRegistered. Two
// destinations of one address family that see the socket at the same
// address and port make the mapping endpoint-independent; two that see
// it at different ones make it endpoint-dependent (tailscale netcheck's
// MappingVariesByDestIP); fewer than two views leave it unknown (UDP
// blocked, one super peer without STUN). Filtering stays unknown: only
// punching outcomes could show it.
//
// When it checks:
//
//	kick (a session came up, a super peer saw a new address, the local
//	      addresses changed) --> wait mappingSettle --> check
//	no kick for mappingRecheck                     --> check
//
// A check sends a Binding request to every super peer's STUN port, up to
// stunTries times stunRetry apart with one transaction ID, waits for the
// answers (at most stunWait), classifies, and tells each session the
// verdict when it is known and differs from what the session was last
// told (FrameMapping). One goroutine (mappingLoop, started by New, ended
// by Close) does all of it.
//
// Hostile input. Anyone can send the socket a datagram that looks like a
// STUN response. One is taken only when its transaction ID is one the
// device sent, still pending, and it comes from the address that
// request went to; the pending table holds at most maxSTUNPending
// requests. Every other response is dropped and counted; none reaches
// QUIC.

import (
	"context"
	"crypto/rand"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/netsody/superpeer/rendezvous"
	"github.com/netsody/superpeer/stun"
)

// MappingView is one destination's view of the device's socket: the
// address and port its NAT maps the socket to towards there.
type MappingView struct {
	SuperPeer string         `json:"super_peer"` // its URL
	Via       string         `json:"via"`        // "h3" (the session's observed address) or "stun"
	Dest      netip.AddrPort `json:"dest"`       // where the device's packets went
	Mapped    netip.AddrPort `json:"mapped"`     // where they came from, as the destination saw them
	RTTMillis float64        `json:"rtt_ms"`     // of the STUN request, or the session's smoothed RTT
}

// MappingStatus is what the device knows of its NAT's behaviour.
type MappingStatus struct {
	// Mapping is "endpoint-independent", "endpoint-dependent" or
	// "unknown" (rendezvous.NATMapping's names).
	Mapping string `json:"mapping"`
	// Filtering is "unknown": only punching outcomes could show it.
	Filtering string        `json:"filtering"`
	Views     []MappingView `json:"views,omitempty"` // what the last check compared
	CheckedAt time.Time     `json:"checked_at,omitzero"`
	// STUN counts Binding responses: taken, and dropped because they
	// answered nothing the device asked (a stranger's, or too late).
	STUNAnswers uint64 `json:"stun_answers"`
	STUNDropped uint64 `json:"stun_dropped"`
}

// mappingState is the device's side of the classification.
type mappingState struct {
	kick chan struct{} // capacity 1: check again soon

	mu      sync.Mutex // guards the following; no other lock is taken under it
	pending map[stun.TransactionID]*stunTxn
	verdict rendezvous.NATMapping
	views   []MappingView
	checked time.Time
	told    map[*rendezvous.Session]rendezvous.NATMapping // what each session was last told

	answers atomic.Uint64 // responses taken
	dropped atomic.Uint64 // responses that answered nothing pending
}

// stunTxn is a Binding request in flight.
type stunTxn struct {
	to     netip.AddrPort // the super peer's STUN address: the only source of its answer
	sent   time.Time      // its first transmission
	answer chan netip.AddrPort
}

func (m *mappingState) init() {
	m.kick = make(chan struct{}, 1)
	m.pending = make(map[stun.TransactionID]*stunTxn)
	m.told = make(map[*rendezvous.Session]rendezvous.NATMapping)
}

// recheck asks the mapping loop to check again soon.
func (m *mappingState) recheck() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// mapping is the device's verdict now.
func (m *mappingState) mapping() rendezvous.NATMapping {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.verdict
}

// status is the device's MappingStatus.
func (m *mappingState) status() MappingStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return MappingStatus{
		Mapping: m.verdict.String(), Filtering: rendezvous.FilteringUnknown.String(),
		Views: slices.Clone(m.views), CheckedAt: m.checked,
		STUNAnswers: m.answers.Load(), STUNDropped: m.dropped.Load(),
	}
}

// stunView is the last check's STUN view from the super peer at url.
func (m *mappingState) stunView(url string) (MappingView, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, v := range m.views {
		if v.SuperPeer == url && v.Via == "stun" {
			return v, true
		}
	}
	return MappingView{}, false
}

// CheckMapping checks the device's NAT mapping now, once every super
// peer has a session or ctx ends (those without one then give no
// view), and returns what it learned: what `netsody-peer netcheck`
// shows. The device checks on its own too, after sessions come up and
// networks change.
func (d *Device) CheckMapping(ctx context.Context) MappingStatus {
	for _, sp := range d.sps {
		if _, err := sp.wait(ctx); err != nil {
			break // ctx ended: check with the sessions there are
		}
	}
	d.checkMapping()
	return d.mapping.status()
}

// onSTUN takes a STUN response from the socket (stun.IsResponse): the
// answer to a pending request from the address it went to, or dropped.
func (m *mappingState) onSTUN(b []byte, from netip.AddrPort) {
	id, mapped, err := stun.ParseBindingResponse(b)
	if err != nil {
		m.dropped.Add(1)
		return
	}
	m.mu.Lock()
	txn := m.pending[id]
	if txn == nil || txn.to != from {
		m.mu.Unlock()
		m.dropped.Add(1)
		return
	}
	delete(m.pending, id)
	m.mu.Unlock()
	m.answers.Add(1)
	txn.answer <- mapped // buffered, and deleted: one send at most
}

// begin records a request to to, and returns its ID, or false when
// maxSTUNPending are in flight.
func (m *mappingState) begin(to netip.AddrPort) (stun.TransactionID, *stunTxn, bool) {
	var id stun.TransactionID
	rand.Read(id[:])
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.pending) >= maxSTUNPending {
		return id, nil, false
	}
	txn := &stunTxn{to: to, sent: time.Now(), answer: make(chan netip.AddrPort, 1)}
	m.pending[id] = txn
	return id, txn, true
}

// end forgets a request that was not answered.
func (m *mappingState) end(id stun.TransactionID) {
	m.mu.Lock()
	delete(m.pending, id)
	m.mu.Unlock()
}

// mappingLoop checks the mapping after every kick (mappingSettle later,
// so that sessions coming up together are compared together) and every
// mappingRecheck, until the device closes.
func (d *Device) mappingLoop() {
	t := time.NewTimer(mappingRecheck)
	defer t.Stop()
	for {
		select {
		case <-d.closed:
			return
		case <-d.mapping.kick:
			select {
			case <-d.closed:
				return
			case <-time.After(mappingSettle):
			}
			select { // kicks while settling are this check's
			case <-d.mapping.kick:
			default:
			}
		case <-t.C:
		}
		d.checkMapping()
		t.Reset(mappingRecheck)
	}
}

// checkMapping gathers every super peer's view of the socket, classifies
// them, and tells the sessions.
func (d *Device) checkMapping() {
	type probe struct {
		sp   *superPeer
		dest netip.AddrPort
	}
	var views []MappingView
	var probes []probe
	sessions := map[*rendezvous.Session]bool{}
	for _, sp := range d.sps {
		sess := sp.session()
		if sess == nil {
			continue
		}
		sessions[sess] = true
		remote := addrPort(sess.RemoteAddr())
		if sess.Transport() == rendezvous.TransportH3 && sess.Observed().IsValid() {
			views = append(views, MappingView{SuperPeer: sp.url, Via: "h3", Dest: remote, Mapped: sess.Observed(), RTTMillis: millis(sess.RTT())})
		}
		if port := sess.STUNPort(); port != 0 && remote.IsValid() && !d.cfg.blockDirect() {
			probes = append(probes, probe{sp, netip.AddrPortFrom(remote.Addr(), port)})
		}
	}
	results := make(chan MappingView, len(probes))
	for _, pr := range probes {
		d.goRun(func() {
			mapped, rtt, ok := d.askSTUN(pr.dest)
			v := MappingView{SuperPeer: pr.sp.url, Via: "stun", Dest: pr.dest, Mapped: mapped, RTTMillis: millis(rtt)}
			if !ok {
				v = MappingView{}
			}
			results <- v
		})
	}
	for range probes {
		if v := <-results; v.Dest.IsValid() {
			views = append(views, v)
		}
	}
	verdict := classifyMapping(views)
	m := &d.mapping
	m.mu.Lock()
	was := m.verdict
	m.verdict, m.views, m.checked = verdict, views, time.Now()
	var tell []*rendezvous.Session
	for sess := range m.told {
		if !sessions[sess] {
			delete(m.told, sess) // ended
		}
	}
	for sess := range sessions {
		told, ok := m.told[sess]
		if (ok && told != verdict) || (!ok && verdict != rendezvous.MappingUnknown) {
			m.told[sess] = verdict
			tell = append(tell, sess)
		}
	}
	m.mu.Unlock()
	if was != verdict {
		d.log.Info("NAT mapping", zap.Stringer("mapping", verdict), zap.Stringer("was", was), zap.Int("views", len(views)))
		for _, sp := range d.sps {
			sp.changed()
		}
	}
	for _, sess := range tell {
		if err := sess.SetMapping(rendezvous.Mapping{Mapping: verdict}); err != nil {
			d.log.Debug("telling the mapping", zap.String("super_peer", sess.Authority()), zap.Error(err))
		}
	}
}

// askSTUN sends a Binding request to dest from the socket, up to
// stunTries times stunRetry apart, and returns the mapped address the
// answer names and the round trip since the first transmission.
func (d *Device) askSTUN(dest netip.AddrPort) (netip.AddrPort, time.Duration, bool) {
	m := &d.mapping
	id, txn, ok := m.begin(dest)
	if !ok {
		return netip.AddrPort{}, 0, false
	}
	defer m.end(id)
	req := stun.BindingRequest(nil, id)
	deadline := time.NewTimer(stunWait)
	defer deadline.Stop()
	retry := time.NewTicker(stunRetry)
	defer retry.Stop()
	for tries := 0; ; {
		if tries < stunTries {
			d.sock.writeUDP(req, dest)
			tries++
		}
		select {
		case mapped := <-txn.answer:
			return mapped, time.Since(txn.sent), true
		case <-retry.C:
		case <-deadline.C:
			return netip.AddrPort{}, 0, false
		case <-d.closed:
			return netip.AddrPort{}, 0, false
		}
	}
}

// classifyMapping is the verdict on a set of views: per address family,
// endpoint-dependent when two destinations saw different mapped
// addresses, endpoint-independent when at least two saw one and the
// same, unknown otherwise; the device's verdict is the worst known one
// of its families (a device whose IPv4 NAT maps per destination cannot
// be punched to over IPv4, whatever its IPv6 does).
func classifyMapping(views []MappingView) rendezvous.NATMapping {
	verdict := rendezvous.MappingUnknown
	for _, v4 := range []bool{true, false} {
		seen := map[netip.AddrPort]netip.AddrPort{} // destination to mapped
		for _, v := range views {
			if v.Dest.Addr().Unmap().Is4() == v4 && v.Mapped.IsValid() {
				seen[v.Dest] = v.Mapped
			}
		}
		if len(seen) < 2 {
			continue
		}
		family := rendezvous.MappingIndependent
		var first netip.AddrPort
		for _, mapped := range seen {
			if !first.IsValid() {
				first = mapped
			} else if mapped != first {
				family = rendezvous.MappingDependent
			}
		}
		if family == rendezvous.MappingDependent || verdict == rendezvous.MappingUnknown {
			verdict = family
		}
	}
	return verdict
}

// setPeerNAT records the peer's NAT mapping from its candidates; an
// introduction without one (a super peer that does not pass it on, a
// peer that did not learn it) makes it unknown.
func (p *peerState) setPeerNAT(m rendezvous.NATMapping) {
	p.mu.Lock()
	p.punch.peerNAT = m
	p.mu.Unlock()
}
