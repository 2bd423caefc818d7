package peer

import (
	"net/netip"
	"testing"
	"time"
)

// keepaliveSession is a fakeSession whose keepalive went unanswered
// since waiting (zero: answered).
type keepaliveSession struct {
	fakeSession
	waiting time.Time
}

func (k *keepaliveSession) Unanswered() time.Time { return k.waiting }

// TestCheckIdleLegs: relay legs that carry nothing still get a ping every
// h3CheckEvery, so that a dead node ends them within seconds; without
// legs or packets, none.
func TestCheckIdleLegs(t *testing.T) {
	s := &fakeSession{}
	open := false
	c := &h3Check{sess: s, ping: func(f func()) { f() }, legs: func() bool { return open }}
	t0 := time.Now()
	for i := range 30 {
		c.tick(t0.Add(time.Duration(i)*h3CheckTick), 0)
	}
	if s.pinged() != 0 {
		t.Fatalf("%d pings without legs, want none", s.pinged())
	}
	open = true
	now := t0.Add(10 * time.Second)
	c.tick(now, 0)
	if s.pinged() != 1 {
		t.Fatalf("%d pings with an idle leg open, want 1", s.pinged())
	}
	for d := h3CheckTick; d < h3Unanswered; d += h3CheckTick {
		if c.tick(now.Add(d), 0) {
			t.Fatalf("dead after %v unanswered, want %v", d, h3Unanswered)
		}
	}
	if !c.tick(now.Add(h3Unanswered), 0) {
		t.Fatalf("an idle leg's session alive after %v unanswered", h3Unanswered)
	}
}

// TestCheckKeepalive: a session without relays is found dead by its own
// keepalive, unanswered for h3Unanswered, and not before.
func TestCheckKeepalive(t *testing.T) {
	t0 := time.Now()
	s := &keepaliveSession{waiting: t0}
	c := &h3Check{sess: s, ping: func(f func()) { f() }}
	if c.tick(t0.Add(h3Unanswered-h3CheckTick), 0) {
		t.Fatal("dead before h3Unanswered")
	}
	if !c.tick(t0.Add(h3Unanswered), 0) {
		t.Fatal("alive with a keepalive unanswered for h3Unanswered")
	}
	if s.pinged() != 0 {
		t.Fatalf("%d pings of its own without relays, want none", s.pinged())
	}
	s.waiting = time.Time{}
	if c.tick(t0.Add(time.Hour), 0) {
		t.Fatal("dead though answered")
	}
}

// TestPickAddr: the next session goes to the first address of the name
// that has not failed, in the resolver's order; when all have, to the
// one that failed longest ago; failures of addresses the name no longer
// has are forgotten.
func TestPickAddr(t *testing.T) {
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	sp := &superPeer{}
	name := []netip.Addr{a, b, c}
	if got := sp.pickAddr(name); got != a {
		t.Fatalf("first pick %v, want %v", got, a)
	}
	sp.addrFailed(a)
	if got := sp.pickAddr(name); got != b {
		t.Fatalf("after %v failed: %v, want %v", a, got, b)
	}
	// Round-robin DNS answers in another order: still not the failed one.
	if got := sp.pickAddr([]netip.Addr{a, c, b}); got != c {
		t.Fatalf("in another order: %v, want %v", got, c)
	}
	time.Sleep(time.Millisecond)
	sp.addrFailed(b)
	time.Sleep(time.Millisecond)
	sp.addrFailed(c)
	if got := sp.pickAddr(name); got != a {
		t.Fatalf("all failed: %v, want the oldest failure %v", got, a)
	}
	sp.pickAddr([]netip.Addr{b})
	if len(sp.failedAt) != 1 {
		t.Fatalf("%d failures remembered for a name of one address, want 1", len(sp.failedAt))
	}
	sp.addrFailed(netip.Addr{})
	if len(sp.failedAt) != 1 {
		t.Fatal("an invalid address was remembered")
	}
}
