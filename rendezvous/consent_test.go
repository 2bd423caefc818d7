package rendezvous

import (
	"errors"
	"testing"
)

// A device announces CapConsent exactly when it has OnRequest, which the
// session calls for each FrameRequest; Answer needs a super peer that
// announced CapConsent.
func TestConsentAPI(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{})
	requests := make(chan Request, 1)
	asked := ts.dial(t, TransportH2, newIdentity(t), func(c *ClientConfig) { c.OnRequest = func(r Request) { requests <- r } })
	plain := ts.dial(t, TransportH2, newIdentity(t))
	if !ts.rv.lookup(asked.cfg.Identity.PeerID()).proto.Capabilities.Has(CapConsent) {
		t.Error("a device with OnRequest did not announce CapConsent")
	}
	if ts.rv.lookup(plain.cfg.Identity.PeerID()).proto.Capabilities.Has(CapConsent) {
		t.Error("a device without OnRequest announced CapConsent")
	}
	if !asked.Protocol().Capabilities.Has(CapConsent) {
		t.Fatalf("the super peer announced %+v, without CapConsent", asked.Protocol())
	}

	want := Request{Peer: plain.cfg.Identity.PeerID(), Relay: true}
	f := want.frame()
	if err := asked.handle(frame{typ: FrameRequest, payload: f[frameHeaderLen:]}); err != nil {
		t.Fatal(err)
	}
	if got := <-requests; got != want {
		t.Errorf("OnRequest got %+v, want %+v", got, want)
	}
	if err := plain.handle(frame{typ: FrameRequest, payload: f[frameHeaderLen:]}); err != nil {
		t.Errorf("a request to a device without OnRequest: %v, want it ignored", err)
	}
	if err := asked.Answer(want.Peer, false); err != nil {
		t.Errorf("Answer: %v", err)
	}
	if err := asked.handle(frame{typ: FrameAnswer, payload: (&Answer{Peer: want.Peer}).frame()[frameHeaderLen:]}); !errors.Is(err, errMalformed) {
		t.Errorf("an answer from the super peer: %v, want malformed", err)
	}

	old := &Session{cfg: asked.cfg, registered: Registered{Protocol: protocolV1}}
	if err := old.Answer(want.Peer, true); !errors.Is(err, ErrNoConsent) {
		t.Errorf("Answer to a super peer without CapConsent: %v, want ErrNoConsent", err)
	}
}
