package rendezvous

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/netsody/superpeer/identity"
)

// Introductions, with consent (issue 10 part 1). A device A asks to
// connect to B (FrameConnect). If B announced CapConsent, the super peer
// first asks B (FrameRequest, naming only A and whether A relays); only
// when B accepts (FrameAnswer) do both get each other's candidates, back
// to back, as they would have at once without consent, so that they still
// punch at the same moment. A decline, no answer within ConsentTimeout,
// and B's session ending are all answered as an offline B is: the same
// ErrCodePeerNotFound and message, so a stranger learns at most whether
// B is online. With HidePresence, every one of them (an offline B too)
// is answered ConsentTimeout after the connect, so it learns not even
// that. A B without CapConsent is introduced at once, as before, unless
// RequireConsent: then it is answered as an offline B.
//
// Failed lookups are limited per (asker, target) (LookupRate), on top of
// the asker's ConnectRate and the target's IntroductionRate: a lookup
// waits for a token, and takes one only if it fails, so that a device
// re-introducing itself to a peer that accepted it is not slowed, while a
// stranger probing a peer, or pestering one that declines, is. A connect
// while the same lookup waits joins it. Requests waiting for an answer are
// bounded per target and in all (maxPendingPerTarget, maxPending).
//
// What waits (a request, or a hidden refusal's timer) is bounded per
// asking session and per asker's source prefix as well
// (maxWaitingPerAsker, maxWaitingPerPrefix), checked before the target is
// looked at so that the refusal says nothing of it: identities are free,
// and without these one host asking devices of its own that never answer
// fills maxPending for ConsentTimeout at a time. A target that lets a
// request time out has its pending slots halved, down to one, until it
// answers again (pendingSlotsLocked): a device of the attacker's that
// never answers holds little, an honest one always answers.

// msgPeerNotFound is the one answer for an offline, declining, silent or
// departed target: a stranger must not tell them apart by it.
const msgPeerNotFound = "no device with this peer ID is registered at this super peer, or it did not accept this device"

// consent guards the lookup tables of every session (session.asks,
// session.asked) and the asks in them. Lock order: it is taken without
// any session's mu, and before an outbox's.
type consent struct {
	mu       sync.Mutex
	pending  int                  // requests waiting for an answer, in all
	byPrefix map[netip.Prefix]int // asks with a timer, by the asker's prefix
}

// ask is one asker's lookups of one target: the per-pair rate limit, and
// the request or hidden refusal in flight. It stays in the asker's table
// while either is in flight or until its bucket has refilled.
type ask struct {
	asker   *session
	peer    identity.PeerID // the target
	limiter *rate.Limiter
	// timer, if set, is the request's deadline, or when a hidden refusal
	// goes out; a connect meanwhile joins it.
	timer  *time.Timer
	target *session  // while the target is asked
	relay  bool      // the asker relays (FrameConnect's FlagRelay)
	since  time.Time // when the request went out
	// remote is set, and asker nil, for an asker at another node of the
	// cluster (cluster.go).
	remote *remoteAsk
}

// handleConnect answers a FrameConnect: candidates to both devices,
// after the target's consent if it gives it, or a refusal.
func (s *session) handleConnect(m *Connect) {
	if !s.limiter.Allow() {
		s.refuse(m.Peer, ErrCodeRateLimited, "too many connect requests; slow down")
		return
	}
	if m.Peer == s.peer {
		s.refuse(m.Peer, ErrCodeBadRequest, "a device cannot connect to itself")
		return
	}
	cfg := s.srv.config()
	other := s.srv.lookup(m.Peer)
	cl := s.srv.Cluster()
	now := time.Now()
	c := &s.srv.consent
	c.mu.Lock()
	a := s.askLocked(m.Peer, cfg, now)
	switch {
	case a == nil:
		c.mu.Unlock()
		s.srv.stats.LookupsLimited.Add(1)
		s.refuse(m.Peer, ErrCodeRateLimited, "too many peers looked up at once; slow down")
		return
	case a.timer != nil:
		// The same lookup waits: its answer answers this one too. Consent
		// is given to a peer, not to a way of reaching it (the device
		// remembers its decisions per peer), and the request's relay flag
		// only informs the device's decision; so a joining connect that
		// asks for a relay gets one offered, as the asker now asked, and
		// no relay is offered unless one of its connects asked.
		a.relay = a.relay || m.Relay
		c.mu.Unlock()
		return
	case a.limiter.TokensAt(now) < 1:
		c.mu.Unlock()
		s.srv.stats.LookupsLimited.Add(1)
		s.refuse(m.Peer, ErrCodeRateLimited, "too many connect requests for this peer; slow down")
		return
	case c.askerBusyLocked(s):
		c.mu.Unlock()
		s.srv.stats.LookupsLimited.Add(1)
		s.refuse(m.Peer, ErrCodeRateLimited, "this device, or its network, has too many lookups waiting for answers; retry once they are answered")
		return
	case other == nil && cl != nil && !s.relayOnly:
		// A session for relays only asks for peers registered here,
		// where its relays meet; not the cluster.
		f := s.askClusterLocked(a, cl, m.Relay, now, cfg)
		c.mu.Unlock()
		s.sendNow(f)
		return
	case other == nil || other.consentClosed || cfg.RequireConsent && !other.proto.Capabilities.Has(CapConsent):
		f := c.unavailableLocked(a, now, cfg)
		c.mu.Unlock()
		s.sendNow(f)
		return
	case !other.proto.Capabilities.Has(CapConsent):
		c.mu.Unlock()
		s.introduceAtOnce(other, m)
		return
	}
	f, busy := c.requestLocked(a, other, m.Relay, now, cfg)
	c.mu.Unlock()
	if busy != "" && !cfg.HidePresence {
		s.refuse(m.Peer, ErrCodeRateLimited, busy)
		return
	}
	s.sendNow(f)
}

// askLocked returns s's ask of peer, made if need be; nil if s's table is
// full of asks still in use.
func (s *session) askLocked(peer identity.PeerID, cfg *Config, now time.Time) *ask {
	if a := s.asks[peer]; a != nil {
		return a
	}
	if len(s.asks) >= maxLookupPeers {
		for p, a := range s.asks {
			if a.timer == nil && a.limiter.TokensAt(now) >= float64(a.limiter.Burst()) {
				delete(s.asks, p)
			}
		}
		if len(s.asks) >= maxLookupPeers {
			return nil
		}
	}
	if s.asks == nil {
		s.asks = make(map[identity.PeerID]*ask)
	}
	a := &ask{asker: s, peer: peer, limiter: rate.NewLimiter(rate.Limit(cfg.LookupRate), cfg.LookupBurst)}
	s.asks[peer] = a
	return a
}

// requestLocked asks target whether a's asker may connect. If the target
// cannot be asked now (over its introduction rate, its pending requests
// or its queue), busy says why; with HidePresence that is answered as an
// offline target is, whose frame, if due now, is f.
func (c *consent) requestLocked(a *ask, target *session, relay bool, now time.Time, cfg *Config) (f []byte, busy string) {
	stats := &a.asker.srv.stats
	switch {
	case target.asked[a.asker.peer] != nil: // from this device, at another node
		busy = "the peer has a request from this device waiting for its answer already; retry in a moment"
	case !target.allowIntro():
		stats.IntroductionsLimited.Add(1)
		busy = "the peer is asked for by too many devices now; retry in a moment"
	case len(target.asked) >= target.pendingSlotsLocked() || c.pending >= maxPending:
		stats.ConsentBusy.Add(1)
		busy = "the peer has too many requests waiting for its answer; retry in a moment"
	default:
		switch target.out.offer(a.asker.peer, (&Request{Peer: a.asker.peer, Relay: relay}).frame()) {
		case offerDropped:
			stats.IntroductionsDropped.Add(1)
			busy = "the peer is not taking its frames now; retry in a moment"
		case offerCoalesced:
			stats.IntroductionsCoalesced.Add(1)
		}
	}
	if busy != "" {
		if cfg.HidePresence {
			return c.unavailableLocked(a, now, cfg), busy
		}
		a.limiter.AllowN(now, 1) // a failed lookup
		return nil, busy
	}
	if target.asked == nil {
		target.asked = make(map[identity.PeerID]*ask)
	}
	target.asked[a.asker.peer] = a
	a.target, a.relay, a.since = target, relay, now
	c.pending++
	c.afterLocked(a, cfg.ConsentTimeout, func() {
		stats.ConsentTimeouts.Add(1)
		target.silent++
		c.dropLocked(a)
		a.limiter.Allow() // a failed lookup
	})
	stats.ConsentRequests.Add(1)
	return nil, ""
}

// afterLocked sets a timer on a that, unless stopped first (stopLocked),
// runs then (under c.mu) and tells a's asker that its target is not
// found. While it is set, a counts among its asker's waiting asks.
func (c *consent) afterLocked(a *ask, d time.Duration, then func()) {
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		c.mu.Lock()
		if a.timer != t {
			c.mu.Unlock()
			return
		}
		c.stopLocked(a)
		then()
		c.mu.Unlock()
		a.asker.send(a.asker.srv.notFound(a.peer))
	})
	a.timer = t
	c.waitLocked(a.asker, 1)
}

// stopLocked stops a's timer, if set, and uncounts it.
func (c *consent) stopLocked(a *ask) {
	if a.timer == nil {
		return
	}
	a.timer.Stop()
	a.timer = nil
	c.waitLocked(a.asker, -1)
}

// waitLocked counts n more waiting asks of s's, for the per-asker and
// per-prefix bounds.
func (c *consent) waitLocked(s *session, n int) {
	s.waiting += n
	if c.byPrefix == nil {
		c.byPrefix = make(map[netip.Prefix]int)
	}
	if c.byPrefix[s.prefix] += n; c.byPrefix[s.prefix] <= 0 {
		delete(c.byPrefix, s.prefix)
	}
}

// askerBusyLocked reports whether s, or its source prefix, has as many
// asks waiting as it may.
func (c *consent) askerBusyLocked(s *session) bool {
	return s.waiting >= maxWaitingPerAsker || c.byPrefix[s.prefix] >= maxWaitingPerPrefix
}

// pendingSlotsLocked is how many requests may wait for s's answer:
// maxPendingPerTarget, halved for each request s let time out since it
// last answered one, and at least one.
func (s *session) pendingSlotsLocked() int {
	return max(1, maxPendingPerTarget>>min(s.silent, 31))
}

// unavailableLocked answers a's lookup as for an offline target, a
// failed lookup: the frame to send now, or, with HidePresence, nil and a
// timer that sends it ConsentTimeout after the lookup began.
func (c *consent) unavailableLocked(a *ask, since time.Time, cfg *Config) []byte {
	a.limiter.Allow()
	if !cfg.HidePresence {
		return a.asker.srv.notFound(a.peer)
	}
	c.afterLocked(a, time.Until(since.Add(cfg.ConsentTimeout)), func() {})
	return nil
}

// dropLocked ends a's request: it no longer waits for its target.
func (c *consent) dropLocked(a *ask) {
	if a.target == nil {
		return
	}
	delete(a.target.asked, a.from())
	a.target = nil
	c.pending--
	c.stopLocked(a)
	if a.remote != nil {
		a.remote.timer.Stop()
	}
}

// handleAnswer acts on the device's answer to a request: on accept, both
// devices get each other's candidates; on decline, the asker is told
// what it would be told of an offline device.
func (s *session) handleAnswer(m *Answer) {
	cfg := s.srv.config()
	c := &s.srv.consent
	c.mu.Lock()
	a := s.asked[m.Peer]
	if a == nil {
		c.mu.Unlock()
		s.srv.stats.ConsentIgnored.Add(1)
		return
	}
	if a.remote != nil {
		s.silent = 0
		c.dropLocked(a)
		c.mu.Unlock()
		s.answerRemote(a, m.Accept)
		return
	}
	asker, relay := a.asker, a.relay
	s.silent = 0 // it answers
	c.dropLocked(a)
	var f []byte
	if !m.Accept {
		f = c.unavailableLocked(a, a.since, cfg)
	}
	c.mu.Unlock()
	if !m.Accept {
		s.srv.stats.ConsentDeclined.Add(1)
		if f != nil {
			s.offerTo(asker, f)
		}
		return
	}
	s.srv.stats.ConsentAccepted.Add(1)
	toAsker, toTarget := pairCandidates(asker, s, relay)
	// The asker's frame is offered, so that a stalled asker cannot stall
	// this reader; the device's own follows at once.
	if s.offerTo(asker, toAsker) {
		s.send(toTarget)
		s.srv.stats.Connects.Add(1)
	}
}

// offerTo offers f, caused by s's device, to other; false if dropped.
func (s *session) offerTo(other *session, f []byte) bool {
	switch other.out.offer(s.peer, f) {
	case offerDropped:
		s.srv.stats.IntroductionsDropped.Add(1)
		return false
	case offerCoalesced:
		s.srv.stats.IntroductionsCoalesced.Add(1)
	}
	return true
}

// introduceAtOnce introduces the device to other, which does not ask for
// consent (no CapConsent): candidates to both, back to back, as before
// consent existed.
func (s *session) introduceAtOnce(other *session, m *Connect) {
	if !other.allowIntro() {
		s.srv.stats.IntroductionsLimited.Add(1)
		s.refuse(m.Peer, ErrCodeRateLimited, "the peer is asked for by too many devices now; retry in a moment")
		return
	}
	toAsker, toTarget := pairCandidates(s, other, m.Relay)
	if !s.offerTo(other, toTarget) {
		s.refuse(m.Peer, ErrCodeRateLimited, "the peer is not taking its frames now; retry in a moment")
		return
	}
	s.send(toAsker)
	s.srv.stats.Connects.Add(1)
}

// pairCandidates returns the candidates frames for an introduction of
// asker to target: asker's (the initiator's) and target's.
func pairCandidates(asker, target *session, relay bool) (toAsker, toTarget []byte) {
	mine, theirs := asker.candidates(), target.candidates()
	theirs.Initiator = true
	mine.Relay, theirs.Relay = relay, relay
	theirs, mine = asker.readable(theirs), target.readable(mine)
	return theirs.frame(), mine.frame()
}

// readable returns a peer's candidates as s's device may get them: a
// peer's mapping goes only to a device that reads it (CapMapping), from
// this node or another.
func (s *session) readable(c Candidates) Candidates {
	if !s.proto.Capabilities.Has(CapMapping) {
		c.PeerNAT = Mapping{}
	}
	return c
}

// closeConsent ends s's lookups and the requests to s, once s has
// ended: their askers are told what they would be of an offline device.
func (srv *Server) closeConsent(s *session) {
	cfg := srv.config()
	c := &srv.consent
	c.mu.Lock()
	s.consentClosed = true
	for _, a := range s.asks {
		c.dropLocked(a)
		c.stopLocked(a)
	}
	s.asks = nil
	type late struct {
		to *session
		f  []byte
	}
	var now []late
	var remote []*ask
	for _, a := range s.asked {
		c.dropLocked(a)
		if a.remote != nil {
			remote = append(remote, a)
			continue
		}
		if f := c.unavailableLocked(a, a.since, cfg); f != nil {
			now = append(now, late{a.asker, f})
		}
	}
	s.asked = nil
	c.mu.Unlock()
	for _, l := range now {
		s.offerTo(l.to, l.f)
	}
	for _, a := range remote {
		a.remote.reply(ClusterAnswer{})
	}
}

// notFound is the refusal for a target that is not found, counted.
func (srv *Server) notFound(peer identity.PeerID) []byte {
	srv.stats.Refused[ErrCodePeerNotFound].Add(1)
	return (&Error{Code: ErrCodePeerNotFound, Peer: peer, Message: msgPeerNotFound}).frame()
}

// refuse answers a request about peer with a non-fatal error.
func (s *session) refuse(peer identity.PeerID, code ErrorCode, msg string) {
	s.srv.stats.Refused[code].Add(1)
	s.send((&Error{Code: code, Peer: peer, Message: msg}).frame())
}

// sendNow sends f, if any.
func (s *session) sendNow(f []byte) {
	if f != nil {
		s.send(f)
	}
}
