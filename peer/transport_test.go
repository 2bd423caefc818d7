package peer

import (
	"sync"
	"testing"
	"time"

	"github.com/netsody/superpeer/rendezvous"
)

// fakeSession answers h3Check's pings when told to.
type fakeSession struct {
	mu       sync.Mutex
	pings    int
	answered time.Time
}

func (f *fakeSession) Ping() {
	f.mu.Lock()
	f.pings++
	f.mu.Unlock()
}

func (f *fakeSession) Answered() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.answered
}

// Unanswered is zero: the fake sends no keepalives of its own.
func (f *fakeSession) Unanswered() time.Time { return time.Time{} }

func (f *fakeSession) answer(at time.Time) {
	f.mu.Lock()
	f.answered = at
	f.mu.Unlock()
}

func (f *fakeSession) pinged() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pings
}

// TestH3Check drives the HTTP/3 measure through its diagram: no ping
// while relays are idle, a ping a second while they carry packets, an
// answered one keeps the session, and one unanswered for h3Unanswered
// ends it, not sooner.
func TestH3Check(t *testing.T) {
	s := &fakeSession{}
	c := &h3Check{sess: s, ping: func(f func()) { f() }}
	t0 := time.Now()
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	// Idle relays: nothing to measure, whatever the time.
	for i := range 50 {
		if c.tick(at(time.Duration(i)*h3CheckTick), 0) {
			t.Fatal("dead while idle")
		}
	}
	if s.pinged() != 0 {
		t.Fatalf("%d pings while idle, want none", s.pinged())
	}

	// Packets relayed: a ping, answered within a round trip.
	sent := uint64(0)
	now := at(10 * time.Second)
	sent++
	c.tick(now, sent)
	if s.pinged() != 1 {
		t.Fatalf("%d pings once relays carry packets, want 1", s.pinged())
	}
	s.answer(now.Add(20 * time.Millisecond))
	for d := h3CheckTick; d < h3CheckEvery; d += h3CheckTick {
		sent++
		if c.tick(now.Add(d), sent) {
			t.Fatal("dead though answered")
		}
	}
	if s.pinged() != 1 {
		t.Fatalf("%d pings within h3CheckEvery, want 1", s.pinged())
	}

	// The next ping goes unanswered: alive until h3Unanswered, dead then.
	now = now.Add(h3CheckEvery)
	sent++
	c.tick(now, sent)
	if s.pinged() != 2 {
		t.Fatalf("%d pings after h3CheckEvery, want 2", s.pinged())
	}
	for d := h3CheckTick; d < h3Unanswered; d += h3CheckTick {
		sent++
		if c.tick(now.Add(d), sent) {
			t.Fatalf("dead after %v unanswered, want %v", d, h3Unanswered)
		}
	}
	if !c.tick(now.Add(h3Unanswered), sent) {
		t.Fatalf("alive after %v unanswered", h3Unanswered)
	}
}

// TestH3CheckOnePingAtATime: a ping whose write hangs (a stuck path) is
// not joined by more.
func TestH3CheckOnePingAtATime(t *testing.T) {
	s := &fakeSession{}
	var held []func()
	c := &h3Check{sess: s, ping: func(f func()) { held = append(held, f) }}
	t0 := time.Now()
	c.tick(t0, 1)
	s.answer(t0.Add(time.Millisecond)) // answered, though the write has not returned
	for i := 1; i < 50; i++ {
		c.tick(t0.Add(time.Duration(i)*h3CheckEvery), uint64(i+1))
	}
	if len(held) != 1 {
		t.Fatalf("%d pings started while the first was being written, want 1", len(held))
	}
}

// TestTransportRetryBackoff: the hysteresis of the return to HTTP/3.
// After a fall, HTTP/3 is retried h3RetryMin later, twice as late after
// each further fall and each failed retry, never later than the
// interval; a start on HTTP/2 waits the interval; HTTP/3 that held for
// h3StableFor forgets the falls. A path that flaps as fast as an
// adversary likes moves the device a bounded number of times.
func TestTransportRetryBackoff(t *testing.T) {
	const interval = time.Minute
	var c transportCtl
	now := time.Now()
	if w := c.startedOnH2(interval); w != interval {
		t.Fatalf("a start on HTTP/2 retries after %v, want %v", w, interval)
	}
	c.onH3(now)
	want := []time.Duration{h3RetryMin, 2 * h3RetryMin, 4 * h3RetryMin, 8 * h3RetryMin, interval, interval}
	for i, w := range want {
		now = now.Add(time.Second)
		if got := c.fell(now, interval); got != w {
			t.Fatalf("fall %d: retry after %v, want %v", i+1, got, w)
		}
		c.onH3(now) // the retry works, and HTTP/3 fails again a second later
	}
	// An adversary flapping UDP for an hour: each cycle costs it a fall
	// detection and the device's retry wait.
	moves, elapsed := 0, time.Duration(0)
	var f transportCtl
	f.onH3(now)
	for elapsed < time.Hour {
		w := f.fell(now.Add(elapsed), interval)
		elapsed += w + h3Unanswered
		f.onH3(now.Add(elapsed))
		moves++
	}
	if moves > 70 {
		t.Errorf("%d moves in an hour of flapping, want at most about one a minute", moves)
	}

	// HTTP/3 that held forgets the falls.
	c.onH3(now)
	if got := c.fell(now.Add(h3StableFor), interval); got != h3RetryMin {
		t.Errorf("a fall after HTTP/3 held for %v retries after %v, want %v", h3StableFor, got, h3RetryMin)
	}
	// A failed retry doubles the wait, up to the interval.
	if got := c.retryFailed(interval); got != 2*h3RetryMin {
		t.Errorf("a failed retry waits %v, want %v", got, 2*h3RetryMin)
	}
	for range 10 {
		c.retryFailed(interval)
	}
	if c.wait != interval {
		t.Errorf("failed retries wait %v, want at most %v", c.wait, interval)
	}
	// After falls, a session that the race opens over HTTP/2 keeps the
	// backoff rather than the full interval.
	c.fell(now.Add(time.Second), interval)
	if got := c.startedOnH2(interval); got != c.wait {
		t.Errorf("a race lost to HTTP/2 after falls retries after %v, want %v", got, c.wait)
	}
}

// An idle device costs no wakeups of the transport check: over an idle
// second on HTTP/3 its check does not tick (it ticked every
// h3CheckTick); packets relayed wake it, and it sleeps again once they
// stop and its ping is answered.
func TestIdleCheckSleeps(t *testing.T) {
	s, _ := superPeerServer(t)
	a, b := newDevice(t, s, relayOnly), newDevice(t, s, relayOnly)
	sp := a.sps[0]
	if tr := sp.status().Transport; tr != string(rendezvous.TransportH3) {
		t.Fatalf("session over %q, want HTTP/3", tr)
	}
	// asleep waits, bounded, for the check to sleep.
	asleep := func() {
		for i := 0; i < 500 && !sp.relayIdle.Load(); i++ {
			time.Sleep(10 * time.Millisecond)
		}
	}
	idleFor := func(what string) {
		t.Helper()
		asleep() // else the count below fails
		before := sp.checkWakeups.Load()
		time.Sleep(10 * h3CheckTick)
		if n := sp.checkWakeups.Load() - before; n > 0 {
			t.Errorf("%s: %d wakeups of the transport check over an idle %v, want none", what, n, 10*h3CheckTick)
		}
	}
	idleFor("no relay")

	echo(t, b)
	c := dial(t, a, b)
	asked := sp.session().Answered()
	before := sp.checkWakeups.Load()
	echoTransfer(t, c, 256<<10, 16, func(int) { time.Sleep(100 * time.Millisecond) })
	if n := sp.checkWakeups.Load() - before; n == 0 {
		t.Fatal("relayed packets did not wake the transport check")
	}
	if !sp.session().Answered().After(asked) {
		t.Error("no ping answered while the relay carried packets")
	}
	c.CloseWithError(0, "")
	idleFor("after the relay")
}
