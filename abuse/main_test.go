// Package abuse_test attacks a real Caddy with the super peer plugin, as
// an adversary on the internet would: the process that internal/testcaddy
// builds from internal/caddymain, on loopback, through the project's own
// client packages and raw sockets. One test per attack of issue 10; the
// package-level tests (rendezvous, relay, peer) prove each protection
// in-process, these prove it holds through Caddy's listeners, config and
// process. It is a package of its own so that it runs beside caddymodule's
// tests and shares no files with the plugin's code.
package abuse_test

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/rendezvous"
)

func TestMain(m *testing.M) { testcaddy.Main(m) }

// caddyfile is a site with the super peer whose options block is opts.
func caddyfile(opts string) string {
	return testcaddy.Global + `
localhost {
	netsody_superpeer {
		` + opts + `
	}
	respond "x"
}
`
}

// start runs Caddy with the super peer's options opts.
func start(t *testing.T, opts string) *testcaddy.Caddy {
	t.Helper()
	return testcaddy.Start(t, caddyfile(opts))
}

// url is the super peer's URL, as devices are configured with it.
func url(c *testcaddy.Caddy) string { return "https://localhost:" + strconv.Itoa(c.Port) }

// dev is a rendezvous session of a fresh identity: a device, or a
// stranger (identities are free).
type dev struct {
	s  *rendezvous.Session
	id *identity.Identity
}

func (d *dev) peer() identity.PeerID { return d.id.PeerID() }

// join registers a fresh identity from host (an address of loopback) over
// tr; mods change its configuration.
func join(t *testing.T, c *testcaddy.Caddy, host string, tr rendezvous.Transport, mods ...func(*rendezvous.ClientConfig)) *dev {
	t.Helper()
	d := &dev{id: newID(t)}
	cfg := c.ClientConfig(d.id, host, tr)
	for _, m := range mods {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := rendezvous.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("register over %s from %s: %v", tr, host, err)
	}
	t.Cleanup(func() { s.Close() })
	d.s = s
	return d
}

// joinConsenting registers a device that is asked before anyone is
// introduced to it, and answers every request with answer; nil never
// answers.
func joinConsenting(t *testing.T, c *testcaddy.Caddy, host string, tr rendezvous.Transport, answer *bool) *dev {
	t.Helper()
	var sess atomic.Pointer[rendezvous.Session]
	d := join(t, c, host, tr, func(cfg *rendezvous.ClientConfig) {
		cfg.OnRequest = func(r rendezvous.Request) {
			if s := sess.Load(); s != nil && answer != nil {
				s.Answer(r.Peer, *answer)
			}
		}
	})
	sess.Store(d.s)
	return d
}

func newID(t testing.TB) *identity.Identity { return sptest.NewIdentity(t) }

// introduce asks d's super peer for peer and says how long the answer
// took.
func introduce(t *testing.T, d *dev, peer identity.PeerID, opts rendezvous.IntroduceOptions) (rendezvous.Candidates, error, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := d.s.Introduce(ctx, peer, opts)
	return c, err, time.Since(start)
}

// waitFor polls cond every 10 ms for at most within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
	}
}

// anonymous replaces peer IDs in s, so that refusals about different
// peers compare equal when they say the same.
func anonymous(s string, peers ...identity.PeerID) string {
	for _, p := range peers {
		s = strings.ReplaceAll(s, p.String(), "PEER")
		s = strings.ReplaceAll(s, p.Short(), "PEER")
	}
	return s
}
