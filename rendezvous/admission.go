package rendezvous

import (
	"context"
	"errors"
	"net/netip"
	"sync"

	"golang.org/x/time/rate"

	"github.com/netsody/superpeer/identity"
)

// Admission: who may register. Config.Admit decides, after a
// registration's signature verified, so that it never works for a peer
// ID its sender does not hold; what it is (an allowlist, a proof of work,
// an HTTP callout) is the embedder's, caddymodule's admission modules
// among them. A refused device gets ErrCodeRefused (or ErrCodeTryLater)
// and its session ends: nothing about it is kept.
//
// A slow Admit holds only the session's reader, and the session keeps
// its place among its prefix's unregistered sessions until Admit
// returns, so MaxUnregisteredPerPrefix bounds the admissions one host
// has pending; Admit's context ends after RegisterTimeout, or when the
// server closes.

// AdmissionRequest is what Config.Admit decides on.
type AdmissionRequest struct {
	// Peer is the device; its registration's signature verified.
	Peer identity.PeerID
	// ProofOfWork is the nonce the device signed in its registration
	// (identity.CheckProofOfWork).
	ProofOfWork int32
	// Remote is the address the registration came from.
	Remote netip.AddrPort
	// Recheck is set for a registered device checked again by
	// Server.Recheck.
	Recheck bool
}

// ErrTryLater, wrapped by an Admit error, refuses the device with
// ErrCodeTryLater rather than ErrCodeRefused: admission could not decide
// now, and the device may retry.
var ErrTryLater = errors.New("admission cannot decide now; retry later")

// admission is the server's part of admission: the context every Admit
// call ends with, and the running Recheck pass.
type admission struct {
	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	mu      sync.Mutex         // guards the following
	closed  bool               // no new pass
	stop    context.CancelFunc // the running pass's, if any
	running sync.WaitGroup     // the running pass
}

func (a *admission) init() { a.ctx, a.cancel = context.WithCancel(context.Background()) }

// close ends pending Admit calls and the running pass, and waits for it.
func (a *admission) close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.cancel()
	a.running.Wait()
}

// admitError is the error frame for an Admit error.
func admitError(peer identity.PeerID, err error) *Error {
	code := ErrCodeRefused
	if errors.Is(err, ErrTryLater) || errors.Is(err, context.DeadlineExceeded) {
		code = ErrCodeTryLater
	}
	return &Error{Code: code, Peer: peer, Message: err.Error()}
}

// admit asks cfg.Admit whether the device of m, whose signature verified,
// may register. Only the reader calls it.
func (s *session) admit(cfg *Config, m *Register) *Error {
	s.pow = m.ProofOfWork
	if cfg.Admit == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(s.srv.admission.ctx, cfg.RegisterTimeout)
	defer cancel()
	err := cfg.Admit(ctx, AdmissionRequest{Peer: m.Peer, ProofOfWork: m.ProofOfWork, Remote: s.observed()})
	if err == nil && !s.live() {
		// The register deadline, or Close, ended the session meanwhile:
		// it must not register now. (Its error frame is on its way.)
		return &Error{Code: ErrCodeExpired, Peer: m.Peer, Message: "the session ended while admission decided"}
	}
	if err == nil {
		return nil
	}
	e := admitError(m.Peer, err)
	s.srv.stats.Refused[e.Code].Add(1)
	return e
}

// Recheck checks every registered device again against the current
// Config.Admit, in the background, one at a time and at most recheckRate
// a second; a device it refuses is told why (ErrCodeRefused) and its
// session ends. One it cannot decide on now (ErrTryLater, a timeout)
// stays. Call it after SetConfig changed
// what Admit decides. A Recheck while a pass runs restarts it under the
// newest rules; Close stops it.
func (s *Server) Recheck() {
	s.mu.Lock()
	devices := s.registeredLocked(nil)
	s.mu.Unlock()

	a := &s.admission
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	if a.stop != nil {
		a.stop()
	}
	ctx, stop := context.WithCancel(a.ctx)
	a.stop = stop
	a.running.Add(1)
	// Owned by the server: ends with its pass, a newer Recheck, or Close
	// (which waits for it).
	go func() {
		defer a.running.Done()
		defer stop()
		s.recheck(ctx, devices)
	}()
}

// recheck is one Recheck pass over devices.
func (s *Server) recheck(ctx context.Context, devices []*session) {
	pace := rate.NewLimiter(recheckRate, 1)
	for _, sess := range devices {
		if pace.Wait(ctx) != nil {
			return
		}
		cfg := s.config()
		if cfg.Admit == nil {
			return // admits all
		}
		if !sess.live() {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, cfg.RegisterTimeout)
		err := cfg.Admit(actx, AdmissionRequest{Peer: sess.peer, ProofOfWork: sess.pow, Remote: sess.observed(), Recheck: true})
		cancel()
		if ctx.Err() != nil {
			return // superseded: act on no answer of an older pass
		}
		s.stats.Rechecked.Add(1)
		if err == nil {
			continue
		}
		// A device that was admitted keeps its place while admission
		// cannot decide: an admission service down during a reload must
		// not empty the super peer.
		if e := admitError(sess.peer, err); e.Code == ErrCodeRefused {
			s.stats.RecheckRefused.Add(1)
			e.Message = "the super peer's admission rules changed: " + e.Message
			sess.end(e)
		}
	}
}
