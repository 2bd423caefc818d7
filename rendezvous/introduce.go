package rendezvous

import (
	"context"
	"errors"

	"github.com/netsody/superpeer/identity"
)

// ErrNoPeer is Introduce's answer for the zero peer ID: frames use it for
// "no peer", so the super peer's refusal could not name it, and nobody
// holds its key.
var ErrNoPeer = errors.New("rendezvous: no peer ID given (the zero peer ID names no device)")

// Introductions: a device asks the super peer for a peer's candidates,
// and waits for them or for the refusal, both of which name the peer.

// IntroduceOptions says how a device asks to be introduced.
type IntroduceOptions struct {
	// Relay says that this device will relay through this super peer
	// (FlagRelay), so that the peer opens its side of the relay here.
	Relay bool
}

// Introduce asks the super peer to introduce this device to peer, and
// waits for peer's candidates or the refusal (an *Error with
// ErrCodePeerNotFound, say). The peer receives this device's candidates
// at the same moment.
func (s *Session) Introduce(ctx context.Context, peer identity.PeerID, opts IntroduceOptions) (Candidates, error) {
	if peer.IsZero() {
		return Candidates{}, ErrNoPeer
	}
	ch := make(chan lookupResult, 1)
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return Candidates{}, err
	}
	s.pending[peer] = append(s.pending[peer], ch)
	s.mu.Unlock()
	if err := s.writeFrame((&Connect{Peer: peer, Relay: opts.Relay}).frame()); err != nil {
		return Candidates{}, err
	}
	select {
	case r := <-ch:
		return r.c, r.err
	case <-ctx.Done():
		s.mu.Lock()
		ws := s.pending[peer]
		for i, c := range ws {
			if c == ch {
				s.pending[peer] = append(ws[:i:i], ws[i+1:]...)
				break
			}
		}
		if len(s.pending[peer]) == 0 {
			delete(s.pending, peer)
		}
		s.mu.Unlock()
		return Candidates{}, ctx.Err()
	}
}

// lookupResult answers one Introduce.
type lookupResult struct {
	c   Candidates
	err error
}

// resolve answers every Introduce waiting for peer.
func (s *Session) resolve(peer identity.PeerID, r lookupResult) {
	s.mu.Lock()
	waiters := s.pending[peer]
	delete(s.pending, peer)
	s.mu.Unlock()
	for _, ch := range waiters {
		ch <- r // buffered
	}
}
