package peer

// The accept policy (issue 10, "consent before addresses"): which peers
// may learn this device's addresses and connect to it. A super peer that
// asks for consent sends a request (rendezvous.Request) before it gives
// anyone the device's candidates; the device answers by this policy
// (onRequest, answers.go). The same policy guards everything else a stranger
// could start: candidates for a peer not accepted are ignored (an old
// super peer gives them without asking), so no state, no punch and no
// relay leg exists for it (onCandidates); punches from it are dropped
// before their signature is checked (handlePunch); its QUIC handshake
// packets are dropped unanswered unless they come from an accepted
// peer's address (sock.handshakeAllowed); and the device's QUIC listener
// refuses its handshake (listenTLSConfig), so that a stranger who knows
// the address learns nothing and cannot connect.
//
// A peer is accepted when the application said so (Config.Allow,
// Device.Allow, or a Dial to it), when Config.AllowAny is set, or when
// Config.Accept said yes; the application's word (Allow, Revoke, Dial)
// comes first, then Accept's remembered answers, then AllowAny.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"

	"github.com/netsody/superpeer/identity"
)

// ErrNotAllowed is the device's own refusal of a peer its policy does not
// accept: the error of the refused handshake, and what a refused request
// is logged with. The other device sees only that this one is
// unavailable (ErrUnavailable).
var ErrNotAllowed = errors.New("peer: not allowed by this device's accept policy")

// ErrUnavailable is what Dial returns when the super peers do not
// introduce the peer: it is offline, unknown to them, or it did not
// accept this device. They answer all three alike, so that a stranger
// learns no more.
var ErrUnavailable = errors.New("peer: unavailable (offline, or it does not accept this device)")

// policy decides which peers the device accepts.
type policy struct {
	allowAny bool
	accept   func(ctx context.Context, peer identity.PeerID, relay bool) bool
	timeout  time.Duration
	cooldown time.Duration // acceptCooldown; the package's tests shorten it
	log      *zap.Logger

	mu         sync.Mutex               // taken last: under Device.mu and peerState.mu, never around them
	app        map[identity.PeerID]bool // Config.Allow, Allow, Revoke, Dial, and Accept's yes
	remembered map[identity.PeerID]bool // Accept's no, up to maxRemembered
	// Accept's slots. A peer has at most one call running (calling), past
	// its deadline too, so one stranger holds one slot at most; a peer
	// whose call timed out is not asked again until cooling says
	// (acceptCooldown), so strangers that never get an answer and ask
	// again do not keep the slots busy. Requests that find every slot
	// taken wait in queue, within their own deadline.
	pending map[identity.PeerID]*asking   // a call's requests, running or queued
	calling map[identity.PeerID]bool      // Accept calls not yet returned, up to maxAccepting
	cooling map[identity.PeerID]time.Time // until when a peer whose call timed out is not asked
	queue   []*asking                     // waiting for a slot, oldest first, up to acceptQueue

	// dialing: peers allowed only while the application's dials to them
	// run (allowDial), and what the policy said before.
	dialing map[identity.PeerID]*dialAllow

	refusals policyCounters
}

// dialAllow is a peer allowed for the dials to it that run.
type dialAllow struct {
	n         int  // dials running
	prev, had bool // the application's word before: app[peer], and whether there was one
}

// policyCounters count the requests the policy declined, by why.
type policyCounters struct {
	declined atomic.Uint64 // requests declined and candidates ignored, for any reason
	busy     atomic.Uint64 // requests declined because every slot and queue place was taken
	timedOut atomic.Uint64 // Accept calls that gave no answer within AcceptTimeout
	cooling  atomic.Uint64 // requests declined without asking: the peer's last call timed out or still runs
	dropped  atomic.Uint64 // requests left unanswered: maxAnswersQueued were waiting on their session
}

// asking is one Accept call, running or waiting for a slot, and the
// answers waiting for it.
type asking struct {
	peer    identity.PeerID
	relay   bool
	ctx     context.Context // ends AcceptTimeout after the first request, however long it queued
	started bool            // Accept was called; guarded by policy.mu
	done    chan bool       // the call's answer; buffered, so a late call never blocks
	answers []func(bool)
}

func (pl *policy) init(cfg Config) {
	pl.allowAny, pl.accept, pl.timeout, pl.log = cfg.AllowAny, cfg.Accept, cfg.AcceptTimeout, cfg.Logger
	pl.cooldown = acceptCooldown
	pl.app = make(map[identity.PeerID]bool)
	pl.remembered = make(map[identity.PeerID]bool)
	pl.pending = make(map[identity.PeerID]*asking)
	pl.calling = make(map[identity.PeerID]bool)
	pl.cooling = make(map[identity.PeerID]time.Time)
	pl.dialing = make(map[identity.PeerID]*dialAllow)
	for _, p := range cfg.Allow {
		pl.app[p] = true
	}
}

// set records the application's decision about a peer.
func (pl *policy) set(peer identity.PeerID, ok bool) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.app[peer] = ok
	delete(pl.remembered, peer)
	delete(pl.cooling, peer)
	delete(pl.dialing, peer) // the application's word outlasts its dials
}

// allowDial allows peer while a dial to it runs: the dial's introduction
// asks the peer to accept this device, and its candidates, punches and
// handshake must get through. done(true) keeps the allow for good (a
// connection made is the application's word); done(false), by the last
// dial to the peer, puts back what the policy said before, unless Allow
// or Revoke said something since. It reports whether the peer is still
// accepted.
func (pl *policy) allowDial(peer identity.PeerID) (done func(connected bool) bool) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if ok, found := pl.app[peer]; found && ok && pl.dialing[peer] == nil {
		return func(bool) bool { return pl.accepts(peer) } // allowed already
	}
	da := pl.dialing[peer]
	if da == nil {
		prev, had := pl.app[peer]
		da = &dialAllow{prev: prev, had: had}
		pl.dialing[peer] = da
	}
	da.n++
	pl.app[peer] = true
	return func(connected bool) bool {
		pl.mu.Lock()
		defer pl.mu.Unlock()
		if pl.dialing[peer] == da {
			da.n--
			switch {
			case connected:
				delete(pl.dialing, peer)
			case da.n == 0:
				delete(pl.dialing, peer)
				if da.had {
					pl.app[peer] = da.prev
				} else {
					delete(pl.app, peer)
				}
			}
		}
		ok, _ := pl.lookupLocked(peer)
		return ok
	}
}

// lookupLocked is the decision about a peer, if there is one.
func (pl *policy) lookupLocked(peer identity.PeerID) (ok, decided bool) {
	if ok, found := pl.app[peer]; found {
		return ok, true
	}
	if ok, found := pl.remembered[peer]; found {
		return ok, true
	}
	return pl.allowAny, pl.allowAny
}

// accepts reports whether the device accepts peer now.
func (pl *policy) accepts(peer identity.PeerID) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	ok, _ := pl.lookupLocked(peer)
	return ok
}

// admit is the listener's check of a handshake's peer.
func (pl *policy) admit(peer identity.PeerID) error {
	if pl.accepts(peer) {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrNotAllowed, peer.Short())
}

// decide calls answer with the decision about peer: at once when there
// is one, else when Accept gives it or the request's deadline
// (AcceptTimeout) passes. It never blocks, and calls Accept once per peer
// at a time: requests for a peer whose call runs or waits (through
// another super peer, say) wait for its answer. A peer whose last call
// timed out, or still runs past its deadline, is declined without
// asking. With maxAccepting calls running, a request waits for a slot in
// a queue of acceptQueue; beyond, it is declined at once. None of these
// declines is remembered: the peer is asked again later.
func (pl *policy) decide(ctx context.Context, peer identity.PeerID, relay bool, answer func(bool), goRun func(func())) {
	pl.mu.Lock()
	ok, decided := pl.lookupLocked(peer)
	if decided || pl.accept == nil {
		pl.mu.Unlock()
		pl.answered(peer, ok, answer)
		return
	}
	if a := pl.pending[peer]; a != nil {
		a.answers = append(a.answers, answer)
		pl.mu.Unlock()
		return
	}
	if until, found := pl.cooling[peer]; pl.calling[peer] || found && time.Now().Before(until) {
		pl.mu.Unlock()
		pl.refusals.cooling.Add(1)
		pl.answered(peer, false, answer)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, pl.timeout)
	a := &asking{peer: peer, relay: relay, ctx: ctx, done: make(chan bool, 1), answers: []func(bool){answer}}
	switch {
	case len(pl.calling) < maxAccepting:
		pl.startLocked(a)
	case len(pl.queue) < acceptQueue:
		pl.queue = append(pl.queue, a)
	default:
		pl.mu.Unlock()
		cancel()
		pl.refusals.busy.Add(1)
		pl.answered(peer, false, answer)
		return
	}
	pl.pending[peer] = a
	pl.mu.Unlock()
	goRun(func() {
		defer cancel()
		pl.await(a)
	})
}

// startLocked calls Accept for a, in a slot of its own. The call is not
// the device's goroutine: one that never returns holds its slot, not
// Close.
func (pl *policy) startLocked(a *asking) {
	a.started = true
	pl.calling[a.peer] = true
	go pl.call(a)
}

// startQueuedLocked gives the slots there are to the requests queued
// longest that are still within their deadline.
func (pl *policy) startQueuedLocked() {
	for len(pl.queue) > 0 && len(pl.calling) < maxAccepting {
		a := pl.queue[0]
		pl.queue = pl.queue[1:]
		if a.ctx.Err() == nil {
			pl.startLocked(a)
		}
	}
}

// await gives a's answers once its call answers or its deadline passes.
// A call that gave no answer in time puts its peer in cooling; a request
// that never got a slot was declined for want of room.
func (pl *policy) await(a *asking) {
	ok, answered := false, false
	select {
	case ok = <-a.done:
		answered = true
	case <-a.ctx.Done():
	}
	pl.mu.Lock()
	delete(pl.pending, a.peer)
	switch {
	case answered:
	case !a.started:
		pl.queue = slices.DeleteFunc(pl.queue, func(q *asking) bool { return q == a })
		pl.refusals.busy.Add(1)
	default:
		pl.refusals.timedOut.Add(1)
		pl.coolLocked(a.peer, time.Now())
	}
	if v, found := pl.lookupLocked(a.peer); found { // Allow, Revoke or a late yes meanwhile
		ok = v
	}
	answers := a.answers
	pl.mu.Unlock()
	for _, answer := range answers {
		pl.answered(a.peer, ok, answer)
	}
}

// coolLocked keeps peer from being asked for the cooldown, while
// maxRemembered peers leave room (expired ones make room).
func (pl *policy) coolLocked(peer identity.PeerID, now time.Time) {
	if len(pl.cooling) >= maxRemembered {
		maps.DeleteFunc(pl.cooling, func(_ identity.PeerID, until time.Time) bool { return !now.Before(until) })
	}
	if len(pl.cooling) < maxRemembered {
		pl.cooling[peer] = now.Add(pl.cooldown)
	}
}

// call runs Accept and remembers its answer: a yes always, as the
// application's own word (strangers' no's must never crowd out a peer the
// application accepted), a no only when it came within the deadline (a
// person too slow to answer has not said no) and while maxRemembered no's
// leave room. A panic is a no, not remembered. Its slot goes to the
// request queued longest.
func (pl *policy) call(a *asking) {
	defer func() {
		pl.mu.Lock()
		delete(pl.calling, a.peer)
		pl.startQueuedLocked()
		pl.mu.Unlock()
	}()
	defer func() {
		if r := recover(); r != nil {
			pl.log.Error("Config.Accept panicked", zap.String("peer", a.peer.Short()), zap.Any("panic", r))
			a.done <- false
		}
	}()
	ok := pl.accept(a.ctx, a.peer, a.relay)
	pl.mu.Lock()
	switch _, found := pl.remembered[a.peer]; {
	case ok:
		pl.app[a.peer] = true
		delete(pl.remembered, a.peer)
		delete(pl.cooling, a.peer)
	case a.ctx.Err() == nil && (found || len(pl.remembered) < maxRemembered):
		pl.remembered[a.peer] = false
	}
	pl.mu.Unlock()
	a.done <- ok
}

// answered gives one answer, counting a decline.
func (pl *policy) answered(peer identity.PeerID, ok bool, answer func(bool)) {
	if !ok {
		pl.refused(peer)
	}
	answer(ok)
}

// refused counts and logs a peer declined, or ignored.
func (pl *policy) refused(peer identity.PeerID) {
	if n := pl.refusals.declined.Add(1); n&(n-1) == 0 { // the 1st, 2nd, 4th, ...: strangers log little
		pl.log.Info("refused a peer", zap.String("peer", peer.Short()), zap.Error(ErrNotAllowed), zap.Uint64("refused", n))
	}
}

// Allow makes the device accept peer from now on, whatever Config.Accept
// said before: its super peers' requests are answered yes, its
// candidates punched, its handshakes taken.
func (d *Device) Allow(peer identity.PeerID) { d.policy.set(peer, true) }

// Revoke makes the device refuse peer from now on, without asking
// Config.Accept: it forgets the peer (its connections close, its
// punching and relay stop). A later Dial to it that connects, or Allow,
// allows it again.
func (d *Device) Revoke(peer identity.PeerID) {
	d.policy.set(peer, false)
	d.mu.Lock()
	p := d.peers[peer]
	d.mu.Unlock()
	if p == nil {
		return
	}
	// The connections close first, while the peer still has a path: their
	// CONNECTION_CLOSE tells the peer at once (CloseWithError returns once
	// it is sent), where after forgetting it would go nowhere and the peer
	// would learn only from its idle timeout.
	p.mu.Lock()
	conns := make([]*quic.Conn, 0, len(p.life.conns))
	for qc := range p.life.conns {
		conns = append(conns, qc)
	}
	p.mu.Unlock()
	for _, qc := range conns {
		qc.CloseWithError(errCodeRevoked, "revoked")
	}
	d.forget(p)
}

// forget drops the state of a peer: it leaves the table, its loops stop
// and its relay closes.
func (d *Device) forget(p *peerState) {
	d.mu.Lock()
	if d.peers[p.id] == p {
		delete(d.peers, p.id)
	}
	d.mu.Unlock()
	p.mu.Lock()
	rp := p.forgetLocked()
	p.mu.Unlock()
	if rp != nil {
		rp.conn.Close()
	}
}
