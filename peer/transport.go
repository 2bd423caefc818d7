package peer

// The transport to a super peer, by measurement (docs/DEVICE.md, "Which
// transport carries a relay"). Which super peer relays is bestSuperPeer's
// one rule; this file decides how the device reaches it. Relayed packets
// take the relay's fast path while it is validated and delivering (its
// own state machine, fastpath.go), else the session's HTTP/3 datagrams,
// else HTTP/2 capsules: a relay leg's transport is its session's, so the
// session's transport is the choice between the last two. It is the
// super peer's state below, run by its goroutine (superPeer.run, from
// awaitEnd):
//
//	        raceH3H2: HTTP/3, HTTP/2 after H3HeadStart
//	dial -----------------------------------------------------+
//	  | HTTP/3 answers first                 HTTP/2 first      |
//	  v                                                        v
//	on h3 ---- pings unanswered for h3Unanswered ---------> on h2 (why: "HTTP/3 unanswered")
//	  ^  |     (h3Check): HTTP/2 opened, the relays'           |  |
//	  |  |     legs move with the session                      |  |
//	  +--|------- an HTTP/3 session opens and registers -------+  |
//	     |        at the retry (transportCtl.wait)                |
//	     | unanswered, and HTTP/2             pings unanswered    |
//	     v cannot be opened                   for h3Unanswered    v
//	   ended (errUnanswered): run redials, another address of the name first
//
// The retry is the hysteresis: after a start on HTTP/2 (UDP blocked from
// the start) it comes every H3RetryInterval; after a fall, h3RetryMin
// later, doubling with each fall and each failed retry up to
// H3RetryInterval, so that a path that flaps (or an adversary who drops
// UDP at will) moves the device at most once per H3RetryInterval once
// the first few falls have passed. Falls are forgotten once HTTP/3 held
// for h3StableFor.
//
// A relay leg moves between sessions as when its super peer went away:
// the session's new registration ends the old one's legs at the super
// peer, the device closes the old session, each leg's reader sees it end
// (readRelay) and opens it again through bestSuperPeer, now over the new
// session. The end-to-end QUIC connection keeps the peer's virtual
// address throughout and retransmits what the move lost; the packets
// sent meanwhile wait (pending) and go with the new leg.

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/netsody/superpeer/rendezvous"
)

// transportCtl is a super peer's transport choice between sessions: the
// run goroutine's own.
type transportCtl struct {
	falls   int           // falls from HTTP/3 to HTTP/2 since HTTP/3 last held for h3StableFor
	h3Since time.Time     // when the HTTP/3 session in use opened; zero on HTTP/2
	wait    time.Duration // until the next HTTP/3 retry, while on HTTP/2
}

// onH3 records an HTTP/3 session in use from now.
func (c *transportCtl) onH3(now time.Time) { c.h3Since = now }

// startedOnH2 sets the retry for a session that the race opened over
// HTTP/2: H3RetryInterval, or what falls left (HTTP/3 failed lately).
func (c *transportCtl) startedOnH2(ceiling time.Duration) time.Duration {
	c.h3Since = time.Time{}
	if c.falls == 0 || c.wait <= 0 {
		c.wait = ceiling
	}
	return c.wait
}

// fell records a fall from HTTP/3 at now and returns the wait until the
// next HTTP/3 retry.
func (c *transportCtl) fell(now time.Time, ceiling time.Duration) time.Duration {
	if !c.h3Since.IsZero() && now.Sub(c.h3Since) >= h3StableFor {
		c.falls = 0
	}
	c.h3Since = time.Time{}
	c.falls++
	c.wait = min(h3RetryMin<<min(c.falls-1, 16), ceiling)
	return c.wait
}

// retryFailed doubles the wait after an HTTP/3 retry that failed.
func (c *transportCtl) retryFailed(ceiling time.Duration) time.Duration {
	c.wait = min(max(2*c.wait, h3RetryMin), ceiling)
	return c.wait
}

// answerer is what h3Check needs of a session: rendezvous.Session.
type answerer interface {
	Ping()
	Answered() time.Time
	Unanswered() time.Time
}

// h3Check measures whether a session still delivers: every h3CheckEvery
// while its super peer has relay legs open or its relays carry packets,
// it pings the super peer, and a session whose pings stay unanswered for
// h3Unanswered does not. The session's own keepalive pings (every
// keepalive interval, 15 s by default) count as well, so that a session
// without relays is found dead within that and h3Unanswered. A pong
// travels the path that the relay's datagrams do (one QUIC connection,
// one UDP flow; or the HTTP/2 connection), both ways, and cannot be
// forged on the path. One mechanism for both transports: a dead HTTP/3
// session falls to HTTP/2, and one that cannot (its node is gone) or a
// dead HTTP/2 one ends, for the device to redial another node of the
// name (awaitEnd).
//
//	         legs open or packets relayed, h3CheckEvery since the last ping
//	quiet -----------------------------------------------------------> asked (ping at askedAt)
//	  ^                                                                  |      |
//	  +------------------- answered after askedAt -----------------------+      | not for h3Unanswered
//	                                                                            v
//	          a keepalive unanswered for h3Unanswered ------------------>  dead
//
// dead: an HTTP/3 session falls to HTTP/2; one that cannot, or an HTTP/2
// one, ends (awaitEnd). Quiet with no ping or keepalive waited for
// (idle), it is not ticked: awaitEnd sleeps until the next packet
// relayed wakes it (relayedOne), or a leg opens (wakeCheck), or for
// h3CheckEvery while legs are open (to ping them), else until the next
// keepalive has gone unanswered for h3Unanswered (napFor).
type h3Check struct {
	sess answerer
	ping func(func()) // runs a ping off the caller's goroutine: Device.goRun
	// legs, if set, reports whether relay legs run through the session's
	// super peer (superPeer.legs): idle ones are checked too.
	legs func() bool

	carried uint64    // the super peer's relayOut at the last tick
	busy    bool      // relays carried packets before the last tick
	askedAt time.Time // the ping waited for; zero if none
	lastAsk time.Time
	pinging atomic.Bool // a Ping is being written
}

// tick looks at the session at now, relayOut being its super peer's
// relayed packets so far, and reports whether it no longer delivers.
func (c *h3Check) tick(now time.Time, relayOut uint64) (dead bool) {
	carried := relayOut != c.carried
	c.carried, c.busy = relayOut, carried
	if u := c.sess.Unanswered(); !u.IsZero() && now.Sub(u) >= h3Unanswered {
		return true // a keepalive, or a ping of ours, that nothing answered
	}
	if !c.askedAt.IsZero() {
		if c.sess.Answered().After(c.askedAt) {
			c.askedAt = time.Time{}
			return false
		}
		return now.Sub(c.askedAt) >= h3Unanswered
	}
	inUse := carried || (c.legs != nil && c.legs())
	if inUse && now.Sub(c.lastAsk) >= h3CheckEvery && !c.pinging.Load() {
		c.askedAt, c.lastAsk = now, now
		c.pinging.Store(true)
		c.ping(func() {
			defer c.pinging.Store(false)
			c.sess.Ping()
		})
	}
	return false
}

// errUnanswered is why a session that stopped delivering ended (awaitEnd).
var errUnanswered = fmt.Errorf("peer: super peer unanswered for %v", h3Unanswered)

// idle reports whether the measure has nothing to do until relays carry
// packets again or its nap ends (napFor): none carried at the last tick,
// and no ping or keepalive waited for.
func (c *h3Check) idle() bool {
	return !c.busy && c.askedAt.IsZero() && c.sess.Unanswered().IsZero()
}

// napFor is how long an idle check sleeps unless woken: until the next
// ping its open legs need; else until the session's next keepalive, due
// in keepaliveIn, has gone unanswered for h3Unanswered, when a look finds
// it dead or answered (and sleeps again).
func (c *h3Check) napFor(keepaliveIn time.Duration) time.Duration {
	if c.legs != nil && c.legs() {
		return h3CheckEvery
	}
	return max(keepaliveIn, 0) + h3Unanswered
}

// relayedOne counts a packet relayed through the super peer, and wakes
// its transport check if it sleeps (sleepUntilRelayed): an atomic load
// per packet while it does not.
func (sp *superPeer) relayedOne() {
	sp.relayOut.Add(1)
	sp.wakeCheck()
}

// wakeCheck wakes the transport check if it sleeps: a packet relayed, or
// a relay leg opened, which its pings must watch.
func (sp *superPeer) wakeCheck() {
	if sp.relayIdle.Load() && sp.relayIdle.CompareAndSwap(true, false) {
		select {
		case sp.relayWake <- struct{}{}:
		default:
		}
	}
}

// sleepUntilRelayed marks the transport check asleep until the next
// packet relayed (relayedOne wakes it), unless one has been since the
// check last counted carried; it reports whether it sleeps.
func (sp *superPeer) sleepUntilRelayed(carried uint64) bool {
	sp.relayIdle.Store(true)
	if sp.relayOut.Load() == carried {
		return true
	}
	sp.relayIdle.Store(false)
	select { // a wake the packet may have left
	case <-sp.relayWake:
	default:
	}
	return false
}

// Why a session is over HTTP/2, for status and connect: HTTP/3 stopped
// delivering (h3Check), or lost the race when the session opened.
var (
	whyH2   = fmt.Sprintf("HTTP/3 unanswered for %v", h3Unanswered)
	whyNoH3 = "HTTP/3 did not answer first"
)

// awaitEnd waits for the session to end, choosing its transport on the
// way (the diagram above): an HTTP/3 session that stops delivering gives
// way to HTTP/2, and one over HTTP/2 tries HTTP/3 again at the retry. The
// session that replaces another becomes the super peer's, and the one
// awaited. A session that stops delivering and cannot fall to HTTP/2 (its
// node is gone), or one over HTTP/2 that stops delivering, is ended
// here, within h3Unanswered, rather than at QUIC's or TCP's timeouts:
// its relays' legs end with it and move, and the device redials another
// address of the name (run). awaitEnd returns the session it awaited
// last, and errUnanswered if it ended it for that.
func (sp *superPeer) awaitEnd(sess *rendezvous.Session) (*rendezvous.Session, error) {
	d := sp.dev
	ctl := &sp.transportCtl
	var check *h3Check
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	watch := func(s *rendezvous.Session) {
		check = &h3Check{sess: s, ping: d.goRun, carried: sp.relayOut.Load(), legs: func() bool { return sp.legs.Load() > 0 }}
	}
	if sess.Transport() == rendezvous.TransportH3 {
		ctl.onH3(time.Now())
	} else {
		retry.Reset(ctl.startedOnH2(d.cfg.H3RetryInterval))
	}
	watch(sess)
	// The check ticks while relays carry packets or a ping or keepalive
	// is waited for, and sleeps otherwise (h3Check.napFor): an idle
	// device costs no wakeups here but its keepalives'.
	tick := time.NewTicker(h3CheckTick)
	defer tick.Stop()
	nap := time.NewTimer(time.Hour)
	nap.Stop()
	defer nap.Stop()
	ticking := true
	sp.relayIdle.Store(false) // as an earlier session's check may have left it
	wake := func() {
		nap.Stop()
		sp.relayIdle.Store(false)
		ticking = true
		tick.Reset(h3CheckTick)
	}
	for {
		var retryC, tickC, napC <-chan time.Time
		var wakeC <-chan struct{}
		if sess.Transport() == rendezvous.TransportH2 {
			retryC = retry.C
		}
		if ticking {
			tickC = tick.C
		} else {
			wakeC, napC = sp.relayWake, nap.C
		}
		select {
		case <-sess.Done():
			return sess, nil
		case <-sp.ctx.Done():
			return sess, nil
		case <-wakeC:
			wake()
		case <-napC:
			wake()
		case now := <-tickC:
			sp.checkWakeups.Add(1)
			if !check.tick(now, sp.relayOut.Load()) {
				if check.idle() && sp.sleepUntilRelayed(check.carried) {
					ticking = false
					tick.Stop()
					nap.Reset(check.napFor(time.Until(sess.NextKeepalive())))
				}
				continue
			}
			if sess.Transport() == rendezvous.TransportH2 {
				d.log.Info("super peer: session unanswered, ending it", zap.String("url", sp.url), zap.Duration("unanswered", h3Unanswered))
				return sess, errUnanswered
			}
			d.log.Info("super peer: HTTP/3 unanswered, moving to HTTP/2", zap.String("url", sp.url), zap.Duration("unanswered", h3Unanswered))
			sp.setTransportWhy(whyH2)
			h2, announced, err := sp.dialWithin(fallDialTimeout, sp.onlyH2)
			if err != nil {
				d.log.Info("super peer: no HTTP/2 either, ending the session", zap.String("url", sp.url), zap.Error(err))
				return sess, errUnanswered
			}
			if !sp.replace(sess, h2, announced) {
				return sess, nil
			}
			sess = h2
			watch(h2)
			retry.Reset(ctl.fell(now, d.cfg.H3RetryInterval))
		case <-retryC:
			h3, announced, err := sp.dial(sp.onlyH3)
			if err != nil {
				retry.Reset(ctl.retryFailed(d.cfg.H3RetryInterval))
				continue
			}
			if !sp.replace(sess, h3, announced) {
				return sess, nil
			}
			sess = h3
			ctl.onH3(time.Now())
			watch(h3)
			wake()
		}
	}
}

// replace makes next the super peer's session in place of cur, which it
// closes: the relays' legs on cur end, and their readers open them again
// over next (readRelay). It reports false, and closes next, when the
// device is closing.
func (sp *superPeer) replace(cur, next *rendezvous.Session, announced []netip.AddrPort) bool {
	if !sp.install(next, announced) {
		next.Close()
		return false
	}
	cur.Close()
	return true
}

// onlyH2 connects over HTTP/2 alone.
func (sp *superPeer) onlyH2(ctx context.Context, cfg rendezvous.ClientConfig) (*rendezvous.Session, error) {
	sess, err := sp.opener(cfg, rendezvous.TransportH2)(ctx)
	if err != nil {
		return nil, err
	}
	return sess, sp.register(ctx, sess)
}

// setTransportWhy records why the super peer's session is not over
// HTTP/3; an HTTP/3 session clears it (install).
func (sp *superPeer) setTransportWhy(why string) {
	sp.mu.Lock()
	sp.transportWhy = why
	sp.mu.Unlock()
}
