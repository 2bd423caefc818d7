package rendezvous

import (
	"testing"
	"time"
)

// TestRTTAnswered: any pong to a ping sent counts as an answer, the last
// one's and an earlier one's; a nonce never sent does not, and only the
// last ping's answer is an RTT sample.
func TestRTTAnswered(t *testing.T) {
	var r rttEstimator
	t0 := time.Now()
	first := r.ping(t0)
	second := r.ping(t0.Add(time.Second))
	r.pong(second.Nonce+1, t0.Add(1100*time.Millisecond)) // never sent
	r.pong(0, t0.Add(1100*time.Millisecond))
	if !r.answered.IsZero() || r.srtt != 0 {
		t.Fatalf("answered %v, srtt %v after pongs to pings never sent", r.answered, r.srtt)
	}
	r.pong(first.Nonce, t0.Add(1200*time.Millisecond)) // the earlier ping's
	if !r.answered.Equal(t0.Add(1200*time.Millisecond)) || r.srtt != 0 {
		t.Fatalf("after an earlier ping's pong: answered %v, srtt %v; want answered, no sample", r.answered, r.srtt)
	}
	r.pong(second.Nonce, t0.Add(1300*time.Millisecond))
	if !r.answered.Equal(t0.Add(1300*time.Millisecond)) || r.srtt != 300*time.Millisecond {
		t.Fatalf("after the last ping's pong: answered %v, srtt %v; want 300ms", r.answered, r.srtt)
	}
}
