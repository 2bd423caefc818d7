package peer

// Relay management: opening a relay session towards a peer through the
// super peer nearest to both (ensureRelay), joining one the peer opened
// (joinRelay), reading it (readRelay), and moving it to a clearly nearer
// super peer as latencies change (maintainRelay). The relay path itself
// is set and cleared by the transitions in path.go.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

// relayPath is one relay session towards a peer: its leg, and the leg's
// fast path once it has one (fastpath.go).
type relayPath struct {
	conn   net.PacketConn
	sp     *superPeer
	tr     rendezvous.Transport
	remote string        // the super peer's address, for its fast-path port
	why    string        // why its session is over HTTP/2, if it is (transport.go)
	done   chan struct{} // closed when the leg has ended (readRelay)
	fast   atomic.Pointer[fastLeg]
	// relayed counts the bytes of the packets it carried, both ways, for
	// the relay's need (relayNeed, headroom.go).
	relayed atomic.Uint64
}

// usingFast returns the fast path if the packets go over it now.
func (rp *relayPath) usingFast() *fastLeg {
	if f := rp.fast.Load(); f != nil && f.using.Load() {
		return f
	}
	return nil
}

// write sends one packet to the peer: over the fast path while it
// delivers, else over the leg.
func (rp *relayPath) write(b []byte) {
	rp.relayed.Add(uint64(len(b)))
	rp.sp.relayedOne()
	if f := rp.usingFast(); f != nil {
		f.send(b)
		return
	}
	rp.conn.WriteTo(b, nil)
}

// transport says how the packets travel now.
func (rp *relayPath) transport() RelayTransport {
	switch {
	case rp.usingFast() != nil:
		return RelayFast
	case rp.tr == rendezvous.TransportH3:
		return RelayH3
	}
	return RelayH2
}

// whyNoFast says why a leg with a fast path does not use it.
const whyNoFast = "fast path unanswered"

// transportWhy says why the packets do not travel on a better transport
// than they do ("" when they take the best there is): the fast path
// stopped answering, or the session is over HTTP/2 (transport.go).
func (rp *relayPath) transportWhy() string {
	switch {
	case rp.usingFast() != nil:
		return ""
	case rp.tr == rendezvous.TransportH2:
		return rp.why
	}
	if f := rp.fast.Load(); f != nil && f.unanswered.Load() {
		return whyNoFast
	}
	return ""
}

// movesRelay reports whether this device decides where the relay to p
// goes: only the device with the smaller peer ID moves it, so that the
// two never chase each other; the other follows (joinRelay).
func (d *Device) movesRelay(p *peerState) bool { return bytes.Compare(d.id[:], p.id[:]) < 0 }

// relayWorthRetrying reports whether a relay that failed failures times
// is tried again: always while the path is not direct; once it is, only
// relayRetriesWhileDirect times, since the direct path carries the
// connection, and losing it asks for a relay again.
func relayWorthRetrying(failures int, now PathKind) bool {
	return now != PathDirect || failures <= relayRetriesWhileDirect
}

// relayRetryDelay is the wait after the given number of failures.
func relayRetryDelay(failures int) time.Duration {
	return min(time.Duration(failures)*relayRetryStep, relayRetryMax)
}

// ensureRelay opens a relay session towards the peer through the super
// peer with the lowest latency between the two, unless one is open or
// being opened: it tells that super peer (FlagRelay), which tells the
// peer, whose device opens its side there (consent; joinRelay).
func (d *Device) ensureRelay(p *peerState) {
	p.mu.Lock()
	if p.paths.relay != nil || p.relayCtl.dialing {
		p.mu.Unlock()
		return
	}
	p.relayCtl.dialing = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.relayCtl.dialing = false
		p.mu.Unlock()
		d.settleRelayNode(p)
	}()
	elsewhere := false // a super peer named the peer's node: try there at once, once
	for failures := 1; !p.isGone(); failures++ {
		d.reachRelayNode(p)
		sp, sess, _ := d.bestSuperPeer(p, p.relayNeed(time.Now()))
		if sess != nil {
			err := d.relayThrough(p, sp, sess)
			if err == nil {
				return
			}
			d.log.Debug("relay", zap.String("peer", p.id.Short()), zap.String("url", sp.url), zap.Error(err))
			if errors.Is(err, errRelayElsewhere) && !elsewhere {
				elsewhere = true
				continue
			}
		}
		select {
		case <-d.closed:
			return
		case <-time.After(relayRetryDelay(failures)):
		}
		if !relayWorthRetrying(failures, p.path().Kind) {
			return
		}
	}
}

// relayThrough opens a relay towards the peer through sp: it tells sp
// (FlagRelay), which tells the peer, whose device opens its side there
// (joinRelay); then it opens this side and makes it the peer's relay
// path.
func (d *Device) relayThrough(p *peerState, sp *superPeer, sess *rendezvous.Session) error {
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.RelayDialTimeout)
	defer cancel()
	c, err := sess.Introduce(ctx, p.id, rendezvous.IntroduceOptions{Relay: true})
	if err != nil {
		return err
	}
	if c.RelayNode != "" { // no leg here: the peer's would never come (relaynode.go)
		p.setRelayNode(sp, c.RelayNode, c.PeerRTT)
		return fmt.Errorf("%w: %s", errRelayElsewhere, c.RelayNode)
	}
	return d.dialRelay(ctx, p, sp, sess)
}

// joinRelay opens this device's side of a relay that the peer opened
// through sp.
func (d *Device) joinRelay(p *peerState, sp *superPeer) {
	sess := sp.session()
	d.hook(hookJoining, p.id)
	// Revoke may have come since the candidates: no leg for a peer the
	// device no longer accepts (dialRelay checks again once it is open).
	if sess == nil || p.isGone() || !d.policy.accepts(p.id) {
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.RelayDialTimeout)
	defer cancel()
	if err := d.dialRelay(ctx, p, sp, sess); err != nil {
		d.log.Debug("joining relay", zap.String("peer", p.id.Short()), zap.Error(err))
	}
}

// dialRelay opens a relay session through sess and makes it the peer's
// relay path, closing the one it replaces.
func (d *Device) dialRelay(ctx context.Context, p *peerState, sp *superPeer, sess *rendezvous.Session) error {
	d.hook(hookDialling, p.id)
	var conn net.PacketConn
	var err error
	if sess.Transport() == rendezvous.TransportH3 {
		conn, err = relay.DialH3Stream(ctx, sess.HTTP3(), sess.Authority(), p.id)
	} else {
		conn, err = relay.DialH2(ctx, sess.HTTP2(), sess.Authority(), p.id)
	}
	if err != nil {
		return err
	}
	rp := &relayPath{conn: conn, sp: sp, tr: sess.Transport(), remote: sess.RemoteAddr().String(), done: make(chan struct{})}
	if rp.tr == rendezvous.TransportH2 {
		rp.why = sp.status().TransportReason
	}
	p.mu.Lock()
	if p.life.gone || !d.policy.accepts(p.id) {
		p.mu.Unlock()
		conn.Close()
		return nil
	}
	old := p.relayUpLocked(rp)
	p.mu.Unlock()
	if old != nil {
		old.conn.Close()
	}
	d.settleRelayNode(p) // a relay node the relay left
	select {
	case <-d.closed: // Close may have gone over the relays already
		conn.Close()
		return nil
	default:
	}
	sp.legs.Add(1) // until readRelay's end
	sp.wakeCheck() // whose pings watch the leg
	if d.movesRelay(p) {
		p.relayCtl.maintain.Do(func() { d.goRun(func() { d.maintainRelay(p) }) })
	}
	d.goRun(func() { d.readRelay(p, rp) })
	d.goRun(func() { d.runFastPath(p, rp) }) // ends with the leg
	return nil
}

// readRelay hands what arrives over a relay session to QUIC as coming
// from the peer's virtual address, until the session ends; then, if a
// connection still needs it, it opens another.
func (d *Device) readRelay(p *peerState, rp *relayPath) {
	buf := make([]byte, maxUDPPayload)
	for {
		n, _, err := rp.conn.ReadFrom(buf)
		if err != nil {
			break
		}
		rp.relayed.Add(uint64(n))
		d.sock.deliverCopy(buf[:n], p.virtUDP)
	}
	rp.conn.Close()
	close(rp.done)
	rp.sp.legs.Add(-1)
	p.mu.Lock()
	current := p.relayDownLocked(rp)
	inUse := p.inUseLocked()
	p.mu.Unlock()
	select {
	case <-d.closed:
	default:
		if current && inUse {
			d.reopenRelay(p) // through another super peer, if this one went away
			d.hook(hookRelayEnded, p.id)
			return
		}
	}
	d.settleRelayNode(p)
	d.hook(hookRelayEnded, p.id)
}

// reopenRelay opens the relay to p again after the one in use ended. The
// pair ended for both devices at once, and each opening its own would
// cost a second pair, one of whose legs the super peer refuses (409
// superseded). So the device that moves relays (movesRelay) opens it at
// once; the other waits relayFollowWait for it, joining its leg when the
// super peer tells (joinRelay), and opens the relay itself only if none
// came.
func (d *Device) reopenRelay(p *peerState) {
	if !d.movesRelay(p) {
		wait := time.NewTimer(relayFollowWait)
		defer wait.Stop()
		select {
		case <-d.closed:
			return
		case <-wait.C:
		}
	}
	d.ensureRelay(p) // nothing to do if the peer's relay came meanwhile
}

// setPeerRTT records the peer's RTT to a super peer, as it reported.
func (p *peerState) setPeerRTT(sp *superPeer, rtt time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.relayCtl.peerRTTs == nil {
		p.relayCtl.peerRTTs = make(map[*superPeer]time.Duration)
	}
	if rtt > 0 {
		p.relayCtl.peerRTTs[sp] = rtt
	}
}

func (p *peerState) peerRTT(sp *superPeer) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.relayCtl.peerRTTs[sp]
}

// bestSuperPeer picks where the relay to p goes, the one rule
// (docs/DEVICE.md, "Which super peer relays"): among the super peers
// this device has a session with that do not drain (drain.go), and that
// hold p (one that named another node of its cluster as p's does not:
// p's relay node, relaynode.go, stands in for it), the nearest
// (relayCost) of those good enough for a relay that needs need
// (goodEnough, headroom.go); if none is, the nearest of them all. good
// reports whether the one picked is good enough.
func (d *Device) bestSuperPeer(p *peerState, need float64) (best *superPeer, bestSess *rendezvous.Session, good bool) {
	p.mu.Lock()
	var holds *superPeer // where the relay goes now, if anywhere
	if rp := p.paths.relay; rp != nil {
		holds = rp.sp
	}
	p.mu.Unlock()
	var bestRTT time.Duration
	for _, sp := range d.relayChoices(p) {
		sess := sp.session()
		if sess == nil || sp.isDraining() || p.elsewhere(sp) {
			continue
		}
		ok := goodEnough(sess, need, sp == holds)
		if rtt := p.relayCost(sp, sess); best == nil || ok && !good || ok == good && rtt < bestRTT {
			best, bestSess, bestRTT, good = sp, sess, rtt, ok
		}
	}
	return best, bestSess, good
}

// relayChoices are the super peers a relay to p may go through: the
// device's own, and p's relay node if it holds one (relaynode.go).
func (d *Device) relayChoices(p *peerState) []*superPeer {
	if node := d.relayNodeOf(p); node != nil {
		return append(slices.Clip(d.sps), node)
	}
	return d.sps
}

// relayCost is the RTT between this device and p through a super peer:
// both legs, the peer's as the super peer reported it (this device's own
// when that is not known).
func (p *peerState) relayCost(sp *superPeer, sess *rendezvous.Session) time.Duration {
	mine := sess.RTT()
	theirs := p.peerRTT(sp)
	if theirs == 0 {
		theirs = mine
	}
	return mine + theirs
}

// worthMoving reports whether a relay costing better is worth leaving one
// costing now for (the hysteresis in constants.go).
func worthMoving(now, better time.Duration) bool {
	return better < time.Duration(float64(now)*relayMoveRatio)-relayMoveMargin
}

// maintainRelay moves the peer's relay to a clearly nearer super peer as
// latencies change, on the device that moves relays (movesRelay), until
// the peer is forgotten or the device closes.
func (d *Device) maintainRelay(p *peerState) {
	d.every(d.cfg.RelayCheckInterval, func() bool {
		p.mu.Lock()
		rp, direct, gone := p.paths.relay, p.paths.direct.IsValid(), p.life.gone
		p.mu.Unlock()
		if !gone && rp != nil && !direct {
			d.moveRelay(p, rp)
		}
		return !gone
	})
}

// moveRelay moves the relay rp to p to a clearly nearer super peer, if
// there is one, with fresh candidates from each.
func (d *Device) moveRelay(p *peerState, rp *relayPath) {
	// Fresh candidates from every super peer: the peer's RTT to each,
	// and another round of punching while the connection is relayed.
	for _, sp := range d.relayChoices(p) {
		if sess := sp.session(); sess != nil {
			ctx, cancel := context.WithTimeout(d.ctx, d.cfg.RelayCheckInterval)
			sess.Introduce(ctx, p.id, rendezvous.IntroduceOptions{})
			cancel()
		}
	}
	d.relocateRelay(p, rp)
}

// whyMove says why a relay moves to the best other super peer, or ""
// if it stays: its super peer drains; or it is full for the relay and
// the other is good enough (leftFull); or the other is clearly nearer
// (worthMoving, costing better where the relay costs now).
func whyMove(draining, leftFull bool, now, better time.Duration) string {
	switch {
	case draining:
		return "drains"
	case leftFull:
		return "full"
	case worthMoving(now, better):
		return "nearer"
	}
	return ""
}

// relocateRelay moves the relay rp to p to the best super peer
// (bestSuperPeer) if that is another one, and either clearly nearer, or
// good enough where rp's super peer is not (headroom.go), or rp's super
// peer drains (drain.go).
func (d *Device) relocateRelay(p *peerState, rp *relayPath) {
	cur := rp.sp.session()
	need := p.relayNeed(time.Now())
	best, bestSess, good := d.bestSuperPeer(p, need)
	if cur == nil || best == nil || best == rp.sp {
		return
	}
	now, better := p.relayCost(rp.sp, cur), p.relayCost(best, bestSess)
	why := whyMove(rp.sp.isDraining(), good && !goodEnough(cur, need, true), now, better)
	if why == "" {
		return
	}
	d.log.Debug("moving relay", zap.String("peer", p.id.Short()), zap.String("from", rp.sp.url), zap.String("to", best.url),
		zap.String("why", why), zap.Duration("from_rtt", now), zap.Duration("to_rtt", better))
	if err := d.relayThrough(p, best, bestSess); err != nil {
		d.log.Debug("moving relay", zap.String("peer", p.id.Short()), zap.String("to", best.url), zap.Error(err))
	}
}
