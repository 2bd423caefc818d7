package peer

import (
	"net/netip"
	"testing"
)

// Every address class, as docs/DEVICE.md lists them, with where a device
// may punch it: behind a super peer reached over loopback or not, with a
// LAN 10.1.0.0/24, fd00:1::/64 and fe80::/64 of its own or none.
func TestAddrClass(t *testing.T) {
	lan := []netip.Prefix{
		netip.MustParsePrefix("10.1.0.0/24"),
		netip.MustParsePrefix("fd00:1::/64"),
		netip.MustParsePrefix("fe80::/64"),
		netip.MustParsePrefix("100.64.8.0/22"),
	}
	type where struct{ bare, loopback, onLAN bool }
	cases := []struct {
		addr  string
		class addrClass
		where where // may punch: no loopback, no LAN; over loopback; on the LAN
	}{
		{"0.0.0.0:5", classNever, where{}},
		{"0.1.2.3:5", classNever, where{}},
		{"[::]:5", classNever, where{}},
		{"224.0.0.1:5", classNever, where{}},
		{"239.255.255.250:1900", classNever, where{}},
		{"[ff02::1]:5", classNever, where{}},
		{"255.255.255.255:5", classNever, where{}},
		{"192.0.2.7:0", classNever, where{}},
		{"[::ffff:224.0.0.1]:5", classNever, where{}},
		{"127.0.0.1:5", classLoopback, where{loopback: true}},
		{"127.9.9.9:5", classLoopback, where{loopback: true}},
		{"[::1]:5", classLoopback, where{loopback: true}},
		{"[::ffff:127.0.0.1]:5", classLoopback, where{loopback: true}},
		{"10.1.0.20:5", classLocal, where{onLAN: true}},
		{"10.1.0.255:5", classLocal, where{}}, // the LAN's broadcast address
		{"10.2.0.20:5", classLocal, where{}},  // another private network
		{"172.16.0.1:5", classLocal, where{}},
		{"192.168.1.1:5", classLocal, where{}},
		{"100.64.9.1:5", classLocal, where{onLAN: true}},
		{"100.127.0.1:5", classLocal, where{}},
		{"169.254.1.1:5", classLocal, where{}},
		{"[fd00:1::7]:5", classLocal, where{onLAN: true}},
		{"[fd00:2::7]:5", classLocal, where{}},
		{"[fe80::7]:5", classLocal, where{onLAN: true}},
		{"192.0.2.7:5", classGlobal, where{true, true, true}},         // TEST-NET-1: the NAT lab's internet
		{"198.51.100.7:5", classGlobal, where{true, true, true}},      // TEST-NET-2
		{"203.0.113.7:5", classGlobal, where{true, true, true}},       // TEST-NET-3
		{"198.18.0.7:5", classGlobal, where{true, true, true}},        // benchmarking: the lab's rebound WAN
		{"[2001:db8::7]:5", classGlobal, where{true, true, true}},     // documentation
		{"8.8.8.8:53", classGlobal, where{true, true, true}},          //
		{"[2606:4700::1111]:5", classGlobal, where{true, true, true}}, //
		{"100.128.0.1:5", classGlobal, where{true, true, true}},       // just outside shared space
	}
	for _, c := range cases {
		a := netip.MustParseAddrPort(c.addr)
		if got := classify(a); got != c.class {
			t.Errorf("classify(%s) = %d, want %d", a, got, c.class)
		}
		for _, s := range []struct {
			name  string
			scope punchScope
			want  bool
		}{
			{"bare", punchScope{}, c.where.bare},
			{"over loopback", punchScope{loopback: true}, c.where.loopback},
			{"on the LAN", punchScope{local: lan}, c.where.onLAN},
		} {
			if got := s.scope.allows(a); got != s.want {
				t.Errorf("%s: allows(%s) = %v, want %v", s.name, a, got, s.want)
			}
		}
	}
}

func TestDirectedBroadcast(t *testing.T) {
	for _, c := range []struct {
		prefix, addr string
		want         bool
	}{
		{"10.1.0.0/24", "10.1.0.255", true},
		{"10.1.0.0/24", "10.1.0.254", false},
		{"10.0.0.0/8", "10.255.255.255", true},
		{"192.168.4.0/22", "192.168.7.255", true},
		{"10.1.0.0/31", "10.1.0.1", false},
		{"10.1.0.0/24", "10.2.0.255", false},
		{"fd00::/64", "fd00::ffff:ffff:ffff:ffff", false},
	} {
		if got := isDirectedBroadcast(netip.MustParsePrefix(c.prefix), netip.MustParseAddr(c.addr)); got != c.want {
			t.Errorf("isDirectedBroadcast(%s, %s) = %v", c.prefix, c.addr, got)
		}
	}
}
