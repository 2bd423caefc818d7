package rendezvous

import (
	"time"

	"go.uber.org/zap"
)

// A drain ends the super peer without dropping what its devices relay
// through it (docs/OPERATIONS.md, "Drain and reloads"):
//
//	running --Drain--> draining --Close--> closed
//
// Drain tells every registered device that announced CapMove to move
// (FrameMove, with the time left and a reason), and from then on refuses
// new sessions (RefusedDraining, 503 with Retry-After); a session that
// registers during the drain, admitted just before it, is told at once.
// Running sessions are kept: their devices move their relay sessions to
// other super peers over them, and the relay legs here live on until
// they have. Whoever drains (superpeer.Server.Drain) calls Close at the
// drain's end, which ends every session with ErrCodeShuttingDown; a
// device without CapMove learns of the drain only then.

// draining is a drain's state, set once by Drain under Server.mu.
type draining struct {
	until  time.Time // when the drain ends at the latest
	reason string
}

// move is the FrameMove for a session now: the time left, and the reason.
func (d *draining) move() []byte {
	return (&Move{Deadline: max(time.Until(d.until), 0), Reason: d.reason}).frame()
}

// Drain begins a drain that ends within timeout (Config.DrainTimeout if
// 0) for reason, which devices log; it returns when the drain ends at
// the latest. It does not wait: the caller closes the server at the
// drain's end. A later call changes nothing and returns the first's end.
func (s *Server) Drain(timeout time.Duration, reason string) time.Time {
	if timeout <= 0 {
		timeout = s.config().DrainTimeout
	}
	s.mu.Lock()
	if s.drain != nil || s.closed {
		until := time.Now()
		if s.drain != nil {
			until = s.drain.until
		}
		s.mu.Unlock()
		return until
	}
	d := &draining{until: time.Now().Add(timeout), reason: cutUTF8(reason, MaxMoveReason)}
	s.drain = d
	registered := s.registeredLocked(nil)
	s.mu.Unlock()
	s.config().Logger.Info("draining", zap.Int("devices", len(registered)), zap.Duration("timeout", timeout), zap.String("reason", d.reason))
	for _, sess := range registered {
		sess.tellMove(d)
	}
	return d.until
}

// Draining reports whether Drain was called: a health check then reports
// the super peer unavailable, so that a load balancer sends no one here.
func (s *Server) Draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drain != nil
}

// draining returns the drain, or nil.
func (s *Server) draining() *draining {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drain
}

// tellMove sends the session's device FrameMove, if it understands it,
// at most once, and only after FrameRegistered (a device reads nothing
// else before it); handleRegister calls it too once it is sent, so that
// Drain and a registration in flight miss no device between them. It
// never waits: it is one frame per session, queued past the outbox's
// bounds, so that one device's full queue delays no other's.
func (s *session) tellMove(d *draining) {
	if !s.welcomed.Load() || !s.proto.Capabilities.Has(CapMove) || !s.moved.CompareAndSwap(false, true) {
		return
	}
	s.srv.stats.MovesSent.Add(1)
	s.out.push(d.move())
}
