package caddymodule_test

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/peer"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

// drainCaddyfile is a super peer whose drain lasts at most the given
// duration; extra goes into its options block.
func drainCaddyfile(drainTimeout, extra string) string {
	return testcaddy.Global + `
localhost {
	netsody_superpeer {
		drain_timeout ` + drainTimeout + `
		` + extra + `
	}
	respond "x"
}
`
}

// superPeerURL is a Caddy's super peer as devices name it.
func superPeerURL(c *testcaddy.Caddy) string { return "https://localhost:" + strconv.Itoa(c.Port) }

// relayDevices starts two devices of package peer that only relay, with
// every Caddy as their super peers, and connects the first to the second.
func relayDevices(t *testing.T, cs ...*testcaddy.Caddy) (a, b *peer.Device, c *peer.Conn) {
	t.Helper()
	roots := x509.NewCertPool()
	var urls []string
	for _, c := range cs {
		pem, err := os.ReadFile(c.RootCAFile())
		if err != nil || !roots.AppendCertsFromPEM(pem) {
			t.Fatalf("Caddy's root certificate: %v", err)
		}
		urls = append(urls, superPeerURL(c))
	}
	var devs []*peer.Device
	for range 2 {
		d, err := peer.New(peer.Config{Identity: newIdentity(t), SuperPeers: urls, RootCAs: roots, ListenAddr: "127.0.0.1:0", RelayOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		waitUntil(t, 10*time.Second, "sessions with every super peer", func() bool {
			for _, sp := range d.Status().SuperPeers {
				if !sp.Connected {
					return false
				}
			}
			return true
		})
		devs = append(devs, d)
	}
	a, b = devs[0], devs[1]
	b.Allow(a.PeerID()) // as its application would
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, b.PeerID())
	if err != nil || c.Path().Kind != peer.PathRelay {
		t.Fatalf("dial: %v; want a relayed connection", err)
	}
	t.Cleanup(func() { c.CloseWithError(0, "") })
	return a, b, c
}

// waitUntil polls cond every 20 ms for up to within.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, within)
		}
	}
}

// moveUnderTransfer runs two Caddy super peers and two devices relaying a
// paced transfer through one of them, and calls end on that one (in a
// goroutine) a quarter into the transfer. It checks that the transfer
// arrives whole, the receiver never waits a second for bytes, the relay
// ends on the other Caddy, and the relays all moved before the super
// peer closed (its log says so); it returns the relaying Caddy and how
// long end took.
func moveUnderTransfer(t *testing.T, what string, end func(*testcaddy.Caddy)) (*testcaddy.Caddy, time.Duration) {
	t.Helper()
	one := testcaddy.Start(t, drainCaddyfile("10s", ""))
	two := testcaddy.Start(t, drainCaddyfile("10s", ""))
	_, b, c := relayDevices(t, one, two)
	relaying, other := one, two
	if c.Path().SuperPeer == superPeerURL(two) {
		relaying, other = two, one
	}
	ended := make(chan time.Duration, 1)
	gap := sptest.PacedTransfer(t, c, b.Accept, 200, func(i int) {
		if i == 50 {
			go func() {
				start := time.Now()
				end(relaying)
				ended <- time.Since(start)
			}()
		}
	})
	t.Logf("longest gap between delivered bytes: %v", gap)
	if gap >= time.Second {
		t.Errorf("the receiver waited %v for bytes, want under 1s", gap)
	}
	if p := c.Path(); p.Kind != peer.PathRelay || p.SuperPeer != superPeerURL(other) {
		t.Errorf("path %s after the %s, want relay via %s", p, what, superPeerURL(other))
	}
	took := <-ended
	t.Logf("caddy %s took %v", what, took)
	if !strings.Contains(relaying.Logs(), "drained: every relay moved") {
		t.Errorf("the relays did not all move before the super peer closed; logs:\n%s", relaying.Logs())
	}
	return relaying, took
}

// `caddy stop` of the super peer that relays a transfer: the devices move
// the relay to the other Caddy before it exits, the transfer arrives
// whole, the receiver never waits a second for bytes, and the stop takes
// far less than drain_timeout (10 s), since the relay moved.
func TestStopMovesRelayedTransfer(t *testing.T) {
	if _, took := moveUnderTransfer(t, "stop", func(c *testcaddy.Caddy) { c.Stop(t) }); took >= 5*time.Second {
		t.Errorf("caddy stop took %v, want far less than drain_timeout", took)
	}
}

// A `caddy reload` to a config without the super peer drains it as a
// stop does: the transfer it relays moves to the other Caddy whole
// before the super peer closes, and the reload takes about as long as a
// stop, though the new config's HTTP/3 socket joins the port during the
// drain: the devices' packets still reach the endpoint (steer.go), so it
// sees their relay legs and connections close, with no wait for the
// drain's timeout or the endpoint's shutdownTimeout. The site it leaves
// is served over HTTP/3 (Caddy's own listener takes the port back) as
// well as over HTTP/2.
func TestReloadRemovingSuperPeerMovesRelayedTransfer(t *testing.T) {
	const shutdownTimeout = 5 * time.Second // caddymodule.shutdownTimeout
	relaying, took := moveUnderTransfer(t, "reload", func(c *testcaddy.Caddy) {
		c.Reload(t, testcaddy.Global+"\nlocalhost {\n\trespond \"only a website now\"\n}\n")
	})
	if took >= shutdownTimeout/2 {
		t.Errorf("caddy reload took %v, want about as long as a stop", took)
	}
	for _, proto := range []string{"h2", "h3"} {
		if status, body, _ := get(t, relaying, "127.0.0.1", proto, "/"); status != 200 || body != "only a website now" {
			t.Errorf("%s after the reload: %d %q", proto, status, body)
		}
	}
}

// `caddy stop` with devices that are told to move and never do: their
// relay session holds the drain until drain_timeout, no longer; then
// their sessions end with shutting down.
func TestStopBoundedByDrainTimeout(t *testing.T) {
	const drainTimeout = 2 * time.Second
	c := testcaddy.Start(t, drainCaddyfile("2s", ""))
	ignore := func(cfg *rendezvous.ClientConfig) { cfg.OnMove = func(rendezvous.Move) {} }
	x, y := register(t, c, "127.0.0.1", rendezvous.TransportH3, ignore), register(t, c, "127.0.0.1", rendezvous.TransportH3, ignore)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	legs := make(chan error, 1)
	go func() {
		conn, err := relay.DialH3(ctx, x.s.HTTP3(), x.s.Authority(), y.id.PeerID())
		if err == nil {
			t.Cleanup(func() { conn.Close() })
		}
		legs <- err
	}()
	conn, err := relay.DialH3(ctx, y.s.HTTP3(), y.s.Authority(), x.id.PeerID())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := <-legs; err != nil {
		t.Fatal(err)
	}
	took := c.Stop(t)
	t.Logf("caddy stop took %v with a relay that never moved", took)
	if took < drainTimeout*3/4 || took > drainTimeout+3*time.Second || !strings.Contains(c.Logs(), "the drain timeout passed with 2 relay legs left") {
		t.Errorf("caddy stop took %v, want about the drain timeout %v, logged as such", took, drainTimeout)
	}
	for _, d := range []*device{x, y} {
		<-d.s.Done()
		var e *rendezvous.Error
		if !errors.As(d.s.Err(), &e) || e.Code != rendezvous.ErrCodeShuttingDown {
			t.Errorf("session ended with %v, want %s", d.s.Err(), rendezvous.ErrCodeShuttingDown)
		}
	}
}

// `caddy reload` with changed options (consent_timeout, budgets above
// what the transfer takes, and an allowlist that admits both devices)
// under a relayed transfer loses no registration and no relay session:
// the metrics count no new registration and no new relay pairing, and
// the transfer arrives whole.
func TestReloadKeepsRelayedTransfer(t *testing.T) {
	c := testcaddy.Start(t, drainCaddyfile("5s", ""))
	a, b, conn := relayDevices(t, c)
	before := c.Metrics(t)
	allow := "consent_timeout 3s\n\t\trelay {\n\t\t\tdevice_rate 40MB\n\t\t\ttotal_rate 100MB\n\t\t\tmax_sessions_per_device 8\n\t\t}"
	reloaded := make(chan struct{})
	gap := sptest.PacedTransfer(t, conn, b.Accept, 150, func(i int) {
		if i == 40 {
			go func() {
				defer close(reloaded)
				global := strings.TrimSuffix(testcaddy.Global, "}\n") + "\tnetsody {\n\t\tadmission {\n\t\t\tallowlist " +
					a.PeerID().String() + " " + b.PeerID().String() + "\n\t\t}\n\t}\n}\n"
				c.Reload(t, global+strings.TrimPrefix(drainCaddyfile("5s", allow), testcaddy.Global))
			}()
		}
	})
	<-reloaded
	t.Logf("longest gap between delivered bytes: %v", gap)
	after := c.Metrics(t)
	for _, m := range []string{"netsody_superpeer_registrations_total", "netsody_superpeer_relay_paired_total", "netsody_superpeer_devices", "netsody_superpeer_relay_legs"} {
		if after[m] != before[m] {
			t.Errorf("%s: %v before the reload, %v after", m, before[m], after[m])
		}
	}
	if l := after[`netsody_superpeer_budget_limit{budget="device_bandwidth"}`]; l != 40e6 {
		t.Errorf("device_bandwidth budget after the reload: %v, want the new 40MB", l)
	}
	if before["netsody_superpeer_relay_legs"] != 2 || before["netsody_superpeer_devices"] != 2 {
		t.Errorf("before the reload: %v relay legs and %v devices, want 2 and 2", before["netsody_superpeer_relay_legs"], before["netsody_superpeer_devices"])
	}
	if p := conn.Path(); p.Kind != peer.PathRelay || p.SuperPeer != superPeerURL(c) {
		t.Errorf("path %s after the reload", p)
	}
}
