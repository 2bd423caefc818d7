package peer

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"go.uber.org/zap"
)

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
	if !p.direct.IsValid() || p.direct == from || rtt < p.directRTT/fasterDirect {
		newPath := p.direct != from
		p.direct = from
		if newPath || p.directRTT == 0 {
			p.directRTT = rtt
		} else {
			p.directRTT += (rtt - p.directRTT) / directRTTGain
		}
		p.flushLocked()
	}
	p.changedLocked()
	p.mu.Unlock()
	p.dev.sock.mapDirect(from, p)
}

// candidates returns the addresses the device punches towards the peer.
func (p *peerState) candidates() []netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.cands)
}
