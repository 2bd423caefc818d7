package caddymodule_test

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/peer"
)

// fastCaddyfile is siteCaddyfile with the fast path on FAST_PORT, which
// a test sets to a free port (or off).
const fastCaddyfile = testcaddy.Global + `
localhost {
	netsody_superpeer {
		relay {
			fast_path_port FAST_PORT
		}
	}
	header X-Config CONFIG
	root * {DIR}/site
	file_server
}
`

func withFastPort(port, config string) string {
	return strings.NewReplacer("FAST_PORT", port, "CONFIG", config).Replace(fastCaddyfile)
}

// freeUDPPort is a free UDP port, as the Caddyfile writes it.
func freeUDPPort(t *testing.T) string { return strconv.Itoa(testcaddy.FreeUDPPort(t)) }

// relayedPair starts two relay-only devices with c as their super peer;
// b echoes, and a's connection to it is returned.
func relayedPair(t *testing.T, c *testcaddy.Caddy) (a *peer.Device, conn *peer.Conn) {
	t.Helper()
	newDev := func() *peer.Device {
		d, err := peer.New(peer.Config{
			Identity: sptest.NewIdentity(t), SuperPeers: []string{"https://localhost:" + strconv.Itoa(c.Port)},
			RootCAs: c.Roots, ListenAddr: "127.0.0.1:0", RelayOnly: true, AllowAny: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if st := d.Status().SuperPeers; len(st) > 0 && st[0].Connected {
				return d
			}
			if time.Now().After(deadline) {
				t.Fatal("no session with Caddy within 10s")
			}
		}
	}
	a, b := newDev(), newDev()
	return a, echoPair(t, a, b)
}

// relayTransport is how a's packets to its one peer travel now.
func relayTransport(a *peer.Device) peer.RelayTransport {
	for _, p := range a.Status().Peers {
		if p.Path == peer.PathRelay {
			return p.RelayTransport
		}
	}
	return ""
}

// waitTransport waits up to 10 s for a's relay to travel on want.
func waitTransport(t *testing.T, a *peer.Device, want peer.RelayTransport) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); relayTransport(a) != want; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("relay transport %q, want %q", relayTransport(a), want)
		}
	}
}

// echoTransfer sends size random bytes on a new stream of conn and checks
// that the echo's SHA-256 is theirs; halfway, it calls midway (if set).
func echoTransfer(t *testing.T, conn *peer.Conn, size int, midway func()) {
	t.Helper()
	if _, err := stallEcho(conn, size, midway); err != nil {
		t.Fatal(err)
	}
}

// Two devices relayed through Caddy end on the fast path, whose port the
// operator chose, and a transfer's SHA-256 is intact; a reload that keeps
// the port keeps the transfer and the binding going.
func TestFastPathThroughCaddy(t *testing.T) {
	port := freeUDPPort(t)
	c := startWith(t, withFastPort(port, "before"), "site")
	a, conn := relayedPair(t, c)
	waitTransport(t, a, peer.RelayFast)
	before := c.Metrics(t)
	echoTransfer(t, conn, 16<<20, func() { c.Reload(t, withFastPort(port, "after")) })
	if got := relayTransport(a); got != peer.RelayFast {
		t.Errorf("after the reload the relay travels on %q, want fast", got)
	}
	m := c.Metrics(t)
	if d := m["netsody_superpeer_fast_path_datagrams_total"] - before["netsody_superpeer_fast_path_datagrams_total"]; d < 16<<20/1500 {
		t.Errorf("%.0f datagrams on the fast path during a 16 MiB echo", d)
	}
	if m["netsody_superpeer_fast_path_bindings"] != 2 || m["netsody_superpeer_fast_path_validations_total"] < 2 {
		t.Errorf("bindings %v, validations %v: want 2 and at least 2",
			m["netsody_superpeer_fast_path_bindings"], m["netsody_superpeer_fast_path_validations_total"])
	}
	if m["netsody_superpeer_fast_path_rebindings_total"] != 0 {
		t.Errorf("a reload that kept the port re-validated %v bindings", m["netsody_superpeer_fast_path_rebindings_total"])
	}
}

// With fast_path_port off, devices are refused a binding and relay over
// HTTP/3, intact.
func TestFastPathOff(t *testing.T) {
	c := startWith(t, withFastPort("off", "off"), "site")
	a, conn := relayedPair(t, c)
	echoTransfer(t, conn, 4<<20, nil)
	if got := relayTransport(a); got != peer.RelayH3 {
		t.Errorf("relay transport %q with the fast path off, want h3", got)
	}
	m := c.Metrics(t)
	if m["netsody_superpeer_fast_path_refused_total"] < 2 || m["netsody_superpeer_fast_path_datagrams_total"] != 0 {
		t.Errorf("refused %v, datagrams %v: want both devices refused and none on the fast path",
			m["netsody_superpeer_fast_path_refused_total"], m["netsody_superpeer_fast_path_datagrams_total"])
	}
}

// The fast path's socket closes when the super peer leaves the config,
// and a port the operator chose that cannot be opened fails the config,
// saying which and what to do.
func TestFastPathSocketLifetime(t *testing.T) {
	port := freeUDPPort(t)
	c := startWith(t, withFastPort(port, "x"), "site")
	if pc, err := net.ListenPacket("udp", ":"+port); err == nil {
		pc.Close()
		t.Fatalf("the fast path's port %s is free while the super peer runs", port)
	}
	c.Reload(t, testcaddy.Global+"localhost {\n\trespond \"no super peer\"\n}\n")
	pc, err := net.ListenPacket("udp", ":"+port)
	if err != nil {
		t.Fatalf("the fast path's port is still open after the super peer left: %v", err)
	}
	defer pc.Close()
	err = c.TryReload(t, withFastPort(port, "taken"))
	if err == nil || !strings.Contains(err.Error(), "fast_path_port "+port) || !strings.Contains(err.Error(), "choose another port, or off") {
		t.Errorf("a taken fast_path_port: err = %v", err)
	}
	if err := c.TryReload(t, withFastPort(strconv.Itoa(c.Port), "h3")); err == nil || !strings.Contains(err.Error(), "serves HTTP/3") {
		t.Errorf("fast_path_port on the HTTPS port: err = %v", err)
	}
}

// A reload that moves the port opens the new one while the old config
// still serves the old one, and hands the relay over when the old config
// stops: devices that pair afterwards are bound on the new port, and the
// old one is closed.
func TestFastPathPortMoves(t *testing.T) {
	old, moved := freeUDPPort(t), freeUDPPort(t)
	c := startWith(t, withFastPort(old, "old"), "site")
	c.Reload(t, withFastPort(moved, "moved"))
	if pc, err := net.ListenPacket("udp", ":"+old); err != nil {
		t.Errorf("the old port %s is still open after the reload: %v", old, err)
	} else {
		pc.Close()
	}
	a, conn := relayedPair(t, c)
	waitTransport(t, a, peer.RelayFast)
	echoTransfer(t, conn, 1<<20, nil)
}
