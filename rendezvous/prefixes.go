package rendezvous

import (
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// prefixTable bounds what one source prefix (SourcePrefix) can open: at
// most MaxUnregisteredPerPrefix sessions that have not registered, and new
// sessions at PrefixSessionRate with PrefixSessionBurst (a token bucket).
// Its own size is bounded by maxPrefixes: an entry goes when its last
// unregistered session registers or ends and its bucket is full, and, at
// the cap, when it holds no unregistered session.
type prefixTable struct {
	mu        sync.Mutex // guards the following
	m         map[netip.Prefix]*prefixEntry
	lastSweep time.Time
}

type prefixEntry struct {
	unregistered int
	tokens       float64   // of the bucket, at at
	at           time.Time // when tokens was last brought up to date
}

// SourcePrefix is the prefix that per-prefix limits count a in: a's
// IPv4 address (a host, or a NAT), or its IPv6 /64 (a subnet, which one
// host may hold whole). The relay counts its waiting legs by it too.
func SourcePrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := prefixBits6
	if a.Is4() {
		bits = prefixBits4
	}
	p, _ := a.Prefix(bits)
	return p
}

// refill brings e's bucket up to now.
func (e *prefixEntry) refill(now time.Time, cfg *Config) {
	e.tokens = min(float64(cfg.PrefixSessionBurst), e.tokens+now.Sub(e.at).Seconds()*cfg.PrefixSessionRate)
	e.at = now
}

// take admits a new, unregistered session from p; a refusal says why.
func (t *prefixTable) take(p netip.Prefix, now time.Time, cfg *Config) *refusal {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[p]
	if e == nil {
		if len(t.m) >= maxPrefixes && !t.sweepLocked(now) {
			return &refusal{why: RefusedPrefixTableFull, retryAfter: retryAfterFull,
				msg: "the super peer tracks too many source addresses now; retry later"}
		}
		if t.m == nil {
			t.m = make(map[netip.Prefix]*prefixEntry)
		}
		e = &prefixEntry{tokens: float64(cfg.PrefixSessionBurst), at: now}
		t.m[p] = e
	}
	e.refill(now, cfg)
	if e.unregistered >= cfg.MaxUnregisteredPerPrefix {
		return &refusal{why: RefusedPrefixUnregistered, retryAfter: retryAfterPrefix, msg: fmt.Sprintf(
			"%d sessions from %s have not registered yet, the most allowed; register them, or retry later", e.unregistered, p)}
	}
	if e.tokens < 1 {
		return &refusal{why: RefusedPrefixRate, retryAfter: retryAfterPrefix, msg: fmt.Sprintf(
			"too many new sessions from %s; retry later", p)}
	}
	e.tokens--
	e.unregistered++
	return nil
}

// release gives back p's place of a session that registered or ended
// unregistered.
func (t *prefixTable) release(p netip.Prefix, now time.Time, cfg *Config) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[p]
	if e == nil {
		return
	}
	e.unregistered--
	e.refill(now, cfg)
	if e.unregistered <= 0 && e.tokens >= float64(cfg.PrefixSessionBurst) {
		delete(t.m, p)
	}
}

// sweepLocked drops the entries that hold no unregistered session — at
// worst their prefixes get a fresh burst — at most once per
// prefixSweepEvery; it reports whether there is room now.
func (t *prefixTable) sweepLocked(now time.Time) bool {
	if now.Sub(t.lastSweep) >= prefixSweepEvery {
		t.lastSweep = now
		for p, e := range t.m {
			if e.unregistered <= 0 {
				delete(t.m, p)
			}
		}
	}
	return len(t.m) < maxPrefixes
}

// len returns the number of entries, for tests.
func (t *prefixTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// SessionRefusal says why a session request was refused before it began.
// Stats counts them.
type SessionRefusal int

const (
	// RefusedFull: the super peer has MaxSessions sessions (503).
	RefusedFull SessionRefusal = iota
	// RefusedConnectionBusy: the connection carries a session already
	// (409); a registration is bound to its connection.
	RefusedConnectionBusy
	// RefusedPrefixUnregistered: the source prefix has
	// MaxUnregisteredPerPrefix sessions that have not registered (429).
	RefusedPrefixUnregistered
	// RefusedPrefixRate: the source prefix opened sessions faster than
	// PrefixSessionRate allows (429).
	RefusedPrefixRate
	// RefusedPrefixTableFull: maxPrefixes source prefixes hold
	// unregistered sessions (503).
	RefusedPrefixTableFull
	// RefusedDraining: the super peer drains (Server.Drain) and takes no
	// new session (503).
	RefusedDraining

	numSessionRefusals = iota
)

// SessionRefusals lists every SessionRefusal, for metrics.
func SessionRefusals() []SessionRefusal {
	all := make([]SessionRefusal, numSessionRefusals)
	for i := range all {
		all[i] = SessionRefusal(i)
	}
	return all
}

// String is the refusal's metric label.
func (r SessionRefusal) String() string {
	switch r {
	case RefusedFull:
		return "full"
	case RefusedConnectionBusy:
		return "connection_has_session"
	case RefusedPrefixUnregistered:
		return "prefix_unregistered"
	case RefusedPrefixRate:
		return "prefix_rate_limited"
	case RefusedPrefixTableFull:
		return "prefix_table_full"
	case RefusedDraining:
		return "draining"
	}
	return fmt.Sprintf("refusal(%d)", int(r))
}

// status is the HTTP status of the refusal.
func (r SessionRefusal) status() int {
	switch r {
	case RefusedConnectionBusy:
		return http.StatusConflict
	case RefusedPrefixUnregistered, RefusedPrefixRate:
		return http.StatusTooManyRequests
	}
	return http.StatusServiceUnavailable
}

// refusal is a session request refused before it began.
type refusal struct {
	why        SessionRefusal
	retryAfter time.Duration // 0: none
	msg        string
}
