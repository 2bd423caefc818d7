package peer

// Hole punching: a peer's candidate addresses are pinged, fast after new
// ones and then at the keepalive interval, and the address a pong comes
// from becomes the direct path (directValidatedLocked, path.go). The
// messages are in punchmsg.go.

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"go.uber.org/zap"
)

// takesDirectPaths reports whether the device punches and answers
// punches: a relay-only device takes no direct path, either way.
func (d *Device) takesDirectPaths() bool { return !d.cfg.RelayOnly }

// addCandidates adds addresses to punch, local ones first, and starts
// punching fast. An introduction (not a punch) counts as use of the peer.
func (p *peerState) addCandidates(as []netip.AddrPort, introduced bool) {
	if !p.dev.takesDirectPaths() {
		return
	}
	p.mu.Lock()
	added := false
	for _, a := range as {
		a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
		if !a.IsValid() || a.Port() == 0 || p.dev.sock.socketFor(a) == nil || slices.Contains(p.punch.cands, a) {
			continue
		}
		if len(p.punch.cands) >= maxCandidates {
			p.evictCandidateLocked()
		}
		p.punch.cands = append(p.punch.cands, a)
		added = true
	}
	if !added && !introduced {
		// A punch from a known address is no news, except to a device
		// without a direct path: it pings back now (once per fast
		// interval at most), not at its next tick.
		wake := !p.paths.direct.IsValid() && time.Since(p.punch.wokenAt) >= p.dev.cfg.FastPunchInterval
		if wake {
			p.punch.wokenAt = time.Now()
		}
		p.mu.Unlock()
		if wake {
			p.wakeUp()
		}
		return
	}
	p.punch.fastUntil = time.Now().Add(p.dev.cfg.FastPunchFor)
	if introduced {
		p.life.lastUsed = time.Now()
	}
	p.mu.Unlock()
	started := false
	p.punch.loop.Do(func() { started = true; p.dev.goRun(p.punchLoop) })
	if !started {
		p.wakeUp()
	}
}

// wakeUp makes the punch loop punch now.
func (p *peerState) wakeUp() {
	select {
	case p.punch.wake <- struct{}{}:
	default:
	}
}

// evictCandidateLocked drops the oldest candidate that is not the direct
// path, making room for a newer one: addresses go stale as NATs rebind
// and devices move.
func (p *peerState) evictCandidateLocked() {
	for i, c := range p.punch.cands {
		if c != p.paths.direct {
			p.punch.cands = slices.Delete(p.punch.cands, i, i+1)
			return
		}
	}
}

// punchLoop pings every candidate, fast at first and then at the
// keepalive interval, and drops a direct path that stops answering. It
// runs until the peer is forgotten or the device closes.
func (p *peerState) punchLoop() {
	cfg := &p.dev.cfg
	for {
		p.mu.Lock()
		if p.life.gone {
			p.mu.Unlock()
			return
		}
		if p.paths.direct.IsValid() && time.Since(p.paths.lastPong) > cfg.DirectTimeout {
			p.dev.log.Debug("direct path lost", zap.String("peer", p.id.Short()), zap.Stringer("addr", p.paths.direct))
			p.directLostLocked()
			p.punch.fastUntil = time.Now().Add(cfg.FastPunchFor)
			// Perhaps this device's NAT rebound: the super peers follow it.
			p.dev.goRun(p.dev.pingSuperPeers)
			if p.paths.relay == nil {
				p.dev.goRun(func() { p.dev.ensureRelay(p) })
			}
		}
		interval := cfg.PunchInterval
		if time.Now().Before(p.punch.fastUntil) {
			interval = cfg.FastPunchInterval
		}
		targets := p.pingTargetsLocked()
		msgs := make([][]byte, len(targets))
		for i, to := range targets {
			msgs[i] = p.pingLocked(to)
		}
		p.mu.Unlock()
		if !p.dev.cfg.blockDirect() {
			for i, to := range targets {
				p.out.writeUDP(msgs[i], to)
			}
		}
		select {
		case <-p.dev.closed:
			return
		case <-p.punch.wake:
		case <-time.After(interval):
		}
	}
}

// pingTargetsLocked is where to ping: the direct path alone, once there
// is one, and every candidate until then.
func (p *peerState) pingTargetsLocked() []netip.AddrPort {
	if p.paths.direct.IsValid() {
		return []netip.AddrPort{p.paths.direct}
	}
	return slices.Clone(p.punch.cands)
}

// pingLocked makes a ping to an address and remembers it, forgetting
// some other outstanding ping when there are maxPings.
func (p *peerState) pingLocked(to netip.AddrPort) []byte {
	nonce := rand.Uint64()
	if len(p.punch.pings) >= maxPings {
		for n := range p.punch.pings {
			delete(p.punch.pings, n)
			break
		}
	}
	p.punch.pings[nonce] = pingSent{to: to, at: time.Now()}
	return (&punch{typ: punchPing, sender: p.dev.id, receiver: p.id, nonce: nonce}).encode(p.dev.cfg.Identity)
}

// onPing answers a ping at the address it came from, and treats that
// address as the peer's (a peer-reflexive candidate).
func (p *peerState) onPing(pn punch, from netip.AddrPort) {
	if p.dev.cfg.blockDirect() {
		return
	}
	pong := (&punch{typ: punchPong, sender: p.dev.id, receiver: p.id, nonce: pn.nonce}).encode(p.dev.cfg.Identity)
	p.out.writeUDP(pong, from)
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
	defer p.mu.Unlock()
	sent, ok := p.punch.pings[pn.nonce]
	if !ok {
		return
	}
	delete(p.punch.pings, pn.nonce)
	rtt := time.Since(sent.at)
	p.paths.lastPong = time.Now()
	p.dev.sock.mapDirect(from, p)
	if p.takesDirectLocked(from, rtt) {
		p.directValidatedLocked(from, rtt)
	}
}

// takesDirectLocked reports whether a pong from addr after rtt makes addr
// the direct path: when there is none, when it is the same, or when it is
// clearly faster (fasterDirect) than the one there is.
func (p *peerState) takesDirectLocked(addr netip.AddrPort, rtt time.Duration) bool {
	d := p.paths.direct
	return !d.IsValid() || d == addr || rtt < p.paths.directRTT/fasterDirect
}

// candidates returns the addresses the device punches towards the peer.
func (p *peerState) candidates() []netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.punch.cands)
}
