package stun

import (
	"net/netip"
	"sync"
	"time"

	"github.com/netsody/superpeer/rendezvous"
)

// sourcePrefix is what a source is counted as, the same prefix as the
// rendezvous server's limits count it in: its IPv4 address (a host or a
// NAT), or its IPv6 /64 (a subnet, which one host may hold whole).
func sourcePrefix(a netip.Addr) netip.Prefix { return rendezvous.SourcePrefix(a) }

// sourceTable bounds what one source prefix can make the responder send:
// a token bucket of responses per prefix (Config.SourceRate,
// Config.SourceBurst). Its own size is bounded by maxSources.
//
// A spoofed request names its victim as the source, so the bucket is the
// victim's: however many hosts send in its name, the victim receives at
// most SourceBurst responses at once and SourceRate a second after that.
type sourceTable struct {
	mu      sync.Mutex // guards the following
	buckets map[netip.Prefix]*bucket
	swept   time.Time // the last sweep
}

type bucket struct {
	tokens float64   // at at
	at     time.Time // when tokens was last brought up to date
}

// fill brings b's tokens up to now.
func (b *bucket) fill(now time.Time, cfg *Config) {
	if elapsed := now.Sub(b.at).Seconds(); elapsed > 0 {
		b.tokens = min(float64(cfg.SourceBurst), b.tokens+elapsed*cfg.SourceRate)
	}
	b.at = now
}

// take spends one response of p's budget, or says why there is none.
func (t *sourceTable) take(p netip.Prefix, now time.Time, cfg *Config) DropReason {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buckets[p]
	if b == nil {
		if len(t.buckets) >= maxSources && !t.sweepLocked(now, cfg) {
			return DropSourcesFull
		}
		if t.buckets == nil {
			t.buckets = make(map[netip.Prefix]*bucket)
		}
		b = &bucket{tokens: float64(cfg.SourceBurst), at: now}
		t.buckets[p] = b
	}
	b.fill(now, cfg)
	if b.tokens < 1 {
		return DropRateLimited
	}
	b.tokens--
	return DropNone
}

// sweepLocked drops the entries whose bucket is full again — a prefix
// that comes back starts full anyway — at most once per sourceSweepEvery;
// it reports whether there is room now.
func (t *sourceTable) sweepLocked(now time.Time, cfg *Config) bool {
	if now.Sub(t.swept) >= sourceSweepEvery {
		t.swept = now
		for p, b := range t.buckets {
			if b.fill(now, cfg); b.tokens >= float64(cfg.SourceBurst) {
				delete(t.buckets, p)
			}
		}
	}
	return len(t.buckets) < maxSources
}

// len returns the number of entries, for tests.
func (t *sourceTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.buckets)
}
