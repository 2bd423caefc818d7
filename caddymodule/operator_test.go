package caddymodule

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

// An operator script (or a stolen admin token) that adds entries without
// end cannot grow the list every registration scans past maxDenyEntries.
func TestDenyListBounded(t *testing.T) {
	var l denyList
	for i := range maxDenyEntries + 10 {
		e, err := parseDenyEntry(kindPrefix, fmt.Sprintf("10.%d.%d.0/24", i>>8, i&0xff))
		if err != nil {
			t.Fatal(err)
		}
		added, ok := l.add(e)
		if want := i < maxDenyEntries; ok != want || added != want {
			t.Fatalf("entry %d: added %v, ok %v; want %v", i, added, ok, want)
		}
	}
	if n := len(l.list()); n != maxDenyEntries {
		t.Errorf("%d entries, want %d", n, maxDenyEntries)
	}
}

// Entries are read strictly and matched by peer ID or by address,
// IPv4-mapped addresses as IPv4.
func TestDenyEntries(t *testing.T) {
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	p := id.PeerID()
	for _, tc := range []struct {
		kind, in, entry string
		match           []string // addresses it denies, for a prefix
		miss            []string
	}{
		{kindPeerID, strings.ToUpper(p.String()), p.String(), nil, nil},
		{kindPrefix, "10.1.2.3/8", "10.0.0.0/8", []string{"10.9.9.9", "::ffff:10.0.0.1"}, []string{"11.0.0.1"}},
		{kindPrefix, "2001:db8::1", "2001:db8::1/128", []string{"2001:db8::1"}, []string{"2001:db8::2"}},
	} {
		e, err := parseDenyEntry(tc.kind, tc.in)
		if err != nil || e.Entry != tc.entry {
			t.Errorf("%s %q: %q, %v; want %q", tc.kind, tc.in, e.Entry, err, tc.entry)
			continue
		}
		if tc.kind == kindPeerID && (!e.matches(p, netip.Addr{}) || e.matches(identity.PeerID{1}, netip.Addr{})) {
			t.Errorf("peer entry matches wrongly")
		}
		for _, a := range tc.match {
			if !e.matches(identity.PeerID{}, netip.MustParseAddr(a)) {
				t.Errorf("%s does not deny %s", e.Entry, a)
			}
		}
		for _, a := range tc.miss {
			if e.matches(identity.PeerID{}, netip.MustParseAddr(a)) {
				t.Errorf("%s denies %s", e.Entry, a)
			}
		}
	}
	for _, bad := range []struct{ kind, in string }{
		{kindPeerID, "abc"}, {kindPrefix, "10.0.0.0/33"}, {kindPrefix, "::ffff:10.0.0.0/104"}, {kindPrefix, ""}, {"name", "x"},
	} {
		if _, err := parseDenyEntry(bad.kind, bad.in); err == nil {
			t.Errorf("%s %q accepted", bad.kind, bad.in)
		}
	}
}

// The deny list refuses before the admission chain runs, and its
// decisions are counted as the chain's are.
func TestDenyBeforeChain(t *testing.T) {
	var o operatorState
	id, _ := identity.Generate()
	e, _ := parseDenyEntry(kindPrefix, "192.0.2.0/24")
	o.deny.add(e)
	called := 0
	chain := func(context.Context, rendezvous.AdmissionRequest) error { called++; return nil }
	admit := o.admit(chain)
	err := admit(context.Background(), rendezvous.AdmissionRequest{Peer: id.PeerID(), Remote: netip.MustParseAddrPort("192.0.2.7:1")})
	if err == nil || !strings.Contains(err.Error(), "denied by the super peer's operator (prefix 192.0.2.0/24)") || called != 0 {
		t.Errorf("denied device: %v, chain called %d times", err, called)
	}
	if err := admit(context.Background(), rendezvous.AdmissionRequest{Peer: id.PeerID(), Remote: netip.MustParseAddrPort("198.51.100.7:1")}); err != nil || called != 1 {
		t.Errorf("other device: %v, chain called %d times", err, called)
	}
	if n := o.decisionCounts()[decisionKey{denyModule, resultRefused}]; n != 1 {
		t.Errorf("deny decisions counted: %d", n)
	}
}

// Health is 200 while a config runs the super peer and it is not
// draining; 503 with the reason otherwise.
func TestHealth(t *testing.T) {
	p := &pooledSuperPeer{}
	for _, tc := range []struct {
		setup  func()
		status int
		want   string
	}{
		{func() {}, http.StatusServiceUnavailable, "not running"},
		{func() { p.configs = append(p.configs, &appliedConfig{}) }, http.StatusOK, "serving"},
		{func() { p.ops.drain("caddy is stopping") }, http.StatusServiceUnavailable, "draining"},
	} {
		tc.setup()
		status, v := health(p)
		if status != tc.status || v.Status != tc.want {
			t.Errorf("health: %d %+v, want %d %s", status, v, tc.status, tc.want)
		}
	}
	if status, _ := health(nil); status != http.StatusServiceUnavailable {
		t.Errorf("no super peer: %d", status)
	}
}
