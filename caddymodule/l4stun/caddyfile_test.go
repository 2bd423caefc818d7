package l4stun_test

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/netsody/superpeer/caddymodule/l4stun"
)

// Every Caddyfile mistake gets an error that says what to fix. (The
// golden adapt test, caddymodule/testdata/adapt/layer4_stun.caddyfile,
// holds what good input becomes.)
func TestCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		matcher  bool
	}{
		{"netsody_stun extra", "wrong argument count", false},
		{"netsody_stun {\n bogus 1\n}", `unknown netsody_stun option "bogus"`, false},
		{"netsody_stun {\n source_rate\n}", "wrong argument count", false},
		{"netsody_stun {\n source_rate 1 2\n}", "wrong argument count", false},
		{"netsody_stun {\n source_rate fast\n}", "source_rate must be a positive number", false},
		{"netsody_stun {\n source_rate -1\n}", "source_rate must be a positive number", false},
		{"netsody_stun {\n source_rate NaN\n}", "source_rate must be a positive number", false},
		{"netsody_stun {\n source_burst 0\n}", "source_burst must be a positive whole number", false},
		{"netsody_stun {\n source_burst 1.5\n}", "source_burst must be a positive whole number", false},
		{"stun rfc3489", "wrong argument count", true},
		{"stun {\n cookie\n}", "the stun matcher takes no options", true},
	} {
		var u caddyfile.Unmarshaler = new(l4stun.Handler)
		if tc.matcher {
			u = new(l4stun.MatchSTUN)
		}
		err := u.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.in, err, tc.want)
		}
	}
}
