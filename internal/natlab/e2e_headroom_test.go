package natlab

import (
	"fmt"
	"testing"
	"time"

	"github.com/netsody/superpeer/peer"
)

// e2eFullRate and e2eFullBurst are the nearer super peer's total relay
// budget in TestE2EHeadroom, bytes per second and bytes: under what a
// device takes any relay to need (1 Mbit/s, peer's relayNeedFloor), so
// its headroom is too small for every relay, as when its budget is
// spent; and a burst too small to carry a row's transfer, so that a
// relay there would crawl (2 MiB at 50 kB/s: 40 s).
const (
	e2eFullRate  = 50_000
	e2eFullBurst = "64KiB"
)

// e2eHeadroomCase is the two-super-peer row with the nearer one full.
var e2eHeadroomCase = e2eCase{name: "TwoSPs-NearFull-Sym-Sym", a: Symmetric, b: Symmetric, twoSPs: true, nearFull: true,
	want: peer.PathRelay, transportA: "h3", transportB: "h3", relayA: "fast", relayB: "fast"}

// TestE2EHeadroom is the two-super-peer row of TestE2E with the nearer
// super peer full: its relay budget (total_rate) is below what a relay
// needs, so it tells devices no headroom (FrameHeadroom), and the relay
// goes through the farther one, good enough and 80 ms further, instead
// of being throttled at the nearer one. Real Caddy processes, devices
// behind symmetric NATs, over IPv4:
//
//	sudo NETSODY_NATLAB=1 go test -race -count=1 -run E2EHeadroom ./internal/natlab/
func TestE2EHeadroom(t *testing.T) {
	lab := NewForTest(t, Options{Name: "e2ehr"})
	bin := e2eCaddyBinary(t, t.TempDir())
	full := fmt.Sprintf("netsody_superpeer {\n\t\trelay {\n\t\t\ttotal_rate %d %s\n\t\t}\n\t}", e2eFullRate, e2eFullBurst)
	began := time.Now()
	near, far := startTwoSuperPeers(t, lab, bin, full)
	t.Logf("two Caddy super peers ready in %v: near %s (total_rate %d B/s, burst %s), far %s (+%v each way)",
		time.Since(began).Round(time.Millisecond), near.url, e2eFullRate, e2eFullBurst, far.url, e2eFarDelay)
	var res e2eResult
	res.tc = e2eHeadroomCase
	runE2ECase(t, lab, 0, false, near, far, &res)
	t.Logf("result:\n%s", e2eTable([]e2eResult{res}))
}
