package rendezvous

import (
	"sync"
	"time"

	"github.com/netsody/superpeer/identity"
)

// Headroom tells devices what the super peer's relay can still take
// (FrameHeadroom), so that a loaded super peer steers new relays to its
// siblings instead of refusing them (docs/OPERATIONS.md, "Headroom: how
// load spreads across super peers"):
//
//	registration --> FrameHeadroom at once, from the last look
//	every headroomLook: one look (Config.Headroom) for all sessions;
//	    each capable session is told again if its headroom changed
//	    materially and it was last told headroomInterval ago or more
//
// The work is bounded: one look per headroomLook, whatever the number of
// devices, and one frame per device per headroomInterval at most, which
// supersedes one still queued (outbox.update) and never waits behind a
// device that does not read. The ticker runs from the first capable
// registration until Close.

// headroomState is the server's side: the ticker and its last look.
type headroomState struct {
	mu      sync.Mutex // guards the following
	last    func(identity.PeerID) Headroom
	running bool
	stop    chan struct{} // closed by Close
	done    chan struct{} // closed when the ticker returns
}

// sentHeadroom is what a session last told its device; session.mu
// guards it.
type sentHeadroom struct {
	told bool
	h    Headroom
	at   time.Time
}

// headroomFor returns the headroom of peer from the last look, looking
// now if there was none (the first registration), and starts the ticker.
// It returns false when the server has no Config.Headroom or is closed.
func (s *Server) headroomFor(peer identity.PeerID) (Headroom, bool) {
	src := s.config().Headroom
	if src == nil {
		return Headroom{}, false
	}
	hs := &s.headroom
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.stop == nil {
		hs.stop = make(chan struct{})
	}
	select {
	case <-hs.stop:
		return Headroom{}, false // closed
	default:
	}
	if hs.last == nil {
		hs.last = src()
	}
	if !hs.running {
		hs.running, hs.done = true, make(chan struct{})
		go s.tickHeadroom(hs.stop, hs.done) // stopped by Close (stopHeadroom)
	}
	return hs.last(peer), true
}

// tickHeadroom looks at the headroom every headroomLook and tells
// the devices whose headroom changed, until stop closes.
func (s *Server) tickHeadroom(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(headroomLook)
	defer t.Stop()
	var capable []*session // reused from tick to tick
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			src := s.config().Headroom
			if src == nil {
				continue // a SetConfig took it away
			}
			of := src()
			s.headroom.mu.Lock()
			s.headroom.last = of
			s.headroom.mu.Unlock()
			capable = s.capableOf(capable[:0], CapHeadroom)
			for _, sess := range capable {
				sess.tellHeadroom(of(sess.peer), now)
			}
			clear(capable) // holds no session past its tick
		}
	}
}

// capableOf appends the registered sessions whose devices announced c.
func (s *Server) capableOf(dst []*session, c Capabilities) []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, byPeer := range [...]map[identity.PeerID]*session{s.byPeer, s.relayOnly} {
		for _, sess := range byPeer {
			if sess.proto.Capabilities.Has(c) {
				dst = append(dst, sess)
			}
		}
	}
	return dst
}

// stopHeadroom stops the ticker, if it runs, and waits for it; no
// ticker starts after it.
func (s *Server) stopHeadroom() {
	hs := &s.headroom
	hs.mu.Lock()
	if hs.stop == nil {
		hs.stop = make(chan struct{})
	}
	select {
	case <-hs.stop:
	default:
		close(hs.stop)
	}
	done := hs.done
	hs.mu.Unlock()
	if done != nil {
		<-done
	}
}

// welcomeHeadroom tells a device that announced CapHeadroom its
// headroom right after FrameRegistered; the reader calls it.
func (s *session) welcomeHeadroom() {
	if !s.proto.Capabilities.Has(CapHeadroom) {
		return
	}
	if h, ok := s.srv.headroomFor(s.peer); ok {
		s.tellHeadroom(h, time.Now())
	}
}

// tellHeadroom sends the device h if it announced CapHeadroom, has been
// welcomed, and was told nothing yet, or something materially different
// headroomInterval ago or more.
func (s *session) tellHeadroom(h Headroom, now time.Time) {
	if !s.welcomed.Load() || !s.proto.Capabilities.Has(CapHeadroom) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	last := s.headroom
	if last.told && (now.Sub(last.at) < headroomInterval || !headroomChanged(last.h, h)) {
		return
	}
	if s.out.update((&h).frame()) {
		s.headroom = sentHeadroom{told: true, h: h, at: now}
		s.srv.stats.HeadroomSent.Add(1)
	}
}

// headroomChanged reports whether now differs materially from was: the
// bandwidth by headroomChangeRatio of was and headroomChangeMin at the
// least, or spare sessions reaching or leaving zero.
func headroomChanged(was, now Headroom) bool {
	if (was.Sessions == 0) != (now.Sessions == 0) {
		return true
	}
	delta := float64(now.Bandwidth) - float64(was.Bandwidth)
	return max(delta, -delta) >= max(headroomChangeRatio*float64(was.Bandwidth), headroomChangeMin)
}
