package rendezvous

import (
	"errors"
	"math"
	"time"

	"golang.org/x/time/rate"

	"github.com/netsody/superpeer/identity"
)

// Lookups for other services of the super peer. A relay request towards
// a peer tells the asker whether the peer is registered as a connect
// does, so it is charged to the same per-(asker, target) bucket
// (Config.LookupRate): a stranger probing presence learns no more through
// the relay than through the rendezvous, and both ways together no more
// than one of them.

// LookupLimitedError refuses a lookup over the per-(asker, target)
// limit, or with the asker's table of lookups full.
type LookupLimitedError struct {
	// RetryAfter is when the asker may look the peer up again.
	RetryAfter time.Duration
	// Reason says so in words for the device.
	Reason string
}

func (e *LookupLimitedError) Error() string { return "rendezvous: " + e.Reason }

var errForeignRegistration = errors.New("rendezvous: the registration is not one of this server's")

// LookUp tells whether target is registered (a registration for relays
// only counts: the relay pairs legs with it), for a service (the relay)
// acting for the device registered as asker. It is limited as a
// FrameConnect's lookup is, in the same bucket: without a token for the
// pair it fails with a *LookupLimitedError, whatever target's state. It
// takes no token; LookupFailed does, once the lookup failed (target not
// found, or it never came).
func (srv *Server) LookUp(asker *Registration, target identity.PeerID) (found bool, err error) {
	s := asker.sess
	if s == nil || s.srv != srv {
		return false, errForeignRegistration
	}
	other := srv.lookupForRelay(target)
	cfg := srv.config()
	now := time.Now()
	c := &srv.consent
	c.mu.Lock()
	defer c.mu.Unlock()
	a := s.askLocked(target, cfg, now)
	if a == nil {
		srv.stats.LookupsLimited.Add(1)
		return false, &LookupLimitedError{RetryAfter: wholeSeconds(float64(cfg.LookupBurst) / cfg.LookupRate),
			Reason: "this device looks up too many peers at once; slow down"}
	}
	if tokens := a.limiter.TokensAt(now); tokens < 1 {
		srv.stats.LookupsLimited.Add(1)
		return false, &LookupLimitedError{RetryAfter: wholeSeconds((1 - tokens) / cfg.LookupRate),
			Reason: "too many failed lookups of this peer; retry later"}
	}
	return other != nil && !other.consentClosed, nil
}

// LookupFailed charges a failed lookup of target by asker (see LookUp).
func (srv *Server) LookupFailed(asker *Registration, target identity.PeerID) {
	s := asker.sess
	if s == nil || s.srv != srv {
		return
	}
	cfg := srv.config()
	now := time.Now()
	c := &srv.consent
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := s.askLocked(target, cfg, now); a != nil {
		a.limiter.AllowN(now, 1)
	}
}

// wholeSeconds rounds sec up to a whole second, at least one: what a
// Retry-After header can say.
func wholeSeconds(sec float64) time.Duration {
	if math.IsInf(sec, 0) || math.IsNaN(sec) || sec > float64(rate.InfDuration/time.Second) {
		return rate.InfDuration
	}
	return time.Duration(max(1, math.Ceil(sec))) * time.Second
}
