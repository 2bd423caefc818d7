package caddymodule_test

import (
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/rendezvous"
)

// limitedCaddyfile is siteCaddyfile with room for two sessions only.
const limitedCaddyfile = testcaddy.Global + `
localhost {
	netsody_superpeer {
		max_sessions 2
	}
	header X-Reloaded yes
	root * {DIR}/site
	file_server
}
`

// `caddy reload` with a changed Caddyfile keeps the UDP socket, the
// website and every registered session, and applies the new options to
// them.
func TestReloadKeepsSessions(t *testing.T) {
	c := startSite(t, "before")
	var devs []*device
	for _, tr := range []rendezvous.Transport{rendezvous.TransportH3, rendezvous.TransportH2} {
		devs = append(devs, register(t, c, "127.0.0.1", tr))
	}
	lookup(t, devs[0], devs[1])

	for i, changed := range []string{limitedCaddyfile, siteCaddyfile} {
		content := "after reload " + strconv.Itoa(i)
		writeSite(t, c, content)
		c.Reload(t, changed)
		checkWebsite(t, c, content)
		checkSessions(t, devs)
		if changed == limitedCaddyfile {
			checkFull(t, c)
			continue
		}
		fresh := register(t, c, "127.0.0.1", rendezvous.TransportH3)
		lookup(t, fresh, devs[0])
		lookup(t, devs[1], fresh)
		fresh.s.Close()
	}
}

// checkSessions checks that every session lives and that old sessions
// still find each other.
func checkSessions(t *testing.T, devs []*device) {
	t.Helper()
	for _, d := range devs {
		if err := d.s.Err(); err != nil {
			t.Fatalf("%s session ended: %v", d.s.Transport(), err)
		}
	}
	lookup(t, devs[0], devs[1])
	lookup(t, devs[1], devs[0])
}

// checkFull checks that the super peer, at max_sessions 2 with two
// sessions, refuses a third.
func checkFull(t *testing.T, c *testcaddy.Caddy) {
	t.Helper()
	if _, err := tryRegister(t, c, "127.0.0.1", rendezvous.TransportH3); err == nil || !strings.Contains(err.Error(), "limit of 2 sessions") {
		t.Errorf("a third session at max_sessions 2: err = %v", err)
	}
}

// Options are process-wide: a config whose sites, or whose netsody app
// and a site, set one differently is refused at load, naming the option;
// so is one whose merged options do not work. The running config keeps
// its sessions and its options.
func TestConflictingOptionsRefused(t *testing.T) {
	c := testcaddy.Start(t, limitedCaddyfile)
	writeSite(t, c, "x")
	devs := []*device{register(t, c, "127.0.0.1", rendezvous.TransportH3), register(t, c, "127.0.0.1", rendezvous.TransportH2)}
	for _, tc := range []struct{ name, sites, want string }{
		{"two sites", `
localhost {
	netsody_superpeer {
		max_sessions 2
	}
}
127.0.0.1 {
	netsody_superpeer {
		max_sessions 3
	}
}
`, "max_sessions is 2 in " + filepath.Join(c.Dir, "Caddyfile.reload") + ":10 but 3 in " + filepath.Join(c.Dir, "Caddyfile.reload") + ":15"},
		{"merged options that do not work", `
localhost {
	netsody_superpeer {
		keepalive_interval 40s
	}
}
127.0.0.1 {
	netsody_superpeer {
		session_timeout 30s
	}
}
`, "session_timeout 30s must be longer than the keepalive_interval 40s"},
	} {
		err := c.TryReload(t, testcaddy.Global+tc.sites)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v\nwant it to contain %q", tc.name, err, tc.want)
		}
	}
	// A JSON config: the netsody app's options against the handler's.
	resp, err := http.Post("http://"+c.Admin+"/config/apps/netsody", "application/json", strings.NewReader(`{"max_sessions": 3}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `max_sessions is 3 in the netsody app but 2 in server \"srv0\"`; resp.StatusCode == http.StatusOK || !strings.Contains(string(body), want) {
		t.Errorf("netsody app against a handler: %d %s\nwant it to contain %s", resp.StatusCode, body, want)
	}
	checkWebsite(t, c, "x")
	checkSessions(t, devs)
	checkFull(t, c)
}
