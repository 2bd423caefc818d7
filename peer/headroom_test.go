package peer

import (
	"testing"
	"time"

	"github.com/netsody/superpeer"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

// fullRelay is a super peer whose relay is full for everyone: its total
// budget is below what any relay is taken to need, and below the margin
// a relay that runs there keeps.
var fullRelay = superpeer.Config{Relay: relay.Config{TotalRate: relayHeadroomMargin * relayNeedFloor * 0.8}}

// twoSuperPeers starts super peers A, near, and B, 20 ms further each
// way, and returns them, A's servers (whose CA both use), the URLs
// devices use, and the devices' configuration.
func twoSuperPeers(t *testing.T) (sA *sptest.Servers, spA, spB *superpeer.Server, uA, uB string, cfg func(*Config)) {
	t.Helper()
	sA, spA = newSuperPeer(t, superpeer.Config{})
	sB, spB := newSuperPeer(t, superpeer.Config{})
	uB = "https://" + sptest.UDPDelay(t, addrOf(sB.H3URL), 20*time.Millisecond).String()
	cfg = func(c *Config) {
		c.SuperPeers, c.RelayOnly, c.RelayCheckInterval = []string{sA.H3URL, uB}, true, 300*time.Millisecond
	}
	return sA, spA, spB, sA.H3URL, uB, cfg
}

// waitHeadroom waits until each device's session with the super peer at
// url was told a headroom that ok accepts.
func waitHeadroom(t *testing.T, url string, ok func(rendezvous.Headroom) bool, devs ...*Device) {
	t.Helper()
	for _, d := range devs {
		for _, sp := range d.sps {
			if sp.url != url {
				continue
			}
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if sess := sp.session(); sess != nil {
					if h, told := sess.Headroom(); told && ok(h) {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: no headroom as expected within 10s", url)
				}
			}
		}
	}
}

func isFull(h rendezvous.Headroom) bool  { return float64(h.Bandwidth) < relayNeedFloor }
func hasRoom(h rendezvous.Headroom) bool { return float64(h.Bandwidth) >= 100*relayNeedFloor }
func relayVia(c *Conn, url string) bool {
	p := c.Path()
	return p.Kind == PathRelay && p.SuperPeer == url
}
func waitRelayVia(t *testing.T, c *Conn, url string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !relayVia(c, url); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("path %s, want relay via %s", c.Path(), url)
		}
	}
}

// Good enough, then near: the nearer super peer is full, so the relay
// goes through the farther one; once the nearer one has room again, new
// relays use it, and the relay moves back to it, as to any nearer one.
func TestHeadroomSteersRelayToSibling(t *testing.T) {
	s, spA, _, uA, uB, cfg := twoSuperPeers(t)
	spA.SetConfig(fullRelay)
	a, b := newDevice(t, s, cfg), newDevice(t, s, cfg)
	waitHeadroom(t, uA, isFull, a, b)
	waitHeadroom(t, uB, hasRoom, a, b)
	echo(t, b)
	c := dial(t, a, b)
	if !relayVia(c, uB) {
		t.Fatalf("path %s, want relay via %s: the nearer super peer is full", c.Path(), uB)
	}
	roundTrip(t, c, "through the farther super peer")

	spA.SetConfig(superpeer.Config{})
	x, y := newDevice(t, s, cfg), newDevice(t, s, cfg)
	waitHeadroom(t, uA, hasRoom, a, b, x, y)
	if c2 := dial(t, x, y); !relayVia(c2, uA) {
		t.Errorf("a new relay went %s, want via %s, nearer and with room again", c2.Path(), uA)
	}
	waitRelayVia(t, c, uA)
	roundTrip(t, c, "back through the nearer super peer")
}

// Hysteresis: a relay leaves a super peer that became full only for one
// that is good enough, even a farther one; while every super peer is
// full it stays where it is.
func TestHeadroomLeavesFullOnlyForGoodEnough(t *testing.T) {
	s, spA, spB, uA, uB, cfg := twoSuperPeers(t)
	a, b := newDevice(t, s, cfg), newDevice(t, s, cfg)
	waitHeadroom(t, uA, hasRoom, a, b)
	echo(t, b)
	c := dial(t, a, b)
	if !relayVia(c, uA) {
		t.Fatalf("path %s, want relay via the nearer %s", c.Path(), uA)
	}
	// B first, so that no device ever sees A full while B has room.
	spB.SetConfig(fullRelay)
	waitHeadroom(t, uB, isFull, a, b)
	spA.SetConfig(fullRelay)
	waitHeadroom(t, uA, isFull, a, b)
	// Several relay checks, none of which may move it.
	for end := time.Now().Add(5 * 300 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if !relayVia(c, uA) {
			t.Fatalf("path %s while every super peer is full, want it to stay via %s", c.Path(), uA)
		}
	}
	spB.SetConfig(superpeer.Config{})
	waitRelayVia(t, c, uB)
	roundTrip(t, c, "through the farther super peer with room")
}

// The rule itself: a super peer that told nothing is good enough; a new
// relay needs its need and the margin spare, and a session; the relay
// that runs there already only needs the super peer not to be full.
func TestHeadroomRule(t *testing.T) {
	const need = 10 * relayNeedFloor
	enter := uint64((1 + relayHeadroomMargin) * need)
	full := uint64(relayHeadroomMargin * relayNeedFloor)
	for _, tc := range []struct {
		name  string
		h     rendezvous.Headroom
		told  bool
		holds bool
		want  bool
	}{
		{"told nothing", rendezvous.Headroom{}, false, false, true},
		{"need and margin spare", rendezvous.Headroom{Bandwidth: enter, Sessions: 1}, true, false, true},
		{"need but not the margin", rendezvous.Headroom{Bandwidth: enter - 1, Sessions: 1}, true, false, false},
		{"no session left", rendezvous.Headroom{Bandwidth: 100 * enter}, true, false, false},
		{"holds it, no session left", rendezvous.Headroom{Bandwidth: full}, true, true, true},
		{"holds it, full", rendezvous.Headroom{Bandwidth: full - 1, Sessions: 5}, true, true, false},
	} {
		if got := headroomEnough(tc.h, tc.told, need, tc.holds); got != tc.want {
			t.Errorf("%s: good enough %v, want %v", tc.name, got, tc.want)
		}
	}
}

// No ping-pong: a relay that moves to a super peer with just enough
// spare for it leaves that super peer good enough for it once it runs
// there, whatever its rate.
func TestHeadroomNoPingPong(t *testing.T) {
	for _, rate := range []float64{0, relayNeedFloor / 2, relayNeedFloor, 10 * relayNeedFloor, 400 * relayNeedFloor} {
		need := max(relayNeedFloor, rate)
		spare := uint64((1 + relayHeadroomMargin) * need)
		if !headroomEnough(rendezvous.Headroom{Bandwidth: spare, Sessions: 1}, true, need, false) {
			t.Fatalf("rate %v: the super peer at the threshold does not take the relay", rate)
		}
		after := rendezvous.Headroom{Bandwidth: spare - uint64(rate), Sessions: 0}
		if !headroomEnough(after, true, need, true) {
			t.Errorf("rate %v B/s: once moved, %d B/s spare is full for the relay that moved", rate, after.Bandwidth)
		}
	}
}

// Why a relay moves: a drain, a full super peer when the other is good
// enough (even a farther one), or a clearly nearer one; nothing else.
func TestWhyMove(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		draining, leftFull bool
		now, better        time.Duration
		want               string
	}{
		{true, false, 10 * ms, 50 * ms, "drains"},
		{false, true, 10 * ms, 50 * ms, "full"},
		{false, false, 50 * ms, 10 * ms, "nearer"},
		{false, false, 50 * ms, 45 * ms, ""},
		{false, false, 10 * ms, 50 * ms, ""},
	} {
		if got := whyMove(tc.draining, tc.leftFull, tc.now, tc.better); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc, got, tc.want)
		}
	}
}
