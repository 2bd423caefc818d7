package rendezvous

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A drain tells every registered device that announced CapMove to move,
// once, with the time left and the reason; an older device is told
// nothing and keeps its session until the close, which ends it with
// ErrCodeShuttingDown, as before drains existed. New sessions get 503
// with Retry-After and the reason, and are counted.
func TestDrainTellsDevicesToMove(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{DrainTimeout: 3 * time.Second})
	moves := make(chan Move, 4)
	onMove := func(c *ClientConfig) { c.OnMove = func(m Move) { moves <- m } }
	var movers []*Session
	for _, tr := range transports {
		s := ts.dial(t, tr, newIdentity(t), onMove)
		if !s.Protocol().Capabilities.Has(CapMove) {
			t.Fatalf("the super peer does not announce CapMove: %+v", s.Protocol())
		}
		movers = append(movers, s)
	}
	old := ts.dial(t, TransportH3, newIdentity(t), func(c *ClientConfig) {
		c.OnMove = func(Move) { t.Error("a device without CapMove was sent FrameMove") }
		c.announce = &Protocol{Version: ProtocolVersion, Capabilities: CapObserved | CapConsent}
	})
	// One that does not set OnMove announces no CapMove, and is not told.
	quiet := ts.dial(t, TransportH2, newIdentity(t))

	if ts.rv.Draining() {
		t.Fatal("draining before Drain")
	}
	until := ts.rv.Drain(0, "caddy is stopping")
	if again := ts.rv.Drain(time.Hour, "again"); !again.Equal(until) {
		t.Errorf("a second Drain moved the end from %v to %v", until, again)
	}
	if !ts.rv.Draining() {
		t.Fatal("not draining after Drain")
	}
	for range movers {
		select {
		case m := <-moves:
			if m.Reason != "caddy is stopping" || m.Deadline <= 2*time.Second || m.Deadline > 3*time.Second {
				t.Errorf("move: %+v, want the reason and a deadline just under 3s", m)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no FrameMove within 5s")
		}
	}
	if n := ts.rv.Stats().MovesSent.Load(); n != 2 {
		t.Errorf("%d moves counted, want 2", n)
	}

	for _, tr := range transports {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := Dial(ctx, ClientConfig{Identity: newIdentity(t), URL: ts.url(tr), Transport: tr, TLSConfig: &tls.Config{RootCAs: ts.Pool}})
		cancel()
		if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "draining (caddy is stopping)") {
			t.Errorf("%s: a new session while draining: %v, want 503 naming the drain", tr, err)
		}
	}
	resp, err := ts.H2.Client().Post(ts.H2URL+Path, ContentType, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "10" {
		t.Errorf("a new session while draining: %d, Retry-After %q; want 503 and 10", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if n := ts.rv.Stats().SessionsRefused[RefusedDraining].Load(); n != 3 {
		t.Errorf("%d sessions refused as draining, want 3", n)
	}
	// Running sessions live on through the drain, until the close.
	for _, s := range append(movers, old, quiet) {
		if err := s.Err(); err != nil {
			t.Fatalf("a session ended during the drain: %v", err)
		}
	}
	ts.rv.Close()
	for _, s := range append(movers, old, quiet) {
		<-s.Done()
		var e *Error
		if !errors.As(s.Err(), &e) || e.Code != ErrCodeShuttingDown {
			t.Errorf("at the close: %v, want %s", s.Err(), ErrCodeShuttingDown)
		}
	}
	select {
	case m := <-moves:
		t.Errorf("a second FrameMove: %+v", m)
	default:
	}
}

// A session admitted before the drain that registers after it is told
// at once, after its FrameRegistered.
func TestDrainTellsLateRegistration(t *testing.T) {
	for _, tr := range transports {
		ts := newTestServer(t, "127.0.0.1", Config{})
		id := newIdentity(t)
		s := ts.openRaw(t, tr, id)
		ts.rv.Drain(time.Second, "reload")
		m := signRegistration(s.binding, id, nil)
		m.Protocol = ours
		if err := s.writeFrame(m.frame()); err != nil {
			t.Fatal(err)
		}
		if f, err := nextFrame(t, s); err != nil || f.typ != FrameRegistered {
			t.Fatalf("%s: got %s, %v; want registered first", tr, f.typ, err)
		}
		f, err := nextFrame(t, s)
		var mv Move
		if err != nil || f.typ != FrameMove || mv.decode(f.payload) != nil || mv.Reason != "reload" {
			t.Fatalf("%s: got %s (%+v), %v; want move", tr, f.typ, mv, err)
		}
	}
}
