package caddymodule_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	natsserver "github.com/nats-io/nats-server/v2/server"

	_ "github.com/netsody/superpeer/caddymodule/natsembed"
	"github.com/netsody/superpeer/internal/testcaddy"
)

// clusterDoc is the document whose Caddyfiles these tests keep true.
const clusterDoc = "../docs/CLUSTER.md"

// docCaddyfiles returns the ```caddyfile blocks of the document at path.
func docCaddyfiles(t *testing.T, path string) []string {
	t.Helper()
	return docBlocks(t, path, "caddyfile")
}

// docBlocks returns the fenced blocks of the document at path in
// language lang.
func docBlocks(t *testing.T, path, lang string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	var cur *strings.Builder
	for line := range strings.Lines(string(b)) {
		switch {
		case cur == nil && strings.TrimSpace(line) == "```"+lang:
			cur = &strings.Builder{}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line)
		}
	}
	if cur != nil {
		t.Fatalf("%s: a %s block is not closed", path, lang)
	}
	return blocks
}

// Every Caddyfile docs/CLUSTER.md shows adapts, without a warning, with
// the modules a node's build has (the plugin, netsody_nats, Caddy's
// standard modules), so that the document cannot drift from the options
// the code takes.
func TestClusterDocCaddyfilesAdapt(t *testing.T) {
	blocks := docCaddyfiles(t, clusterDoc)
	// The configuration, the node with shared storage, the health
	// front, the embedded NATS.
	const want = 4
	if len(blocks) < want {
		t.Fatalf("%s shows %d Caddyfiles; want at least %d", clusterDoc, len(blocks), want)
	}
	for i, src := range blocks {
		t.Run(strconv.Itoa(i+1), func(t *testing.T) {
			out, warnings, err := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte(src), map[string]any{"filename": "CLUSTER.md"})
			if err != nil {
				t.Fatalf("adapt:\n%s\n%v", src, err)
			}
			if len(warnings) > 0 {
				t.Errorf("warnings adapting\n%s\n%v", src, warnings)
			}
			var cfg struct {
				Apps map[string]json.RawMessage `json:"apps"`
			}
			if err := json.Unmarshal(out, &cfg); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(src, "netsody {") && cfg.Apps["netsody"] == nil {
				t.Errorf("no netsody app in %s", out)
			}
		})
	}
}

// The nats-server configuration docs/CLUSTER.md shows is one that
// nats-server loads, with the account and permissions it describes.
func TestClusterDocNATSConfig(t *testing.T) {
	blocks := docBlocks(t, clusterDoc, "conf")
	if len(blocks) != 1 {
		t.Fatalf("%s shows %d nats-server configurations; want 1", clusterDoc, len(blocks))
	}
	path := filepath.Join(t.TempDir(), "nats-server.conf")
	if err := os.WriteFile(path, []byte(blocks[0]), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := natsserver.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server does not load it: %v\n%s", err, blocks[0])
	}
	if len(opts.Users) != 1 || opts.Users[0].Account == nil || opts.Users[0].Account.Name != "NETSODY" || opts.Users[0].Permissions == nil {
		t.Fatalf("users: %+v; want one user of account NETSODY with permissions", opts.Users)
	}
	want := []string{"netsody.prod-eu.>", "_INBOX.>"}
	if p := opts.Users[0].Permissions; !slices.Equal(p.Publish.Allow, want) || !slices.Equal(p.Subscribe.Allow, want) {
		t.Errorf("permissions: publish %v, subscribe %v; want %v for both", p.Publish, p.Subscribe, want)
	}
	if opts.PingInterval > 10*time.Second || opts.Cluster.Name == "" || len(opts.Routes) == 0 {
		t.Errorf("ping_interval %v, cluster %q, routes %v", opts.PingInterval, opts.Cluster.Name, opts.Routes)
	}
}

// The health front that docs/CLUSTER.md shows, run in a real Caddy with
// its addresses moved to the test's: it answers the admin endpoint's
// health route, and nothing else of the admin endpoint (its config, the
// device list) is reachable through it.
func TestClusterDocHealthFront(t *testing.T) {
	var front string
	for _, b := range docCaddyfiles(t, clusterDoc) {
		if strings.Contains(b, "reverse_proxy") && strings.Contains(b, "/netsody/health") {
			front = b
		}
	}
	if front == "" {
		t.Fatalf("%s shows no health front (a reverse_proxy of /netsody/health)", clusterDoc)
	}
	port := strconv.Itoa(testcaddy.FreePort(t))
	front = strings.NewReplacer("10.0.0.3", "127.0.0.1", "8081", port, "localhost:2019", "{ADMIN}").Replace(front)
	testcaddy.Start(t, testcaddy.Global+`
localhost {
	bind 127.0.0.1
	netsody_superpeer
}
`+front)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://127.0.0.1:" + port + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return resp.StatusCode, string(b)
	}
	if code, body := get("/netsody/health"); code != http.StatusOK || !strings.Contains(body, `"serving"`) {
		t.Errorf("GET /netsody/health through the front: %d %s; want 200 serving", code, body)
	}
	for _, p := range []string{"/config/", "/netsody/devices", "/netsody/state", "/metrics"} {
		if code, body := get(p); code != http.StatusNotFound {
			t.Errorf("GET %s through the front: %d %.100s; want 404", p, code, body)
		}
	}
}
