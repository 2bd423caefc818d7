package peer

// The path to a peer, and its transitions. The direct and relay paths are
// assigned only by the transition methods below the diagram, each of
// which ends in changedLocked, the one place that reports a change
// (OnPathChange) and resends the tail over the new path.
//
//	             relayUpLocked              directValidatedLocked
//	    none --------------------> relay ----------------------------> direct
//	     |   <--------------------   |   <----------------------------   ^
//	     |      relayDownLocked      |  directLostLocked (DirectTimeout) |
//	     |                           +-> relay': relayUpLocked (a move)  |
//	     +---------------------------------------------------------------+
//	                         directValidatedLocked
//
//	    any state ---> forgotten: forgetLocked (PeerIdleTimeout without a connection)
//
// Direct wins over relay whenever both are up: the relay stays open
// underneath, ready for the direct path to die. Who calls which
// transition: a pong (onPong, punch.go) validates a direct address; the
// punch loop finds it timed out (punchLoop); a relay session opens,
// through a nearer super peer too (dialRelay, relay.go) or ends
// (readRelay); the device forgets an idle peer (forgetIfIdle).

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

// PathKind says how packets to a peer travel now.
type PathKind string

const (
	PathNone   PathKind = "none"   // no path yet: packets wait, briefly
	PathDirect PathKind = "direct" // UDP to an address that answered a punch
	PathRelay  PathKind = "relay"  // through a super peer's relay
)

// RelayTransport says how a relayed path's packets reach the super peer.
type RelayTransport string

const (
	RelayFast RelayTransport = "fast" // the relay's UDP fast path
	RelayH3   RelayTransport = "h3"   // HTTP/3 datagrams on the relay leg
	RelayH2   RelayTransport = "h2"   // HTTP/2 capsules on the relay leg
)

// Path is the current path to a peer.
type Path struct {
	Kind      PathKind
	Addr      netip.AddrPort       // the direct address
	SuperPeer string               // the relaying super peer's URL
	Transport rendezvous.Transport // the relay leg's transport
	// Relay is how the relayed packets travel now: the fast path while
	// it delivers, else the leg's transport.
	Relay RelayTransport
	// Why says why Relay is not a better transport, when it moved
	// there by measurement: "fast path unanswered", "HTTP/3 unanswered
	// for 3s" (transport.go).
	Why string
	RTT time.Duration // of the direct path, from punches
	// Reason says why the path is what it is, when the device chose it
	// for one: PathReasonBothDependent.
	Reason string
}

// PathReasonBothDependent: the path is relayed, without a punching
// phase, because both devices' NATs map per destination (mapping.go):
// neither can learn the port the other's NAT opens towards it.
const PathReasonBothDependent = "both NATs map per destination (endpoint-dependent): relayed without punching"

func (p Path) String() string {
	switch p.Kind {
	case PathDirect:
		return "direct " + p.Addr.String()
	case PathRelay:
		relay := string(p.Relay)
		if p.Why != "" {
			relay += ": " + p.Why
		}
		if p.Reason != "" {
			return fmt.Sprintf("relay via %s (%s): %s", p.SuperPeer, relay, p.Reason)
		}
		return fmt.Sprintf("relay via %s (%s)", p.SuperPeer, relay)
	}
	return string(p.Kind)
}

// peerState is everything the device knows about reaching one peer, in
// four parts by concern, as wireguard-go's Peer is.
//
// Lock order: Device.mu before peerState.mu before sock.mu. mu guards
// every field of paths, punch, relayCtl and life (but the sync.Once and
// the wake channel, safe on their own): the parts group fields by
// concern, not by lock, because a transition reads across them (a pong
// settles a punch.pings entry and sets paths.direct at once).
// superPeer.mu is never held together with any of these.
//
// The goroutines that act on a peer, and what stops each:
//   - punchLoop (punch.go), from the first candidates, again from new
//     ones: nothing is left to ping (every address's tries spent, no
//     consent fresh), the peer is forgotten, or the device closes;
//   - ensureRelay (relay.go), one at a time (relayCtl.dialing), when a
//     connection starts, a direct path dies or a relay in use ends (on
//     the device that does not move relays, relayFollowWait later and
//     only if the peer's device has not opened it again): a
//     relay is up, the peer is forgotten, the device closes, or the path
//     is direct and the relay keeps failing (relayWorthRetrying);
//   - joinRelay (relay.go), when the peer opened a relay: one dial,
//     bounded by RelayDialTimeout;
//   - readRelay (relay.go), one per relay session: the session ends
//     (closed when a newer relay replaces it, when the peer is forgotten,
//     or when the device closes);
//   - maintainRelay (relay.go), from the first relay, on the device that
//     moves relays (movesRelay): the peer is forgotten, or the device
//     closes;
//   - track (below), one per end-to-end connection: the connection ends,
//     or the device closes;
//   - sendAllLocked's sender: its packets are written;
//   - the device's re-introductions (superpeer.go) and super peer pings
//     name the peer but are the super peers'.
//
// Every goroutine runs under Device.goRun, so Close waits for it.
type peerState struct {
	dev  *Device
	id   identity.PeerID
	virt netip.AddrPort
	// virtUDP is virt as QUIC is handed it, made once: not per packet.
	virtUDP *net.UDPAddr
	out     directWriter // the device's socket; a test's fake

	mu       sync.Mutex // guards paths, punch, relayCtl and life, but for relayCtl.maintain and punch.wake
	paths    paths
	punch    punching
	relayCtl relayCtl
	life     lifetime
}

// paths is how packets reach the peer, and what travels on them.
type paths struct {
	direct    netip.AddrPort // validated by a pong; zero if none. Only transitions assign it
	directRTT time.Duration
	lastPong  time.Time  // DirectTimeout counts from here
	relay     *relayPath // nil if none. Only transitions assign it
	last      Path       // last reported (changedLocked)
	pending   [][]byte   // packets waiting for a first path, up to maxPending
	tail      [tailLen][]byte
	tailNext  int // tail[tailNext] is the oldest of the last packets sent
}

// punching is the state of hole punching towards the peer (punch.go).
type punching struct {
	cands     []candidate         // the addresses punched, up to maxCandidates
	pings     map[uint64]pingSent // outstanding, by nonce, up to maxPings
	running   bool                // punchLoop runs: it ends when nothing is left to ping
	wake      chan struct{}       // new candidates: punch now, not at the next tick
	wokenAt   time.Time           // by a punch from a known address (a triggered check)
	fastUntil time.Time           // answered addresses are pinged every FastPunchInterval until then
	keptAlive time.Time           // the direct path's last keepalive ping
	// peerNAT is the peer's NAT mapping, from its last candidates; slow
	// is set by an introduction when both it and the device's own are
	// endpoint-dependent: no fast phase, one ping per slowPunchInterval
	// (addCandidates).
	peerNAT rendezvous.NATMapping
	slow    bool
}

// relayCtl is the management of the peer's relay (relay.go).
type relayCtl struct {
	dialing  bool                         // ensureRelay runs
	peerRTTs map[*superPeer]time.Duration // the peer's RTT to each, as it reported
	// elsewhere are the super peers that named another node of their
	// cluster as the peer's (relaynode.go), with that node; node is the
	// last one named, and nodeRTT the peer's RTT to it.
	elsewhere map[*superPeer]string
	node      string
	nodeRTT   time.Duration
	maintain  sync.Once // starts maintainRelay, with the first relay
	// The relay's rate (relayNeed, headroom.go): the relay path metered,
	// its count then and when, and the rate it carried since the one before.
	metered      *relayPath
	meteredBytes uint64
	meteredAt    time.Time
	rate         float64 // bytes per second
}

// lifetime is what decides when the device forgets the peer.
type lifetime struct {
	conns    map[*quic.Conn]struct{} // open end-to-end connections
	lastUsed time.Time               // last introduction, or last connection's end
	gone     bool                    // forgotten by the device; loops stop
}

// directWriter sends a packet to a direct address.
type directWriter interface {
	writeUDP(b []byte, to netip.AddrPort) (int, error)
}

var _ directWriter = (*sock)(nil)

type pingSent struct {
	to netip.AddrPort
	at time.Time
}

func newPeerState(d *Device, id identity.PeerID) *peerState {
	p := &peerState{dev: d, id: id, virt: virtualAddr(id), out: d.sock}
	p.virtUDP = net.UDPAddrFromAddrPort(p.virt)
	p.punch.pings = make(map[uint64]pingSent)
	p.punch.wake = make(chan struct{}, 1)
	p.life.lastUsed = time.Now()
	return p
}

// The transitions. Each assigns paths.direct or paths.relay and ends in
// changedLocked; nothing else assigns them.

// directValidatedLocked takes addr as the direct path, a pong having come
// from it after rtt: a new address starts its RTT afresh, the same one
// smooths it.
func (p *peerState) directValidatedLocked(addr netip.AddrPort, rtt time.Duration) {
	if p.paths.direct == addr && p.paths.directRTT != 0 {
		p.paths.directRTT += (rtt - p.paths.directRTT) / directRTTGain
	} else {
		p.paths.direct, p.paths.directRTT = addr, rtt
	}
	p.flushLocked()
	p.changedLocked()
}

// directLostLocked drops the direct path, which has not answered for
// DirectTimeout: the relay carries on, if there is one. Packets from the
// address stop counting as the peer's until it answers again; a ping from
// it maps it again (onPing).
func (p *peerState) directLostLocked() {
	p.dev.sock.unmapDirect(p.paths.direct, p)
	p.paths.direct = netip.AddrPort{}
	p.changedLocked()
}

// relayUpLocked takes rp as the relay path, and returns the relay it
// replaces (a move to a nearer super peer), for the caller to close.
func (p *peerState) relayUpLocked(rp *relayPath) (old *relayPath) {
	old, p.paths.relay = p.paths.relay, rp
	if !p.paths.direct.IsValid() {
		p.flushLocked()
	}
	p.changedLocked()
	return old
}

// relayDownLocked drops rp, whose session ended, and reports whether it
// was the relay path (not one already replaced).
func (p *peerState) relayDownLocked(rp *relayPath) (current bool) {
	current = p.paths.relay == rp
	if current {
		p.paths.relay = nil
	}
	p.changedLocked()
	return current
}

// forgetLocked forgets the peer: its loops stop, its paths go, and the
// socket stops knowing its addresses. It returns the relay, for the
// caller to close outside p.mu.
func (p *peerState) forgetLocked() (relay *relayPath) {
	p.life.gone = true
	p.wakeUp() // the punch loop ends
	relay = p.paths.relay
	p.paths.direct, p.paths.relay = netip.AddrPort{}, nil
	p.dev.sock.forget(p)
	p.changedLocked()
	return relay
}

// pathLocked is the path in use: direct over relay.
func (p *peerState) pathLocked() Path {
	switch {
	case p.paths.direct.IsValid():
		return Path{Kind: PathDirect, Addr: p.paths.direct, RTT: p.paths.directRTT}
	case p.paths.relay != nil:
		rp := p.paths.relay
		path := Path{Kind: PathRelay, SuperPeer: rp.sp.url, Transport: rp.tr, Relay: rp.transport(), Why: rp.transportWhy()}
		if p.punch.slow {
			path.Reason = PathReasonBothDependent
		}
		return path
	}
	return Path{Kind: PathNone}
}

func (p *peerState) path() Path {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pathLocked()
}

// changedLocked reports a path change once: an RTT alone is no change.
func (p *peerState) changedLocked() {
	now, last := p.pathLocked(), p.paths.last
	p.paths.last = now
	if now.Kind == last.Kind && now.Addr == last.Addr && now.SuperPeer == last.SuperPeer && now.Relay == last.Relay && now.Reason == last.Reason {
		return
	}
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
	direct, rp := p.paths.direct, p.paths.relay
	if !direct.IsValid() && rp == nil {
		if len(p.paths.pending) < maxPending {
			p.paths.pending = append(p.paths.pending, append([]byte(nil), b...))
		}
		p.mu.Unlock()
		return
	}
	p.paths.tail[p.paths.tailNext] = append(p.paths.tail[p.paths.tailNext][:0], b...)
	p.paths.tailNext = (p.paths.tailNext + 1) % tailLen
	p.mu.Unlock()
	if direct.IsValid() {
		p.out.writeUDP(b, direct)
		return
	}
	rp.write(b)
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
		if b := p.paths.tail[(p.paths.tailNext+i)%tailLen]; len(b) > 0 {
			tail = append(tail, append([]byte(nil), b...))
		}
	}
	p.sendAllLocked(tail)
}

// flushLocked sends what waited for a path; the caller has just set one.
func (p *peerState) flushLocked() {
	pending := p.paths.pending
	p.paths.pending = nil
	p.sendAllLocked(pending)
}

// sendAllLocked sends packets over the path in use, from a goroutine of
// their own: the socket must not be written under p.mu.
func (p *peerState) sendAllLocked(packets [][]byte) {
	if len(packets) == 0 {
		return
	}
	direct, rp := p.paths.direct, p.paths.relay
	p.dev.goRun(func() {
		for _, b := range packets {
			if direct.IsValid() {
				p.out.writeUDP(b, direct)
			} else if rp != nil {
				rp.write(b)
			}
		}
	})
}

// isGone reports whether the device forgot the peer.
func (p *peerState) isGone() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.life.gone
}

// inUseLocked reports whether an end-to-end connection to the peer is
// open.
func (p *peerState) inUseLocked() bool { return len(p.life.conns) > 0 && !p.life.gone }

// track counts an end-to-end connection until it ends.
func (p *peerState) track(qc *quic.Conn) {
	p.mu.Lock()
	if p.life.conns == nil {
		p.life.conns = make(map[*quic.Conn]struct{})
	}
	p.life.conns[qc] = struct{}{}
	p.mu.Unlock()
	p.dev.goRun(func() {
		select {
		case <-qc.Context().Done():
		case <-p.dev.closed:
		}
		p.mu.Lock()
		delete(p.life.conns, qc)
		p.life.lastUsed = time.Now()
		p.mu.Unlock()
	})
}

// forgetIfIdle forgets the peer when it has had no connection for idle,
// and reports whether it did. The caller holds Device.mu and drops the
// peer from Device.peers.
func (p *peerState) forgetIfIdle(idle time.Duration) bool {
	p.mu.Lock()
	if len(p.life.conns) > 0 || time.Since(p.life.lastUsed) <= idle {
		p.mu.Unlock()
		return false
	}
	rp := p.forgetLocked()
	p.mu.Unlock()
	if rp != nil {
		rp.conn.Close()
	}
	return true
}
