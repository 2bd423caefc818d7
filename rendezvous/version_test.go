package rendezvous

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/sptest"
)

// A device of version 1 announces nothing: it is still served, gets a
// registered it can decode (no extensions), and is not sent FrameObserved
// when its NAT rebinds, while other devices get its new address. A current
// device on the same super peer gets both.
func TestOlderDeviceServed(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{})
	nat := sptest.StartUDPProxy(t, ts.PC.LocalAddr().(*net.UDPAddr).AddrPort(), nil)
	observed := make(chan netip.AddrPort, 4)
	old := ts.dial(t, TransportH3, newIdentity(t), func(c *ClientConfig) {
		c.Addr = nat.Addr().String()
		c.OnObserved = func(ap netip.AddrPort) { observed <- ap }
		c.announce = &protocolV1
	})
	if p := old.Protocol(); p != protocolV1 {
		t.Fatalf("the super peer announced %+v to a version-1 device, which cannot skip extensions", p)
	}
	cur := ts.dial(t, TransportH3, newIdentity(t))
	if p := cur.Protocol(); p != ours {
		t.Fatalf("the super peer announced %+v, want %+v", p, ours)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := old.Introduce(ctx, cur.cfg.Identity.PeerID(), IntroduceOptions{}); err != nil {
		t.Fatal(err)
	}

	moved := nat.Rebind()
	old.Ping()
	deadline := time.Now().Add(5 * time.Second)
	for ts.rv.Stats().Rebindings.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the super peer did not see the rebinding within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Whatever the super peer queued on the rebinding comes before these
	// candidates.
	if _, err := old.Introduce(ctx, cur.cfg.Identity.PeerID(), IntroduceOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case ap := <-observed:
		t.Fatalf("a version-1 device got FrameObserved (%v)", ap)
	default:
	}
	c, err := cur.Introduce(ctx, old.cfg.Identity.PeerID(), IntroduceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Observed != moved[0] {
		t.Errorf("the older device's candidate is %v, want its new mapping %v", c.Observed, moved[0])
	}
}

// A newer device, with a higher version, capabilities this one does not
// know and an extension of its own in its register, is served; the super
// peer answers with its own version and capabilities.
func TestNewerDeviceServed(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{})
	for _, tr := range transports {
		id := newIdentity(t)
		s := ts.openRaw(t, tr, id)
		m := signRegistration(s.binding, id, nil)
		m.Protocol = Protocol{Version: ProtocolVersion + 1, Capabilities: supportedCaps | 1<<40}
		if err := s.writeFrame(withExt(m.frame(), 0x3f, []byte("later"))); err != nil {
			t.Fatal(err)
		}
		f, err := nextFrame(t, s)
		if err != nil || f.typ != FrameRegistered {
			t.Fatalf("%s: got %s, %v; want registered", tr, f.typ, err)
		}
		var r Registered
		if err := r.decode(f.payload); err != nil || r.Protocol != ours {
			t.Fatalf("%s: registered announces %+v (%v), want %+v", tr, r.Protocol, err, ours)
		}
	}
}

// A device below the super peer's oldest version is refused with an error
// that names both versions.
func TestUpgradeRequired(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{lowestVersion: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := Dial(ctx, ClientConfig{Identity: newIdentity(t), URL: ts.H3URL, TLSConfig: &tls.Config{RootCAs: ts.Pool}, announce: &protocolV1})
	var e *Error
	if !errors.As(err, &e) || e.Code != ErrCodeUpgradeRequired || !strings.Contains(e.Message, "versions 2 to 2") || !strings.Contains(e.Message, "speaks 1") {
		t.Fatalf("err = %v, want upgrade required naming the versions", err)
	}
	if n := ts.rv.Stats().Refused[ErrCodeUpgradeRequired].Load(); n != 1 {
		t.Errorf("%d refusals counted, want 1", n)
	}
	ts.dial(t, TransportH3, newIdentity(t)) // a current device is served
}

// The device skips unknown frame types and extensions it does not know,
// and ends the session on a known frame it cannot decode.
func TestClientFramePolicy(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{})
	cands := make(chan Candidates, 1)
	s := ts.dial(t, TransportH2, newIdentity(t), func(c *ClientConfig) { c.OnCandidates = func(m Candidates) { cands <- m } })
	want := Candidates{Peer: newIdentity(t).PeerID(), Observed: netip.MustParseAddrPort("192.0.2.1:1")}
	f := withExt(want.frame(), 0x3f, []byte("later"))
	if err := s.handle(frame{typ: FrameCandidates, payload: f[frameHeaderLen:]}); err != nil {
		t.Fatalf("candidates with an extension: %v", err)
	}
	if got := <-cands; got.Peer != want.Peer || got.Observed != want.Observed {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if err := s.handle(frame{typ: 0x7f, payload: []byte("later")}); err != nil {
		t.Errorf("an unknown frame type: %v, want it skipped", err)
	}
	if err := s.handle(frame{typ: FramePing, payload: []byte{1}}); !errors.Is(err, errMalformed) {
		t.Errorf("a truncated ping: %v, want malformed", err)
	}
	if err := s.handle(frame{typ: FrameConnect, payload: (&Connect{}).frame()[frameHeaderLen:]}); !errors.Is(err, errMalformed) {
		t.Errorf("a device's frame from the super peer: %v, want malformed", err)
	}
}
