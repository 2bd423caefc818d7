package caddymodule

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/netsody/superpeer"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

// Options are the super peer's options. One super peer serves the whole
// process, so they are process-wide: the netsody app merges its own (the
// global netsody option) with those of every netsody_superpeer handler.
// An option set in one place applies everywhere; two places that set it
// to different values are an error. JSON names are the Caddyfile's.
type Options struct {
	// KeepaliveInterval is how often the super peer pings each device.
	// Default: rendezvous.DefaultKeepaliveInterval (15s).
	KeepaliveInterval caddy.Duration `json:"keepalive_interval,omitempty"`
	// SessionTimeout ends the session of a device from which nothing has
	// arrived for this long. It must be longer than keepalive_interval.
	// Default: rendezvous.DefaultSessionTimeout (45s).
	SessionTimeout caddy.Duration `json:"session_timeout,omitempty"`
	// WriteTimeout ends the session of a device that does not take a frame
	// within this long. Default: rendezvous.DefaultWriteTimeout (10s).
	WriteTimeout caddy.Duration `json:"write_timeout,omitempty"`
	// MaxSessions caps concurrent device sessions, registered or about to
	// register: the budget of registered devices; more get 503 with
	// Retry-After. Default: rendezvous.DefaultMaxSessions (4096, sized
	// for a 1 GiB VPS).
	MaxSessions int `json:"max_sessions,omitempty"`
	// ConnectRate is how many connect requests per second each device may
	// make (a token bucket). Default: rendezvous.DefaultConnectRate (10).
	ConnectRate float64 `json:"connect_rate,omitempty"`
	// ConnectBurst is the token bucket's size for connect requests.
	// Default: rendezvous.DefaultConnectBurst (20).
	ConnectBurst int `json:"connect_burst,omitempty"`
	// RegisterTimeout ends a session that has not registered this long
	// after its connection was accepted; until then Caddy's idle timeouts
	// apply to it too (HTTP/2). Default: rendezvous.DefaultRegisterTimeout
	// (10s).
	RegisterTimeout caddy.Duration `json:"register_timeout,omitempty"`
	// MaxUnregisteredPerPrefix caps the sessions from one source prefix
	// (an IPv4 address, an IPv6 /64) that have not registered yet; more
	// get 429. Default: rendezvous.DefaultMaxUnregisteredPerPrefix (64).
	MaxUnregisteredPerPrefix int `json:"max_unregistered_per_prefix,omitempty"`
	// PrefixSessionRate is how many new sessions per second one source
	// prefix may open (a token bucket); more get 429.
	// Default: rendezvous.DefaultPrefixSessionRate (100).
	PrefixSessionRate float64 `json:"prefix_session_rate,omitempty"`
	// PrefixSessionBurst is that token bucket's size: enough for the
	// devices behind one carrier-grade NAT to return after a restart.
	// Default: rendezvous.DefaultPrefixSessionBurst (4000).
	PrefixSessionBurst int `json:"prefix_session_burst,omitempty"`
	// LookupRate is how many failed lookups per second a device may make
	// of one peer (a token bucket per device and peer, shared by connect
	// requests and relay requests): a connect or relay request needs a
	// token and takes one only if it fails (the peer is offline, declines
	// or never answers). Default: rendezvous.DefaultLookupRate (1).
	LookupRate float64 `json:"lookup_rate,omitempty"`
	// LookupBurst is that token bucket's size.
	// Default: rendezvous.DefaultLookupBurst (3).
	LookupBurst int `json:"lookup_burst,omitempty"`
	// IntroductionRate is how many introductions per second one device
	// may be asked for, by all askers together (a token bucket per
	// device): an asker over it is told rate limited, and the device's
	// session goes on. Default: rendezvous.DefaultIntroductionRate (20).
	IntroductionRate float64 `json:"introduction_rate,omitempty"`
	// IntroductionBurst is that token bucket's size; introductions queued
	// for one device stay within half its queue whatever the burst.
	// Default: rendezvous.DefaultIntroductionBurst (32).
	IntroductionBurst int `json:"introduction_burst,omitempty"`
	// AddrsRate is how many address announcements (addrs and mapping
	// frames) per second each device may make (a token bucket); one over
	// it is ignored and answered rate limited.
	// Default: rendezvous.DefaultAddrsRate (1).
	AddrsRate float64 `json:"addrs_rate,omitempty"`
	// AddrsBurst is that token bucket's size.
	// Default: rendezvous.DefaultAddrsBurst (5).
	AddrsBurst int `json:"addrs_burst,omitempty"`
	// ConsentTimeout is how long a device that asks for consent has to
	// answer whether a peer may connect to it; no answer is a decline.
	// Default: rendezvous.DefaultConsentTimeout (10s).
	ConsentTimeout caddy.Duration `json:"consent_timeout,omitempty"`
	// HidePresence answers every failed lookup alike, after
	// consent_timeout: an offline device, a decline and no answer, so
	// that a stranger cannot tell whether a device is online; the relay
	// answers a request towards an offline device after its pair_timeout,
	// as one towards a device that never opens its side. Without it, an
	// offline device is reported at once. Default: false.
	HidePresence bool `json:"hide_presence,omitempty"`
	// RequireConsent introduces no device that does not ask for consent
	// (one from before consent existed): a lookup of it is answered as
	// one of an offline device, so that nobody learns its addresses
	// without its yes. Without it, such a device is introduced at once,
	// to anyone. Default: false.
	RequireConsent bool `json:"require_consent,omitempty"`
	// DrainTimeout bounds the drain when the super peer stops (`caddy
	// stop`, or a reload that removes it): devices are told to move
	// their relay sessions to other super peers, and it closes once they
	// have, or after this long. Default: rendezvous.DefaultDrainTimeout
	// (5s).
	DrainTimeout caddy.Duration `json:"drain_timeout,omitempty"`
	// Relay configures relaying between devices that cannot connect
	// directly. Its defaults are a working relay.
	Relay *RelayOptions `json:"relay,omitempty"`
}

// RelayOptions configure the relay.
type RelayOptions struct {
	// PairTimeout is how long a device's relay session waits for its
	// peer's session towards it (consent).
	// Default: relay.DefaultPairTimeout (10s).
	PairTimeout caddy.Duration `json:"pair_timeout,omitempty"`
	// WriteTimeout ends a relay session whose device does not take
	// relayed capsules (HTTP/2, or a POST over HTTP/3) within this long.
	// Default: relay.DefaultWriteTimeout (10s).
	WriteTimeout caddy.Duration `json:"write_timeout,omitempty"`
	// MaxSessionsPerDevice caps each device's relay sessions, waiting or
	// bridged; more get 429. Default: relay.DefaultMaxSessionsPerDevice (16).
	MaxSessionsPerDevice int `json:"max_sessions_per_device,omitempty"`
	// Rate is each relay leg's sustained rate, in bytes per second, a
	// token bucket: HTTP/2 legs are throttled, excess HTTP/3 datagrams are
	// dropped. Default: relay.DefaultRate (50000000, 400 Mbit/s).
	Rate float64 `json:"rate,omitempty"`
	// Burst is the token bucket's size in bytes; at least
	// max_datagram_size. Default: relay.DefaultBurst (1048576).
	Burst int `json:"burst,omitempty"`
	// DeviceRate is each device's bandwidth budget, in bytes per second:
	// one token bucket for what it sends on all its legs and paths.
	// Throttled and dropped as for rate; a reload applies it to running
	// sessions. Default: relay.DefaultDeviceRate (50000000, 400 Mbit/s).
	DeviceRate float64 `json:"device_rate,omitempty"`
	// DeviceBurst is that token bucket's size in bytes; at least
	// max_datagram_size. Default: relay.DefaultDeviceBurst (1048576).
	DeviceBurst int `json:"device_burst,omitempty"`
	// TotalRate is the super peer's bandwidth budget, in bytes per
	// second, for what all devices send through the relay.
	// Default: relay.DefaultTotalRate (125000000, 1 Gbit/s).
	TotalRate float64 `json:"total_rate,omitempty"`
	// TotalBurst is that token bucket's size in bytes; at least
	// max_datagram_size. Default: relay.DefaultTotalBurst (4194304).
	TotalBurst int `json:"total_burst,omitempty"`
	// MaxDatagramSize is the largest HTTP datagram payload relayed, in
	// bytes; larger ones are dropped and counted.
	// Default: relay.DefaultMaxDatagramSize (1500).
	MaxDatagramSize int `json:"max_datagram_size,omitempty"`
	// QueueLen bounds the datagrams queued towards each leg; more are
	// dropped and counted. Default: relay.DefaultQueueLen (512).
	QueueLen int `json:"queue_len,omitempty"`
	// QueueBytes bounds the bytes queued towards each leg.
	// Default: relay.DefaultQueueBytes (262144, 256 KiB).
	QueueBytes int `json:"queue_bytes,omitempty"`
	// MaxQueuedBytes bounds the bytes queued across all legs; beyond it
	// datagrams are dropped and counted.
	// Default: relay.DefaultMaxQueuedBytes (67108864, 64 MiB).
	MaxQueuedBytes int `json:"max_queued_bytes,omitempty"`
	// StallTimeout ends a leg whose queue is full while its device takes
	// nothing. Default: relay.DefaultStallTimeout (2s).
	StallTimeout caddy.Duration `json:"stall_timeout,omitempty"`
	// MaxWaiting caps the relay sessions waiting for their counterpart;
	// more get 503. Default: relay.DefaultMaxWaiting (4096).
	MaxWaiting int `json:"max_waiting,omitempty"`
	// MaxWaitingPerDevice caps a device's waiting relay sessions; more get
	// 429. Default: relay.DefaultMaxWaitingPerDevice (4).
	MaxWaitingPerDevice int `json:"max_waiting_per_device,omitempty"`
	// MaxWaitingPerPrefix caps the waiting relay sessions from one
	// source prefix (an IPv4 address, an IPv6 /64); more get 429.
	// Default: relay.DefaultMaxWaitingPerPrefix (256).
	MaxWaitingPerPrefix int `json:"max_waiting_per_prefix,omitempty"`
	// FastPathPort is the UDP port of the relay's fast path, opened on
	// the hosts the super peer's sites listen on; off (or 0) serves none,
	// and devices relay over HTTP/3 and HTTP/2 only.
	// Default: relay.DefaultFastPathPort (3479).
	FastPathPort FastPathPort `json:"fast_path_port,omitempty"`
}

// superPeerConfig is the super peer's configuration for these options.
func (o Options) superPeerConfig(logger *zap.Logger) superpeer.Config {
	r := o.Relay
	if r == nil {
		r = &RelayOptions{}
	}
	return superpeer.Config{
		Rendezvous: rendezvous.Config{
			KeepaliveInterval: time.Duration(o.KeepaliveInterval),
			SessionTimeout:    time.Duration(o.SessionTimeout),
			WriteTimeout:      time.Duration(o.WriteTimeout),
			MaxSessions:       o.MaxSessions,
			ConnectRate:       o.ConnectRate,
			ConnectBurst:      o.ConnectBurst,
			LookupRate:        o.LookupRate,
			LookupBurst:       o.LookupBurst,
			IntroductionRate:  o.IntroductionRate,
			IntroductionBurst: o.IntroductionBurst,
			AddrsRate:         o.AddrsRate,
			AddrsBurst:        o.AddrsBurst,
			RegisterTimeout:   time.Duration(o.RegisterTimeout),
			ConsentTimeout:    time.Duration(o.ConsentTimeout),
			HidePresence:      o.HidePresence,
			RequireConsent:    o.RequireConsent,
			DrainTimeout:      time.Duration(o.DrainTimeout),
			Logger:            logger.Named("rendezvous"),

			MaxUnregisteredPerPrefix: o.MaxUnregisteredPerPrefix,
			PrefixSessionRate:        o.PrefixSessionRate,
			PrefixSessionBurst:       o.PrefixSessionBurst,
		},
		Relay: relay.Config{
			PairTimeout:          time.Duration(r.PairTimeout),
			WriteTimeout:         time.Duration(r.WriteTimeout),
			MaxSessionsPerDevice: r.MaxSessionsPerDevice,
			Rate:                 r.Rate,
			Burst:                r.Burst,
			DeviceRate:           r.DeviceRate,
			DeviceBurst:          r.DeviceBurst,
			TotalRate:            r.TotalRate,
			TotalBurst:           r.TotalBurst,
			MaxDatagramSize:      r.MaxDatagramSize,
			QueueLen:             r.QueueLen,
			QueueBytes:           r.QueueBytes,
			MaxQueuedBytes:       int64(r.MaxQueuedBytes),
			StallTimeout:         time.Duration(r.StallTimeout),
			MaxWaiting:           r.MaxWaiting,
			MaxWaitingPerDevice:  r.MaxWaitingPerDevice,
			MaxWaitingPerPrefix:  r.MaxWaitingPerPrefix,
			HidePresence:         o.HidePresence,
			Logger:               logger.Named("relay"),
		},
	}
}

// optionNames turns the packages' words for options into the names a
// Caddy user writes, so that an error says which option to fix.
var optionNames = strings.NewReplacer(
	"keepalive interval", "keepalive_interval",
	"session timeout", "session_timeout",
	"max sessions", "max_sessions",
	"connect rate", "connect_rate",
	"connect burst", "connect_burst",
	"register timeout", "register_timeout",
	"consent timeout", "consent_timeout",
	"drain timeout", "drain_timeout",
	"lookup rate", "lookup_rate",
	"lookup burst", "lookup_burst",
	"introduction rate", "introduction_rate",
	"introduction burst", "introduction_burst",
	"addrs rate", "addrs_rate",
	"addrs burst", "addrs_burst",
	"max unregistered per prefix", "max_unregistered_per_prefix",
	"prefix session rate", "prefix_session_rate",
	"prefix session burst", "prefix_session_burst",
	"maximum datagram size", "max_datagram_size",
	"device burst", "device_burst",
	"total burst", "total_burst",
	"max queued bytes", "max_queued_bytes",
	"queue bytes", "queue_bytes",
)

// validate reports options that cannot work, in the Caddyfile's terms.
func (o Options) validate() error {
	if err := o.superPeerConfig(zap.NewNop()).Validate(); err != nil {
		return errors.New(optionNames.Replace(err.Error()))
	}
	return nil
}

// optionSet merges Options from several places, remembering where each
// option was set so that a conflict names both places.
type optionSet struct {
	Options
	setAt map[string]string // option name -> where it was set
}

// add merges o, set at where, into s: an option o sets and s does not is
// taken; one both set to different values is a conflict, and add returns
// an error that names every such option with both values and places.
func (s *optionSet) add(o Options, where string) error {
	if s.setAt == nil {
		s.setAt = make(map[string]string)
	}
	var conflicts []string
	var merge func(dst, src reflect.Value, prefix string)
	merge = func(dst, src reflect.Value, prefix string) {
		for i := range src.NumField() {
			name := prefix + strings.Split(src.Type().Field(i).Tag.Get("json"), ",")[0]
			d, v := dst.Field(i), src.Field(i)
			switch {
			case v.IsZero(): // unset here
			case v.Kind() == reflect.Pointer: // a nested block: merge its options
				if d.IsNil() {
					d.Set(reflect.New(v.Type().Elem()))
				}
				merge(d.Elem(), v.Elem(), name+".")
			case d.IsZero():
				d.Set(v)
				s.setAt[name] = where
			case !d.Equal(v):
				conflicts = append(conflicts, fmt.Sprintf("%s is %s in %s but %s in %s",
					name, showOption(d), s.setAt[name], showOption(v), where))
			}
		}
	}
	merge(reflect.ValueOf(&s.Options).Elem(), reflect.ValueOf(o), "")
	if len(conflicts) > 0 {
		return fmt.Errorf("netsody_superpeer options are process-wide (one super peer serves every site), so each must have one value: %s",
			strings.Join(conflicts, "; "))
	}
	return nil
}

// showOption writes an option's value as a Caddyfile would.
func showOption(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case caddy.Duration:
		return time.Duration(x).String()
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	default:
		return fmt.Sprint(x)
	}
}
