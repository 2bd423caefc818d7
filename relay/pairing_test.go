package relay

import (
	"context"
	"errors"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

// setHook makes f the relay's test hook for the rest of the test.
func setHook(t *testing.T, f func(point string)) {
	testHookFn.Store(&f)
	t.Cleanup(func() { testHookFn.Store(nil) })
}

type dialResult struct {
	c   net.PacketConn
	err error
}

func dialAsync(ctx context.Context, d *device, peer identity.PeerID) <-chan dialResult {
	ch := make(chan dialResult, 1)
	go func() {
		c, err := d.dial(ctx, peer)
		if err != nil {
			c = nil // not a typed nil
		}
		ch <- dialResult{c, err}
	}()
	return ch
}

// The pairing race: B's leg takes A's waiting leg, and A's pair timeout
// fires before B tells A. The hook holds B between the two until A's
// request has its answer. Before pairing notified under the lock, A got
// 504 and B got 200 and a leg that waited, unused, for A until B's
// registration ended. Now the two are paired or neither is, and a leg
// that is answered 200 relays or ends.
func TestPairingRaceLeavesNoHungLeg(t *testing.T) {
	ts := newTestServer(t, Config{PairTimeout: 300 * time.Millisecond})
	a, b := ts.device(t, rendezvous.TransportH2), ts.device(t, rendezvous.TransportH2)
	aAnswered := make(chan struct{})
	setHook(t, func(point string) {
		if point == "paired" {
			select {
			case <-aAnswered:
			case <-time.After(5 * time.Second):
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	aRes := dialAsync(ctx, a, b.id.PeerID())
	waitFor(t, func() bool { return ts.rl.Stats().Waiting.Load() == 1 })
	bRes := dialAsync(ctx, b, a.id.PeerID())
	ra := <-aRes
	close(aAnswered)
	rb := <-bRes
	for _, r := range []dialResult{ra, rb} {
		if r.c != nil {
			t.Cleanup(func() { r.c.Close() })
		}
	}
	switch {
	case ra.err == nil && rb.err == nil:
		exchange(t, ra.c, rb.c, 1)
	case ra.err != nil && rb.err != nil:
	default:
		// One side was answered 200 and the other refused: the 200 must
		// end at once, not hang.
		c := ra.c
		if c == nil {
			c = rb.c
		}
		read := make(chan error, 1)
		go func() { _, _, err := c.ReadFrom(make([]byte, 100)); read <- err }()
		select {
		case err := <-read:
			t.Logf("A: %v; B: %v; the paired leg ended: %v", ra.err, rb.err, err)
		case <-time.After(2 * time.Second):
			c.Close()
			<-read
			t.Fatalf("A: %v; B: %v; the leg answered 200 hangs", ra.err, rb.err)
		}
	}
}

// A leg whose registration ends between its authentication and its start
// is refused, saying why, though its counterpart waits for it: before, it
// was paired, answered 200, and ended at once. (A registration ends when
// its replaced or expired session is gone; a leg authenticated while that
// session drains its last frame is refused by Authenticate.)
func TestRegistrationEndingWhileAccepted(t *testing.T) {
	ts := newTestServer(t, Config{PairTimeout: time.Second})
	a, b := ts.keptDevice(t), ts.device(t, rendezvous.TransportH2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bRes := dialAsync(ctx, b, a.id.PeerID())
	waitFor(t, func() bool { return ts.rl.Stats().Waiting.Load() == 1 })

	reached, proceed := make(chan struct{}), make(chan struct{})
	setHook(t, func(point string) {
		if point == "authenticated" {
			close(reached)
			<-proceed
		}
	})
	aRes := dialAsync(ctx, a, b.id.PeerID())
	<-reached
	setHook(t, func(string) {})
	// A newer session of A's replaces the registration A's leg carries;
	// the registration ends once the old session is gone (two sessions
	// left: B's and A's new one).
	ts.deviceWith(t, func(c *rendezvous.ClientConfig) { c.Identity = a.id })
	waitFor(t, func() bool { _, all := ts.rv.Sessions(); return all == 2 })
	runtime.Gosched() // the old session's handler ends its registration right after
	close(proceed)
	r := <-aRes
	if r.c != nil {
		r.c.Close()
	}
	var ref *RefusedError
	if !errors.As(r.err, &ref) || ref.Status != http.StatusForbidden || !strings.Contains(ref.Reason, "replaced") {
		t.Fatalf("A's leg after its registration was replaced: %v, want 403 saying it was replaced", r.err)
	}
	wantRefused(t, (<-bRes).err, http.StatusGatewayTimeout, "connection_timeout")
	if got := ts.rl.Stats().Paired.Load(); got != 0 {
		t.Errorf("paired %d sessions, want none", got)
	}
}

// Waiting legs are capped per device and across the server, and counted.
func TestWaitingLegsCapped(t *testing.T) {
	ts := newTestServer(t, Config{MaxWaiting: DefaultMaxWaitingPerDevice + 1, PairTimeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	a := ts.device(t, rendezvous.TransportH2)
	var waiting []<-chan dialResult
	for range DefaultMaxWaitingPerDevice {
		waiting = append(waiting, dialAsync(ctx, a, ts.device(t, rendezvous.TransportH2).id.PeerID()))
	}
	waitFor(t, func() bool { return ts.rl.Stats().Waiting.Load() == DefaultMaxWaitingPerDevice })
	dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer dcancel()
	other := ts.device(t, rendezvous.TransportH2)
	_, err := a.dial(dctx, other.id.PeerID())
	wantRefused(t, err, http.StatusTooManyRequests, "http_request_denied")

	// Another device may still wait, up to the server's cap.
	c := ts.device(t, rendezvous.TransportH2)
	waiting = append(waiting, dialAsync(ctx, c, other.id.PeerID()))
	waitFor(t, func() bool { return ts.rl.Stats().Waiting.Load() == DefaultMaxWaitingPerDevice+1 })
	_, err = ts.device(t, rendezvous.TransportH2).dial(dctx, other.id.PeerID())
	wantRefused(t, err, http.StatusServiceUnavailable, "proxy_internal_error")

	cancel()
	for _, ch := range waiting {
		if r := <-ch; r.c != nil {
			r.c.Close()
		}
	}
	waitFor(t, func() bool { return ts.rl.Stats().Waiting.Load() == 0 })
}
