package peer

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

// Revoke racing an introduction leaves nothing of the peer, wherever it
// lands (raceHook forces each interleaving): after the policy accepted
// its candidates, after its state was made, or before its relay leg is
// dialled. No state, no address mapped on the socket, no relay leg.
func TestRevokeRacesIntroduction(t *testing.T) {
	s, _ := superPeerServer(t)
	for _, at := range []string{hookAccepted, hookCreated, hookJoining} {
		t.Run(at, func(t *testing.T) {
			d := newDevice(t, s)
			if _, err := d.sps[0].wait(t.Context()); err != nil {
				t.Fatal(err)
			}
			sk := newSinks(t, 2)
			peer := newID(t).PeerID()
			d.Allow(peer)
			var dialled atomic.Int32
			joined := make(chan struct{})
			d.raceHook = func(h string, p identity.PeerID) {
				switch {
				case p != peer:
				case h == at:
					d.Revoke(peer)
					if h == hookJoining {
						close(joined)
					}
				case h == hookDialling:
					dialled.Add(1)
				}
			}
			d.onCandidates(d.sps[0], true, rendezvous.Candidates{Peer: peer, LocalAddrs: sk.Addrs(0, 2), Relay: true})
			if at == hookJoining {
				<-joined
			}
			time.Sleep(100 * time.Millisecond) // what would run after the hook has run
			if hasState(d, peer) {
				t.Error("state kept for the revoked peer")
			}
			if n := mappedFor(d, peer); n > 0 {
				t.Errorf("%d socket mappings kept for the revoked peer", n)
			}
			if n := dialled.Load(); n > 0 {
				t.Errorf("%d relay legs dialled for the revoked peer", n)
			}
		})
	}
}

// mappedFor counts the socket's mappings to peer's state.
func mappedFor(d *Device, peer identity.PeerID) int {
	d.sock.mu.RLock()
	defer d.sock.mu.RUnlock()
	n := 0
	for _, m := range []map[netip.AddrPort]*peerState{d.sock.byAddr, d.sock.byVirt, d.sock.byCand} {
		for _, p := range m {
			if p.id == peer {
				n++
			}
		}
	}
	return n
}

// A dial allows its peer only while it runs, and for good only once it
// connects: a dial that fails (the peer is offline, or declines) leaves
// the peer a stranger, with no state, and an Allow meanwhile stands.
func TestDialAllowsWhileItRuns(t *testing.T) {
	s, _ := superPeerServer(t)
	a, b := newDevice(t, s), newDevice(t, s)
	offline := newID(t).PeerID()
	if _, err := tryDial(a, offline); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("dialling an offline peer: %v, want ErrUnavailable", err)
	}
	if a.policy.accepts(offline) || hasState(a, offline) {
		t.Errorf("after a failed dial: accepted %v, state %v; want neither", a.policy.accepts(offline), hasState(a, offline))
	}

	allowed := newID(t).PeerID()
	a.policy.set(allowed, true) // Allow before: a failed dial does not take it back
	tryDial(a, allowed)
	if !a.policy.accepts(allowed) {
		t.Error("a failed dial took back an Allow")
	}

	echo(t, b)
	c := dial(t, a, b)
	roundTrip(t, c, "connected")
	if !a.policy.accepts(b.PeerID()) {
		t.Error("a peer dialled successfully is not kept allowed")
	}
}

// Revoke between the listener admitting a peer's handshake and Accept
// handing out its connection (raceHook forces it): Accept does not hand
// out a connection to the revoked peer, closes its end, and keeps no
// state.
func TestRevokeRacesAccept(t *testing.T) {
	s, _ := superPeerServer(t)
	a, b := newDevice(t, s), newDevice(t, s)
	b.raceHook = func(h string, p identity.PeerID) {
		if h == hookAdmitted && p == a.PeerID() {
			b.Revoke(p)
		}
	}
	b.Allow(a.PeerID())
	dialed := make(chan *Conn, 1)
	go func() { c, _ := tryDial(a, b.PeerID()); dialed <- c }()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if c, err := b.Accept(ctx); err == nil {
		c.CloseWithError(0, "")
		t.Fatal("Accept handed out a connection to a peer revoked meanwhile")
	}
	// The revoked peer learns of it from its idle timeout: Revoke forgot
	// its paths before Accept could send the close over one.
	if c := <-dialed; c != nil {
		c.CloseWithError(0, "")
	}
	if hasState(b, a.PeerID()) {
		t.Error("state kept for the revoked peer")
	}
}
