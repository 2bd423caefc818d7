package peer

// Good enough, then near (docs/DEVICE.md, "Which super peer relays"): a
// super peer that announced CapHeadroom tells the device what its relay
// can still take (FrameHeadroom), and bestSuperPeer relays through the
// nearest super peer that is good enough for the relay's traffic, so
// that a loaded super peer steers new relays to its siblings instead of
// refusing them. One that told nothing (an older super peer, or none
// yet) counts as good enough, as before headroom existed.
//
// The rule has hysteresis, in relayHeadroomMargin: a super peer takes a
// relay only with its need and half as much again to spare, and the
// one a relay runs through becomes not good enough for it only once
// less than half the need floor is spare. A relay that moved thus
// leaves its new super peer at least the margin spare, so it does not
// find it full at once and move back; and a relay leaves a full super
// peer only for one that is good enough (relocateRelay), never for
// another full one.

import (
	"time"

	"go.uber.org/zap"

	"github.com/netsody/superpeer/rendezvous"
)

// onHeadroom runs, on the session's reading goroutine, for every
// FrameHeadroom, which the session keeps (Session.Headroom): the next
// choice of super peer takes it in.
func (d *Device) onHeadroom(sp *superPeer, h rendezvous.Headroom) {
	if ce := d.log.Check(zap.DebugLevel, "super peer headroom"); ce != nil {
		ce.Write(zap.String("url", sp.url), zap.Uint64("bandwidth", h.Bandwidth), zap.Uint32("sessions", h.Sessions))
	}
}

// goodEnough reports whether the super peer of sess is good enough for a
// relay that needs need bytes per second (relayNeed): holds says whether
// the relay runs through it already (then it needs no new session, and
// only a full super peer is not good enough for it).
func goodEnough(sess *rendezvous.Session, need float64, holds bool) bool {
	h, told := sess.Headroom()
	return headroomEnough(h, told, need, holds)
}

// headroomEnough is goodEnough's rule, for a super peer that told h if
// told.
func headroomEnough(h rendezvous.Headroom, told bool, need float64, holds bool) bool {
	switch {
	case !told:
		return true
	case holds:
		return float64(h.Bandwidth) >= relayHeadroomMargin*relayNeedFloor
	}
	return h.Sessions > 0 && float64(h.Bandwidth) >= (1+relayHeadroomMargin)*need
}

// relayNeed returns what the relay to p needs, in bytes per second: what
// its relay path carried, both ways, since it was last measured
// (relayRateWindow ago or more), and relayNeedFloor at the least. With
// no relay now, the last measure stands.
func (p *peerState) relayNeed(now time.Time) float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := &p.relayCtl
	if rp := p.paths.relay; rp != nil && now.Sub(c.meteredAt) >= relayRateWindow {
		n := rp.relayed.Load()
		if c.metered == rp {
			c.rate = float64(n-c.meteredBytes) / now.Sub(c.meteredAt).Seconds()
		}
		c.metered, c.meteredBytes, c.meteredAt = rp, n, now
	}
	return max(relayNeedFloor, c.rate)
}
