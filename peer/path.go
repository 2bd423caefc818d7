package peer

import (
	"fmt"
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

type pingSent struct {
	to netip.AddrPort
	at time.Time
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
	if f := p.dev.cfg.OnPathChange; f != nil {
		id := p.id
		p.dev.event(func() { f(id, now) })
	}
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
