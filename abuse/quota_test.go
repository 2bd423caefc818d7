package abuse_test

// Attack h: strangers ask to relay to a device, to fill its relay
// sessions (relay.DefaultMaxSessionsPerDevice) and cut it off from its
// real peers.

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/peer"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

// fillRelayQuota has as many strangers as a device may hold relay
// sessions ask to relay to b, each holding its leg until the test ends.
func fillRelayQuota(t *testing.T, c *testcaddy.Caddy, b *peer.Device) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for range relay.DefaultMaxSessionsPerDevice {
		s := join(t, c, "127.0.0.1", rendezvous.TransportH3)
		wg.Go(func() {
			if conn, err := dialRelay(ctx, s, b.PeerID()); err == nil {
				<-ctx.Done() // held: the device's leg counts as long
				conn.Close()
			}
		})
		ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
		s.s.Introduce(ictx, b.PeerID(), rendezvous.IntroduceOptions{Relay: true})
		icancel()
	}
}

// Strangers asking to relay to a device that accepts only its peer open
// no leg of the device's, and the peer still reaches it through the
// relay. The second sub-test lets the device accept anyone: the
// strangers' legs then fill its quota and its peer is cut off.
func TestStrangersCannotFillRelayQuota(t *testing.T) {
	for _, open := range []bool{false, true} {
		name := "default_policy"
		if open {
			name = "allow_any"
		}
		t.Run(name, func(t *testing.T) {
			c := start(t, "relay {\n\tpair_timeout 1s\n}")
			aID := newID(t)
			relayOnly := func(cfg *peer.Config) { cfg.RelayOnly = true }
			b := newDevice(t, c, relayOnly, func(cfg *peer.Config) {
				cfg.Allow, cfg.AllowAny = []identity.PeerID{aID.PeerID()}, open
			})
			fillRelayQuota(t, c, b)
			waitFor(t, 5*time.Second, "the strangers' legs to settle", func() bool {
				return c.Metrics(t)["netsody_superpeer_relay_waiting"] == 0
			})
			t.Logf("relay legs bridged: %v", c.Metrics(t)["netsody_superpeer_relay_legs"])
			a := newDevice(t, c, relayOnly, func(cfg *peer.Config) { cfg.Identity = aID })
			echo(t, b)
			if !open {
				roundTrip(t, a, b, "through the relay")
				return
			}
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			if conn, err := a.Dial(ctx, b.PeerID()); err == nil {
				conn.CloseWithError(0, "")
				t.Error("the peer got through though strangers hold the device's relay sessions: the test proves nothing")
			}
		})
	}
}
