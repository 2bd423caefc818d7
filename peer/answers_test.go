package peer

import (
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

// A hostile super peer floods requests, for many peers and for one
// again and again, and never reads the answers: the device holds one
// answer per peer and maxAnswersQueued in all for that session, and one
// goroutine writing them, not one per request; another super peer's
// session is answered meanwhile. (That a write the super peer never
// takes ends the session is rendezvous's TestStalledSuperPeerEndsSession.)
func TestRequestFloodBounded(t *testing.T) {
	s, _ := superPeerServer(t)
	d := newDevice(t, s, allowAny) // every request is decided at once
	stuck := make(chan struct{})
	defer close(stuck)
	hostile := newAnswers(func(identity.PeerID, bool) error { <-stuck; return nil }, func() { d.policy.refusals.dropped.Add(1) })
	var answered atomic.Int32
	honest := newAnswers(func(identity.PeerID, bool) error { answered.Add(1); return nil }, func() {})

	before := runtime.NumGoroutine()
	const flood = 5000
	again := newID(t).PeerID()
	for i := range flood {
		peer := again
		if i%2 == 0 {
			peer = newID(t).PeerID()
		}
		d.onRequest(hostile, rendezvous.Request{Peer: peer})
	}
	if n := runtime.NumGoroutine() - before; n > 2 {
		t.Errorf("%d goroutines more after %d requests, want the one writer", n, flood)
	}
	hostile.mu.Lock()
	waiting, ready := len(hostile.waiting), len(hostile.ready)
	hostile.mu.Unlock()
	if waiting > maxAnswersQueued || ready > maxAnswersQueued {
		t.Errorf("%d answers waiting, %d ready, want at most %d", waiting, ready, maxAnswersQueued)
	}
	if d.policy.refusals.dropped.Load() == 0 {
		t.Error("no request counted as dropped")
	}
	d.onRequest(honest, rendezvous.Request{Peer: newID(t).PeerID()})
	waitFor(t, "another session's answer", func() bool { return answered.Load() == 1 })
}
