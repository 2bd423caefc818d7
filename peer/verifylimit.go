package peer

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// verifyLimit bounds the punch signatures the device checks per source
// address: anyone can send UDP, and an Ed25519 verification costs tens
// of microseconds. A source is an IPv4 address or an IPv6 /64
// (verifyPrefix6). The first verifySources sources get a token bucket
// each; later ones share one (others) until an idle entry (its bucket
// full again) makes room, so the table never grows.
type verifyLimit struct {
	mu      sync.Mutex
	sources map[netip.Addr]*rate.Limiter
	others  *rate.Limiter
}

func newVerifyLimit() *verifyLimit {
	return &verifyLimit{
		sources: make(map[netip.Addr]*rate.Limiter),
		others:  rate.NewLimiter(verifyRate, verifyBurst),
	}
}

// allow reports whether a signature from src may be checked now, and
// takes a token for it.
func (v *verifyLimit) allow(src netip.Addr) bool {
	key := sourceKey(src)
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	l := v.sources[key]
	if l == nil {
		if len(v.sources) >= verifySources {
			v.dropIdleLocked(now)
		}
		if len(v.sources) >= verifySources {
			return v.others.AllowN(now, 1)
		}
		l = rate.NewLimiter(verifyRate, verifyBurst)
		v.sources[key] = l
	}
	return l.AllowN(now, 1)
}

// dropIdleLocked forgets the sources whose buckets are full: they have
// been quiet long enough that a new bucket is the same.
func (v *verifyLimit) dropIdleLocked(now time.Time) {
	for k, l := range v.sources {
		if l.TokensAt(now) >= verifyBurst {
			delete(v.sources, k)
		}
	}
}

// sourceKey is the source a packet from a counts against.
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(verifyPrefix6)
		return p.Addr()
	}
	return a
}
