package caddymodule

import (
	"strconv"

	"github.com/dustin/go-humanize"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("netsody_superpeer", parseCaddyfile)
	// Before header, encode and everything that wraps responses: the super
	// peer's streams must reach the client unbuffered.
	httpcaddyfile.RegisterDirectiveOrder("netsody_superpeer", httpcaddyfile.Before, "header")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var sp Handler
	err := sp.UnmarshalCaddyfile(h.Dispenser)
	return &sp, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	netsody_superpeer {
//		keepalive_interval <duration>
//		session_timeout    <duration>
//		write_timeout      <duration>
//		max_sessions       <count>
//		connect_rate       <per_second> [<burst>]
//		relay {
//			pair_timeout            <duration>
//			max_sessions_per_device <count>
//			rate                    <bytes_per_second>
//			burst                   <bytes>
//			max_datagram_size       <bytes>
//			queue_len               <count>
//		}
//	}
//
// Sizes take units (1500, 64KiB, 25MB); rate is per second.
//
// Every option is optional; a bare netsody_superpeer is a working super
// peer.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive's name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "keepalive_interval", "session_timeout", "write_timeout":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			switch opt {
			case "keepalive_interval":
				h.KeepaliveInterval = dur
			case "session_timeout":
				h.SessionTimeout = dur
			default:
				h.WriteTimeout = dur
			}
		case "max_sessions":
			n, err := countArg(d)
			if err != nil {
				return err
			}
			h.MaxSessions = n
		case "connect_rate":
			if !d.NextArg() {
				return d.ArgErr()
			}
			r, err := strconv.ParseFloat(d.Val(), 64)
			if err != nil || r <= 0 {
				return d.Errf("connect_rate must be a positive number of requests per second, got %q", d.Val())
			}
			h.ConnectRate = r
			if d.NextArg() {
				b, err := strconv.Atoi(d.Val())
				if err != nil || b <= 0 {
					return d.Errf("connect_rate burst must be a positive whole number, got %q", d.Val())
				}
				h.ConnectBurst = b
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "relay":
			if d.NextArg() {
				return d.ArgErr()
			}
			if h.Relay == nil {
				h.Relay = &RelayConfig{}
			}
			if err := h.Relay.unmarshalCaddyfile(d); err != nil {
				return err
			}
		default:
			return d.Errf("unknown netsody_superpeer option %q", opt)
		}
	}
	return nil
}

func (r *RelayConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "pair_timeout":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			r.PairTimeout = dur
		case "max_sessions_per_device", "queue_len":
			n, err := countArg(d)
			if err != nil {
				return err
			}
			if opt == "queue_len" {
				r.QueueLen = n
			} else {
				r.MaxSessionsPerDevice = n
			}
		case "rate", "burst", "max_datagram_size":
			n, err := sizeArg(d)
			if err != nil {
				return err
			}
			switch opt {
			case "rate":
				r.Rate = float64(n)
			case "burst":
				r.Burst = n
			default:
				r.MaxDatagramSize = n
			}
		default:
			return d.Errf("unknown netsody_superpeer relay option %q", opt)
		}
	}
	return nil
}

func countArg(d *caddyfile.Dispenser) (int, error) {
	opt := d.Val()
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	n, err := strconv.Atoi(d.Val())
	if err != nil || n <= 0 {
		return 0, d.Errf("%s must be a positive whole number, got %q", opt, d.Val())
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return n, nil
}

func sizeArg(d *caddyfile.Dispenser) (int, error) {
	opt := d.Val()
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	n, err := humanize.ParseBytes(d.Val())
	if err != nil || n == 0 || n > 1<<40 {
		return 0, d.Errf("%s must be a positive size in bytes such as 1500, 64KiB or 25MB, got %q", opt, d.Val())
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return int(n), nil
}

func durationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	opt := d.Val()
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil || dur <= 0 {
		return 0, d.Errf("%s must be a positive duration such as 15s, got %q", opt, d.Val())
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return caddy.Duration(dur), nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Handler)(nil)
