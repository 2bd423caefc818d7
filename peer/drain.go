package peer

// When a super peer drains (FrameMove: it is being stopped, or removed by
// a reload), the device moves the relays it holds there to its other
// super peers before the old one closes (docs/DEVICE.md, "When a super
// peer drains"). The choice of where is bestSuperPeer's, as for every
// relay: a draining super peer is not eligible. The move itself is
// relocateRelay's, as when a nearer super peer appears, without its
// hysteresis: the device that moves relays (movesRelay) opens the new
// relay and switches to it, its peer joins there, and the old legs close
// with the switch. Direct paths are not touched.
//
// The super peer ends the session within the move's deadline; the
// device then dials it again with its usual backoff, refused (503) until
// the super peer is back, and a new session makes it eligible again
// (install).

import (
	"go.uber.org/zap"

	"github.com/netsody/superpeer/rendezvous"
)

// onMove runs, on the session's reading goroutine, when sp drains: it
// marks sp draining and moves the relays through it, without blocking.
func (d *Device) onMove(sp *superPeer, m rendezvous.Move) {
	d.log.Info("super peer drains; moving relays", zap.String("url", sp.url), zap.Duration("deadline", m.Deadline), zap.String("reason", m.Reason))
	sp.mu.Lock()
	sp.draining = true
	sp.mu.Unlock()
	sp.changed()
	d.goRun(func() { d.moveRelaysOff(sp) })
}

// moveRelaysOff moves every relay through sp that this device moves
// (movesRelay) and that carries its peer's traffic (no direct path) to
// the best other super peer, each at once.
func (d *Device) moveRelaysOff(sp *superPeer) {
	peers := d.peerList()
	for _, p := range peers {
		p.mu.Lock()
		rp, direct, gone := p.paths.relay, p.paths.direct.IsValid(), p.life.gone
		p.mu.Unlock()
		if gone || direct || rp == nil || rp.sp != sp || !d.movesRelay(p) {
			continue
		}
		d.goRun(func() { d.relocateRelay(p, rp) })
	}
}

// isDraining reports whether sp told this device that it drains, on the
// session it has now.
func (sp *superPeer) isDraining() bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.draining
}
