package relay

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/rendezvous"
)

// Without hide_presence, a stranger probing through the relay whether a
// peer is online is limited as through connect: the same failed lookups
// per (asker, target), in one bucket with the rendezvous's; beyond, 429
// with a Retry-After.
func TestPresenceProbeLimited(t *testing.T) {
	ts := newTestServer(t, Config{})
	a := ts.device(t, rendezvous.TransportH2)
	offline, _ := identity.Generate()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range rendezvous.DefaultLookupBurst {
		_, err := a.dial(ctx, offline.PeerID())
		wantRefused(t, err, http.StatusNotFound, "destination_not_found")
	}
	_, err := a.dial(ctx, offline.PeerID())
	wantRefused(t, err, http.StatusTooManyRequests, "http_request_denied")
	var ref *RefusedError
	if errors.As(err, &ref); ref.RetryAfter < time.Second {
		t.Errorf("Retry-After %v, want at least 1s", ref.RetryAfter)
	}
	// One bucket with the rendezvous's lookups.
	_, err = a.s.Introduce(ctx, offline.PeerID(), rendezvous.IntroduceOptions{})
	var e *rendezvous.Error
	if !errors.As(err, &e) || e.Code != rendezvous.ErrCodeRateLimited {
		t.Errorf("a connect after the relay's lookups: %v, want rate limited", err)
	}
	// Another peer is another bucket.
	other, _ := identity.Generate()
	_, err = a.dial(ctx, other.PeerID())
	wantRefused(t, err, http.StatusNotFound, "destination_not_found")
}

// fromLoopback makes a device's connections leave from the loopback
// address src, another source prefix than 127.0.0.1.
func fromLoopback(t testing.TB, src string) func(*rendezvous.ClientConfig) {
	return func(c *rendezvous.ClientConfig) { c.DialTCP, c.QUICTransport = sptest.FromLoopback(t, src) }
}

// With hide_presence, requests towards offline peers wait like any other
// (so that they say nothing), but one network holds only its share of the
// waiting pool: strangers with many identities on one address cannot
// fill it, and devices elsewhere still relay.
func TestHiddenWaitsBoundedPerPrefix(t *testing.T) {
	const pool, share = 4 * DefaultMaxWaitingPerDevice, 2
	ts := newTestServer(t, Config{HidePresence: true, MaxWaiting: pool, MaxWaitingPerPrefix: share, PairTimeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	results := make(chan dialResult, pool)
	started := 0
	defer func() {
		cancel()
		for range started {
			if r := <-results; r.c != nil {
				r.c.Close()
			}
		}
	}()
	for range pool / DefaultMaxWaitingPerDevice {
		d := ts.device(t, rendezvous.TransportH2)
		for range DefaultMaxWaitingPerDevice {
			offline, _ := identity.Generate()
			go func() { results <- <-dialAsync(ctx, d, offline.PeerID()) }()
			started++
		}
	}
	for range pool - share {
		select {
		case r := <-results:
			started--
			wantRefused(t, r.err, http.StatusTooManyRequests, "http_request_denied")
		case <-time.After(5 * time.Second):
			t.Fatalf("%d legs waiting from one address after 5s, want its share %d", ts.rl.Stats().Waiting.Load(), share)
		}
	}
	waitFor(t, func() bool { return ts.rl.Stats().Waiting.Load() == int64(share) })

	from := fromLoopback(t, "127.0.0.2")
	b, c := ts.deviceWith(t, from), ts.deviceWith(t, from)
	dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer dcancel()
	bRes := dialAsync(dctx, b, c.id.PeerID())
	cc, err := c.dial(dctx, b.id.PeerID())
	if err != nil {
		t.Fatalf("a device on another network could not relay: %v", err)
	}
	cc.Close()
	if r := <-bRes; r.err != nil {
		t.Fatalf("its peer: %v", r.err)
	} else {
		r.c.Close()
	}
}
