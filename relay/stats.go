package relay

import "sync/atomic"

// DropReason says why the relay dropped a datagram; it labels metrics.
type DropReason int

const (
	// DropRateLimited: an HTTP/3 leg sent faster than its token bucket.
	DropRateLimited DropReason = iota
	// DropTooLarge: a datagram over Config.MaxDatagramSize.
	DropTooLarge
	// DropQueueFull: the queue towards a leg's device was full.
	DropQueueFull
	// DropSendFailed: the QUIC connection towards an HTTP/3 leg refused
	// the datagram (too large for its path, or closed).
	DropSendFailed
	// DropOverloaded: the bytes queued across all legs reached
	// Config.MaxQueuedBytes.
	DropOverloaded
	// DropDeviceBudget: an HTTP/3 datagram or fast-path DATA over its
	// device's bandwidth budget (Config.DeviceRate), summed over the
	// device's legs.
	DropDeviceBudget
	// DropTotalBudget: one over the super peer's bandwidth budget
	// (Config.TotalRate).
	DropTotalBudget
	numDropReasons
)

// String returns the reason as a metric label.
func (r DropReason) String() string {
	switch r {
	case DropRateLimited:
		return "rate_limited"
	case DropTooLarge:
		return "too_large"
	case DropQueueFull:
		return "queue_full"
	case DropSendFailed:
		return "send_failed"
	case DropOverloaded:
		return "overloaded"
	case DropDeviceBudget:
		return "device_bandwidth"
	case DropTotalBudget:
		return "total_bandwidth"
	}
	return "unknown"
}

// DropReasons lists every reason, for metrics.
func DropReasons() []DropReason {
	rs := make([]DropReason, numDropReasons)
	for i := range rs {
		rs[i] = DropReason(i)
	}
	return rs
}

// Stats counts what the relay did.
type Stats struct {
	Active       atomic.Int64  // bridged legs now
	Waiting      atomic.Int64  // legs waiting for their counterpart now
	QueuedBytes  atomic.Int64  // bytes queued towards devices now, in all legs
	Stalled      atomic.Uint64 // legs ended because their device took nothing (Config.StallTimeout)
	Paired       atomic.Uint64 // sessions bridged
	PairTimeouts atomic.Uint64 // sessions whose counterpart never came
	Datagrams    atomic.Uint64 // datagrams delivered
	Bytes        atomic.Uint64 // payload bytes delivered
	dropped      [numDropReasons]atomic.Uint64
	refused      [len(refusals)]atomic.Uint64 // by refusal, as listed in refusals
	budgetHits   [numBudgets]atomic.Uint64
	byTransport  [numTransports]traffic // delivered, by transport (operator.go)
	FastPath     FastPathStats          // the fast path's (fastpath.go)
}

func (s *Stats) drop(r DropReason) { s.dropped[r].Add(1) }

// Dropped returns how many datagrams were dropped for reason r.
func (s *Stats) Dropped(r DropReason) uint64 { return s.dropped[r].Load() }

func (s *Stats) countRefusal(r *refusal) {
	s.refused[r.index()].Add(1)
	if r.is(refuseTooMany) {
		s.budgetHit(BudgetDeviceSessions)
	}
}

func (s *Stats) budgetHit(b Budget) { s.budgetHits[b].Add(1) }

// BudgetHits returns how often budget b refused, dropped or held back.
func (s *Stats) BudgetHits(b Budget) uint64 { return s.budgetHits[b].Load() }

// dropFor is the drop reason of a datagram over budget b; over none (-1),
// over its leg's own bucket.
func dropFor(b Budget) DropReason {
	switch b {
	case BudgetDeviceBandwidth:
		return DropDeviceBudget
	case BudgetTotalBandwidth:
		return DropTotalBudget
	}
	return DropRateLimited
}

// Refused returns how many requests were refused, by HTTP status; a
// status that was never answered is absent.
func (s *Stats) Refused() map[int]uint64 {
	m := make(map[int]uint64)
	for i, r := range refusals {
		if n := s.refused[i].Load(); n > 0 {
			m[r.status] += n
		}
	}
	return m
}
