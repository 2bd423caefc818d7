package natlab

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netsody/superpeer/peer"
)

// Bounds of the rebinding test.
const (
	// rebindChunk is what each echo of the soaking connection carries.
	rebindChunk = 64 << 10
	// rebindNoticed bounds how long after the rebinding the super peer
	// tells B: B's direct path dies within DirectTimeout (3.5 s), its next
	// frame to the super peer (the relay it opens) comes from the new
	// mapping, and the super peer looks again once QUIC has validated it.
	// The keepalive (15 s) would tell it at the latest.
	rebindNoticed = 20 * time.Second
	// rebindHold bounds the whole soak.
	rebindHold = 45 * time.Second
)

// TestE2ERebinding rebinds the NAT in front of a device that holds a
// direct connection to another device behind a port-restricted NAT, while
// data flows: the NAT moves to a new public address and forgets every
// mapping. The connection must survive on the relay, the super peer must
// tell the device its new address, and the two must punch a new direct
// path to it, with every byte echoed intact.
func TestE2ERebinding(t *testing.T) {
	l := newEchoLab(t, "rebind", e2eCase{a: PortDependentFiltering, b: PortDependentFiltering})
	ha, natB, sps, roots, b, readyB := l.ha, l.natB, l.sps, l.roots, l.b, l.readyB
	oldB := readyB.SuperPeers[0].Observed
	a := startDevice(t, ha, e2eDeviceConfig{
		Role: "soak", SuperPeers: sps, RootCAs: roots, Peer: readyB.PeerID,
		Size: rebindChunk, Within: e2eDirectWithin, Hold: rebindHold,
	})
	direct, err := a.wait("direct", 0, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if direct.Path.Addr != oldB {
		t.Fatalf("A's direct path goes to %s, want B's mapping %s", direct.Path.Addr, oldB)
	}
	time.Sleep(500 * time.Millisecond) // a few transfers over the first path

	rebound := time.Now()
	newAddr, err := natB.Rebind()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("B's NAT moved from %s to %s, under A's direct path to %s", netip.MustParseAddrPort(oldB).Addr(), newAddr, oldB)

	// The super peer tells B.
	var told e2eEvent
	for n := 0; ; n++ {
		ev, err := b.wait("superpeer", n, time.Until(rebound.Add(rebindNoticed)))
		if err != nil {
			t.Fatalf("B heard of no new address within %v: %v", rebindNoticed, err)
		}
		if obs, err := netip.ParseAddrPort(ev.SuperPeers[0].Observed); err == nil && obs.Addr() == newAddr {
			told = ev
			break
		}
	}
	noticed := time.Since(rebound)
	t.Logf("the super peer told B it is now %s, %v after the rebinding", told.SuperPeers[0].Observed, noticed.Round(time.Millisecond))

	out, err := a.wait("result", 0, rebindHold+20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	var backAt time.Duration // after the rebinding: A's path direct to B's new mapping
	for _, s := range out.Timeline {
		at := direct.Wall.Add(s.At).Sub(rebound)
		steps = append(steps, fmt.Sprintf("%+v %s", at.Round(time.Millisecond), s.Path))
		if s.Path.Kind == string(peer.PathDirect) && s.Path.Addr == told.SuperPeers[0].Observed && backAt == 0 {
			backAt = at
		}
	}
	t.Logf("A's path, relative to the rebinding: %s", strings.Join(steps, " → "))

	// The path: direct again, to B's new mapping, through a relay between.
	if out.Path.Kind != string(peer.PathDirect) || out.Path.Addr != told.SuperPeers[0].Observed {
		t.Errorf("A's path ends as %s, want direct to B's new mapping %s", out.Path, told.SuperPeers[0].Observed)
	}
	relayed := false
	for _, s := range out.Timeline {
		relayed = relayed || s.Path.Kind == string(peer.PathRelay)
	}
	if !relayed {
		t.Errorf("A never relayed while the direct path was down")
	}
	if backAt > 0 {
		t.Logf("direct again %v after the rebinding", backAt.Round(time.Millisecond))
	}

	// The bytes: every transfer echoed intact, and arrived intact at B.
	if len(out.Transfers) < 3 {
		t.Errorf("%d transfers, want some before, during and after", len(out.Transfers))
	}
	atB := make(map[string]bool)
	for n := range out.Transfers {
		ev, err := b.wait("stream", n, 10*time.Second)
		if err != nil {
			t.Fatalf("B reported %d streams of %d: %v", n, len(out.Transfers), err)
		}
		if ev.Bytes == rebindChunk {
			atB[ev.SHA256] = true
		}
	}
	var longest time.Duration
	for i, tr := range out.Transfers {
		if tr.Bytes != rebindChunk || tr.Echoed != tr.Sent || !atB[tr.Sent] {
			t.Errorf("transfer %d: %d bytes back, echo intact %v, intact at B %v", i+1, tr.Bytes, tr.Echoed == tr.Sent, atB[tr.Sent])
		}
		longest = max(longest, tr.Took)
	}
	t.Logf("%d transfers of %d KiB, all intact; the longest took %v", len(out.Transfers), rebindChunk>>10, longest.Round(time.Millisecond))
}
