package peer

// Answers to a super peer's requests (FrameRequest), one queue per
// session. A super peer may be hostile: it may send requests as fast as
// it likes and never read the answers. So a session has at most one
// answer deciding or waiting per peer (a request for a peer already
// waiting joins its answer: the super peer settles every request of
// that peer with one), at most maxAnswersQueued peers waiting (more
// requests are dropped, and the super peer's own deadline declines
// them), and one goroutine writing, which the session's write deadline
// (rendezvous.clientWriteTimeout) bounds. Another super peer's session
// has a queue of its own and does not wait for this one.

import (
	"sync"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

// answers is one session's answers in flight.
type answers struct {
	write   func(peer identity.PeerID, ok bool) error // Session.Answer
	dropped func()                                    // counts a request dropped

	mu      sync.Mutex // guards the following
	waiting map[identity.PeerID]bool
	ready   []answer // decided, oldest first
	writing bool     // a goroutine drains ready
}

type answer struct {
	peer identity.PeerID
	ok   bool
}

func newAnswers(write func(identity.PeerID, bool) error, dropped func()) *answers {
	return &answers{write: write, dropped: dropped, waiting: make(map[identity.PeerID]bool)}
}

// take reports whether a request from peer needs an answer of its own:
// not when one is waiting already, nor when maxAnswersQueued are.
func (q *answers) take(peer identity.PeerID) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.waiting[peer] {
		return false
	}
	if len(q.waiting) >= maxAnswersQueued {
		q.dropped()
		return false
	}
	q.waiting[peer] = true
	return true
}

// put queues the decided answer for peer, and starts the writer unless
// it runs.
func (q *answers) put(peer identity.PeerID, ok bool, goRun func(func())) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.ready = append(q.ready, answer{peer, ok})
	if !q.writing {
		q.writing = true
		goRun(q.drain)
	}
}

// drain writes the ready answers, one at a time, until none is left. A
// peer's later request gets an answer of its own once its answer is
// written.
func (q *answers) drain() {
	for {
		q.mu.Lock()
		if len(q.ready) == 0 {
			q.writing = false
			q.mu.Unlock()
			return
		}
		a := q.ready[0]
		q.ready = q.ready[1:]
		q.mu.Unlock()
		q.write(a.peer, a.ok)
		q.mu.Lock()
		delete(q.waiting, a.peer)
		q.mu.Unlock()
	}
}

// onRequest answers a super peer's request (a peer asks to be introduced
// to this device) by the policy, on the session's queue q. It runs on
// the session's reading goroutine, so nothing here waits.
func (d *Device) onRequest(q *answers, r rendezvous.Request) {
	if !q.take(r.Peer) {
		return
	}
	d.policy.decide(d.ctx, r.Peer, r.Relay, func(ok bool) { q.put(r.Peer, ok, d.goRun) }, d.goRun)
}
