package rendezvous

import (
	"testing"
	"time"
)

// TestRTTUnanswered: the wait for an answer starts at the oldest ping
// not followed by one; later pings do not move it, a pong to a ping
// never sent does not end it, and any answer does.
func TestRTTUnanswered(t *testing.T) {
	var r rttEstimator
	t0 := time.Now()
	if !r.waiting.IsZero() {
		t.Fatal("waiting before any ping")
	}
	first := r.ping(t0)
	r.ping(t0.Add(time.Second))
	if !r.waiting.Equal(t0) {
		t.Fatalf("waiting since %v, want the first ping's %v", r.waiting, t0)
	}
	r.pong(first.Nonce+5, t0.Add(1100*time.Millisecond)) // never sent
	if !r.waiting.Equal(t0) {
		t.Fatalf("a pong to a ping never sent ended the wait")
	}
	r.pong(first.Nonce, t0.Add(1200*time.Millisecond))
	if !r.waiting.IsZero() {
		t.Fatalf("still waiting since %v after an answer", r.waiting)
	}
	third := r.ping(t0.Add(2 * time.Second))
	if !r.waiting.Equal(t0.Add(2 * time.Second)) {
		t.Fatalf("waiting since %v, want the new ping's", r.waiting)
	}
	r.pong(third.Nonce, t0.Add(2100*time.Millisecond))
	if !r.waiting.IsZero() {
		t.Fatal("still waiting after the last ping's answer")
	}
}
