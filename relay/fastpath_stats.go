package relay

import "sync/atomic"

// FastPathDrop says why the fast path dropped a packet; it labels
// metrics. Every refusal on the fast path is a silent drop.
type FastPathDrop int

const (
	// FastPathMalformed: not a fast-path packet this version knows.
	FastPathMalformed FastPathDrop = iota
	// FastPathUnknownBinding: no such binding, or its leg ended.
	FastPathUnknownBinding
	// FastPathUnvalidated: DATA for a binding whose address is not yet
	// validated.
	FastPathUnvalidated
	// FastPathWrongSource: DATA from another source than the binding's
	// validated one.
	FastPathWrongSource
	// FastPathBadMAC: a PROBE or ANSWER whose MAC is not the token's.
	FastPathBadMAC
	// FastPathBadCookie: an ANSWER whose cookie is not this source's, or
	// stale.
	FastPathBadCookie
	// FastPathChallengeLimited: a CHALLENGE not sent, over
	// fastPathChallengeInterval or larger than what asked for it.
	FastPathChallengeLimited
	// FastPathTooLarge: DATA over Config.MaxDatagramSize.
	FastPathTooLarge
	// FastPathRateLimited: DATA over its leg's token bucket.
	FastPathRateLimited
	// FastPathSendFailed: the socket refused a packet towards a device.
	FastPathSendFailed
	numFastPathDrops
)

// String returns the reason as a metric label.
func (r FastPathDrop) String() string {
	switch r {
	case FastPathMalformed:
		return "malformed"
	case FastPathUnknownBinding:
		return "unknown_binding"
	case FastPathUnvalidated:
		return "unvalidated"
	case FastPathWrongSource:
		return "wrong_source"
	case FastPathBadMAC:
		return "bad_mac"
	case FastPathBadCookie:
		return "bad_cookie"
	case FastPathChallengeLimited:
		return "challenge_limited"
	case FastPathTooLarge:
		return "too_large"
	case FastPathRateLimited:
		return "rate_limited"
	case FastPathSendFailed:
		return "send_failed"
	}
	return "unknown"
}

// FastPathDrops lists every reason, for metrics.
func FastPathDrops() []FastPathDrop {
	rs := make([]FastPathDrop, numFastPathDrops)
	for i := range rs {
		rs[i] = FastPathDrop(i)
	}
	return rs
}

// FastPathStats counts what the fast path did. Datagrams it relays count
// in Stats.Datagrams and Stats.Bytes too.
type FastPathStats struct {
	Bindings    atomic.Int64  // bindings now
	Refused     atomic.Uint64 // binding requests refused
	Validations atomic.Uint64 // sources validated, rebindings included
	Rebindings  atomic.Uint64 // validations that moved a binding to a new source
	Challenges  atomic.Uint64 // CHALLENGEs sent
	Datagrams   atomic.Uint64 // DATA sent to devices
	dropped     [numFastPathDrops]atomic.Uint64
}

func (s *FastPathStats) drop(r FastPathDrop) { s.dropped[r].Add(1) }

// Dropped returns how many packets the fast path dropped for reason r.
func (s *FastPathStats) Dropped(r FastPathDrop) uint64 { return s.dropped[r].Load() }
