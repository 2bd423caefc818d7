package natlab

import (
	"bytes"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/netsody/superpeer/peer"
	"github.com/netsody/superpeer/rendezvous"
)

// e2eRecord makes TestE2E write its results table into docs/NAT.md:
//
//	sudo NETSODY_NATLAB=1 go test -race -count=1 -run E2E ./internal/natlab/ -e2e.record
var e2eRecord = flag.Bool("e2e.record", false, "write TestE2E's results table into docs/NAT.md")

// Bounds and sizes of the end-to-end matrix.
const (
	// e2eSize is what each transfer echoes through the connection.
	e2eSize = 1 << 20
	// e2eDirectWithin is how long after the dial a direct row may take to
	// go direct. Devices try each candidate 5 times within 750 ms after
	// the super peer sends candidates, which it does as the dial begins,
	// and again at every relay check (10 s).
	e2eDirectWithin = 5 * time.Second
	// e2eRelaySettle is how long after the dial a relay row is watched
	// before its second transfer: past every candidate's tries (750 ms)
	// and fast pinging (3 s), so that a direct path that should not exist
	// would have shown.
	e2eRelaySettle = 4 * time.Second
	// e2eFirstByteMax bounds the first echoed byte after the dial in every
	// row: the relay is opened at once, so nothing waits for punching to
	// give up.
	e2eFirstByteMax = 2 * time.Second
	// e2eFarDelay is the one-way delay in front of the far super peer:
	// 80 ms more round trip than the near one.
	e2eFarDelay = 40 * time.Millisecond
)

// e2eCase is one row of the matrix in the issue: where devices A (who
// dials) and B (who echoes) sit, and the path they must end up on.
type e2eCase struct {
	name    string
	a, b    NATKind // 0: a public host, no NAT
	sameNAT bool    // A and B behind one PortDependentFiltering NAT
	twoSPs  bool    // both super peers, the far one listed first by A
	// nearFull: the nearer super peer's relay is full (e2e_headroom_test.go),
	// so the relay goes via the farther one.
	nearFull bool

	want       peer.PathKind
	transportA string // relay: the transport of A's relay leg
	transportB string // relay: the transport of B's relay leg
	// relayA and relayB are how each side's relayed packets travel at the
	// end (peer.Path.Relay): "fast" where the fast path's UDP port is
	// reachable, else the leg's transport. blockFast drops UDP to the
	// super peers' fast-path port at both NATs (e2e_fast_test.go).
	relayA, relayB string
	blockFast      bool
}

var e2eCases = []e2eCase{
	{name: "EI-EI", a: EndpointIndependent, b: EndpointIndependent, want: peer.PathDirect},
	{name: "EI-PDF", a: EndpointIndependent, b: PortDependentFiltering, want: peer.PathDirect},
	{name: "EI-Sym", a: EndpointIndependent, b: Symmetric, want: peer.PathDirect},
	{name: "PDF-PDF", a: PortDependentFiltering, b: PortDependentFiltering, want: peer.PathDirect},
	{name: "PDF-Sym", a: PortDependentFiltering, b: Symmetric, want: peer.PathRelay, transportA: "h3", transportB: "h3", relayA: "fast", relayB: "fast"},
	{name: "Sym-Sym", a: Symmetric, b: Symmetric, want: peer.PathRelay, transportA: "h3", transportB: "h3", relayA: "fast", relayB: "fast"},
	{name: "Blocked-EI", a: UDPBlocked, b: EndpointIndependent, want: peer.PathRelay, transportA: "h2", transportB: "h3", relayA: "h2", relayB: "fast"},
	{name: "Sym-Blocked", a: Symmetric, b: UDPBlocked, want: peer.PathRelay, transportA: "h3", transportB: "h2", relayA: "fast", relayB: "h2"},
	{name: "Blocked-Blocked", a: UDPBlocked, b: UDPBlocked, want: peer.PathRelay, transportA: "h2", transportB: "h2", relayA: "h2", relayB: "h2"},
	{name: "SameNAT", a: PortDependentFiltering, b: PortDependentFiltering, sameNAT: true, want: peer.PathDirect},
	{name: "Public-Sym", a: 0, b: Symmetric, want: peer.PathDirect},
	{name: "TwoSPs-Sym-Sym", a: Symmetric, b: Symmetric, twoSPs: true, want: peer.PathRelay, transportA: "h3", transportB: "h3", relayA: "fast", relayB: "fast"},
	{name: "Sym-Sym-FastBlocked", a: Symmetric, b: Symmetric, blockFast: true, want: peer.PathRelay, transportA: "h3", transportB: "h3", relayA: "h3", relayB: "h3"},
}

// wantMapping is the mapping a device behind k must learn (docs/NAT.md,
// "NAT mapping"): a NAT that keeps one mapping for every destination, or
// none at all, is endpoint-independent; a symmetric one maps per
// destination; behind a blocked UDP nothing answers.
func wantMapping(k NATKind) rendezvous.NATMapping {
	switch k {
	case Symmetric:
		return rendezvous.MappingDependent
	case UDPBlocked:
		return rendezvous.MappingUnknown
	}
	return rendezvous.MappingIndependent
}

// bothDependent reports a row whose devices both map per destination:
// they relay without a punching phase.
func (tc e2eCase) bothDependent() bool {
	return wantMapping(tc.a) == rendezvous.MappingDependent && wantMapping(tc.b) == rendezvous.MappingDependent
}

func sideName(k NATKind) string {
	if k == 0 {
		return "public (no NAT)"
	}
	return k.String()
}

func (tc e2eCase) expected() string {
	switch {
	case tc.sameNAT:
		return "direct over LAN addresses"
	case tc.want == peer.PathDirect:
		return "direct"
	case tc.nearFull:
		return "relay " + tc.transportA + " via the farther super peer (the nearer is full)"
	case tc.twoSPs:
		return "relay " + tc.transportA + " via the nearer super peer" + tc.expectedRelay()
	case tc.transportA == tc.transportB && tc.bothDependent():
		return "relay " + tc.transportA + tc.expectedRelay() + ", no punching"
	case tc.transportA == tc.transportB:
		return "relay " + tc.transportA + tc.expectedRelay()
	}
	return fmt.Sprintf("relay %s (A) / %s (B)", tc.transportA, tc.transportB) + tc.expectedRelay()
}

// expectedRelay says how the relayed packets must travel at the end.
func (tc e2eCase) expectedRelay() string {
	if tc.relayA == tc.relayB {
		return ", packets " + tc.relayA
	}
	return fmt.Sprintf(", packets %s (A) / %s (B)", tc.relayA, tc.relayB)
}

// e2eResult is one row of the results table.
type e2eResult struct {
	tc         e2eCase
	pathA      e2ePath
	pathB      e2ePath
	shaOK      bool
	registered time.Duration // A: process start to registered
	firstByte  time.Duration // A: dial to the first echoed byte
	finalAt    time.Duration // A: dial to the last path change
	mappingA   string        // what each learned of its NAT
	mappingB   string
	ran, pass  bool
}

// TestE2E runs the path matrix of the issue end to end: real Caddy super
// peers on public hosts, device processes behind real NATs, and for each
// row a connection from A to B carrying two 1 MiB echoes, checked with
// SHA-256 at B and back at A, the first at once (its first echoed byte is
// the time to first byte), the second over the path the row settled on.
// The matrix runs over IPv4, then over IPv6 (NAT66): devices with an IPv6
// socket only, super peers reached at their IPv6 address.
func TestE2E(t *testing.T) {
	lab := NewForTest(t, Options{Name: "e2e"})
	if ok, err := lab.IPv6(); !ok {
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("the IPv6 half of the matrix needs IPv6 in the lab: %v (%s=1 requires it)", err, EnvRequire)
		}
		t.Skipf("the IPv6 half of the matrix needs IPv6 in the lab: %v (set %s=1 to make this a failure)", err, EnvRequire)
	}
	bin := e2eCaddyBinary(t, t.TempDir())

	began := time.Now()
	near, far := startTwoSuperPeers(t, lab, bin, "netsody_superpeer")
	t.Logf("two Caddy super peers ready in %v: near %s, far %s (+%v each way)", time.Since(began).Round(time.Millisecond), near.url, far.url, e2eFarDelay)

	var tables []string
	for f, v6 := range []bool{false, true} {
		results := make([]e2eResult, len(e2eCases))
		t.Run(familyName(v6), func(t *testing.T) {
			for i, tc := range e2eCases {
				results[i].tc = tc
				t.Run(tc.name, func(t *testing.T) {
					runE2ECase(t, lab, f*len(e2eCases)+i, v6, near, far, &results[i])
				})
			}
		})
		table := e2eTable(results)
		t.Logf("results over %s:\n%s", familyName(v6), table)
		tables = append(tables, "Over "+familyName(v6)+":\n\n"+table)
	}
	if *e2eRecord {
		recordE2E(t, strings.Join(tables, "\n"))
	}
}

// runE2ECase builds one row's devices (nodes numbered i), runs the
// transfer over IPv4 or IPv6 and checks it, filling in res.
func runE2ECase(t *testing.T, lab *Lab, i int, v6 bool, near, far *labSuperPeer, res *e2eResult) {
	tc := res.tc
	res.ran = true
	ha, hb, natA, natB := buildE2ECase(t, lab, i, tc)
	if tc.blockFast {
		blockFastPath(t, natA, natB)
	}

	// Where each device must see the other on a direct path: the NAT's
	// public address, the public host's, or the LAN address behind a
	// shared NAT.
	seenAt := func(h *Host, n *NAT) netip.Addr {
		if n == nil || tc.sameNAT {
			return ip(h, v6)
		}
		return ip(n.Router(), v6)
	}
	addrOfA, addrOfB := seenAt(ha, natA), seenAt(hb, natB)

	roots := []string{near.rootFile()}
	nearURL, farURL := near.urlFor(v6), far.urlFor(v6)
	spsA, spsB := []string{nearURL}, []string{nearURL}
	if tc.twoSPs {
		roots = append(roots, far.rootFile())
		spsA = []string{farURL, nearURL} // the far one first: order must not matter
		spsB = []string{nearURL, farURL}
	}
	listen := "0.0.0.0:0"
	if v6 {
		listen = "[::]:0"
	}

	b := startDevice(t, hb, e2eDeviceConfig{Role: "echo", Listen: listen, SuperPeers: spsB, RootCAs: roots})
	readyB, err := b.wait("ready", 0, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cfgA := e2eDeviceConfig{
		Role:       "dial",
		Listen:     listen,
		SuperPeers: spsA,
		RootCAs:    roots,
		Peer:       readyB.PeerID,
		Size:       e2eSize,
		Want:       string(tc.want),
		Within:     e2eDirectWithin,
	}
	if tc.want == peer.PathRelay {
		cfgA.Within, cfgA.Settle = e2eRelaySettle, e2eRelaySettle
	}
	a := startDevice(t, ha, cfgA)
	readyA, err := a.wait("ready", 0, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	res.registered = readyA.Registered
	out, err := a.wait("result", 0, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var streams []e2eEvent
	for n := range 2 {
		ev, err := b.wait("stream", n, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, ev)
	}

	// What A and B report.
	res.pathA = out.Path
	res.pathB = streams[1].Path
	for _, s := range streams {
		if len(out.Transfers) == 2 && s.SHA256 == out.Transfers[1].Sent {
			res.pathB = s.Path // B's path after the second transfer
		}
	}
	if len(out.Transfers) > 0 {
		res.firstByte = out.Transfers[0].FirstByte
	}
	if n := len(out.Timeline); n > 0 {
		res.finalAt = out.Timeline[n-1].At
	}
	var steps []string
	for _, s := range out.Timeline {
		steps = append(steps, fmt.Sprintf("%v %s", s.At.Round(time.Millisecond), s.Path))
	}
	t.Logf("A %s registered in %v (%s); dial returned after %v; A's path: %s", ha.Name(), readyA.Registered.Round(time.Millisecond), transports(readyA.SuperPeers), out.Dialed.Round(time.Millisecond), strings.Join(steps, " → "))
	for i, tr := range out.Transfers {
		t.Logf("transfer %d: started %v, first byte %v, took %v, %d bytes echoed", i+1, tr.Start.Round(time.Millisecond), tr.FirstByte.Round(time.Millisecond), tr.Took.Round(time.Millisecond), tr.Bytes)
	}

	// The bytes: intact at B (the far end) and back at A.
	res.shaOK = true
	for i, tr := range out.Transfers {
		atB := false
		for _, s := range streams {
			atB = atB || (s.SHA256 == tr.Sent && s.Bytes == e2eSize)
		}
		if !atB || tr.Echoed != tr.Sent || tr.Bytes != e2eSize {
			res.shaOK = false
			t.Errorf("transfer %d: SHA-256 at B matches: %v; echo back at A: %d bytes, SHA-256 matches: %v", i+1, atB, tr.Bytes, tr.Echoed == tr.Sent)
		}
	}

	// The time to first byte.
	if res.firstByte <= 0 || res.firstByte > e2eFirstByteMax {
		t.Errorf("first echoed byte after %v, want within %v", res.firstByte, e2eFirstByteMax)
	}

	// What each learned of its NAT's mapping.
	res.mappingA, res.mappingB = readyA.NAT.Mapping, readyB.NAT.Mapping
	for _, side := range []struct {
		name string
		kind NATKind
		got  peer.MappingStatus
	}{{"A", tc.a, readyA.NAT}, {"B", tc.b, readyB.NAT}} {
		if want := wantMapping(side.kind).String(); side.got.Mapping != want {
			t.Errorf("%s (%s) learned mapping %s, want %s: %+v", side.name, sideName(side.kind), side.got.Mapping, want, side.got.Views)
		}
	}

	// The sessions with the super peers: over HTTP/3 unless UDP is blocked.
	for _, side := range []struct {
		name  string
		kind  NATKind
		ready e2eEvent
	}{{"A", tc.a, readyA}, {"B", tc.b, readyB}} {
		want := "h3"
		if side.kind == UDPBlocked {
			want = "h2"
		}
		for _, sp := range side.ready.SuperPeers {
			if sp.Transport != want {
				t.Errorf("%s's session with %s is over %q, want %s", side.name, sp.URL, sp.Transport, want)
			}
		}
	}

	// The path each side reports.
	checkPath := func(who string, p e2ePath, peerAddr netip.Addr, transport, relay string) {
		t.Helper()
		if p.Kind != string(tc.want) {
			t.Errorf("%s's path is %s, want %s", who, p, tc.expected())
			return
		}
		switch tc.want {
		case peer.PathDirect:
			ap, err := netip.ParseAddrPort(p.Addr)
			if err != nil || ap.Addr() != peerAddr {
				t.Errorf("%s's direct path goes to %s, want the other device at %s", who, p.Addr, peerAddr)
			}
			if tc.sameNAT {
				lan := natA.LANPrefix()
				if v6 {
					lan = natA.LANPrefix6()
				}
				if err != nil || !lan.Contains(ap.Addr()) {
					t.Errorf("%s's direct path goes to %s, not a LAN address (%s)", who, p.Addr, lan)
				}
			}
		case peer.PathRelay:
			if p.Transport != transport {
				t.Errorf("%s's relay leg is over %q, want %s", who, p.Transport, transport)
			}
			if p.Relay != relay {
				t.Errorf("%s's relayed packets travel on %q, want %s", who, p.Relay, relay)
			}
			if tc.twoSPs && !tc.nearFull && p.SuperPeer != nearURL {
				t.Errorf("%s relays via %s, want the nearer %s", who, p.SuperPeer, nearURL)
			}
			if tc.nearFull && p.SuperPeer != farURL {
				t.Errorf("%s relays via %s, want the farther %s: the nearer is full", who, p.SuperPeer, farURL)
			}
			if both := p.Reason == peer.PathReasonBothDependent; both != tc.bothDependent() {
				t.Errorf("%s's relay reason is %q; both NATs map per destination: %v", who, p.Reason, tc.bothDependent())
			}
		}
	}
	checkPath("A", res.pathA, addrOfB, tc.transportA, tc.relayA)
	checkPath("B", res.pathB, addrOfA, tc.transportB, tc.relayB)

	// Reached, and kept: no change while the second transfer ran; a relay
	// row never went direct.
	if len(out.Transfers) == 2 && res.finalAt > out.Transfers[1].Start {
		t.Errorf("path changed at %v, during the second transfer (from %v)", res.finalAt, out.Transfers[1].Start)
	}
	if tc.want == peer.PathRelay {
		for _, s := range out.Timeline {
			if s.Path.Kind == string(peer.PathDirect) {
				t.Errorf("A went direct (%s) at %v in a row that cannot", s.Path, s.At)
			}
		}
	}
	res.pass = !t.Failed()
}

// buildE2ECase adds the row's NATs and device hosts; row i names its
// nodes "r<i>…".
func buildE2ECase(t *testing.T, lab *Lab, i int, tc e2eCase) (ha, hb *Host, natA, natB *NAT) {
	t.Helper()
	side := func(who string, kind NATKind) (*Host, *NAT) {
		name := fmt.Sprintf("r%d%s", i, who)
		if kind == 0 {
			h, err := lab.AddPublicHost(name)
			if err != nil {
				t.Fatal(err)
			}
			return h, nil
		}
		n, err := lab.AddNAT(name+"nat", kind)
		if err != nil {
			t.Fatal(err)
		}
		h, err := n.AddDevice(name)
		if err != nil {
			t.Fatal(err)
		}
		return h, n
	}
	if tc.sameNAT {
		n, err := lab.AddNAT(fmt.Sprintf("r%dnat", i), tc.a)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range []**Host{&ha, &hb} {
			name := fmt.Sprintf("r%da", i)
			if h == &hb {
				name = fmt.Sprintf("r%db", i)
			}
			if *h, err = n.AddDevice(name); err != nil {
				t.Fatal(err)
			}
		}
		return ha, hb, n, n
	}
	ha, natA = side("a", tc.a)
	hb, natB = side("b", tc.b)
	return ha, hb, natA, natB
}

func transports(sps []peer.SuperPeerStatus) string {
	var s []string
	for _, sp := range sps {
		s = append(s, fmt.Sprintf("%s over %s, RTT %.1f ms", strings.TrimPrefix(sp.URL, "https://"), sp.Transport, sp.RTTMillis))
	}
	return strings.Join(s, "; ")
}

// e2eTable formats the results as a Markdown table.
func e2eTable(results []e2eResult) string {
	ms := func(d time.Duration) string {
		if d <= 0 {
			return "—"
		}
		return fmt.Sprintf("%d ms", d.Round(time.Millisecond).Milliseconds())
	}
	var b strings.Builder
	b.WriteString("| device A | device B | expected | A's path | B's path | SHA-256 | first byte | final path at | A registered | mapping A / B | result |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		a, bb := sideName(r.tc.a), sideName(r.tc.b)
		if r.tc.sameNAT {
			a, bb = "same NAT ("+a+")", "same NAT ("+bb+")"
		}
		if r.tc.twoSPs {
			a, bb = a+", far super peer listed first", bb+", near listed first"
		}
		if r.tc.blockFast {
			a, bb = a+", fast-path port blocked", bb+", fast-path port blocked"
		}
		verdict, sha := "not run", "—"
		if r.ran {
			verdict = "FAIL"
			if r.pass {
				verdict = "pass"
			}
			sha = "mismatch"
			if r.shaOK {
				sha = "ok (2 × 1 MiB)"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s |\n",
			a, bb, r.tc.expected(), r.pathA, r.pathB, sha, ms(r.firstByte), ms(r.finalAt), ms(r.registered), dashIfEmpty(r.mappingA), dashIfEmpty(r.mappingB), verdict)
	}
	return b.String()
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// Markers around the generated part of docs/NAT.md's results section.
const (
	e2eBegin = "<!-- TestE2E results: begin -->"
	e2eEnd   = "<!-- TestE2E results: end -->"
)

// recordE2E writes the table between the markers in docs/NAT.md.
func recordE2E(t *testing.T, table string) {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(here), "..", "..", "docs", "NAT.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i, j := bytes.Index(doc, []byte(e2eBegin)), bytes.Index(doc, []byte(e2eEnd))
	if i < 0 || j < i {
		t.Fatalf("%s has no %q … %q markers", path, e2eBegin, e2eEnd)
	}
	var b bytes.Buffer
	b.Write(doc[:i+len(e2eBegin)])
	race := ""
	if e2eRace {
		race = ", -race"
	}
	fmt.Fprintf(&b, "\n\nRecorded %s by `TestE2E` (%s, %s/%s, %d CPUs%s).\n\n%s\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), race, table)
	b.Write(doc[j:])
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("results recorded in %s", path)
}
