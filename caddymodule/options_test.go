package caddymodule

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/netsody/superpeer"
)

// Validation errors name the options a user writes.
func TestValidate(t *testing.T) {
	if err := (Options{}).validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{KeepaliveInterval: caddyDuration("30s"), SessionTimeout: caddyDuration("20s")},
			"session_timeout 20s must be longer than the keepalive_interval 30s"},
		{Options{KeepaliveInterval: caddyDuration("1m")}, "session_timeout 45s must be longer than the keepalive_interval 1m0s"},
		{Options{Relay: &RelayOptions{Burst: 1000, MaxDatagramSize: 1500}}, "burst 1000 bytes must be at least the max_datagram_size 1500"},
		{Options{Relay: &RelayOptions{DeviceBurst: 1000}}, "relay device_burst 1000 bytes must be at least the max_datagram_size 1500"},
		{Options{Relay: &RelayOptions{TotalBurst: 1000}}, "relay total_burst 1000 bytes must be at least the max_datagram_size 1500"},
		{Options{MaxSessions: -1}, "max_sessions, connect_rate and connect_burst must not be negative"},
		{Options{Relay: &RelayOptions{QueueBytes: 2000}}, "queue_bytes 2000 must be at least twice the max_datagram_size 1500 and at most the max_queued_bytes"},
		{Options{Relay: &RelayOptions{QueueLen: -1}}, "relay options must not be negative"},
	} {
		if err := tc.o.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want it to contain %q", tc.o, err, tc.want)
		}
	}
}

// allOptions sets every option, each to a value of its own.
var allOptions = Options{
	KeepaliveInterval: caddyDuration("20s"), SessionTimeout: caddyDuration("1m"), WriteTimeout: caddyDuration("5s"),
	MaxSessions: 5000, ConnectRate: 2.5, ConnectBurst: 10, LookupRate: 0.5, LookupBurst: 6,
	IntroductionRate: 10, IntroductionBurst: 16, AddrsRate: 0.5, AddrsBurst: 3,
	RegisterTimeout: caddyDuration("5s"), MaxUnregisteredPerPrefix: 16, PrefixSessionRate: 50, PrefixSessionBurst: 2000,
	ConsentTimeout: caddyDuration("4s"), HidePresence: true, RequireConsent: true, DrainTimeout: caddyDuration("3s"),
	Relay: &RelayOptions{PairTimeout: caddyDuration("5s"), MaxSessionsPerDevice: 8, Rate: 12.5e6, Burst: 1 << 18, MaxDatagramSize: 1400, QueueLen: 128},
}

// consent_timeout, hide_presence and require_consent reach the
// rendezvous server, and hide_presence the relay too.
func TestConsentOptions(t *testing.T) {
	cfg := Options{ConsentTimeout: caddyDuration("4s"), HidePresence: true, RequireConsent: true}.superPeerConfig(zap.NewNop())
	if cfg.Rendezvous.ConsentTimeout != 4*time.Second || !cfg.Rendezvous.HidePresence || !cfg.Relay.HidePresence || !cfg.Rendezvous.RequireConsent {
		t.Errorf("consent timeout %v, hide presence %v (relay %v)", cfg.Rendezvous.ConsentTimeout, cfg.Rendezvous.HidePresence, cfg.Relay.HidePresence)
	}
	if err := (Options{ConsentTimeout: -1}).validate(); err == nil || !strings.Contains(err.Error(), "consent_timeout must not be negative") {
		t.Errorf("a negative consent_timeout: %v", err)
	}
}

// drain_timeout reaches the rendezvous server, which bounds drains by it;
// a negative one is refused by its name.
func TestDrainTimeoutOption(t *testing.T) {
	if cfg := (Options{DrainTimeout: caddyDuration("3s")}).superPeerConfig(zap.NewNop()); cfg.Rendezvous.DrainTimeout != 3*time.Second {
		t.Errorf("drain timeout %v, want 3s", cfg.Rendezvous.DrainTimeout)
	}
	if err := (Options{DrainTimeout: -1}).validate(); err == nil || !strings.Contains(err.Error(), "drain_timeout must not be negative") {
		t.Errorf("a negative drain_timeout: %v", err)
	}
}

// introduction_rate and addrs_rate, with their bursts, reach the
// rendezvous server, and negative ones are refused by their names.
func TestIntroductionAndAddrsOptions(t *testing.T) {
	cfg := Options{IntroductionRate: 10, IntroductionBurst: 16, AddrsRate: 0.5, AddrsBurst: 3}.superPeerConfig(zap.NewNop())
	if r := cfg.Rendezvous; r.IntroductionRate != 10 || r.IntroductionBurst != 16 || r.AddrsRate != 0.5 || r.AddrsBurst != 3 {
		t.Errorf("introduction rate %v, burst %d; addrs rate %v, burst %d", r.IntroductionRate, r.IntroductionBurst, r.AddrsRate, r.AddrsBurst)
	}
	if err := (Options{AddrsBurst: -1}).validate(); err == nil || !strings.Contains(err.Error(), "introduction_rate, introduction_burst, addrs_rate and addrs_burst must not be negative") {
		t.Errorf("a negative addrs_burst: %v", err)
	}
}

// lookup_rate and its burst reach the rendezvous server.
func TestLookupOptions(t *testing.T) {
	cfg := Options{LookupRate: 0.5, LookupBurst: 6}.superPeerConfig(zap.NewNop())
	if cfg.Rendezvous.LookupRate != 0.5 || cfg.Rendezvous.LookupBurst != 6 {
		t.Errorf("lookup rate %v, burst %d", cfg.Rendezvous.LookupRate, cfg.Rendezvous.LookupBurst)
	}
	if err := (Options{LookupBurst: -1}).validate(); err == nil || !strings.Contains(err.Error(), "lookup_rate, lookup_burst and consent_timeout must not be negative") {
		t.Errorf("a negative lookup_burst: %v", err)
	}
}

// An option set in one place applies; the same value set twice is no
// conflict.
func TestOptionsMerge(t *testing.T) {
	var s optionSet
	for i, o := range []Options{{}, allOptions, {}, allOptions, {KeepaliveInterval: allOptions.KeepaliveInterval}} {
		if err := s.add(o, "place"); err != nil {
			t.Fatalf("add %d: %v", i, err)
		}
	}
	if got, want := s.Options, allOptions; got.KeepaliveInterval != want.KeepaliveInterval || *got.Relay != *want.Relay ||
		got.MaxSessions != want.MaxSessions || got.ConnectRate != want.ConnectRate || got.ConnectBurst != want.ConnectBurst ||
		got.SessionTimeout != want.SessionTimeout || got.WriteTimeout != want.WriteTimeout || got.RegisterTimeout != want.RegisterTimeout ||
		got.MaxUnregisteredPerPrefix != want.MaxUnregisteredPerPrefix || got.PrefixSessionRate != want.PrefixSessionRate ||
		got.PrefixSessionBurst != want.PrefixSessionBurst || got.ConsentTimeout != want.ConsentTimeout || got.HidePresence != want.HidePresence ||
		got.LookupRate != want.LookupRate || got.LookupBurst != want.LookupBurst || got.DrainTimeout != want.DrainTimeout ||
		got.IntroductionRate != want.IntroductionRate || got.IntroductionBurst != want.IntroductionBurst ||
		got.AddrsRate != want.AddrsRate || got.AddrsBurst != want.AddrsBurst || got.RequireConsent != want.RequireConsent {
		t.Errorf("merged %+v (relay %+v), want %+v", got, *got.Relay, want)
	}
	// Options from two places make the whole.
	var split optionSet
	split.add(Options{SessionTimeout: caddyDuration("1m")}, "A")
	split.add(Options{KeepaliveInterval: caddyDuration("20s"), Relay: &RelayOptions{QueueLen: 128}}, "B")
	if split.SessionTimeout != caddyDuration("1m") || split.KeepaliveInterval != caddyDuration("20s") || split.Relay.QueueLen != 128 {
		t.Errorf("split: %+v", split.Options)
	}
}

// Two places that set an option differently are refused, with every
// differing option, both values and both places.
func TestOptionsConflict(t *testing.T) {
	var s optionSet
	s.add(allOptions, "site A")
	err := s.add(Options{SessionTimeout: caddyDuration("2m"), MaxSessions: 5000, Relay: &RelayOptions{Rate: 25e6}}, "site B")
	if err == nil {
		t.Fatal("conflicting options accepted")
	}
	for _, want := range []string{
		"netsody_superpeer options are process-wide",
		"session_timeout is 1m0s in site A but 2m0s in site B",
		"relay.rate is 12500000 in site A but 25000000 in site B",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v\nwant it to contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "max_sessions") {
		t.Errorf("err names an option that agrees: %v", err)
	}
}

// The Caddyfile adapter refuses site blocks (or a site block and the
// global option) that set an option differently, naming file and line.
func TestCaddyfileConflicts(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a.example.com {\n\tnetsody_superpeer {\n\t\tsession_timeout 1m\n\t}\n}\nb.example.com {\n\tnetsody_superpeer {\n\t\tsession_timeout 2m\n\t}\n}\n",
			"session_timeout is 1m0s in Caddyfile:2 but 2m0s in Caddyfile:7"},
		{"{\n\tnetsody {\n\t\trelay {\n\t\t\tqueue_len 64\n\t\t}\n\t}\n}\na.example.com {\n\tnetsody_superpeer {\n\t\trelay {\n\t\t\tqueue_len 128\n\t\t}\n\t}\n}\n",
			"relay.queue_len is 64 in the global netsody option but 128 in Caddyfile:9"},
	} {
		_, _, err := caddyfile.Adapter{ServerType: httpcaddyfileServerType()}.Adapt([]byte(tc.in), map[string]any{"filename": "Caddyfile"})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s\nerr = %v\nwant it to contain %q", tc.in, err, tc.want)
		}
	}
}

// The newest started config's options apply: a reload that fails after
// the netsody app started gives the running config's back, and the old
// config's stop after a good reload changes nothing.
func TestPooledSuperPeerConfigs(t *testing.T) {
	p := &pooledSuperPeer{Server: superpeer.New(superpeer.Config{})}
	defer p.Close()
	running, failed, next := &appliedConfig{}, &appliedConfig{admission: "x"}, &appliedConfig{}
	newest := func() *appliedConfig { return p.configs[len(p.configs)-1] }
	p.apply(running)
	p.apply(failed)
	p.withdraw(failed)
	if newest() != running {
		t.Error("after a failed reload, the running config's options do not apply")
	}
	p.apply(next)
	p.withdraw(running)
	if newest() != next || len(p.configs) != 1 {
		t.Errorf("after a good reload: %d configs, newest is the new one: %v", len(p.configs), newest() == next)
	}
}
