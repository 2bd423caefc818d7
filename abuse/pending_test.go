package abuse_test

// Attack: strangers on one host fill the super peer's table of requests
// waiting for consent (65,536 in all) by asking silent consenting
// devices, so that no consenting device anywhere can be introduced.

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/netsody/superpeer/rendezvous"
)

// The bounds the attack meets (rendezvous.maxWaitingPerAsker and
// maxWaitingPerPrefix, unexported): each asking session keeps at most 32
// lookups waiting, each source prefix 1024.
const (
	waitingPerAsker  = 32
	waitingPerPrefix = 1024
	// pendingTargets silent consenting devices hold the requests, 64 each
	// at most: enough for every asker to ask a different one each time.
	pendingTargets = 40
	// pendingAskers from one host ask for one prefix's share and more.
	pendingAskers = waitingPerPrefix/waitingPerAsker + 2
)

// Strangers from one host (127.0.0.1) asking silent consenting devices
// get at most one prefix's share of the waiting requests: beyond it they
// are told `rate limited` at once, while an honest device from another
// prefix (127.0.0.2) is still introduced. The full attack (filling all
// 65,536 from one host) is rendezvous's TestPendingNotFilledFromOnePrefix,
// too heavy for a real Caddy under -race; this one needs 80 sessions, and
// without the per-prefix bound every request waits (the count below is
// 1088, and the last asker's lookup waits instead of being refused).
func TestPendingPerAskerPrefixBounded(t *testing.T) {
	c := start(t, "consent_timeout 10m") // nothing expires while the table fills
	targets := make([]*dev, pendingTargets)
	for i := range targets {
		targets[i] = joinConsenting(t, c, "127.0.0.1", rendezvous.TransportH3, nil)
	}
	askers := make([]*dev, pendingAskers)
	for i := range askers {
		askers[i] = join(t, c, "127.0.0.1", rendezvous.TransportH3)
	}
	var wg sync.WaitGroup
	for i, s := range askers {
		wg.Go(func() {
			for j := range waitingPerAsker {
				// The frame goes out before Introduce waits: the request
				// stays pending at the super peer.
				ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
				s.s.Introduce(ctx, targets[(i+j)%pendingTargets].peer(), rendezvous.IntroduceOptions{})
				cancel()
				time.Sleep(time.Second / rendezvous.DefaultConnectRate)
			}
		})
	}
	wg.Wait()
	waitFor(t, 5*time.Second, "the flood's requests reached the super peer", func() bool {
		m := c.Metrics(t)
		return m["netsody_superpeer_consent_requests_total"]+m["netsody_superpeer_lookups_rate_limited_total"] >= pendingAskers*waitingPerAsker
	})
	m := c.Metrics(t)
	asked, limited := m["netsody_superpeer_consent_requests_total"], m["netsody_superpeer_lookups_rate_limited_total"]
	t.Logf("from one host: %v requests asked, %v lookups limited", asked, limited)
	if asked > waitingPerPrefix {
		t.Errorf("one host has %v requests waiting, want at most %d", asked, waitingPerPrefix)
	}

	// One more stranger from the same host is refused at once.
	late := join(t, c, "127.0.0.1", rendezvous.TransportH3)
	_, err, took := introduce(t, late, targets[0].peer(), rendezvous.IntroduceOptions{})
	var rerr *rendezvous.Error
	if !errors.As(err, &rerr) || rerr.Code != rendezvous.ErrCodeRateLimited {
		t.Errorf("a lookup from the flooding host: %v (after %v), want rate limited at once", err, took)
	}

	// An honest device from another prefix is introduced.
	yes := true
	friend := joinConsenting(t, c, "127.0.0.2", rendezvous.TransportH3, &yes)
	honest := join(t, c, "127.0.0.2", rendezvous.TransportH3, from(t, "127.0.0.2"))
	if _, err, _ := introduce(t, honest, friend.peer(), rendezvous.IntroduceOptions{}); err != nil {
		t.Fatalf("an honest device from another prefix, while one host holds its share of the pending requests: %v", err)
	}
}
