package relay

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/netsody/superpeer/identity"
)

// The relay's bandwidth budgets (docs/PROTOCOL.md, "Budgets"). What a
// device sends into the relay passes three token buckets of bytes: its
// leg's (Config.Rate), its device's, shared by all of that device's legs
// and their fast-path bindings (Config.DeviceRate), and the super peer's,
// shared by all (Config.TotalRate). Each relayed byte is charged once, to
// its sender. A leg that carries capsules waits for all three (its device
// is throttled through TCP or QUIC flow control); an HTTP/3 datagram or a
// fast-path DATA packet that one of them cannot pay is dropped and
// counted. SetConfig changes the rates of the buckets in use: a lower
// budget throttles running legs from their next datagram.

// Budget names one of the relay's budgets; it labels metrics.
type Budget int

const (
	// BudgetDeviceSessions: relay sessions per device
	// (Config.MaxSessionsPerDevice).
	BudgetDeviceSessions Budget = iota
	// BudgetDeviceBandwidth: bytes per second a device sends through the
	// relay, over all its legs and paths (Config.DeviceRate).
	BudgetDeviceBandwidth
	// BudgetTotalBandwidth: bytes per second the super peer relays
	// (Config.TotalRate).
	BudgetTotalBandwidth
	numBudgets
)

// String returns the budget's metric label.
func (b Budget) String() string {
	switch b {
	case BudgetDeviceSessions:
		return "device_sessions"
	case BudgetDeviceBandwidth:
		return "device_bandwidth"
	case BudgetTotalBandwidth:
		return "total_bandwidth"
	}
	return "unknown"
}

// BudgetUse is one budget's limit and what of it is in use now.
type BudgetUse struct {
	Name string // the budget's metric label
	// Limit is in sessions, or in bytes per second; Burst, in bytes, is
	// the bandwidth budgets' token bucket size.
	Limit float64
	Burst int
	// Use is in the limit's unit: for a per-device budget, the busiest
	// device's. Bandwidth is measured over the last meterWindow.
	Use float64
	// Hits counts what the budget refused (requests), dropped (HTTP/3
	// datagrams, fast-path DATA) or held back (capsules a leg waited
	// for) since the start.
	Hits uint64
}

// Budgets returns the relay's budgets, their limits and their use now.
func (s *Server) Budgets() []BudgetUse {
	cfg := s.config()
	now := time.Now()
	s.mu.Lock()
	sessions := 0
	for _, n := range s.byDevice {
		sessions = max(sessions, n)
	}
	s.mu.Unlock()
	return []BudgetUse{
		{Name: BudgetDeviceSessions.String(), Limit: float64(cfg.MaxSessionsPerDevice), Use: float64(sessions),
			Hits: s.stats.BudgetHits(BudgetDeviceSessions)},
		{Name: BudgetDeviceBandwidth.String(), Limit: cfg.DeviceRate, Burst: cfg.DeviceBurst, Use: s.budgets.busiest(now),
			Hits: s.stats.BudgetHits(BudgetDeviceBandwidth)},
		{Name: BudgetTotalBandwidth.String(), Limit: cfg.TotalRate, Burst: cfg.TotalBurst, Use: s.budgets.total.use(now),
			Hits: s.stats.BudgetHits(BudgetTotalBandwidth)},
	}
}

// Headroom is what the relay can still take now: bandwidth under its
// total budget, and each device's sessions under its device budget. The
// super peer tells its devices (rendezvous FrameHeadroom), so that a
// loaded relay steers new relays to its siblings instead of refusing
// them (docs/OPERATIONS.md, "Headroom: how load spreads across super
// peers").
type Headroom struct {
	// Bandwidth, in bytes per second, is Config.TotalRate less what the
	// relay carried over the last meterWindow; never below 0.
	Bandwidth float64
	perDevice int                     // Config.MaxSessionsPerDevice
	sessions  map[identity.PeerID]int // each device's sessions, copied
}

// SpareSessions returns the relay sessions peer may still open.
func (h Headroom) SpareSessions(peer identity.PeerID) int {
	return max(h.perDevice-h.sessions[peer], 0)
}

// Headroom returns the relay's headroom now. It copies the sessions per
// device: one call serves all devices.
func (s *Server) Headroom() Headroom {
	cfg := s.config()
	s.mu.Lock()
	sessions := maps.Clone(s.byDevice)
	s.mu.Unlock()
	spare := max(cfg.TotalRate-s.budgets.total.use(time.Now()), 0)
	return Headroom{Bandwidth: spare, perDevice: cfg.MaxSessionsPerDevice, sessions: sessions}
}

// budgets holds the buckets shared across legs: one per device with legs,
// and the super peer's.
type budgets struct {
	total *bucket

	mu      sync.Mutex // guards devices
	devices map[identity.PeerID]*deviceBucket
}

type deviceBucket struct {
	*bucket
	legs int // legs that hold it; it goes with the last
}

func newBudgets(cfg *Config) *budgets {
	return &budgets{total: newBucket(cfg.TotalRate, cfg.TotalBurst), devices: make(map[identity.PeerID]*deviceBucket)}
}

// acquire returns peer's bucket for one more leg of it.
func (bs *budgets) acquire(peer identity.PeerID, cfg *Config) *bucket {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	d := bs.devices[peer]
	if d == nil {
		d = &deviceBucket{bucket: newBucket(cfg.DeviceRate, cfg.DeviceBurst)}
		bs.devices[peer] = d
	}
	d.legs++
	return d.bucket
}

// release gives back what acquire took for one leg of peer.
func (bs *budgets) release(peer identity.PeerID) {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if d := bs.devices[peer]; d != nil {
		if d.legs--; d.legs <= 0 {
			delete(bs.devices, peer)
		}
	}
}

// set applies cfg's budgets to the buckets in use.
func (bs *budgets) set(cfg *Config) {
	bs.total.set(cfg.TotalRate, cfg.TotalBurst)
	bs.mu.Lock()
	defer bs.mu.Unlock()
	for _, d := range bs.devices {
		d.set(cfg.DeviceRate, cfg.DeviceBurst)
	}
}

// busiest returns the highest rate a device sends at now.
func (bs *budgets) busiest(now time.Time) float64 {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	var most float64
	for _, d := range bs.devices {
		most = max(most, d.use(now))
	}
	return most
}

// account is what a leg's sent bytes are charged to: its own bucket, its
// device's and the super peer's, with the budget each counts against
// (the leg's own counts as none: its excess is DropRateLimited).
type account struct {
	buckets [3]*bucket // nil: not charged (a leg outside a Server, in tests)
	stats   *Stats
}

// accountBudgets are the budgets of account.buckets, in order; -1: the
// leg's own bucket.
var accountBudgets = [3]Budget{-1, BudgetDeviceBandwidth, BudgetTotalBandwidth}

// allow charges n bytes if every bucket holds them, and none if one does
// not: then it returns that bucket's budget (-1: the leg's own), false.
func (a *account) allow(now time.Time, n int) (Budget, bool) {
	i := a.take(now, n)
	if i < 0 {
		return -1, true
	}
	over := accountBudgets[i]
	if over >= 0 {
		a.stats.budgetHit(over)
	}
	return over, false
}

// take charges n bytes to every bucket, or to none: then it returns the
// index of the bucket that lacked them; else -1.
func (a *account) take(now time.Time, n int) int {
	for i, b := range a.buckets {
		if b == nil || b.take(now, n) {
			continue
		}
		for _, taken := range a.buckets[:i] {
			if taken != nil {
				taken.give(n)
			}
		}
		return i
	}
	return -1
}

// wait charges n bytes once every bucket holds them, waiting for that
// until ctx ends; a budget that made it wait counts a hit, once. The wait
// goes by the bucket that lacked them, at its rate then: a rate lowered
// meanwhile (SetConfig) only makes the next look find too few again. The
// waiter takes no tokens before it can take all, so an HTTP/3 leg of the
// same device keeps its chance at them.
func (a *account) wait(ctx context.Context, n int) error {
	var t *time.Timer
	for hit := false; ; hit = true {
		now := time.Now()
		i := a.take(now, n)
		if i < 0 {
			return nil
		}
		if over := accountBudgets[i]; over >= 0 && !hit {
			a.stats.budgetHit(over)
		}
		d := a.buckets[i].until(now, n)
		if t == nil {
			t = time.NewTimer(d)
			defer t.Stop()
		} else {
			t.Reset(d)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// bucket is a token bucket of bytes whose rate and size may change while
// legs use it; it also measures what passes.
type bucket struct {
	mu     sync.Mutex // guards the following
	rate   float64    // bytes per second
	size   float64    // bytes
	tokens float64
	last   time.Time // when tokens was brought up to date

	window time.Time // the meter's current window began
	taken  float64   // bytes taken in it
	recent float64   // bytes per second over the last full window
}

func newBucket(rate float64, size int) *bucket {
	now := time.Now()
	return &bucket{rate: rate, size: float64(size), tokens: float64(size), last: now, window: now}
}

// refill brings tokens and the meter up to now; under mu.
func (b *bucket) refill(now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.size, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
	if d := now.Sub(b.window); d >= meterWindow {
		b.recent = b.taken / d.Seconds()
		b.taken, b.window = 0, now
	}
}

// take takes n tokens if the bucket holds them.
func (b *bucket) take(now time.Time, n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	b.taken += float64(n)
	return true
}

// until returns how long until the bucket holds n tokens, at the present
// rate.
func (b *bucket) until(now time.Time, n int) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	if b.tokens >= float64(n) {
		return 0
	}
	return time.Duration((float64(n) - b.tokens) / b.rate * float64(time.Second))
}

// give returns n tokens that take took, for bytes not relayed after all.
func (b *bucket) give(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.size, b.tokens+float64(n))
	b.taken -= float64(n)
}

// set changes the rate and size from now on; tokens over the new size
// are gone.
func (b *bucket) set(rate float64, size int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(time.Now())
	b.rate, b.size = rate, float64(size)
	b.tokens = min(b.tokens, b.size)
}

// use returns the bytes per second taken over the last full window.
func (b *bucket) use(now time.Time) float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	return b.recent
}
