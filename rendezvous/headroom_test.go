package rendezvous

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
)

// headroomAt is a Config.Headroom whose bandwidth each look takes from
// next, and whose spare sessions are 3 for every device.
func headroomAt(next func() uint64) func() func(identity.PeerID) Headroom {
	return func() func(identity.PeerID) Headroom {
		h := Headroom{Bandwidth: next(), Sessions: 3}
		return func(identity.PeerID) Headroom { return h }
	}
}

// A device that announced CapHeadroom is told its headroom right after
// registering, and again when it changes materially, at most once per
// headroomInterval however often it changes; a device that did not
// announce it is told nothing.
func TestHeadroomToCapableDevices(t *testing.T) {
	var looks atomic.Uint64
	// Every look after the first differs materially from the one before.
	ts := newTestServer(t, "127.0.0.1", Config{Headroom: headroomAt(func() uint64 {
		if looks.Add(1)%2 == 1 {
			return 100_000_000
		}
		return 10_000_000
	})})
	type told struct {
		s  *Session
		h  Headroom
		at time.Time
	}
	got := make(chan told, 64)
	for _, tr := range transports {
		var s *Session
		ready := make(chan struct{})
		s = ts.dial(t, tr, newIdentity(t), func(c *ClientConfig) {
			c.OnHeadroom = func(h Headroom) { <-ready; got <- told{s, h, time.Now()} }
		})
		close(ready)
		if !s.Protocol().Capabilities.Has(CapHeadroom) {
			t.Fatalf("the super peer does not announce CapHeadroom: %+v", s.Protocol())
		}
	}
	ts.dial(t, TransportH3, newIdentity(t), func(c *ClientConfig) {
		c.OnHeadroom = func(Headroom) { t.Error("a device without CapHeadroom was sent FrameHeadroom") }
		c.announce = &Protocol{Version: ProtocolVersion, Capabilities: CapObserved | CapConsent | CapMove}
	})
	ts.dial(t, TransportH2, newIdentity(t)) // no OnHeadroom: announces no CapHeadroom

	// Each device: told at registration, then at the first look an
	// interval on, and not again within the next.
	const watch = 2*headroomInterval + headroomInterval/4
	deadline := time.After(watch)
	var frames []told
	for done := false; !done; {
		select {
		case f := <-got:
			frames = append(frames, f)
		case <-deadline:
			done = true
		}
	}
	if len(frames) < 2*2 || len(frames) > 2*3 {
		t.Fatalf("%d frames in %v, want 4 to 6: %+v", len(frames), watch, frames)
	}
	byDevice := map[*Session][]time.Time{}
	for _, f := range frames {
		byDevice[f.s] = append(byDevice[f.s], f.at)
	}
	for _, ats := range byDevice {
		for i := 1; i < len(ats); i++ {
			if gap := ats[i].Sub(ats[i-1]); gap < headroomInterval-100*time.Millisecond {
				t.Errorf("a device was told its headroom twice within %v", gap)
			}
		}
	}
	if first := frames[0].h; first.Bandwidth != 100_000_000 || first.Sessions != 3 {
		t.Errorf("first headroom %+v, want the first look's", first)
	}
	seen := map[uint64]bool{}
	for _, f := range frames {
		seen[f.h.Bandwidth] = true
	}
	if !seen[10_000_000] {
		t.Errorf("no device was told the headroom that changed: %+v", frames)
	}
	if n := ts.rv.Stats().HeadroomSent.Load(); n != uint64(len(frames)) {
		t.Errorf("%d frames counted, %d arrived", n, len(frames))
	}
}

// Each session is told at most once per headroomInterval, and only
// what changed materially: checked on the session itself, where the
// clock is the caller's.
func TestHeadroomOncePerInterval(t *testing.T) {
	s := &session{proto: ours, srv: NewServer(Config{})}
	defer s.srv.Close()
	s.welcomed.Store(true)
	s.out.write = func([]byte) error { return nil }
	start := time.Now()
	tell := func(bw uint64, after time.Duration) bool {
		before := s.srv.stats.HeadroomSent.Load()
		s.tellHeadroom(Headroom{Bandwidth: bw, Sessions: 1}, start.Add(after))
		return s.srv.stats.HeadroomSent.Load() > before
	}
	for _, step := range []struct {
		bw    uint64
		after time.Duration
		want  bool
	}{
		{100_000_000, 0, true},                              // the first
		{10_000_000, headroomInterval / 2, false},           // too soon
		{99_000_000, headroomInterval, false},               // not material
		{10_000_000, headroomInterval, true},                // material, an interval on
		{10_000_000 + 150_000, 3 * headroomInterval, false}, // 1.5%: noise
		{0, 4 * headroomInterval, true},
	} {
		if got := tell(step.bw, step.after); got != step.want {
			t.Errorf("%d B/s at +%v: told %v, want %v", step.bw, step.after, got, step.want)
		}
	}
	s.out.close(nil)
	s.out.wait()
}

// What counts as a material change.
func TestHeadroomChanged(t *testing.T) {
	for _, tc := range []struct {
		was, now Headroom
		want     bool
	}{
		{Headroom{Bandwidth: 100e6, Sessions: 4}, Headroom{Bandwidth: 80e6, Sessions: 3}, false},
		{Headroom{Bandwidth: 100e6, Sessions: 4}, Headroom{Bandwidth: 75e6, Sessions: 4}, true},
		{Headroom{Bandwidth: 100e6, Sessions: 1}, Headroom{Bandwidth: 100e6, Sessions: 0}, true},
		{Headroom{Bandwidth: 100e6, Sessions: 0}, Headroom{Bandwidth: 100e6, Sessions: 2}, true},
		{Headroom{Bandwidth: 0, Sessions: 1}, Headroom{Bandwidth: 100_000, Sessions: 1}, false}, // under 1 Mbit/s
		{Headroom{Bandwidth: 0, Sessions: 1}, Headroom{Bandwidth: 125_000, Sessions: 1}, true},  // 1 Mbit/s
		{Headroom{Bandwidth: 125_000, Sessions: 1}, Headroom{Bandwidth: 0, Sessions: 1}, true},  // full
	} {
		if got := headroomChanged(tc.was, tc.now); got != tc.want {
			t.Errorf("%+v -> %+v: %v, want %v", tc.was, tc.now, got, tc.want)
		}
	}
}

// A FrameHeadroom still queued is replaced by a newer one, and one that
// finds the queue full is dropped, never waited for: a device that does
// not read holds up no look.
func TestOutboxUpdate(t *testing.T) {
	var o outbox
	release := make(chan struct{})
	o.write = func([]byte) error { <-release; return nil }
	o.failed = func() {}
	o.send([]byte("stalls the writer"))
	for frames, _ := o.queued(); frames > 0; frames, _ = o.queued() {
		time.Sleep(time.Millisecond) // until the writer took it
	}
	old, newer := (&Headroom{Bandwidth: 1}).frame(), (&Headroom{Bandwidth: 2}).frame()
	if !o.update(old) || !o.update(newer) {
		t.Fatal("update refused with room in the queue")
	}
	if frames, _ := o.queued(); frames != 1 {
		t.Errorf("%d frames queued, want the newer headroom alone", frames)
	}
	for frames, _ := o.queued(); frames < maxQueuedFrames; frames, _ = o.queued() {
		o.push([]byte("fill"))
	}
	o.mu.Lock()
	o.latest = 0 // as if the newer headroom had been written
	o.mu.Unlock()
	if o.update(old) {
		t.Error("update queued past a full queue")
	}
	close(release)
	o.close(nil)
	o.wait()
}
