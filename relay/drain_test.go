package relay

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/netsody/superpeer/rendezvous"
)

// While the relay drains, the sessions it bridges go on carrying
// datagrams and a new one is refused with 503 and Retry-After; Drain's
// channel closes when the last session ends, not before.
func TestDrainKeepsRunningSessions(t *testing.T) {
	ts := newTestServer(t, Config{})
	a, b := ts.device(t, rendezvous.TransportH3), ts.device(t, rendezvous.TransportH2)
	c := ts.device(t, rendezvous.TransportH3)
	ca, cb := pair(t, a, b)
	exchange(t, ca, cb, 1)

	drained := ts.rl.Drain()
	if again := ts.rl.Drain(); again != drained {
		t.Error("a second Drain returned another channel")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.dial(ctx, a.id.PeerID())
	wantRefused(t, err, http.StatusServiceUnavailable, errInternal)
	var ref *RefusedError
	if errors.As(err, &ref); ref.RetryAfter != retryAfterDraining {
		t.Errorf("Retry-After %v, want %v", ref.RetryAfter, retryAfterDraining)
	}
	exchange(t, ca, cb, 5) // the running session goes on
	select {
	case <-drained:
		t.Fatal("drained while a session runs")
	default:
	}
	ca.Close()
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
		t.Fatal("not drained within 5s of the last session's end")
	}
}
