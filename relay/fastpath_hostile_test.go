package relay

import (
	"testing"
	"time"

	"github.com/netsody/superpeer/rendezvous"
)

// fpSetup pairs A (HTTP/3, on the fast path once validated) with B
// (HTTP/2).
func fpSetup(t *testing.T, validate bool) (*testServer, *fpDevice, *rawLeg, *rawLeg, FastPathBinding) {
	ts, fpAddr := newFastServer(t, Config{})
	a, b := ts.device(t, rendezvous.TransportH3), ts.device(t, rendezvous.TransportH2)
	la, lb := pairRaw(t, a, b)
	bind := la.bind(t)
	fa := newFPDevice(t, bind, fpAddr)
	if validate {
		fa.validate(t)
	}
	return ts, fa, la, lb, bind
}

// marker has x probe validly and checks that the first packet x gets is
// the CHALLENGE to it: nothing came back for what x sent before.
func marker(t *testing.T, x *fpDevice) {
	t.Helper()
	probe := x.c.AppendProbe(nil)
	x.write(t, probe)
	p := x.nextCtrl(5 * time.Second)
	if p == nil || p[0] != fpChallenge || len(p) > len(probe) || string(p[9:17]) != string(probe[9:17]) {
		t.Fatalf("first packet back %x, want the CHALLENGE to %x", p, probe)
	}
}

func assertNothingRelayed(t *testing.T, l *rawLeg) {
	t.Helper()
	select {
	case p := <-l.data:
		t.Fatalf("the peer's leg got %x", p)
	default:
	}
}

// Every refusal on the fast path is silent, and nothing refused reaches
// the peer.
func TestFastPathRefusalsSilent(t *testing.T) {
	ts, fa, _, lb, bind := fpSetup(t, false)
	x := newFPDevice(t, bind, fa.server) // a stranger who learnt the binding ID
	st := &ts.rl.Stats().FastPath
	big := make([]byte, 1000)
	unknown := bind
	unknown.ID++
	cases := []struct {
		name string
		p    []byte
		why  FastPathDrop
	}{
		{"unknown binding", NewFastPathClient(unknown).AppendData(nil, big), FastPathUnknownBinding},
		{"unvalidated", x.c.AppendData(nil, big), FastPathUnvalidated},
		{"probe with a wrong MAC", func() []byte { p := x.c.AppendProbe(nil); p[len(p)-1] ^= 1; return p }(), FastPathBadMAC},
		{"answer with a forged cookie", forgedAnswer(t, NewFastPathClient(bind)), FastPathBadCookie},
		{"not ours", []byte{0x30, 1, 2, 3, 4, 5, 6, 7, 8, 9}, FastPathMalformed},
		{"a challenge sent to the super peer", append(appendFastPathHeader(nil, fpChallenge, bind.ID), make([]byte, 32)...), FastPathMalformed},
		{"short", []byte{fpData, 1}, FastPathMalformed},
	}
	for _, c := range cases {
		before := st.Dropped(c.why)
		x.write(t, c.p)
		marker(t, x)
		if st.Dropped(c.why) != before+1 {
			t.Errorf("%s: %s drops %d, want %d", c.name, c.why, st.Dropped(c.why), before+1)
		}
	}
	fa.validate(t)
	// From another source than the validated one: small DATA gets nothing
	// (a CHALLENGE would be larger), larger DATA a CHALLENGE no larger.
	before := st.Dropped(FastPathWrongSource)
	x.write(t, x.c.AppendData(nil, []byte{0}))
	marker(t, x)
	time.Sleep(fastPathChallengeInterval) // the limit of unasked challenges
	req := x.c.AppendData(nil, []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23})
	x.write(t, req)
	p := x.nextCtrl(5 * time.Second)
	if p == nil || p[0] != fpChallenge || len(p) > len(req) {
		t.Fatalf("DATA of %d bytes from a new source got %x back, want a CHALLENGE no larger", len(req), p)
	}
	if st.Dropped(FastPathWrongSource) != before+2 {
		t.Fatalf("wrong_source drops %d, want %d", st.Dropped(FastPathWrongSource), before+2)
	}
	assertNothingRelayed(t, lb)
}

// A changed NAT mapping is re-validated before anything goes to or from
// the new source; then the old one is refused.
func TestFastPathRebinding(t *testing.T) {
	ts, fa, _, lb, bind := fpSetup(t, true)
	moved := newFPDevice(t, bind, fa.server) // the same device behind a new mapping
	moved.sendData(t, []byte("\x00first from the new source"))
	p := moved.nextCtrl(5 * time.Second)
	if p == nil || p[0] != fpChallenge {
		t.Fatalf("got %x, want a CHALLENGE", p)
	}
	assertNothingRelayed(t, lb)
	_, answer, err := moved.c.Handle(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	moved.write(t, answer)
	if p := moved.nextCtrl(5 * time.Second); p == nil || p[0] != fpBound {
		t.Fatalf("got %x, want BOUND", p)
	}
	moved.sendData(t, []byte("\x00from the new source"))
	if got := string(lb.recv(t)); got != "\x00from the new source" {
		t.Fatalf("the peer got %q", got)
	}
	lb.sendData([]byte("\x00back"))
	if got := string(moved.recv(t)); got != "\x00back" {
		t.Fatalf("the new source got %q", got)
	}
	before := ts.rl.Stats().FastPath.Dropped(FastPathWrongSource)
	fa.sendData(t, []byte("\x00from the old source"))
	marker(t, moved)
	if ts.rl.Stats().FastPath.Dropped(FastPathWrongSource) != before+1 {
		t.Fatal("DATA from the old source was not refused")
	}
	if n := ts.rl.Stats().FastPath.Rebindings.Load(); n != 1 {
		t.Fatalf("rebindings %d, want 1", n)
	}
}

// DATA from many sources that know the binding ID but not the token
// never reaches the peer, and the CHALLENGEs it draws are rate-limited.
func TestFastPathSpoofedFlood(t *testing.T) {
	ts, fa, _, lb, bind := fpSetup(t, true)
	st := &ts.rl.Stats().FastPath
	chal0 := st.Challenges.Load()
	start := time.Now()
	for range 20 {
		x := newFPDevice(t, bind, fa.server)
		for range 50 {
			x.sendData(t, make([]byte, 1000))
		}
	}
	fa.sendData(t, []byte("\x00marker"))
	if got := string(lb.recv(t)); got != "\x00marker" {
		t.Fatalf("the peer got %q first, want the device's marker", got)
	}
	limit := uint64(time.Since(start)/fastPathChallengeInterval) + 1
	if n := st.Challenges.Load() - chal0; n > limit {
		t.Fatalf("%d challenges drawn by the flood, want at most %d", n, limit)
	}
}

// A binding ends with its leg.
func TestFastPathEndsWithLeg(t *testing.T) {
	ts, fa, la, _, _ := fpSetup(t, true)
	st := &ts.rl.Stats().FastPath
	la.close()
	for i := 0; st.Bindings.Load() != 0; i++ {
		if i == 500 {
			t.Fatal("the binding outlived its leg")
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := st.Dropped(FastPathUnknownBinding)
	fa.sendData(t, []byte("\x00after the end"))
	for i := 0; st.Dropped(FastPathUnknownBinding) == before; i++ {
		if i == 500 {
			t.Fatal("DATA after the leg ended was not refused as unknown")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Without a fast path, or over the table's bound, a request is refused
// on the leg; a leg is answered once.
func TestFastPathRefused(t *testing.T) {
	t.Run("not served", func(t *testing.T) {
		ts := newTestServer(t, Config{})
		a, b := ts.device(t, rendezvous.TransportH2), ts.device(t, rendezvous.TransportH3)
		la, lb := pairRaw(t, a, b)
		if c := la.requestFastPath(t); c.t != CapsuleFastPathRefused {
			t.Fatalf("answer %x %q, want a refusal", c.t, c.v)
		}
		if err := la.writeCapsule(appendCapsule(nil, CapsuleFastPathRequest)); err != nil {
			t.Fatal(err)
		}
		la.sendData([]byte("\x00after"))
		lb.recv(t)
		lb.sendData([]byte("\x00back"))
		la.recv(t)
		if len(la.answers) != 0 {
			t.Fatal("a second request on the leg was answered")
		}
	})
	t.Run("table full", func(t *testing.T) {
		ts, _ := newFastServer(t, Config{MaxFastPathBindings: 1})
		a, b := ts.device(t, rendezvous.TransportH3), ts.device(t, rendezvous.TransportH3)
		la, lb := pairRaw(t, a, b)
		la.bind(t)
		if c := lb.requestFastPath(t); c.t != CapsuleFastPathRefused {
			t.Fatalf("answer %x %q, want a refusal", c.t, c.v)
		}
	})
}

// forgedAnswer is an ANSWER whose MAC is right (whoever sends it holds
// the token) but whose cookie the super peer never gave.
func forgedAnswer(t testing.TB, c *FastPathClient) []byte {
	t.Helper()
	fake := append(appendFastPathHeader(nil, fpChallenge, c.b.ID), make([]byte, fastPathNonceLen+fastPathMACLen)...)
	_, answer, err := c.Handle(fake, nil)
	if err != nil {
		t.Fatal(err)
	}
	return answer
}
