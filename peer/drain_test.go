package peer

import (
	"context"
	"testing"
	"time"

	"github.com/netsody/superpeer"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/rendezvous"
)

// A transfer relayed through super peer A while A drains: both devices
// are told to move, the relay moves to B before A closes, the transfer
// arrives whole, and the receiver never waits a second for bytes. A
// closes as soon as the relay has moved, long before its drain timeout.
func TestDrainMovesRelayedTransfer(t *testing.T) {
	const drainTimeout = 10 * time.Second
	sA, spA := newSuperPeer(t, superpeer.Config{Rendezvous: rendezvous.Config{DrainTimeout: drainTimeout}})
	sB, _ := superPeerServer(t)
	// B a little further, so that the relay starts through A.
	uB := "https://" + sptest.UDPDelay(t, addrOf(sB.H3URL), 20*time.Millisecond).String()
	cfg := func(c *Config) { c.SuperPeers = []string{sA.H3URL, uB}; c.RelayOnly = true }
	a, b := newDevice(t, sA, cfg), newDevice(t, sA, cfg)
	c := dial(t, a, b)
	if p := c.Path(); p.Kind != PathRelay || p.SuperPeer != sA.H3URL {
		t.Fatalf("path %s, want relay via %s", p, sA.H3URL)
	}
	drained := make(chan time.Duration, 1)
	gap := sptest.PacedTransfer(t, c, b.Accept, 200, func(i int) {
		if i == 50 {
			go func() {
				start := time.Now()
				spA.Drain(context.Background(), "test drain")
				drained <- time.Since(start)
			}()
		}
	})
	t.Logf("longest gap between delivered bytes: %v", gap)
	if gap >= time.Second {
		t.Errorf("the receiver waited %v for bytes, want under 1s", gap)
	}
	if p := c.Path(); p.Kind != PathRelay || p.SuperPeer != uB {
		t.Errorf("path %s after the drain, want relay via %s", p, uB)
	}
	select {
	case took := <-drained:
		t.Logf("A drained in %v", took)
		if took >= drainTimeout/2 {
			t.Errorf("A took %v to drain: the relay did not move, it timed out", took)
		}
	case <-time.After(drainTimeout + 5*time.Second):
		t.Fatal("A did not finish draining")
	}
}
