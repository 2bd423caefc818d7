package rendezvous

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// fakeFrom is fakeRegistered for a device at src whose frames are taken at
// once.
func fakeFrom(t *testing.T, srv *Server, src string) *session {
	t.Helper()
	taken := make(chan struct{})
	close(taken)
	s := fakeRegistered(t, srv, &blockedStream{release: taken, closed: make(chan struct{})})
	s.prefix = SourcePrefix(netip.MustParseAddr(src))
	return s
}

// endFakes ends fake sessions as Server.remove would.
func endFakes(srv *Server, fakes []*session) {
	for _, s := range fakes {
		s.end(&Error{Code: ErrCodeShuttingDown})
		s.out.wait()
		srv.closeConsent(s)
	}
}

// askedBy reports whether target has a request from asker waiting.
func askedBy(srv *Server, target, asker *session) bool {
	srv.consent.mu.Lock()
	defer srv.consent.mu.Unlock()
	return target.asked[asker.peer] != nil
}

// One stranger on one /64, with 1024 identities asking 1024 devices of its
// own that never answer (each within every per-session limit: the config
// only spares the test the seconds it would take at the default rates),
// cannot fill the super peer's pending requests: an honest device can
// still ask an honest one.
func TestPendingNotFilledFromOnePrefix(t *testing.T) {
	srv := NewServer(Config{ConnectBurst: maxLookupPeers, IntroductionBurst: 2 * maxPendingPerTarget})
	defer srv.Close()
	const askers, targets = maxPending / maxLookupPeers, maxPending / maxPendingPerTarget
	var fakes []*session
	defer func() { endFakes(srv, fakes) }()
	mk := func(src string) *session {
		s := fakeFrom(t, srv, src)
		fakes = append(fakes, s)
		return s
	}
	var as, ts []*session
	for i := range askers {
		as = append(as, mk(fmt.Sprintf("2001:db8::a:%x", i)))
	}
	for i := range targets {
		ts = append(ts, mk(fmt.Sprintf("2001:db8:1::b:%x", i)))
	}
	start := time.Now()
	// Round by round, so that each target's queue drains between two
	// requests to it: what bounds them here is the pending table.
	for r := range maxLookupPeers {
		for i, a := range as {
			a.handleConnect(&Connect{Peer: ts[(i+r)%targets].peer})
		}
	}
	srv.consent.mu.Lock()
	pending := srv.consent.pending
	srv.consent.mu.Unlock()
	t.Logf("%d connects from one /64 in %v: %d requests pending", askers*maxLookupPeers, time.Since(start).Round(time.Millisecond), pending)

	if pending > maxWaitingPerPrefix {
		t.Errorf("one /64 holds %d requests, more than its %d", pending, maxWaitingPerPrefix)
	}
	honest, friend := mk("192.0.2.7"), mk("198.51.100.7")
	honest.handleConnect(&Connect{Peer: friend.peer})
	if !askedBy(srv, friend, honest) {
		t.Fatalf("an honest device could not ask another: %d requests pending from one /64 (of %d)", pending, maxPending)
	}
}

// pendingNow returns the requests waiting in all.
func pendingNow(srv *Server) int {
	srv.consent.mu.Lock()
	defer srv.consent.mu.Unlock()
	return srv.consent.pending
}

// One identity holds at most maxWaitingPerAsker lookups waiting, whether
// requests or, with HidePresence, refusals of offline devices waiting for
// their time; the refusal beyond it is the same for both.
func TestWaitingBoundedPerAsker(t *testing.T) {
	for _, hide := range []bool{false, true} {
		t.Run(fmt.Sprintf("hide_presence=%v", hide), func(t *testing.T) {
			srv := NewServer(Config{ConnectBurst: maxLookupPeers, HidePresence: hide})
			defer srv.Close()
			var fakes []*session
			defer func() { endFakes(srv, fakes) }()
			rec := &recordStream{blockedStream: blockedStream{closed: make(chan struct{}), release: make(chan struct{})}}
			close(rec.release)
			asker := fakeRegistered(t, srv, rec)
			fakes = append(fakes, asker)
			const tries = maxWaitingPerAsker + 8
			for i := range tries {
				peer := newIdentity(t).PeerID() // offline
				if !hide {
					target := fakeFrom(t, srv, fmt.Sprintf("2001:db8::%x", i))
					fakes = append(fakes, target)
					peer = target.peer
				}
				asker.handleConnect(&Connect{Peer: peer})
			}
			waitFor(t, "the refusals", func() bool { return len(rec.codes()) >= tries-maxWaitingPerAsker })
			for _, c := range rec.codes() {
				if c != ErrCodeRateLimited {
					t.Errorf("refused with %v, want rate limited", c)
				}
			}
			if n := len(rec.codes()); n != tries-maxWaitingPerAsker {
				t.Errorf("%d lookups refused, want %d", n, tries-maxWaitingPerAsker)
			}
		})
	}
}

// A device that lets requests time out holds fewer: each timeout halves
// its pending slots, down to one, until it answers again.
func TestSilentTargetHoldsLess(t *testing.T) {
	srv := NewServer(Config{ConsentTimeout: time.Second, IntroductionBurst: 4 * maxPendingPerTarget})
	defer srv.Close()
	var fakes []*session
	defer func() { endFakes(srv, fakes) }()
	target := fakeFrom(t, srv, "198.51.100.1")
	fakes = append(fakes, target)
	var last *session
	round := func() int {
		for i := range maxPendingPerTarget {
			last = fakeFrom(t, srv, fmt.Sprintf("2001:db8::%x", i))
			fakes = append(fakes, last)
			last.handleConnect(&Connect{Peer: target.peer})
			waitFor(t, "the request to go out", func() bool { f, _ := target.out.queued(); return f == 0 })
		}
		return pendingNow(srv)
	}
	if n := round(); n != maxPendingPerTarget {
		t.Fatalf("a fresh device holds %d requests, want %d", n, maxPendingPerTarget)
	}
	waitFor(t, "the requests to time out", func() bool { return pendingNow(srv) == 0 })
	if n := round(); n != 1 {
		t.Errorf("after %d requests timed out, the device holds %d, want 1", maxPendingPerTarget, n)
	}
	srv.consent.mu.Lock()
	var waiting *session
	for _, a := range target.asked {
		waiting = a.asker
	}
	srv.consent.mu.Unlock()
	target.handleAnswer(&Answer{Peer: waiting.peer})
	if n := round(); n != maxPendingPerTarget {
		t.Errorf("once it answered, the device holds %d requests, want %d", n, maxPendingPerTarget)
	}
}
