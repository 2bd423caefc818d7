package peer

// Which addresses a device may punch. Candidates come from a super peer
// (what another device announced, or what the super peer says it
// observed) and from pings (peer-reflexive addresses): all of them are
// claims by someone else, and a punch is a packet this device sends
// there. So, as ICE does for its candidates (RFC 8445 section 5.1.1 and
// RFC 6890's special-purpose registries), a device checks each one's
// class when it receives it; docs/DEVICE.md lists the classes.

import (
	"net"
	"net/netip"
)

// addrClass is what kind of network an address belongs to.
type addrClass int

const (
	// classNever: unspecified ("this network", 0.0.0.0/8 and ::),
	// multicast, limited broadcast, or port 0. Never punched.
	classNever addrClass = iota
	// classLoopback: 127.0.0.0/8 and ::1, this host.
	classLoopback
	// classLocal: private-use (RFC 1918, fc00::/7), shared (CGNAT,
	// 100.64.0.0/10, RFC 6598) and link-local (169.254.0.0/16,
	// fe80::/10): meaningful only on one network.
	classLocal
	// classGlobal: everything else, documentation ranges included (the
	// NAT lab's internet is made of them).
	classGlobal
)

var (
	sharedPrefix = netip.MustParsePrefix("100.64.0.0/10")
	thisNetwork  = netip.MustParsePrefix("0.0.0.0/8")
	broadcast4   = netip.AddrFrom4([4]byte{255, 255, 255, 255})
)

// classify returns a's class; an IPv4-mapped IPv6 address is classified
// as the IPv4 address it is.
func classify(a netip.AddrPort) addrClass {
	ip := a.Addr().Unmap()
	switch {
	case !ip.IsValid(), a.Port() == 0, ip.IsUnspecified(), thisNetwork.Contains(ip),
		ip.IsMulticast(), ip == broadcast4:
		return classNever
	case ip.IsLoopback():
		return classLoopback
	case ip.IsPrivate(), sharedPrefix.Contains(ip), ip.IsLinkLocalUnicast():
		return classLocal
	}
	return classGlobal
}

// punchScope is where this device stands, for deciding which classes it
// punches.
type punchScope struct {
	// loopback: the device reaches the super peer that sent the
	// candidates over loopback (a test set-up on one host); for a
	// peer-reflexive address, any super peer.
	loopback bool
	// local are the device's own interface prefixes (localPrefixes).
	local []netip.Prefix
}

// allows reports whether the device may punch a.
func (s punchScope) allows(a netip.AddrPort) bool {
	switch classify(a) {
	case classLoopback:
		return s.loopback
	case classLocal:
		ip := a.Addr().Unmap()
		for _, p := range s.local {
			if p.Contains(ip) && !isDirectedBroadcast(p, ip) {
				return true
			}
		}
		return false
	case classGlobal:
		for _, p := range s.local {
			if isDirectedBroadcast(p, a.Addr().Unmap()) {
				return false
			}
		}
		return true
	}
	return false
}

// isDirectedBroadcast reports whether ip is the broadcast address of the
// IPv4 network p (its last address, in a network of more than two).
func isDirectedBroadcast(p netip.Prefix, ip netip.Addr) bool {
	if !ip.Is4() || !p.Addr().Is4() || p.Bits() > 30 || !p.Contains(ip) {
		return false
	}
	b := p.Masked().Addr().As4()
	host := ^uint32(0) >> p.Bits()
	last := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
	return ip == netip.AddrFrom4([4]byte{byte(last >> 24), byte(last >> 16), byte(last >> 8), byte(last)})
}

// localPrefixes are the networks of the host's interface addresses, each
// with the prefix length its interface has (the on-link network, as the
// operating system reports it): a local-class candidate is punched only
// inside one of them.
func localPrefixes() []netip.Prefix {
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var ps []netip.Prefix
	for _, ia := range ifaddrs {
		p, err := netip.ParsePrefix(ia.String())
		if err != nil {
			continue
		}
		ps = append(ps, netip.PrefixFrom(p.Addr().Unmap().WithZone(""), p.Bits()).Masked())
	}
	return ps
}
