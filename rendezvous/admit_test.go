package rendezvous

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
)

// dialErr registers a new device and returns the error frame that
// refused it, or nil; an admitted device stays until the test ends.
func (ts *testServer) dialErr(t *testing.T, tr Transport, id *identity.Identity) *Error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Dial(ctx, ClientConfig{Identity: id, URL: ts.url(tr), Transport: tr, TLSConfig: &tls.Config{RootCAs: ts.Pool}})
	if err == nil {
		t.Cleanup(func() { s.Close() })
		return nil
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: %v, want an error frame", tr, err)
	}
	return e
}

// Admit sees the device, its signed proof of work and its address; an
// error wrapping ErrTryLater refuses with ErrCodeTryLater, another with
// ErrCodeRefused, each with the error's text.
func TestAdmitRequest(t *testing.T) {
	var got atomic.Pointer[AdmissionRequest]
	ts := newTestServer(t, "127.0.0.1", Config{Admit: func(_ context.Context, req AdmissionRequest) error {
		got.Store(&req)
		switch req.ProofOfWork {
		case 1:
			return fmt.Errorf("%w: the service is busy", ErrTryLater)
		case 2:
			return errors.New("not on the list")
		}
		return nil
	}})
	for _, tr := range transports {
		for pow, want := range []ErrorCode{0, ErrCodeTryLater, ErrCodeRefused} {
			id := newIdentity(t)
			id.ProofOfWork = int32(pow)
			e := ts.dialErr(t, tr, id)
			if want == 0 {
				if e != nil {
					t.Fatalf("%s: admitted device refused: %v", tr, e)
				}
			} else if e == nil || e.Code != want || !strings.Contains(e.Message, map[ErrorCode]string{ErrCodeTryLater: "retry later: the service is busy", ErrCodeRefused: "not on the list"}[want]) {
				t.Fatalf("%s pow %d: %v, want %s", tr, pow, e, want)
			}
			req := got.Load()
			if req.Peer != id.PeerID() || req.ProofOfWork != int32(pow) || req.Remote.Addr().String() != "127.0.0.1" || req.Recheck {
				t.Errorf("%s: Admit saw %+v", tr, req)
			}
		}
	}
	if ts.rv.Stats().Refused[ErrCodeTryLater].Load() != 2 || ts.rv.Stats().Refused[ErrCodeRefused].Load() != 2 {
		t.Error("refusals not counted")
	}
	if reg, _ := ts.rv.Sessions(); reg != 2 {
		t.Errorf("%d registered, want the 2 admitted", reg)
	}
	// Nothing of a refused device stays: its session is gone with it.
	waitFor(t, "the refused sessions to end", func() bool { _, all := ts.rv.Sessions(); return all == 2 })
}

// A slow Admit holds its session's place among its prefix's unregistered
// sessions, so one host cannot pile up pending admissions; it ends with
// the register timeout, and the device gets a reason.
func TestAdmitPendingCounted(t *testing.T) {
	release := make(chan struct{})
	ts := newTestServer(t, "127.0.0.1", Config{MaxUnregisteredPerPrefix: 2, RegisterTimeout: time.Second,
		Admit: func(ctx context.Context, _ AdmissionRequest) error {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-release:
				return nil
			}
		}})
	defer close(release)
	var wg sync.WaitGroup
	errs := make(chan *Error, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- ts.dialErr(t, TransportH3, newIdentity(t))
		}()
	}
	// Both sessions wait in Admit; a third from the host is refused.
	deadline := time.Now().Add(5 * time.Second)
	for _, all := ts.rv.Sessions(); all < 2; _, all = ts.rv.Sessions() {
		if time.Now().After(deadline) {
			t.Fatal("the sessions did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := ts.tryOpen(t, TransportH3); err == nil || !strings.Contains(err.Error(), "429") {
		t.Errorf("a third session while two wait for admission: %v, want 429", err)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		if e == nil || (e.Code != ErrCodeExpired && e.Code != ErrCodeTryLater) {
			t.Errorf("a device whose admission did not decide in time: %v", e)
		}
	}
}

// After Recheck, registered devices are checked again one at a time; a
// device the new rules refuse is told why and leaves; one they cannot
// decide on stays; the others stay.
func TestRecheck(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{})
	var devs []*Session
	var ids []identity.PeerID
	for i := range 6 {
		id := newIdentity(t)
		ids = append(ids, id.PeerID())
		devs = append(devs, ts.dial(t, transports[i%2], id))
	}
	refused, undecided := ids[1], ids[2]
	var inFlight, most atomic.Int32
	cfg := Config{Admit: func(_ context.Context, req AdmissionRequest) error {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(5 * time.Millisecond) // a callout
		if !req.Recheck {
			return errors.New("not a recheck")
		}
		switch req.Peer {
		case refused:
			return errors.New("removed from the list")
		case undecided:
			return ErrTryLater
		}
		return nil
	}}
	ts.rv.SetConfig(cfg)
	ts.rv.Recheck()
	select {
	case <-devs[1].Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the refused device was not told")
	}
	var e *Error
	if !errors.As(devs[1].Err(), &e) || e.Code != ErrCodeRefused || !strings.Contains(e.Message, "admission rules changed: removed from the list") {
		t.Errorf("refused device ended with %v", devs[1].Err())
	}
	deadline := time.Now().Add(10 * time.Second)
	for ts.rv.Stats().Rechecked.Load() < 6 {
		if time.Now().After(deadline) {
			t.Fatalf("%d rechecked, want 6", ts.rv.Stats().Rechecked.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, d := range devs {
		if i != 1 && d.Err() != nil {
			t.Errorf("device %d ended: %v", i, d.Err())
		}
	}
	if m := most.Load(); m != 1 {
		t.Errorf("%d checks at once, want 1", m)
	}
	if n := ts.rv.Stats().RecheckRefused.Load(); n != 1 {
		t.Errorf("%d refused on recheck, want 1", n)
	}
}

// Close stops a pass whose Admit blocks, and cancels Admit's context.
func TestRecheckStopsAtClose(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{})
	ts.dial(t, TransportH3, newIdentity(t))
	started := make(chan struct{})
	ts.rv.SetConfig(Config{Admit: func(ctx context.Context, _ AdmissionRequest) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}})
	ts.rv.Recheck()
	<-started
	done := make(chan struct{})
	go func() { ts.rv.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waits for a blocked recheck")
	}
	ts.rv.Recheck() // after Close: does nothing
}

// Admit is asked only about a registration whose signature verified: a
// forged proof of work (the nonce is signed), a registration cut inside
// its nonce, or one with a huge extension is refused before admission.
func TestAdmitOnlyVerified(t *testing.T) {
	var asked atomic.Int32
	ts := newTestServer(t, "127.0.0.1", Config{Admit: func(context.Context, AdmissionRequest) error {
		asked.Add(1)
		return nil
	}})
	for _, tr := range transports {
		id := newIdentity(t)
		s := ts.openRaw(t, tr, id)
		m := signRegistration(s.binding, id, nil)
		m.ProofOfWork++ // not what was signed
		if err := s.writeFrame(m.frame()); err != nil {
			t.Fatal(err)
		}
		wantError(t, s, ErrCodeBadSignature)

		s = ts.openRaw(t, tr, id)
		f := signRegistration(s.binding, id, nil).frame()
		cut := f[frameHeaderLen : frameHeaderLen+identity.PeerIDLen+64+2] // half the nonce
		if err := s.writeFrame(appendFrame(nil, FrameRegister, cut)); err != nil {
			t.Fatal(err)
		}
		wantError(t, s, ErrCodeMalformedFrame)

		s = ts.openRaw(t, tr, id)
		f = signRegistration(s.binding, id, nil).frame()
		huge := append(f[frameHeaderLen:], 0x3f, 0x80, 0x00, 0x40, 0x00) // an extension of 2^14 bytes, in a frame of fewer
		if err := s.writeFrame(appendFrame(nil, FrameRegister, huge)); err != nil {
			t.Fatal(err)
		}
		wantError(t, s, ErrCodeMalformedFrame)
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("Admit asked %d times about registrations that did not verify", n)
	}
}

// A device admitted after its register deadline ended its session does
// not register.
func TestAdmitAfterDeadline(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{RegisterTimeout: 200 * time.Millisecond,
		Admit: func(ctx context.Context, _ AdmissionRequest) error {
			time.Sleep(400 * time.Millisecond) // an Admit that ignores its context
			return nil
		}})
	if e := ts.dialErr(t, TransportH3, newIdentity(t)); e == nil || e.Code != ErrCodeExpired {
		t.Errorf("admitted past the register deadline: %v", e)
	}
	// Once the session is gone, Admit has returned.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, all := ts.rv.Sessions(); all == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the session stays")
		}
	}
	if n := ts.rv.Stats().Registrations.Load(); n != 0 {
		t.Errorf("%d registrations, want 0", n)
	}
}
