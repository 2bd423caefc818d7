package peer

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netsody/superpeer"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/internal/stuntest"
	"github.com/netsody/superpeer/rendezvous"
	"github.com/netsody/superpeer/stun"
)

func TestClassifyMapping(t *testing.T) {
	v := func(dest, mapped string) MappingView {
		return MappingView{Dest: netip.MustParseAddrPort(dest), Mapped: netip.MustParseAddrPort(mapped)}
	}
	const (
		sp443  = "203.0.113.10:443"
		sp3478 = "203.0.113.10:3478"
		sp2    = "203.0.113.11:443"
		me     = "198.51.100.10:4000"
		other  = "198.51.100.10:4001"
	)
	for _, tc := range []struct {
		name  string
		views []MappingView
		want  rendezvous.NATMapping
	}{
		{"nothing (UDP blocked)", nil, rendezvous.MappingUnknown},
		{"one super peer without STUN", []MappingView{v(sp443, me)}, rendezvous.MappingUnknown},
		{"one destination twice", []MappingView{v(sp443, me), v(sp443, other)}, rendezvous.MappingUnknown},
		{"STUN and 443 agree", []MappingView{v(sp443, me), v(sp3478, me)}, rendezvous.MappingIndependent},
		{"STUN and 443 differ", []MappingView{v(sp443, me), v(sp3478, other)}, rendezvous.MappingDependent},
		{"two super peers agree", []MappingView{v(sp443, me), v(sp2, me)}, rendezvous.MappingIndependent},
		{"two super peers differ", []MappingView{v(sp443, me), v(sp2, other)}, rendezvous.MappingDependent},
		{"two agree, a third differs", []MappingView{v(sp443, me), v(sp2, me), v(sp3478, other)}, rendezvous.MappingDependent},
		{"families apart: one IPv4 view, one IPv6", []MappingView{v(sp443, me), v("[2001:db8::1]:443", "[2001:db8::2]:4000")}, rendezvous.MappingUnknown},
		{"IPv6 independent, IPv4 dependent", []MappingView{
			v(sp443, me), v(sp3478, other),
			v("[2001:db8::1]:443", "[2001:db8::2]:4000"), v("[2001:db8::1]:3478", "[2001:db8::2]:4000"),
		}, rendezvous.MappingDependent},
		{"IPv6 independent, IPv4 unknown", []MappingView{
			v("[2001:db8::1]:443", "[2001:db8::2]:4000"), v("[2001:db8::1]:3478", "[2001:db8::2]:4000"),
		}, rendezvous.MappingIndependent},
		{"a view without a mapped address", []MappingView{v(sp443, me), {Dest: netip.MustParseAddrPort(sp3478)}}, rendezvous.MappingUnknown},
	} {
		if got := classifyMapping(tc.views); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// superPeerWithSTUN is newSuperPeer naming a STUN server in its
// registrations.
func superPeerWithSTUN(t testing.TB, o stuntest.Options) *sptest.Servers {
	t.Helper()
	var cfg superpeer.Config
	cfg.Rendezvous.STUNPort = stuntest.Serve(t, o)
	s, _ := newSuperPeer(t, cfg)
	return s
}

// waitMapping waits until the device's verdict is want.
func waitMapping(t testing.TB, d *Device, want rendezvous.NATMapping) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); d.mapping.mapping() != want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("mapping %s, want %s: %+v", d.mapping.mapping(), want, d.Status().NAT)
		}
	}
}

// A device on loopback, seen at one address by the super peer's HTTP/3
// session and its STUN port, learns that its mapping is
// endpoint-independent on its own once its session is up, shows it in
// its status, and tells the super peer, which passes it on to the peers
// it introduces.
func TestMappingLearnedAndTold(t *testing.T) {
	s := superPeerWithSTUN(t, stuntest.Options{})
	a, b := newDevice(t, s, allowAny), newDevice(t, s, allowAny)
	waitMapping(t, a, rendezvous.MappingIndependent)
	waitMapping(t, b, rendezvous.MappingIndependent)
	st := a.Status()
	if st.NAT.Mapping != "endpoint-independent" || len(st.NAT.Views) != 2 || st.NAT.STUNAnswers == 0 {
		t.Fatalf("status: %+v", st.NAT)
	}
	sps := st.SuperPeers[0]
	if sps.STUNPort == 0 || sps.STUNObserved != sps.Observed || sps.STUNObserved != a.LocalAddr().String() {
		t.Fatalf("super peer status %+v, device at %s", sps, a.LocalAddr())
	}
	echo(t, b)
	c := dial(t, a, b)
	waitPath(t, c, PathDirect, 5*time.Second)
	p := b.peer(a.PeerID(), false)
	if p == nil {
		t.Fatal("b has no state for a")
	}
	p.mu.Lock()
	peerNAT, slow := p.punch.peerNAT, p.punch.slow
	p.mu.Unlock()
	if peerNAT != rendezvous.MappingIndependent || slow {
		t.Fatalf("b holds a's mapping as %s (slow %v), want endpoint-independent", peerNAT, slow)
	}
}

// Two devices whose NATs both map per destination go to the relay
// without a punching phase: no address is pinged while the slow
// background punch waits, and the path says why.
func TestBothDependentSkipPunching(t *testing.T) {
	s := superPeerWithSTUN(t, stuntest.Options{Shift: 1}) // STUN sees another port than 443 does
	a, b := newDevice(t, s, allowAny), newDevice(t, s, allowAny)
	waitMapping(t, a, rendezvous.MappingDependent)
	waitMapping(t, b, rendezvous.MappingDependent)
	echo(t, b)
	c := dial(t, a, b)
	waitPath(t, c, PathRelay, 10*time.Second)
	roundTrip(t, c, "relayed")
	if r := c.Path().Reason; r != PathReasonBothDependent {
		t.Fatalf("path %s, want the reason %q", c.Path(), PathReasonBothDependent)
	}
	time.Sleep(time.Second) // well past a fast phase's first tries
	for _, d := range []*Device{a, b} {
		other := b.PeerID()
		if d == b {
			other = a.PeerID()
		}
		p := d.peer(other, false)
		p.mu.Lock()
		for _, cand := range p.punch.cands {
			if cand.tries != 0 || !cand.lastPing.IsZero() {
				t.Errorf("%s was pinged %d times: a punching phase", cand.addr, cand.tries)
			}
		}
		slow, n := p.punch.slow, len(p.punch.cands)
		p.mu.Unlock()
		if !slow || n == 0 {
			t.Errorf("slow %v with %d candidates, want slow punching of the peer's addresses", slow, n)
		}
	}
	if ps := a.Status().Peers; len(ps) != 1 || ps[0].Reason != PathReasonBothDependent {
		t.Fatalf("status: %+v", ps)
	}
}

// A stranger's forged STUN answers, whether they guess no transaction or
// name a pending one from another address, are dropped and counted:
// the classification stays what the super peer's answers say, and none
// reaches QUIC.
func TestForgedSTUNAnswers(t *testing.T) {
	// The super peer answers late: the stranger's answers come first.
	s := superPeerWithSTUN(t, stuntest.Options{Delay: 50 * time.Millisecond})
	d := newDevice(t, s, allowAny)
	waitMapping(t, d, rendezvous.MappingIndependent)
	attacker, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	lie := netip.MustParseAddrPort("192.0.2.66:6666")
	forge := func(id stun.TransactionID) []byte {
		var full [16]byte
		copy(full[:4], []byte{0x21, 0x12, 0xa4, 0x42})
		copy(full[4:], id[:])
		return stun.Response(nil, stun.Request{Form: stun.FormRFC5389, ID: full}, lie)
	}
	to := net.UDPAddrFromAddrPort(d.sock.udps[0].LocalAddr().(*net.UDPAddr).AddrPort())
	stop := make(chan struct{})
	var sent atomic.Uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Every pending transaction, as if the stranger could see
			// them, and one it guesses.
			d.mapping.mu.Lock()
			var ids []stun.TransactionID
			for id := range d.mapping.pending {
				ids = append(ids, id)
			}
			d.mapping.mu.Unlock()
			ids = append(ids, stun.TransactionID{byte(sent.Load())})
			for _, id := range ids {
				attacker.WriteToUDP(forge(id), to)
				sent.Add(1)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		st := d.CheckMapping(ctx)
		if st.Mapping != "endpoint-independent" {
			t.Errorf("under forged answers the mapping is %s: %+v", st.Mapping, st.Views)
		}
		for _, v := range st.Views {
			if v.Mapped == lie {
				t.Errorf("a forged mapped address was taken: %+v", v)
			}
		}
	}
	close(stop)
	<-done
	if dropped := d.Status().NAT.STUNDropped; dropped == 0 || sent.Load() == 0 {
		t.Fatalf("%d forged answers sent, %d dropped", sent.Load(), dropped)
	}
}

// A STUN response that reaches the socket goes to the device's mapping,
// never to QUIC: from a stranger, it is dropped and counted.
func TestSTUNNeverReachesQUIC(t *testing.T) {
	d := &Device{}
	d.mapping.init()
	s := newSock(nil, d)
	forged := stun.Response(nil, stun.Request{Form: stun.FormRFC5389, ID: [16]byte{0x21, 0x12, 0xa4, 0x42, 1}}, netip.MustParseAddrPort("192.0.2.1:1"))
	s.demux(forged, netip.MustParseAddrPort("192.0.2.9:3478"))
	if n := len(s.in); n != 0 {
		t.Fatalf("%d packets for QUIC", n)
	}
	if n := d.mapping.dropped.Load(); n != 1 {
		t.Fatalf("%d dropped, want 1", n)
	}
}
