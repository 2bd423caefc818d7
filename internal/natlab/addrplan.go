package natlab

import (
	"fmt"
	"net/netip"
)

// The lab's address plan. Everything lives in namespaces the lab creates;
// the "internet" uses only documentation ranges (RFC 5737, RFC 3849), the
// LANs behind NAT routers use private ranges that exist only inside them.
//
//	internet router   192.0.2.1 (on lo)            fe80::1 on every port
//	delay router i    192.0.2.(10+i)               fe80::2 up, fe80::1 down
//	public host i     203.0.113.(10+i)/32          2001:db8:203::(10+i)/128
//	NAT router k WAN  198.51.100.(10+k)/32         2001:db8:198::(10+k)/128
//	  after Rebind    198.18.0.(10+k)/32
//	NAT router k LAN  10.(k+1).0.1/24              2001:db8:10:(k+1)::1/64
//	device i on LAN k 10.(k+1).0.(10+i)/24         2001:db8:10:(k+1)::(10+i)/64
//
// A NAT's second IPv4 address, which NAT.Rebind moves it to and from, comes
// from the benchmarking range (RFC 2544, 198.18.0.0/15): the documentation
// ranges are all taken.
//
// IPv6 host numbers are written with the same digits as the IPv4 ones
// (203.0.113.10 is 2001:db8:203::10), which makes captures easy to read.
//
// Public addresses sit on point-to-point veth links as /32 and /128: the
// upstream router routes each address to its port, and the downstream side
// reaches its router through an on-link IPv4 gateway and the IPv6 link-local
// fe80::1, so no link needs a subnet of its own.
var (
	internetGW4 = netip.MustParseAddr("192.0.2.1")
	linkUp6     = netip.MustParseAddr("fe80::1") // router end of every link
	linkDown6   = netip.MustParseAddr("fe80::2") // host end of every link
)

// maxNodes bounds each kind of node, so that host numbers stay below 250.
const maxNodes = 240

func publicAddr4(i int) netip.Addr { return netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + i)}) }
func publicAddr6(i int) netip.Addr { return addr6(fmt.Sprintf("2001:db8:203::%d", 10+i)) }
func natWANAddr4(k int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, byte(10 + k)}) }
func natWANAddr6(k int) netip.Addr { return addr6(fmt.Sprintf("2001:db8:198::%d", 10+k)) }
func delayAddr4(i int) netip.Addr  { return netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)}) }
func natAltAddr4(k int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + k)}) }

// lanRouter4 and the functions after it number LAN k's router (host 1) and
// its devices (host 10+i).
func lanRouter4(k int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(k + 1), 0, 1}) }
func lanDevice4(k, i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(k + 1), 0, byte(10 + i)})
}
func lanRouter6(k int) netip.Addr    { return addr6(fmt.Sprintf("2001:db8:10:%d::1", k+1)) }
func lanDevice6(k, i int) netip.Addr { return addr6(fmt.Sprintf("2001:db8:10:%d::%d", k+1, 10+i)) }

const (
	lanBits4 = 24
	lanBits6 = 64
)

func addr6(s string) netip.Addr { return netip.MustParseAddr(s) }
