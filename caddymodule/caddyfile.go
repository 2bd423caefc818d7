package caddymodule

import (
	"strconv"

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
//	}
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
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n <= 0 {
				return d.Errf("max_sessions must be a positive whole number, got %q", d.Val())
			}
			h.MaxSessions = n
			if d.NextArg() {
				return d.ArgErr()
			}
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
		default:
			return d.Errf("unknown netsody_superpeer option %q", opt)
		}
	}
	return nil
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
