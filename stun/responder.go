package stun

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/netsody/superpeer/internal/defaults"
)

// Config is the responder's budget per source prefix. Zero fields take
// their defaults.
type Config struct {
	// SourceRate is the responses per second one source prefix (an IPv4
	// address or an IPv6 /64) gets after its burst. Default
	// DefaultSourceRate.
	SourceRate float64
	// SourceBurst is the responses one source prefix gets at once.
	// Default DefaultSourceBurst.
	SourceBurst int
}

// SetDefaults fills c's zero fields with their defaults.
func (c *Config) SetDefaults() {
	defaults.Set(&c.SourceRate, DefaultSourceRate)
	defaults.Set(&c.SourceBurst, DefaultSourceBurst)
}

// Validate checks c: zero means the default, less is refused.
func (c *Config) Validate() error {
	if c.SourceRate < 0 || c.SourceBurst < 0 {
		return fmt.Errorf("stun: source_rate (%g) and source_burst (%d) must be positive (or 0 for the defaults)", c.SourceRate, c.SourceBurst)
	}
	return nil
}

// Responder answers Binding requests within the budget of each source
// prefix and counts what it answers and drops. One Responder serves any
// number of sockets and goroutines; a process keeps one across config
// reloads so that a reload gives no source a fresh burst.
type Responder struct {
	sources  sourceTable
	answered [FormRFC3489 + 1]atomic.Uint64
	dropped  [numDropReasons]atomic.Uint64
}

// Respond answers datagram b, which came from from, under cfg (after
// SetDefaults): the response written into buf (MaxResponseSize bytes of
// capacity avoid an allocation), or why there is none.
func (r *Responder) Respond(buf, b []byte, from netip.AddrPort, cfg *Config, now time.Time) ([]byte, DropReason) {
	req, why := Parse(b)
	if why == DropNone {
		why = r.sources.take(sourcePrefix(from.Addr()), now, cfg)
	}
	if why != DropNone {
		r.dropped[why].Add(1)
		return nil, why
	}
	r.answered[req.Form].Add(1)
	return Response(buf, req, from), DropNone
}

// Answered returns how many requests of form f were answered.
func (r *Responder) Answered(f Form) uint64 { return r.answered[f].Load() }

// Dropped returns how many datagrams were dropped for why.
func (r *Responder) Dropped(why DropReason) uint64 { return r.dropped[why].Load() }

// Sources returns how many source prefixes the table holds now.
func (r *Responder) Sources() int { return r.sources.len() }
