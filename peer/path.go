package peer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

// PathKind says how packets to a peer travel now.
type PathKind string

const (
	PathNone   PathKind = "none"   // no path yet: packets wait, briefly
	PathDirect PathKind = "direct" // UDP to an address that answered a punch
	PathRelay  PathKind = "relay"  // through a super peer's relay
)

// Path is the current path to a peer.
type Path struct {
	Kind      PathKind
	Addr      netip.AddrPort       // the direct address
	SuperPeer string               // the relaying super peer's URL
	Transport rendezvous.Transport // the relay leg's transport
	RTT       time.Duration        // of the direct path, from punches
}

func (p Path) String() string {
	switch p.Kind {
	case PathDirect:
		return "direct " + p.Addr.String()
	case PathRelay:
		return fmt.Sprintf("relay via %s (%s)", p.SuperPeer, p.Transport)
	}
	return string(p.Kind)
}

// Bounds on per-peer state.
const (
	maxCandidates = 32
	maxPending    = 64 // packets held while a peer has no path
	maxPings      = 64 // outstanding punch pings
	tailLen       = 4  // last packets to a peer, resent over a new path
)

// peerState is everything the device knows about reaching one peer.
type peerState struct {
	dev  *Device
	id   identity.PeerID
	virt netip.AddrPort

	mu        sync.Mutex // guards the following
	cands     []netip.AddrPort
	pings     map[uint64]pingSent
	direct    netip.AddrPort // validated; zero if none
	directRTT time.Duration
	lastPong  time.Time
	relay     *relayPath
	dialing   bool // a relay session is being opened
	pending   [][]byte
	tail      [tailLen][]byte // the last packets sent, tail[tailNext] the oldest
	tailNext  int
	punching  bool          // the punch loop runs
	wake      chan struct{} // new candidates: punch now, not at the next tick
	wokenAt   time.Time     // by a punch from a known address
	fastUntil time.Time
	last      Path // last reported path
	peerRTTs  map[*superPeer]time.Duration
	watching  bool                    // maintainRelay runs
	conns     map[*quic.Conn]struct{} // open end-to-end connections
	lastUsed  time.Time               // last introduction, or last connection's end
	gone      bool                    // forgotten by the device; loops stop
}

// isGone reports whether the device forgot the peer.
func (p *peerState) isGone() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gone
}

// track counts an end-to-end connection until it ends.
func (p *peerState) track(qc *quic.Conn) {
	p.mu.Lock()
	if p.conns == nil {
		p.conns = make(map[*quic.Conn]struct{})
	}
	p.conns[qc] = struct{}{}
	p.mu.Unlock()
	p.dev.goRun(func() {
		select {
		case <-qc.Context().Done():
		case <-p.dev.closed:
		}
		p.mu.Lock()
		delete(p.conns, qc)
		p.lastUsed = time.Now()
		p.mu.Unlock()
	})
}

// setPeerRTT records the peer's RTT to a super peer, as it reported.
func (p *peerState) setPeerRTT(sp *superPeer, rtt time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.peerRTTs == nil {
		p.peerRTTs = make(map[*superPeer]time.Duration)
	}
	if rtt > 0 {
		p.peerRTTs[sp] = rtt
	}
}

func (p *peerState) peerRTT(sp *superPeer) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peerRTTs[sp]
}

type pingSent struct {
	to netip.AddrPort
	at time.Time
}

type relayPath struct {
	conn net.PacketConn
	sp   *superPeer
	tr   rendezvous.Transport
}

func newPeerState(d *Device, id identity.PeerID) *peerState {
	return &peerState{dev: d, id: id, virt: virtualAddr(id), pings: make(map[uint64]pingSent), wake: make(chan struct{}, 1), lastUsed: time.Now()}
}

// path returns the path in use.
func (p *peerState) pathLocked() Path {
	switch {
	case p.direct.IsValid():
		return Path{Kind: PathDirect, Addr: p.direct, RTT: p.directRTT}
	case p.relay != nil:
		return Path{Kind: PathRelay, SuperPeer: p.relay.sp.url, Transport: p.relay.tr}
	}
	return Path{Kind: PathNone}
}

func (p *peerState) path() Path {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pathLocked()
}

// changedLocked reports a path change once.
func (p *peerState) changedLocked() {
	now := p.pathLocked()
	if now == p.last || (now.Kind == p.last.Kind && now.Addr == p.last.Addr && now.SuperPeer == p.last.SuperPeer) {
		p.last = now
		return
	}
	p.last = now
	if now.Kind != PathNone {
		p.resendTailLocked()
	}
	p.dev.publish(PathEvent{Peer: p.id, Path: now})
	p.dev.log.Debug("path", zap.String("peer", p.id.Short()), zap.Stringer("path", now))
}

// send sends one QUIC packet to the peer over the path in use, or holds
// it (bounded) until there is one.
func (p *peerState) send(b []byte) {
	p.mu.Lock()
	direct, rp := p.direct, p.relay
	if !direct.IsValid() && rp == nil {
		if len(p.pending) < maxPending {
			p.pending = append(p.pending, append([]byte(nil), b...))
		}
		p.mu.Unlock()
		return
	}
	p.tail[p.tailNext] = append(p.tail[p.tailNext][:0], b...)
	p.tailNext = (p.tailNext + 1) % tailLen
	p.mu.Unlock()
	if direct.IsValid() {
		p.dev.sock.writeUDP(b, direct)
		return
	}
	rp.conn.WriteTo(b, nil)
}

// resendTailLocked sends the last few packets again, over the path just
// taken. When the old path died, they were most likely lost on it: the
// peer gets them now and acknowledges them, and those acknowledgements,
// with the ones the packets carry, let both ends' loss recovery resend at
// once what the old path lost (RFC 9002 §6.1), rather than after a probe
// timeout that grew while the old path was dead (§6.2). A packet the peer
// already has is a duplicate, which QUIC drops unacknowledged: four
// wasted packets on a switch from a working path. Nothing of this
// reaches either application.
func (p *peerState) resendTailLocked() {
	var tail [][]byte
	for i := range tailLen {
		if b := p.tail[(p.tailNext+i)%tailLen]; len(b) > 0 {
			tail = append(tail, append([]byte(nil), b...))
		}
	}
	p.sendAllLocked(tail)
}

// flushLocked sends what waited for a path; the caller has just set one.
func (p *peerState) flushLocked() {
	pending := p.pending
	p.pending = nil
	p.sendAllLocked(pending)
}

// sendAllLocked sends packets over the path in use, from a goroutine of
// their own: the socket must not be written under p.mu.
func (p *peerState) sendAllLocked(packets [][]byte) {
	if len(packets) == 0 {
		return
	}
	direct, rp := p.direct, p.relay
	go func() {
		for _, b := range packets {
			if direct.IsValid() {
				p.dev.sock.writeUDP(b, direct)
			} else if rp != nil {
				rp.conn.WriteTo(b, nil)
			}
		}
	}()
}

// addCandidates adds addresses to punch, local ones first, and starts
// punching fast. An introduction (not a punch) counts as use of the peer.
func (p *peerState) addCandidates(as []netip.AddrPort, introduced bool) {
	if p.dev.cfg.RelayOnly {
		return
	}
	p.mu.Lock()
	added := false
	for _, a := range as {
		a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
		if !a.IsValid() || a.Port() == 0 || p.dev.sock.socketFor(a) == nil || slices.Contains(p.cands, a) {
			continue
		}
		if len(p.cands) >= maxCandidates {
			p.evictCandidateLocked()
		}
		p.cands = append(p.cands, a)
		added = true
	}
	if !added && !introduced {
		// A punch from a known address is no news, except to a device
		// without a direct path: it pings back now (once per fast
		// interval at most), not at its next tick.
		wake := !p.direct.IsValid() && time.Since(p.wokenAt) >= p.dev.cfg.FastPunchInterval
		if wake {
			p.wokenAt = time.Now()
		}
		p.mu.Unlock()
		if wake {
			p.wakeUp()
		}
		return
	}
	p.fastUntil = time.Now().Add(p.dev.cfg.FastPunchFor)
	if introduced {
		p.lastUsed = time.Now()
	}
	start := !p.punching && !p.gone
	p.punching = true
	p.mu.Unlock()
	if start {
		p.dev.goRun(p.punchLoop)
		return
	}
	p.wakeUp()
}

// wakeUp makes the punch loop punch now.
func (p *peerState) wakeUp() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// evictCandidateLocked drops the oldest candidate that is not the direct
// path, making room for a newer one: addresses go stale as NATs rebind
// and devices move.
func (p *peerState) evictCandidateLocked() {
	for i, c := range p.cands {
		if c != p.direct {
			p.cands = slices.Delete(p.cands, i, i+1)
			return
		}
	}
}

// punchLoop pings every candidate, fast at first and then at the
// keepalive interval, and drops a direct path that stops answering.
func (p *peerState) punchLoop() {
	cfg := &p.dev.cfg
	for {
		p.mu.Lock()
		if p.gone {
			p.mu.Unlock()
			return
		}
		interval := cfg.PunchInterval
		if time.Now().Before(p.fastUntil) {
			interval = cfg.FastPunchInterval
		}
		if p.direct.IsValid() && time.Since(p.lastPong) > cfg.DirectTimeout {
			p.dev.log.Debug("direct path lost", zap.String("peer", p.id.Short()), zap.Stringer("addr", p.direct))
			p.dev.goRun(p.dev.pingSuperPeers)
			p.direct = netip.AddrPort{}
			p.fastUntil = time.Now().Add(cfg.FastPunchFor)
			p.changedLocked()
			if p.relay == nil {
				p.dev.goRun(func() { p.dev.ensureRelay(p) })
			}
		}
		targets := append([]netip.AddrPort(nil), p.cands...)
		if p.direct.IsValid() {
			targets = []netip.AddrPort{p.direct}
		}
		var msgs [][]byte
		for _, to := range targets {
			nonce := rand.Uint64()
			if len(p.pings) >= maxPings {
				for n := range p.pings {
					delete(p.pings, n)
					break
				}
			}
			p.pings[nonce] = pingSent{to: to, at: time.Now()}
			msgs = append(msgs, (&punch{typ: punchPing, sender: p.dev.id, receiver: p.id, nonce: nonce}).encode(p.dev.cfg.Identity))
		}
		p.mu.Unlock()
		if !p.dev.cfg.blockDirect() {
			for i, to := range targets {
				p.dev.sock.writeUDP(msgs[i], to)
			}
		}
		select {
		case <-p.dev.closed:
			return
		case <-p.wake:
		case <-time.After(interval):
		}
	}
}

// onPing answers a ping at the address it came from, and treats that
// address as the peer's (a peer-reflexive candidate).
func (p *peerState) onPing(pn punch, from netip.AddrPort) {
	if p.dev.cfg.blockDirect() {
		return
	}
	pong := (&punch{typ: punchPong, sender: p.dev.id, receiver: p.id, nonce: pn.nonce}).encode(p.dev.cfg.Identity)
	p.dev.sock.writeUDP(pong, from)
	p.dev.sock.mapDirect(from, p)
	p.addCandidates([]netip.AddrPort{from}, false)
}

// onPong validates the path to the address the pong came from: it is the
// one the peer's packets to this device use, so the one to send to.
func (p *peerState) onPong(pn punch, from netip.AddrPort) {
	if p.dev.cfg.blockDirect() {
		return
	}
	p.mu.Lock()
	sent, ok := p.pings[pn.nonce]
	if !ok {
		p.mu.Unlock()
		return
	}
	delete(p.pings, pn.nonce)
	rtt := time.Since(sent.at)
	p.lastPong = time.Now()
	if !p.direct.IsValid() || p.direct == from || rtt < p.directRTT/2 {
		newPath := p.direct != from
		p.direct = from
		if newPath || p.directRTT == 0 {
			p.directRTT = rtt
		} else {
			p.directRTT += (rtt - p.directRTT) / 8
		}
		p.flushLocked()
	}
	p.changedLocked()
	p.mu.Unlock()
	p.dev.sock.mapDirect(from, p)
}

// ensureRelay opens a relay session towards the peer through the super
// peer with the lowest latency between the two, unless one is open or
// being opened: it tells that super peer (FlagRelay), which tells the
// peer, whose device opens its side there (consent; joinRelay).
func (d *Device) ensureRelay(p *peerState) {
	p.mu.Lock()
	if p.relay != nil || p.dialing {
		p.mu.Unlock()
		return
	}
	p.dialing = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.dialing = false
		p.mu.Unlock()
	}()
	for attempt := 0; !p.isGone(); attempt++ {
		sp, sess := d.bestSuperPeer(p)
		if sess != nil {
			ctx, cancel := context.WithTimeout(d.ctx, d.cfg.RelayDialTimeout)
			_, err := sess.Introduce(ctx, p.id, true)
			if err == nil {
				err = d.dialRelay(ctx, p, sp, sess)
			}
			cancel()
			if err == nil {
				return
			}
			d.log.Debug("relay", zap.String("peer", p.id.Short()), zap.Error(err))
		}
		select {
		case <-d.closed:
			return
		case <-time.After(min(time.Duration(attempt+1)*500*time.Millisecond, 5*time.Second)):
		}
		if p.path().Kind == PathDirect && attempt > 3 {
			return
		}
	}
}

// joinRelay opens this device's side of a relay that the peer opened
// through sp.
func (d *Device) joinRelay(p *peerState, sp *superPeer) {
	sess := sp.session()
	if sess == nil {
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.RelayDialTimeout)
	defer cancel()
	if err := d.dialRelay(ctx, p, sp, sess); err != nil {
		d.log.Debug("joining relay", zap.String("peer", p.id.Short()), zap.Error(err))
	}
}

// dialRelay opens a relay session through sess and makes it the peer's
// relay path.
func (d *Device) dialRelay(ctx context.Context, p *peerState, sp *superPeer, sess *rendezvous.Session) error {
	var conn net.PacketConn
	var err error
	if sess.Transport() == rendezvous.TransportH3 {
		conn, err = relay.DialH3(ctx, sess.HTTP3(), sess.Authority(), p.id)
	} else {
		conn, err = relay.DialH2(ctx, sess.HTTP2(), sess.Authority(), p.id)
	}
	if err != nil {
		return err
	}
	rp := &relayPath{conn: conn, sp: sp, tr: sess.Transport()}
	p.mu.Lock()
	old := p.relay
	p.relay = rp
	if !p.direct.IsValid() {
		p.flushLocked()
	}
	p.changedLocked()
	watch := !p.watching
	p.watching = true
	p.mu.Unlock()
	if old != nil {
		old.conn.Close()
	}
	select {
	case <-d.closed: // Close may have gone over the relays already
		conn.Close()
		return nil
	default:
	}
	if p.isGone() {
		conn.Close()
		return nil
	}
	if watch {
		d.goRun(func() { d.maintainRelay(p) })
	}
	d.goRun(func() { d.readRelay(p, rp) })
	return nil
}

// readRelay hands what arrives over a relay session to QUIC as coming
// from the peer's virtual address, until the session ends; then it opens
// another.
func (d *Device) readRelay(p *peerState, rp *relayPath) {
	buf := make([]byte, 64<<10)
	from := net.UDPAddrFromAddrPort(p.virt)
	for {
		n, _, err := rp.conn.ReadFrom(buf)
		if err != nil {
			break
		}
		d.sock.deliver(packet{b: append([]byte(nil), buf[:n]...), from: from})
	}
	rp.conn.Close()
	p.mu.Lock()
	current := p.relay == rp
	if current {
		p.relay = nil
	}
	p.changedLocked()
	inUse := len(p.conns) > 0 && !p.gone
	p.mu.Unlock()
	select {
	case <-d.closed:
	default:
		if current && inUse {
			d.ensureRelay(p) // through another super peer, if this one went away
		}
	}
}

// candidates returns the addresses the device punches towards the peer.
func (p *peerState) candidates() []netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.cands)
}
