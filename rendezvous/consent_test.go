package rendezvous

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
)

// A device announces CapConsent exactly when it has OnRequest, which the
// session calls for each FrameRequest; Answer needs a super peer that
// announced CapConsent.
func TestConsentAPI(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{})
	requests := make(chan Request, 1)
	asked := ts.dial(t, TransportH2, newIdentity(t), func(c *ClientConfig) { c.OnRequest = func(r Request) { requests <- r } })
	plain := ts.dial(t, TransportH2, newIdentity(t))
	if !ts.rv.lookup(asked.cfg.Identity.PeerID()).proto.Capabilities.Has(CapConsent) {
		t.Error("a device with OnRequest did not announce CapConsent")
	}
	if ts.rv.lookup(plain.cfg.Identity.PeerID()).proto.Capabilities.Has(CapConsent) {
		t.Error("a device without OnRequest announced CapConsent")
	}
	if !asked.Protocol().Capabilities.Has(CapConsent) {
		t.Fatalf("the super peer announced %+v, without CapConsent", asked.Protocol())
	}

	want := Request{Peer: plain.cfg.Identity.PeerID(), Relay: true}
	f := want.frame()
	if err := asked.handle(frame{typ: FrameRequest, payload: f[frameHeaderLen:]}); err != nil {
		t.Fatal(err)
	}
	if got := <-requests; got != want {
		t.Errorf("OnRequest got %+v, want %+v", got, want)
	}
	if err := plain.handle(frame{typ: FrameRequest, payload: f[frameHeaderLen:]}); err != nil {
		t.Errorf("a request to a device without OnRequest: %v, want it ignored", err)
	}
	if err := asked.Answer(want.Peer, false); err != nil {
		t.Errorf("Answer: %v", err)
	}
	if err := asked.handle(frame{typ: FrameAnswer, payload: (&Answer{Peer: want.Peer}).frame()[frameHeaderLen:]}); !errors.Is(err, errMalformed) {
		t.Errorf("an answer from the super peer: %v, want malformed", err)
	}

	old := &Session{cfg: asked.cfg, registered: Registered{Protocol: protocolV1}}
	if err := old.Answer(want.Peer, true); !errors.Is(err, ErrNoConsent) {
		t.Errorf("Answer to a super peer without CapConsent: %v, want ErrNoConsent", err)
	}
}

// consenting is a device that asks for consent and answers every request
// with answer (nil: it never answers).
type consenting struct {
	*Session
	requests chan Request
	cands    chan Candidates
}

func (ts *testServer) consenting(t *testing.T, tr Transport, answer *bool) *consenting {
	t.Helper()
	d := &consenting{requests: make(chan Request, 4*maxPendingPerTarget), cands: make(chan Candidates, 16)}
	var sess *Session
	ready := make(chan struct{})
	d.Session = ts.dial(t, tr, newIdentity(t), func(c *ClientConfig) {
		c.OnCandidates = func(m Candidates) { d.cands <- m }
		c.OnRequest = func(r Request) {
			d.requests <- r
			if answer != nil {
				go func() { <-ready; sess.Answer(r.Peer, *answer) }()
			}
		}
	})
	sess = d.Session
	close(ready)
	return d
}

// request returns the device's next request.
func (d *consenting) request(t *testing.T) Request {
	t.Helper()
	select {
	case r := <-d.requests:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("the device was not asked within 5s")
		return Request{}
	}
}

// lookup introduces s to peer, and returns the error and how long it took.
func lookup(t *testing.T, s *Session, peer identity.PeerID) (Candidates, *Error, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := s.Introduce(ctx, peer, IntroduceOptions{})
	took := time.Since(start)
	if err == nil {
		return c, nil, took
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("lookup of %s: %v, want a refusal", peer.Short(), err)
	}
	return c, e, took
}

// sameAsOffline checks that e is what a lookup of an offline peer gets.
func sameAsOffline(t *testing.T, what string, e, offline *Error) {
	t.Helper()
	if e == nil || e.Code != offline.Code || e.Message != offline.Message {
		t.Errorf("%s: %v; an offline peer gets %v", what, e, offline)
	}
}

// noFrames checks that nothing arrived on ch.
func noFrames[T any](t *testing.T, what string, ch <-chan T) {
	t.Helper()
	select {
	case m := <-ch:
		t.Errorf("%s: %+v", what, m)
	default:
	}
}

// A stranger's lookup of a device that asks for consent and declines, or
// does not answer, gets exactly what a lookup of an offline device gets,
// and neither device learns the other's addresses; one that accepts
// gets candidates, and so does the device, back to back.
func TestConsent(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ts := newTestServer(t, "127.0.0.1", Config{ConsentTimeout: timeout})
	strangerCands := make(chan Candidates, 4)
	stranger := ts.dial(t, TransportH3, newIdentity(t), func(c *ClientConfig) { c.OnCandidates = func(m Candidates) { strangerCands <- m } })
	_, offline, _ := lookup(t, stranger, newIdentity(t).PeerID())
	if offline == nil || offline.Code != ErrCodePeerNotFound {
		t.Fatalf("offline: %v", offline)
	}

	no, yes := false, true
	for _, tc := range []struct {
		name   string
		answer *bool
	}{{"decline", &no}, {"no answer", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			target := ts.consenting(t, TransportH2, tc.answer)
			_, e, took := lookup(t, stranger, target.cfg.Identity.PeerID())
			sameAsOffline(t, tc.name, e, offline)
			if r := target.request(t); r.Peer != stranger.cfg.Identity.PeerID() {
				t.Errorf("the request names %s", r.Peer.Short())
			}
			if tc.answer == nil && took < timeout {
				t.Errorf("no answer was refused after %v, before the consent timeout %v", took, timeout)
			}
			noFrames(t, "the stranger got the device's candidates", strangerCands)
			noFrames(t, "the device got the stranger's candidates", target.cands)
		})
	}

	t.Run("accept", func(t *testing.T) {
		target := ts.consenting(t, TransportH3, &yes)
		c, e, _ := lookup(t, stranger, target.cfg.Identity.PeerID())
		if e != nil || !c.Initiator || c.Observed != target.Observed() {
			t.Fatalf("accepted: %+v, %v", c, e)
		}
		select {
		case m := <-target.cands:
			if m.Initiator || m.Peer != stranger.cfg.Identity.PeerID() || m.Observed != stranger.Observed() {
				t.Errorf("the device got %+v", m)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the device got no candidates")
		}
	})

	t.Run("gone", func(t *testing.T) {
		target := ts.consenting(t, TransportH2, nil)
		errs := make(chan *Error, 1)
		go func() { _, e, _ := lookup(t, stranger, target.cfg.Identity.PeerID()); errs <- e }()
		target.request(t)
		start := time.Now()
		target.Close()
		sameAsOffline(t, "the device left", <-errs, offline)
		if took := time.Since(start); took >= timeout {
			t.Errorf("the device left, and the asker was told after %v, at the consent timeout", took)
		}
	})

	st := ts.rv.Stats()
	if st.ConsentRequests.Load() != 4 || st.ConsentAccepted.Load() != 1 || st.ConsentDeclined.Load() != 1 || st.ConsentTimeouts.Load() != 1 {
		t.Errorf("requests %d, accepted %d, declined %d, timed out %d; want 4, 1, 1, 1",
			st.ConsentRequests.Load(), st.ConsentAccepted.Load(), st.ConsentDeclined.Load(), st.ConsentTimeouts.Load())
	}
}

// A device that does not ask for consent (an older one, or one without
// OnRequest) is introduced at once, as before.
func TestNoConsentIntroducedAtOnce(t *testing.T) {
	// Short, so that a request the device cannot answer fails quickly.
	ts := newTestServer(t, "127.0.0.1", Config{ConsentTimeout: time.Second})
	asker := ts.dial(t, TransportH3, newIdentity(t))
	cands := make(chan Candidates, 1)
	old := ts.dial(t, TransportH2, newIdentity(t), func(c *ClientConfig) {
		c.OnCandidates = func(m Candidates) { cands <- m }
		c.announce = &Protocol{Version: ProtocolVersion, Capabilities: CapObserved}
	})
	if c, e, _ := lookup(t, asker, old.cfg.Identity.PeerID()); e != nil || c.Observed != old.Observed() {
		t.Fatalf("%+v, %v", c, e)
	}
	select {
	case m := <-cands:
		if m.Peer != asker.cfg.Identity.PeerID() {
			t.Errorf("the device got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the device got no candidates within 5s")
	}
	if n := ts.rv.Stats().ConsentRequests.Load(); n != 0 {
		t.Errorf("%d requests sent to a device that does not ask for consent", n)
	}
}

// With RequireConsent, a device that does not ask for consent is not
// introduced: a lookup of it is answered as one of an offline device,
// and it gets nothing. (Without it, TestNoConsentIntroducedAtOnce.)
func TestRequireConsent(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{RequireConsent: true})
	asker := ts.dial(t, TransportH3, newIdentity(t))
	cands := make(chan Candidates, 1)
	old := ts.dial(t, TransportH2, newIdentity(t), func(c *ClientConfig) {
		c.OnCandidates = func(m Candidates) { cands <- m }
		c.announce = &Protocol{Version: ProtocolVersion, Capabilities: CapObserved}
	})
	_, offline, _ := lookup(t, asker, newIdentity(t).PeerID())
	c, e, _ := lookup(t, asker, old.cfg.Identity.PeerID())
	if e == nil || offline == nil || e.Code != offline.Code || e.Message != offline.Message {
		t.Fatalf("a device without consent: %+v, %v; want what an offline one gets, %v", c, e, offline)
	}
	if c.Observed.IsValid() || len(c.LocalAddrs) > 0 {
		t.Errorf("the asker got the device's addresses: %+v", c)
	}
	// The device's own round trip: anything sent to it before has arrived.
	lookup(t, old, newIdentity(t).PeerID())
	select {
	case m := <-cands:
		t.Errorf("the device got candidates: %+v", m)
	default:
	}
}

// With HidePresence, a lookup of an offline device and a decline are
// answered like no answer: the same refusal, after the consent timeout.
func TestHidePresence(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ts := newTestServer(t, "127.0.0.1", Config{ConsentTimeout: timeout, HidePresence: true})
	stranger := ts.dial(t, TransportH3, newIdentity(t))
	no := false
	declining := ts.consenting(t, TransportH2, &no)
	silent := ts.consenting(t, TransportH3, nil)
	_, want, _ := lookup(t, silent.Session, newIdentity(t).PeerID())
	for _, tc := range []struct {
		name string
		peer identity.PeerID
	}{
		{"offline", newIdentity(t).PeerID()},
		{"decline", declining.cfg.Identity.PeerID()},
		{"no answer", silent.cfg.Identity.PeerID()},
	} {
		_, e, took := lookup(t, stranger, tc.peer)
		sameAsOffline(t, tc.name, e, want)
		if took < timeout {
			t.Errorf("%s: answered after %v, before the consent timeout %v", tc.name, took, timeout)
		}
	}
}

// Failed lookups of one peer by one device are rate limited, whatever
// the peer's state; another peer is not; a lookup while the same one
// waits joins it; lookups that succeed are not limited.
func TestLookupRatePerPair(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{ConsentTimeout: time.Second})
	asker := ts.dial(t, TransportH2, newIdentity(t))
	offline := newIdentity(t).PeerID()
	for i := range DefaultLookupBurst {
		if _, e, _ := lookup(t, asker, offline); e == nil || e.Code != ErrCodePeerNotFound {
			t.Fatalf("lookup %d: %v", i, e)
		}
	}
	if _, e, _ := lookup(t, asker, offline); e == nil || e.Code != ErrCodeRateLimited {
		t.Fatalf("lookup over the pair's burst: %v, want rate limited", e)
	}
	if _, e, _ := lookup(t, asker, newIdentity(t).PeerID()); e == nil || e.Code != ErrCodePeerNotFound {
		t.Fatalf("another peer: %v, want not found", e)
	}
	if n := ts.rv.Stats().LookupsLimited.Load(); n != 1 {
		t.Errorf("%d lookups limited, want 1", n)
	}

	// Many lookups of a silent device while one waits: one request.
	silent := ts.consenting(t, TransportH3, nil)
	errs := make(chan *Error, 10)
	for range cap(errs) {
		go func() { _, e, _ := lookup(t, asker, silent.cfg.Identity.PeerID()); errs <- e }()
	}
	for range cap(errs) {
		if e := <-errs; e == nil || e.Code != ErrCodePeerNotFound {
			t.Errorf("a joined lookup: %v", e)
		}
	}
	if n := len(silent.requests); n != 1 {
		t.Errorf("the device was asked %d times, want once", n)
	}

	// Lookups of a peer that accepts take no token: re-introductions
	// are not slowed.
	yes := true
	friend := ts.consenting(t, TransportH3, &yes)
	for i := range 2 * DefaultLookupBurst {
		if _, e, _ := lookup(t, asker, friend.cfg.Identity.PeerID()); e != nil {
			t.Fatalf("lookup %d of a peer that accepts: %v", i, e)
		}
	}
}

// recordStream is a device that takes every frame and keeps the errors.
type recordStream struct {
	blockedStream
	mu     sync.Mutex
	errors []Error
}

func (r *recordStream) write(b []byte, _ time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var hdr [frameHeaderLen]byte
	for rd := bytes.NewReader(b); rd.Len() > 0; {
		f, err := readFrame(rd, &hdr)
		if err != nil {
			return err
		}
		if f.typ == FrameError {
			var e Error
			e.decode(f.payload)
			r.errors = append(r.errors, e)
		}
	}
	return nil
}

func (r *recordStream) codes() []ErrorCode {
	r.mu.Lock()
	defer r.mu.Unlock()
	var cs []ErrorCode
	for _, e := range r.errors {
		cs = append(cs, e.Code)
	}
	return cs
}

// Strangers who ask for a device that does not answer hold at most
// maxPendingPerTarget requests: the rest are refused to them, and the
// device's session stays up.
func TestPendingRequestsBounded(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{IntroductionBurst: 4 * maxPendingPerTarget})
	target := ts.consenting(t, TransportH3, nil)
	const strangers = maxPendingPerTarget + 8
	var recs []*recordStream
	var fakes []*session
	onServer := ts.rv.lookup(target.cfg.Identity.PeerID())
	for range strangers {
		r := &recordStream{blockedStream: blockedStream{closed: make(chan struct{})}}
		s := fakeRegistered(t, ts.rv, r)
		s.handleConnect(&Connect{Peer: target.cfg.Identity.PeerID()})
		recs, fakes = append(recs, r), append(fakes, s)
		// Within the device's queue: the requests are bounded here.
		waitFor(t, "the request to go out", func() bool { f, _ := onServer.out.queued(); return f == 0 })
	}
	waitFor(t, "the device to get the requests", func() bool { return len(target.requests) >= maxPendingPerTarget })
	if n := len(target.requests); n != maxPendingPerTarget {
		t.Errorf("the device got %d requests, want %d", n, maxPendingPerTarget)
	}
	refused := func() int {
		n := 0
		for _, r := range recs {
			if cs := r.codes(); len(cs) == 1 && cs[0] == ErrCodeRateLimited {
				n++
			}
		}
		return n
	}
	waitFor(t, "the strangers over the bound to be refused", func() bool { return refused() >= strangers-maxPendingPerTarget })
	if n := refused(); n != strangers-maxPendingPerTarget {
		t.Errorf("%d strangers refused, want %d", n, strangers-maxPendingPerTarget)
	}
	if n := ts.rv.Stats().ConsentBusy.Load(); n != strangers-maxPendingPerTarget {
		t.Errorf("%d counted busy, want %d", n, strangers-maxPendingPerTarget)
	}
	if err := target.Err(); err != nil {
		t.Fatalf("the device's session ended: %v", err)
	}
	for _, s := range fakes {
		s.end(&Error{Code: ErrCodeShuttingDown})
		s.out.wait()
		ts.rv.closeConsent(s)
	}
	if n := ts.rv.consent.pending; n != 0 {
		t.Errorf("%d requests pending after their askers left", n)
	}
}

// Consent is given to a peer; the relay flag of the request only informs
// the deciding device. Candidates offer a relay only if the asker asked
// for one: a connect that joins a waiting request with the flag offers it
// (the asker said so), and without any connect saying so, none is.
func TestRelayFlagFromTheAsker(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{})
	for _, tc := range []struct {
		name         string
		first, joins bool // the connects' relay flags
		want         bool
	}{
		{"no relay", false, false, false},
		{"joined with relay", false, true, true},
		{"asked with relay", true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := ts.consenting(t, TransportH2, nil)
			asker := ts.dial(t, TransportH3, newIdentity(t))
			peer := target.cfg.Identity.PeerID()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			results := make(chan Candidates, 1)
			go func() { c, _ := asker.Introduce(ctx, peer, IntroduceOptions{Relay: tc.first}); results <- c }()
			if r := target.request(t); r.Relay != tc.first {
				t.Errorf("the request says relay %v, the connect %v", r.Relay, tc.first)
			}
			if err := asker.writeFrame((&Connect{Peer: peer, Relay: tc.joins}).frame()); err != nil {
				t.Fatal(err)
			}
			// Frames are handled in order: once this is answered, the
			// joining connect has been.
			lookup(t, asker, newIdentity(t).PeerID())
			if err := target.Answer(asker.cfg.Identity.PeerID(), true); err != nil {
				t.Fatal(err)
			}
			if c := <-results; c.Relay != tc.want {
				t.Errorf("the asker's candidates offer relay %v, want %v", c.Relay, tc.want)
			}
			if c := <-target.cands; c.Relay != tc.want {
				t.Errorf("the device's candidates offer relay %v, want %v", c.Relay, tc.want)
			}
		})
	}
}

// A lookup of the zero peer ID (which frames use for "no peer", so a
// refusal naming it matches no waiter) is refused at once, on the
// device, with a reason: before, Introduce waited for its context.
func TestIntroduceZeroPeerRefusedAtOnce(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{})
	s := ts.dial(t, TransportH2, newIdentity(t))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	_, err := s.Introduce(ctx, identity.PeerID{}, IntroduceOptions{})
	if err == nil || errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("introducing the zero peer ID: %v after %v, want a refusal at once", err, time.Since(start))
	}
	if err := s.Err(); err != nil {
		t.Errorf("the session ended: %v", err)
	}
}
