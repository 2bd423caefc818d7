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

	"github.com/netsody/superpeer/rendezvous"
)

// takesDirectPaths reports whether the device punches and answers
// punches: a relay-only device takes no direct path, either way.
func (d *Device) takesDirectPaths() bool { return !d.cfg.RelayOnly }

// candidate is an address punched towards the peer. Until it answers, it
// gets PunchTries pings per introduction, spaced FastPunchInterval,
// twice that, four times... and each takes a token of the device's
// pacing (Device.punchPace). Once it answered, it is pinged like a
// direct path until its consent expires (consentFreshness).
type candidate struct {
	addr     netip.AddrPort
	tries    int       // pings since the last introduction, while unanswered
	nextTry  time.Time // the next may not go before
	answered time.Time // its last pong; zero: never
	lastPing time.Time
}

// addCandidates adds addresses to punch, local ones first, and punches
// them. An introduction (not a punch) counts as use of the peer, gives
// every address it names PunchTries tries again and punches answered
// addresses fast. An address in a class the device never punches
// (addrclass.go) is dropped here.
func (p *peerState) addCandidates(as []netip.AddrPort, introduced bool, scope punchScope) {
	if !p.dev.takesDirectPaths() {
		return
	}
	now := time.Now()
	p.mu.Lock()
	if p.life.gone { // forgotten (Revoke, say) since the caller found it
		p.mu.Unlock()
		return
	}
	if introduced {
		// Both NATs map per destination: punching cannot work, so no
		// fast phase; the relay carries the connection (Dial opens it at
		// once) and a slow background punch checks the verdicts.
		p.punch.slow = p.punch.peerNAT == rendezvous.MappingDependent && p.dev.mapping.mapping() == rendezvous.MappingDependent
	}
	first := now
	if p.punch.slow {
		first = now.Add(slowPunchInterval)
	}
	added := false
	for _, a := range as {
		a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
		if !scope.allows(a) || p.dev.sock.socketFor(a) == nil {
			continue
		}
		if i := p.candidateLocked(a); i >= 0 {
			if introduced {
				p.punch.cands[i].tries, p.punch.cands[i].nextTry = 0, first
			}
			continue
		}
		if len(p.punch.cands) >= maxCandidates {
			p.evictCandidateLocked()
		}
		p.punch.cands = append(p.punch.cands, candidate{addr: a, nextTry: first})
		p.dev.sock.mapCandidate(a, p)
		added = true
	}
	if introduced {
		if !p.punch.slow {
			p.punch.fastUntil = now.Add(p.dev.cfg.FastPunchFor)
		}
		p.life.lastUsed = now
		p.changedLocked() // the path's reason may have changed
	} else if !added {
		p.triggeredCheckLocked(as, now)
	}
	p.startPunchingLocked()
	p.mu.Unlock()
}

// triggeredCheckLocked answers a ping from a known address, on a device
// without a direct path, with a ping of its own now, not at its next try
// (RFC 8445 section 7.3.1.4): one more try, at most once per fast
// interval. It never restarts fast punching: a ping proves nothing about
// the peer's other addresses.
func (p *peerState) triggeredCheckLocked(from []netip.AddrPort, now time.Time) {
	if p.paths.direct.IsValid() || now.Sub(p.punch.wokenAt) < p.dev.cfg.FastPunchInterval {
		return
	}
	for _, a := range from {
		if i := p.candidateLocked(a); i >= 0 {
			c := &p.punch.cands[i]
			c.tries, c.nextTry = min(c.tries, p.dev.cfg.PunchTries-1), now
			p.punch.wokenAt = now
		}
	}
}

// startPunchingLocked starts the punch loop, or wakes it to punch now.
func (p *peerState) startPunchingLocked() {
	if p.punch.running {
		p.wakeUp()
		return
	}
	p.punch.running = true
	p.dev.goRun(p.punchLoop)
}

// candidateLocked is a's index in the candidates, or -1.
func (p *peerState) candidateLocked(a netip.AddrPort) int {
	return slices.IndexFunc(p.punch.cands, func(c candidate) bool { return c.addr == a })
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
		if c.addr != p.paths.direct {
			p.dev.sock.unmapCandidate(c.addr, p)
			p.punch.cands = slices.Delete(p.punch.cands, i, i+1)
			return
		}
	}
}

// punchLoop pings what is due (dueLocked) and drops a direct path that
// stops answering. It ends when the peer is forgotten, the device closes,
// or nothing is left to ping: then a stranger that went away costs
// nothing more. New candidates start it again.
func (p *peerState) punchLoop() {
	cfg := &p.dev.cfg
	for {
		p.mu.Lock()
		if p.life.gone {
			p.punch.running = false
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
		targets, next := p.dueLocked(time.Now())
		if len(targets) == 0 && next.IsZero() {
			p.punch.running = false
			p.mu.Unlock()
			return
		}
		msgs := make([][]byte, len(targets))
		for i, to := range targets {
			msgs[i] = p.pingLocked(to)
		}
		p.mu.Unlock()
		for i, to := range targets {
			p.out.writeUDP(msgs[i], to)
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-p.dev.closed:
			t.Stop()
			return
		case <-p.punch.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// dueLocked returns the addresses to ping now, and when to look again
// (zero: never, until new candidates). With a direct path, that is the
// direct path alone, every PunchInterval. Without one: every answered
// address at the keepalive interval (fast for FastPunchFor after an
// introduction or a lost direct path), and every other address with
// tries left when its next try is due and the device's pacing has a
// token.
func (p *peerState) dueLocked(now time.Time) (targets []netip.AddrPort, next time.Time) {
	cfg := &p.dev.cfg
	if cfg.blockDirect() {
		// The tests' cut network: no punch leaves, no try is spent.
		return nil, now.Add(cfg.PunchInterval)
	}
	earliest := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	if d := p.paths.direct; d.IsValid() {
		if now.Sub(p.punch.keptAlive) >= cfg.PunchInterval {
			targets, p.punch.keptAlive = append(targets, d), now
		}
		earliest(p.punch.keptAlive.Add(cfg.PunchInterval))
		earliest(p.paths.lastPong.Add(cfg.DirectTimeout))
		return targets, next
	}
	interval := cfg.PunchInterval
	if now.Before(p.punch.fastUntil) {
		interval = cfg.FastPunchInterval
	}
	for i := range p.punch.cands {
		c := &p.punch.cands[i]
		switch {
		case !c.answered.IsZero() && now.Sub(c.answered) < consentFreshness:
			if now.Sub(c.lastPing) >= interval {
				targets, c.lastPing = append(targets, c.addr), now
			}
			earliest(c.lastPing.Add(interval))
		case c.tries >= cfg.PunchTries:
		case now.Before(c.nextTry):
			earliest(c.nextTry)
		case !p.dev.punchPace.AllowN(now, 1):
			earliest(now.Add(time.Second / time.Duration(cfg.PunchRate)))
		default:
			targets = append(targets, c.addr)
			c.lastPing, c.nextTry = now, now.Add(cfg.FastPunchInterval<<min(c.tries, maxTryShift))
			if p.punch.slow {
				c.nextTry = now.Add(slowPunchInterval)
			}
			c.tries++
			if c.tries < cfg.PunchTries {
				earliest(c.nextTry)
			}
		}
	}
	return targets, next
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
	p.addCandidates([]netip.AddrPort{from}, false, p.dev.scopeReflexive())
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
	if i := p.candidateLocked(from); i >= 0 {
		p.punch.cands[i].answered = p.paths.lastPong
	}
	p.dev.sock.mapDirect(from, p)
	if p.takesDirectLocked(from, rtt) {
		p.directValidatedLocked(from, rtt)
	}
	p.startPunchingLocked() // the direct path's keepalive
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
	as := make([]netip.AddrPort, len(p.punch.cands))
	for i, c := range p.punch.cands {
		as[i] = c.addr
	}
	return as
}

// handlePunch acts on a punch message from the socket. A punch from a
// sender the device does not accept, or has no state for, is dropped
// before its signature is checked, and checks are rate-limited per
// source (verifyLimit): anyone can send UDP.
func (d *Device) handlePunch(b []byte, from netip.AddrPort) {
	if !d.takesDirectPaths() {
		return
	}
	pn, err := parsePunch(b, d.id)
	if err != nil {
		return
	}
	p := d.peer(pn.sender, false)
	if p == nil || !d.policy.accepts(pn.sender) || !d.verify.allow(from.Addr()) {
		return
	}
	d.verified.Add(1)
	if !pn.verify(b) {
		return
	}
	if pn.typ == punchPing {
		p.onPing(pn, from)
	} else {
		p.onPong(pn, from)
	}
}
