package rendezvous

import (
	"context"
	"testing"
	"time"
)

// A device that announced CapMapping learns the super peer's STUN port
// at registration, and its FrameMapping reaches the peers introduced to
// it that announced CapMapping too, in both directions; a device that
// did not announce it learns neither, and a peer that sent nothing is
// unknown.
func TestMappingTravelsWithIntroductions(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{STUNPort: 3478})
	older := Protocol{Version: ProtocolVersion, Capabilities: supportedCaps &^ CapMapping}
	type device struct {
		s     *Session
		cands chan Candidates
	}
	dial := func(tr Transport, announce *Protocol) device {
		d := device{cands: make(chan Candidates, 4)}
		d.s = ts.dial(t, tr, newIdentity(t), func(c *ClientConfig) {
			c.OnCandidates = func(m Candidates) { d.cands <- m }
			c.announce = announce
		})
		return d
	}
	dep, indep, old := dial(TransportH3, nil), dial(TransportH2, nil), dial(TransportH3, &older)
	for _, d := range []device{dep, indep} {
		if p := d.s.STUNPort(); p != 3478 {
			t.Fatalf("STUN port %d at registration, want 3478", p)
		}
	}
	if p := old.s.STUNPort(); p != 0 {
		t.Fatalf("a device without CapMapping was told STUN port %d", p)
	}
	for d, m := range map[*Session]Mapping{dep.s: {Mapping: MappingDependent}, indep.s: {Mapping: MappingIndependent, Filtering: FilteringAddressDependent}} {
		if err := d.SetMapping(m); err != nil {
			t.Fatal(err)
		}
		waitTaken(t, ts, d, m)
	}
	introduce := func(from, to device) (asker, target Candidates) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := from.s.Introduce(ctx, to.s.cfg.Identity.PeerID(), IntroduceOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range []chan Candidates{from.cands, to.cands} {
			select {
			case target = <-ch: // OnCandidates sees the asker's too
			case <-ctx.Done():
				t.Fatal("the devices were not introduced")
			}
		}
		return c, target
	}
	toDep, toIndep := introduce(dep, indep)
	if toDep.PeerNAT != (Mapping{Mapping: MappingIndependent, Filtering: FilteringAddressDependent}) || toIndep.PeerNAT != (Mapping{Mapping: MappingDependent}) {
		t.Fatalf("the peers' mappings: %+v to the asker, %+v to the target", toDep.PeerNAT, toIndep.PeerNAT)
	}
	toOld, toDep2 := introduce(old, dep)
	if toOld.PeerNAT != (Mapping{}) || toDep2.PeerNAT != (Mapping{}) {
		t.Fatalf("with a device without CapMapping: %+v to it, %+v from it (it sent none)", toOld.PeerNAT, toDep2.PeerNAT)
	}
}

// waitTaken waits until the super peer keeps want as s's mapping.
func waitTaken(t *testing.T, ts *testServer, s *Session, want Mapping) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if sess := ts.rv.lookup(s.cfg.Identity.PeerID()); sess != nil && sess.candidates().PeerNAT == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the super peer does not keep %+v", want)
		}
	}
}

// Mapping frames count against the addrs bucket: one over it is ignored
// and answered with ErrCodeRateLimited, and the mapping the super peer
// keeps is the last one it took.
func TestMappingRateLimited(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{AddrsRate: 0.001, AddrsBurst: 1})
	s := ts.dial(t, TransportH3, newIdentity(t))
	for _, m := range []NATMapping{MappingIndependent, MappingDependent} {
		if err := s.SetMapping(Mapping{Mapping: m}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for ts.rv.Stats().AddrsLimited.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the second mapping frame was not limited")
		}
		time.Sleep(5 * time.Millisecond)
	}
	sess := ts.rv.lookup(s.cfg.Identity.PeerID())
	if sess == nil {
		t.Fatal("no session")
	}
	if got := sess.candidates().PeerNAT; got != (Mapping{Mapping: MappingIndependent}) {
		t.Fatalf("the super peer keeps %+v, want the first frame's", got)
	}
}
