package stun

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// Attack: requests spoofed in a victim's name, from every port of its
// address (or every address of its /64), to make the super peer flood
// it. It receives SourceBurst responses, then SourceRate a second.
func TestSpoofedFloodIsBoundedPerVictim(t *testing.T) {
	cfg := Config{}
	cfg.SetDefaults()
	req := msg(0x0001, cookieID, nil, -1)
	for _, victim := range []string{"192.0.2.7", "2001:db8::"} {
		var r Responder
		now := time.Now()
		sent := 0
		// Two seconds of 2,000 requests a second.
		for i := range 4000 {
			at := now.Add(time.Duration(i) * time.Millisecond / 2)
			from := netip.AddrPortFrom(netip.MustParseAddr(victim), uint16(1024+i))
			if victim[0] == '2' {
				from = netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i+1)), 1)
			}
			if resp, _ := r.Respond(nil, req, from, &cfg, at); resp != nil {
				sent++
			}
		}
		if most := cfg.SourceBurst + int(2*cfg.SourceRate) + 1; sent > most {
			t.Errorf("%s received %d responses in 2 s, more than %d", victim, sent, most)
		}
		if r.Dropped(DropRateLimited) == 0 || r.Sources() != 1 {
			t.Errorf("%s: %d rate-limited, %d sources", victim, r.Dropped(DropRateLimited), r.Sources())
		}
	}
}

// Distinct sources have distinct budgets: one victim's flood leaves
// another client served.
func TestOtherSourcesStillServed(t *testing.T) {
	cfg := Config{SourceRate: 1, SourceBurst: 2}
	var r Responder
	req := msg(0x0001, classicID, nil, -1)
	now := time.Now()
	victim := netip.MustParseAddrPort("192.0.2.1:1")
	for range 10 {
		r.Respond(nil, req, victim, &cfg, now)
	}
	if resp, why := r.Respond(nil, req, netip.MustParseAddrPort("192.0.2.2:1"), &cfg, now); resp == nil {
		t.Fatalf("another source dropped: %v", why)
	}
	if resp, _ := r.Respond(nil, req, victim, &cfg, now.Add(time.Second)); resp == nil {
		t.Fatal("the victim's budget did not refill")
	}
}

// Attack: requests from ever new prefixes, to grow the table without
// bound. It stops at maxSources; prefixes whose budget is full again
// make room at the next sweep.
func TestSourceTableIsBounded(t *testing.T) {
	cfg := Config{SourceRate: 1, SourceBurst: 2}
	var tbl sourceTable
	now := time.Now()
	prefix := func(i int) netip.Prefix {
		return sourcePrefix(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	for i := range maxSources {
		if why := tbl.take(prefix(i), now, &cfg); why != DropNone {
			t.Fatalf("prefix %d: %v", i, why)
		}
	}
	if why := tbl.take(prefix(maxSources), now, &cfg); why != DropSourcesFull || tbl.len() != maxSources {
		t.Fatalf("past the cap: %v, %d entries", why, tbl.len())
	}
	// A second later every bucket is full again: the sweep empties the
	// table and the newcomer is served.
	if why := tbl.take(prefix(maxSources), now.Add(time.Second), &cfg); why != DropNone || tbl.len() != 1 {
		t.Fatalf("after refill: %v, %d entries", why, tbl.len())
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (&Config{SourceRate: -1}).Validate(); err == nil {
		t.Error("negative rate accepted")
	}
	if err := (&Config{}).Validate(); err != nil {
		t.Error(err)
	}
}
