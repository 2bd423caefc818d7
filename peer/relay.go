package peer

import (
	"bytes"
	"context"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

type relayPath struct {
	conn net.PacketConn
	sp   *superPeer
	tr   rendezvous.Transport
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
		case <-time.After(min(time.Duration(attempt+1)*relayRetryStep, relayRetryMax)):
		}
		if p.path().Kind == PathDirect && attempt >= relayRetriesWhileDirect-1 {
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
	buf := make([]byte, maxUDPPayload)
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

// bestSuperPeer picks the super peer with the lowest latency between
// this device and peer through it: both legs, this device's RTT to it
// plus the peer's as the super peer reported it (the device's own when
// that is not known yet).
func (d *Device) bestSuperPeer(p *peerState) (*superPeer, *rendezvous.Session) {
	var (
		best     *superPeer
		bestSess *rendezvous.Session
		bestRTT  time.Duration
	)
	for _, sp := range d.sps {
		sess := sp.session()
		if sess == nil {
			continue
		}
		if rtt := p.relayCost(sp, sess); best == nil || rtt < bestRTT {
			best, bestSess, bestRTT = sp, sess, rtt
		}
	}
	return best, bestSess
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

// maintainRelay moves the peer's relay to a clearly nearer super peer as
// latencies change. Only the device with the smaller peer ID decides, so
// that the two never chase each other; the other follows (joinRelay).
func (d *Device) maintainRelay(p *peerState) {
	if bytes.Compare(d.id[:], p.id[:]) > 0 {
		return
	}
	t := time.NewTicker(d.cfg.RelayCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-d.closed:
			return
		case <-t.C:
		}
		p.mu.Lock()
		rp, direct, gone := p.relay, p.direct.IsValid(), p.gone
		p.mu.Unlock()
		if gone {
			return
		}
		p.mu.Lock()
		p.mu.Unlock()
		if rp == nil || direct {
			continue
		}
		// Fresh candidates from every super peer: the peer's RTT to each,
		// and another round of punching while the connection is relayed.
		for _, sp := range d.sps {
			if sess := sp.session(); sess != nil {
				ctx, cancel := context.WithTimeout(d.ctx, d.cfg.RelayCheckInterval)
				sess.Lookup(ctx, p.id)
				cancel()
			}
		}
		cur := rp.sp.session()
		best, bestSess := d.bestSuperPeer(p)
		if cur == nil || best == nil || best == rp.sp {
			continue
		}
		now, better := p.relayCost(rp.sp, cur), p.relayCost(best, bestSess)
		if better >= time.Duration(float64(now)*relayMoveRatio)-relayMoveMargin {
			continue
		}
		d.log.Debug("moving relay", zap.String("peer", p.id.Short()), zap.String("from", rp.sp.url), zap.String("to", best.url),
			zap.Duration("from_rtt", now), zap.Duration("to_rtt", better))
		ctx, cancel := context.WithTimeout(d.ctx, d.cfg.RelayDialTimeout)
		if _, err := bestSess.Introduce(ctx, p.id, true); err == nil {
			d.dialRelay(ctx, p, best, bestSess)
		}
		cancel()
	}
}
