package caddymodule

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/dustin/go-humanize"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("netsody_superpeer", parseCaddyfile)
	// Before header, encode and everything that wraps responses: the super
	// peer's streams must reach the client unbuffered.
	httpcaddyfile.RegisterDirectiveOrder("netsody_superpeer", httpcaddyfile.Before, "header")
	httpcaddyfile.RegisterGlobalOption("netsody", parseGlobalOption)
}

// adaptedOptionsKey is where, in the adapter's state (which all site
// blocks share), the options of the global netsody option and of every
// netsody_superpeer directive adapted so far are kept, so that a conflict
// is refused at adapt time, naming both places.
const adaptedOptionsKey = "netsody_superpeer.options"

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next()
	where := fmt.Sprintf("%s:%d", h.File(), h.Line())
	h.Reset()
	var sp Handler
	if err := sp.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	adapted, _ := h.State[adaptedOptionsKey].(*optionSet)
	if adapted == nil {
		adapted = new(optionSet)
		if global, ok := h.Option("netsody").(httpcaddyfile.App); ok {
			var app App
			if err := json.Unmarshal(global.Value, &app); err != nil {
				return nil, err
			}
			adapted.add(app.Options, "the global netsody option")
		}
		h.State[adaptedOptionsKey] = adapted
	}
	if err := adapted.add(sp.Options, where); err != nil {
		return nil, err
	}
	return &sp, nil
}

// parseGlobalOption parses the global netsody option: the netsody app's
// options, which apply to every netsody_superpeer handler. Its block is
// the same as the directive's, and it alone may hold admission modules:
//
//	{
//		netsody {
//			keepalive_interval <duration>
//			...
//			cluster {
//				name          <name>
//				url           <this node's https URL>
//				nats          <nats_url>...
//				nats_creds    <file>
//				nats_user     <user> <password>
//				nats_token    <token>
//				nats_tls_ca   <file>
//				nats_tls_cert <cert_file> <key_file>
//			}
//			admission {
//				allow_all
//				allowlist [<peer_id>...] {
//					peer <peer_id>...
//					file <path>
//				}
//				pow [<bits>]
//				http <url> {
//					timeout        <duration>
//					max_concurrent <count>
//					cache_size     <count>
//					cache_ttl      <duration>
//					fail_open
//				}
//			}
//		}
//	}
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	d.Next() // the option's name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	if existing != nil {
		return nil, d.Err("the netsody global option may appear only once")
	}
	var app App
	err := eachOption(d, func(opt string) error {
		switch opt {
		case "admission":
			return app.unmarshalAdmission(d)
		case "cluster":
			return app.unmarshalCluster(d)
		}
		return app.Options.unmarshalOption(d, opt, "netsody")
	})
	if err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "netsody", Value: caddyconfig.JSON(&app, nil)}, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	netsody_superpeer {
//		keepalive_interval <duration>
//		session_timeout    <duration>
//		write_timeout      <duration>
//		max_sessions       <count>
//		connect_rate       <per_second> [<burst>]
//		lookup_rate        <per_second> [<burst>]
//		introduction_rate  <per_second> [<burst>]
//		addrs_rate         <per_second> [<burst>]
//		register_timeout   <duration>
//		max_unregistered_per_prefix <count>
//		prefix_session_rate <per_second> [<burst>]
//		consent_timeout    <duration>
//		hide_presence
//		require_consent
//		drain_timeout      <duration>
//		relay {
//			pair_timeout            <duration>
//			write_timeout           <duration>
//			max_sessions_per_device <count>
//			rate                    <bytes_per_second>
//			burst                   <bytes>
//			device_rate             <bytes_per_second> [<burst_bytes>]
//			total_rate              <bytes_per_second> [<burst_bytes>]
//			max_datagram_size       <bytes>
//			queue_len               <count>
//			queue_bytes             <bytes>
//			max_queued_bytes        <bytes>
//			stall_timeout           <duration>
//			max_waiting             <count>
//			max_waiting_per_device  <count>
//			max_waiting_per_prefix  <count>
//			fast_path_port          <port>|off
//		}
//	}
//
// Sizes take units (1500, 64KiB, 25MB); rate, device_rate and total_rate
// are per second.
//
// Every option is optional; a bare netsody_superpeer is a working super
// peer. Options are process-wide (see Options).
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive's name
	if d.NextArg() {
		return d.ArgErr()
	}
	return h.Options.unmarshalBlock(d, "netsody_superpeer")
}

// unmarshalBlock parses the options block of the directive or global
// option named directive.
func (o *Options) unmarshalBlock(d *caddyfile.Dispenser, directive string) error {
	return eachOption(d, func(opt string) error { return o.unmarshalOption(d, opt, directive) })
}

// unmarshalOption parses the option opt of the directive or global
// option named directive.
func (o *Options) unmarshalOption(d *caddyfile.Dispenser, opt, directive string) (err error) {
	switch opt {
	case "keepalive_interval":
		o.KeepaliveInterval, err = durationArg(d)
	case "session_timeout":
		o.SessionTimeout, err = durationArg(d)
	case "write_timeout":
		o.WriteTimeout, err = durationArg(d)
	case "max_sessions":
		o.MaxSessions, err = countArg(d)
	case "connect_rate", "prefix_session_rate", "lookup_rate", "introduction_rate", "addrs_rate":
		rate, burst := &o.ConnectRate, &o.ConnectBurst
		switch opt {
		case "prefix_session_rate":
			rate, burst = &o.PrefixSessionRate, &o.PrefixSessionBurst
		case "lookup_rate":
			rate, burst = &o.LookupRate, &o.LookupBurst
		case "introduction_rate":
			rate, burst = &o.IntroductionRate, &o.IntroductionBurst
		case "addrs_rate":
			rate, burst = &o.AddrsRate, &o.AddrsBurst
		}
		*rate, *burst, err = rateArgs(d)
	case "register_timeout":
		o.RegisterTimeout, err = durationArg(d)
	case "max_unregistered_per_prefix":
		o.MaxUnregisteredPerPrefix, err = countArg(d)
	case "consent_timeout":
		o.ConsentTimeout, err = durationArg(d)
	case "drain_timeout":
		o.DrainTimeout, err = durationArg(d)
	case "hide_presence", "require_consent":
		if d.NextArg() {
			return d.ArgErr()
		}
		if opt == "hide_presence" {
			o.HidePresence = true
		} else {
			o.RequireConsent = true
		}
	case "relay":
		if d.NextArg() {
			return d.ArgErr()
		}
		if o.Relay == nil {
			o.Relay = &RelayOptions{}
		}
		err = o.Relay.unmarshalBlock(d, directive)
	default:
		err = d.Errf("unknown %s option %q", directive, opt)
	}
	return err
}

func (r *RelayOptions) unmarshalBlock(d *caddyfile.Dispenser, directive string) error {
	return eachOption(d, func(opt string) (err error) {
		switch opt {
		case "pair_timeout":
			r.PairTimeout, err = durationArg(d)
		case "write_timeout":
			r.WriteTimeout, err = durationArg(d)
		case "max_sessions_per_device":
			r.MaxSessionsPerDevice, err = countArg(d)
		case "rate":
			var n int
			n, err = sizeArg(d)
			r.Rate = float64(n)
		case "burst":
			r.Burst, err = sizeArg(d)
		case "device_rate", "total_rate":
			rate, burst := &r.DeviceRate, &r.DeviceBurst
			if opt == "total_rate" {
				rate, burst = &r.TotalRate, &r.TotalBurst
			}
			var n int
			n, *burst, err = sizeArgs(d, true)
			*rate = float64(n)
		case "max_datagram_size":
			r.MaxDatagramSize, err = sizeArg(d)
		case "queue_len":
			r.QueueLen, err = countArg(d)
		case "queue_bytes":
			r.QueueBytes, err = sizeArg(d)
		case "max_queued_bytes":
			r.MaxQueuedBytes, err = sizeArg(d)
		case "stall_timeout":
			r.StallTimeout, err = durationArg(d)
		case "max_waiting":
			r.MaxWaiting, err = countArg(d)
		case "max_waiting_per_device":
			r.MaxWaitingPerDevice, err = countArg(d)
		case "max_waiting_per_prefix":
			r.MaxWaitingPerPrefix, err = countArg(d)
		case "fast_path_port":
			r.FastPathPort, err = fastPathPortArg(d)
		default:
			err = d.Errf("unknown %s relay option %q", directive, opt)
		}
		return err
	})
}

// eachOption calls parse with every option of the block d is at, until
// one fails.
func eachOption(d *caddyfile.Dispenser, parse func(opt string) error) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := parse(d.Val()); err != nil {
			return err
		}
	}
	return nil
}

// rateArgs parses `<option> <per_second> [<burst>]` (connect_rate,
// prefix_session_rate); the burst is 0 (the default) when absent.
func rateArgs(d *caddyfile.Dispenser) (rate float64, burst int, err error) {
	opt := d.Val()
	if !d.NextArg() {
		return 0, 0, d.ArgErr()
	}
	rate, err = strconv.ParseFloat(d.Val(), 64)
	if err != nil || !(rate > 0) || math.IsInf(rate, 0) { // NaN and Inf would lift the limit
		return 0, 0, d.Errf("%s must be a positive number of requests per second, got %q", opt, d.Val())
	}
	if d.NextArg() {
		burst, err = strconv.Atoi(d.Val())
		if err != nil || burst <= 0 {
			return 0, 0, d.Errf("%s burst must be a positive whole number, got %q", opt, d.Val())
		}
	}
	if d.NextArg() {
		return 0, 0, d.ArgErr()
	}
	return rate, burst, nil
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

// maxSize bounds sizes in bytes: a larger one is a typo, and this one
// still fits in an int on 64-bit platforms.
const maxSize = 1 << 40

func sizeArg(d *caddyfile.Dispenser) (int, error) {
	n, _, err := sizeArgs(d, false)
	return n, err
}

// sizeArgs parses `<option> <bytes> [<bytes>]` if second (device_rate,
// total_rate: a rate and its burst), else `<option> <bytes>`; the second
// is 0 (the default) when absent.
func sizeArgs(d *caddyfile.Dispenser, second bool) (int, int, error) {
	opt := d.Val()
	if !d.NextArg() {
		return 0, 0, d.ArgErr()
	}
	var ns []int
	for more := true; more; more = second && len(ns) < 2 && d.NextArg() {
		n, err := humanize.ParseBytes(d.Val())
		if err != nil || n == 0 || n > maxSize {
			return 0, 0, d.Errf("%s must be a positive size in bytes such as 1500, 64KiB or 25MB, got %q", opt, d.Val())
		}
		ns = append(ns, int(n))
	}
	if d.NextArg() {
		return 0, 0, d.ArgErr()
	}
	return ns[0], append(ns, 0)[1], nil
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
