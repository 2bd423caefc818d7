package rendezvous

import "time"

// rttEstimator measures a session's round-trip time from its own pings:
// the super peer's of the device, and the device's of the super peer.
// Its owner's mutex guards it.
type rttEstimator struct {
	nonce uint64        // of the last ping sent
	sent  time.Time     // when it went; zero once answered
	srtt  time.Duration // smoothed; 0 before the first sample
	// answered is when a pong last answered one of the pings sent, the
	// last or an earlier one: the other end hears this one and is heard.
	answered time.Time
	// waiting is when the oldest ping that no answer has followed went;
	// zero while every ping sent has been answered. A later ping does
	// not move it: a path that stopped delivering stays unanswered
	// however often it is pinged.
	waiting time.Time
}

// ping returns the next ping to send at now; it carries the smoothed RTT
// so far, for the other end.
func (r *rttEstimator) ping(now time.Time) Ping {
	r.nonce++
	r.sent = now
	if r.waiting.IsZero() {
		r.waiting = now
	}
	return Ping{Nonce: r.nonce, RTT: r.srtt}
}

// pong takes the answer to the last ping; an answer to an older one, or a
// second answer, is no sample.
func (r *rttEstimator) pong(nonce uint64, now time.Time) {
	if nonce != 0 && nonce <= r.nonce {
		r.answered = now
		r.waiting = time.Time{}
	}
	if nonce == r.nonce && !r.sent.IsZero() {
		r.add(now.Sub(r.sent))
		r.sent = time.Time{}
	}
}

// add folds a sample in, as TCP does (RFC 6298, α = 1/8).
func (r *rttEstimator) add(sample time.Duration) { r.srtt = smooth(r.srtt, sample) }

func smooth(srtt, sample time.Duration) time.Duration {
	if srtt == 0 {
		return sample
	}
	return srtt + (sample-srtt)/8
}
