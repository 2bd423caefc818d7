package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/netsody/superpeer/relay"
)

// fast_path_port in JSON: a port, or "off" or 0 for none; anything else
// is refused, naming the option. Unset is the default port.
func TestFastPathPortJSON(t *testing.T) {
	for _, tc := range []struct {
		in   string
		port int    // what is opened; 0 none
		out  string // marshalled back
		err  string
	}{
		{in: `{}`, port: relay.DefaultFastPathPort, out: `{}`},
		{in: `{"fast_path_port": 3500}`, port: 3500, out: `{"fast_path_port":3500}`},
		{in: `{"fast_path_port": "off"}`, out: `{"fast_path_port":"off"}`},
		{in: `{"fast_path_port": 0}`, out: `{"fast_path_port":"off"}`},
		{in: `{"fast_path_port": 70000}`, err: "fast_path_port must be a UDP port (1-65535), or off"},
		{in: `{"fast_path_port": -1}`, err: "fast_path_port must be a UDP port"},
		{in: `{"fast_path_port": "on"}`, err: "fast_path_port must be a UDP port"},
		{in: `{"fast_path_port": true}`, err: "fast_path_port must be a UDP port or \"off\""},
	} {
		var r RelayOptions
		err := json.Unmarshal([]byte(tc.in), &r)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if got := (Options{Relay: &r}).fastPathPort(); got != tc.port {
			t.Errorf("%s: port %d, want %d", tc.in, got, tc.port)
		}
		if out, _ := json.Marshal(r); string(out) != tc.out {
			t.Errorf("%s: marshals as %s, want %s", tc.in, out, tc.out)
		}
	}
}

// Set to different values in two places, the port is a conflict that
// shows both as written.
func TestFastPathPortConflict(t *testing.T) {
	var s optionSet
	s.add(Options{Relay: &RelayOptions{FastPathPort: 3500}}, "the global netsody option")
	err := s.add(Options{Relay: &RelayOptions{FastPathPort: fastPathOff}}, "Caddyfile:3")
	if err == nil || !strings.Contains(err.Error(), "relay.fast_path_port is 3500 in the global netsody option but off in Caddyfile:3") {
		t.Errorf("err = %v", err)
	}
}
