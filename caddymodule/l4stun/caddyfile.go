package l4stun

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	netsody_stun {
//		source_rate  <responses per second>
//		source_burst <responses>
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the handler's name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		var val string
		if !d.Args(&val) || d.NextArg() {
			return d.ArgErr()
		}
		switch opt {
		case "source_rate":
			f, err := strconv.ParseFloat(val, 64)
			if err != nil || !(f > 0) {
				return d.Errf("source_rate must be a positive number of responses per second, not %q", val)
			}
			h.SourceRate = f
		case "source_burst":
			n, err := strconv.Atoi(val)
			if err != nil || n <= 0 {
				return d.Errf("source_burst must be a positive whole number of responses, not %q", val)
			}
			h.SourceBurst = n
		default:
			return d.Errf("unknown netsody_stun option %q", opt)
		}
	}
	return nil
}

// UnmarshalCaddyfile sets up the matcher from Caddyfile tokens. Syntax:
//
//	stun
func (m *MatchSTUN) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the matcher's name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(d.Nesting()) {
		return d.Err("the stun matcher takes no options")
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Handler)(nil)
	_ caddyfile.Unmarshaler = (*MatchSTUN)(nil)
)
