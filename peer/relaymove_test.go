package peer

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/rendezvous"
)

// A transport move costs one pair of relay legs: when one device's
// session moves from HTTP/2 to HTTP/3 (UDP to the super peer unblocked,
// at the retry), the relayed connection's pair ends for both devices;
// the device that moves relays opens it again, and the other joins its
// leg (reopenRelay) rather than opening its own, which would make a
// second pair and a leg refused 409 superseded. Either device's session
// may be the one that moves.
func TestTransportMoveOnePair(t *testing.T) {
	for _, moving := range []string{"mover", "follower"} {
		t.Run("the "+moving+"'s session moves", func(t *testing.T) {
			s, rl := superPeerServer(t)
			sw := sptest.UDPSwitch(t, addrOf(s.H3URL))
			sw.SetBlocked(true)
			switched := "https://" + sw.Addr().String()

			// mover moves relays (the smaller peer ID), follower follows.
			idA, idB := newID(t), newID(t)
			if a, b := idA.PeerID(), idB.PeerID(); bytes.Compare(a[:], b[:]) > 0 {
				idA, idB = idB, idA
			}
			config := func(id *identity.Identity, move bool) func(*Config) {
				return func(c *Config) {
					c.Identity, c.RelayOnly = id, true
					if move {
						c.SuperPeers, c.H3RetryInterval = []string{switched}, time.Second
					}
				}
			}
			mover := newDevice(t, s, config(idA, moving == "mover"))
			follower := newDevice(t, s, config(idB, moving == "follower"))
			var counting atomic.Bool
			var legs atomic.Int32
			// ended gets each device once its first leg's reader is done
			// after the move: the old pair's, with any relay opened in its
			// place dialled.
			ended := make(chan *Device, 2)
			for _, d := range []*Device{mover, follower} {
				var once atomic.Bool
				d.raceHook = func(at string, _ identity.PeerID) {
					switch {
					case !counting.Load():
					case at == hookDialling:
						legs.Add(1)
					case at == hookRelayEnded && once.CompareAndSwap(false, true):
						ended <- d
					}
				}
			}
			moves := map[string]*Device{"mover": mover, "follower": follower}[moving]
			if st := moves.Status().SuperPeers[0]; st.Transport != string(rendezvous.TransportH2) {
				t.Fatalf("the %s's session is over %q with UDP blocked, want HTTP/2", moving, st.Transport)
			}
			w := moves.Watch()
			defer w.Close()

			echo(t, follower)
			c := dial(t, mover, follower)
			roundTrip(t, c, "before the move")
			refusedBefore := rl.Stats().Refused()[409]

			counting.Store(true)
			sw.SetBlocked(false)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			for {
				ev, err := w.Next(ctx)
				if err != nil {
					t.Fatalf("the %s's session never moved to HTTP/3: %v", moving, err)
				}
				if sp, ok := ev.(SuperPeerEvent); ok && sp.Status.Connected && sp.Status.Transport == string(rendezvous.TransportH3) {
					break
				}
			}
			// Both old legs' readers are done: any leg either device opened
			// in their place has been dialled by now.
			for range 2 {
				select {
				case <-ended:
				case <-ctx.Done():
					t.Fatalf("the old relay legs never ended (%d legs dialled)", legs.Load())
				}
			}
			roundTrip(t, c, "after the move")
			for rl.Stats().Waiting.Load() != 0 && ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond)
			}
			if n := legs.Load(); n != 2 {
				t.Errorf("the move dialled %d relay legs, want one pair (2)", n)
			}
			if n := rl.Stats().Refused()[409] - refusedBefore; n != 0 {
				t.Errorf("the super peer refused %d legs as superseded, want none", n)
			}
		})
	}
}
