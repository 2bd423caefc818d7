package caddymodule

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/adapt")

// Each testdata/adapt/NAME.caddyfile adapts to NAME.json.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/adapt/*.caddyfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden Caddyfiles: %v", err)
	}
	for _, in := range files {
		t.Run(filepath.Base(in), func(t *testing.T) {
			src, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			out, warnings, err := caddyfile.Adapter{ServerType: httpcaddyfileServerType()}.Adapt(src, map[string]any{"filename": in})
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			if len(warnings) > 0 {
				t.Errorf("warnings: %v", warnings)
			}
			var pretty strings.Builder
			var v any
			if err := json.Unmarshal(out, &v); err != nil {
				t.Fatal(err)
			}
			enc := json.NewEncoder(&pretty)
			enc.SetIndent("", "\t")
			enc.Encode(v)
			golden := strings.TrimSuffix(in, ".caddyfile") + ".json"
			if *update {
				if err := os.WriteFile(golden, []byte(pretty.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if pretty.String() != string(want) {
				t.Errorf("adapted JSON differs from %s:\n%s", golden, pretty.String())
			}
		})
	}
}

func TestCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"netsody_superpeer extra", "wrong argument count"},
		{"netsody_superpeer {\n bogus 1\n}", `unknown netsody_superpeer option "bogus"`},
		{"netsody_superpeer {\n keepalive_interval\n}", "wrong argument count"},
		{"netsody_superpeer {\n keepalive_interval soon\n}", "keepalive_interval must be a positive duration"},
		{"netsody_superpeer {\n session_timeout -5s\n}", "session_timeout must be a positive duration"},
		{"netsody_superpeer {\n write_timeout 1s 2s\n}", "wrong argument count"},
		{"netsody_superpeer {\n max_sessions many\n}", "max_sessions must be a positive whole number"},
		{"netsody_superpeer {\n max_sessions 0\n}", "max_sessions must be a positive whole number"},
		{"netsody_superpeer {\n connect_rate\n}", "wrong argument count"},
		{"netsody_superpeer {\n hide_presence yes\n}", "wrong argument count"},
		{"netsody_superpeer {\n connect_rate 0\n}", "connect_rate must be a positive number"},
		{"netsody_superpeer {\n introduction_rate NaN\n}", "introduction_rate must be a positive number"},
		{"netsody_superpeer {\n addrs_rate +Inf\n}", "addrs_rate must be a positive number"},
		{"netsody_superpeer {\n connect_rate 5 x\n}", "burst must be a positive whole number"},
		{"netsody_superpeer {\n connect_rate 5 10 15\n}", "wrong argument count"},
		{"netsody_superpeer {\n relay x\n}", "wrong argument count"},
		{"netsody_superpeer {\n relay {\n bogus 1\n }\n}", `unknown netsody_superpeer relay option "bogus"`},
		{"netsody_superpeer {\n relay {\n rate fast\n }\n}", "rate must be a positive size in bytes"},
		{"netsody_superpeer {\n relay {\n burst 0\n }\n}", "burst must be a positive size"},
		{"netsody_superpeer {\n relay {\n device_rate 5MB fast\n }\n}", "device_rate must be a positive size in bytes"},
		{"netsody_superpeer {\n relay {\n total_rate 5MB 1MiB 2\n }\n}", "wrong argument count"},
		{"netsody_superpeer {\n relay {\n total_rate\n }\n}", "wrong argument count"},
		{"netsody_superpeer {\n relay {\n queue_len -1\n }\n}", "queue_len must be a positive whole number"},
		{"netsody_superpeer {\n relay {\n pair_timeout\n }\n}", "wrong argument count"},
		{"netsody_superpeer {\n relay {\n fast_path_port\n }\n}", "wrong argument count"},
		{"netsody_superpeer {\n relay {\n fast_path_port 3479 3480\n }\n}", "wrong argument count"},
		{"netsody_superpeer {\n relay {\n fast_path_port 70000\n }\n}", "fast_path_port must be a UDP port (1-65535), or off"},
		{"netsody_superpeer {\n relay {\n fast_path_port on\n }\n}", "fast_path_port must be a UDP port"},
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want it to contain %q", tc.in, err, tc.want)
		}
	}
}
