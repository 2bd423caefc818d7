package natlab

import (
	"fmt"
	"strings"
)

// NATKind is the behaviour of a NAT router, named after its RFC 4787
// mapping (§4.1) and filtering (§5) behaviour. Each kind is one nftables
// ruleset below; every ruleset works on the router's "wan" interface, so
// traffic between devices on the LAN bridge is never translated or filtered.
//
// All kinds share a stateful firewall: nothing from the WAN reaches the
// router itself or the LAN unless conntrack knows it as a reply
// (established, related) or the kind's own rules translated it (ct status
// dnat). Unsolicited packets are dropped silently, as home routers do, not
// answered with ICMP errors. ICMPv6 to the router is always accepted, since
// neighbour discovery needs it (RFC 4890).
//
// Every kind also translates IPv6 (NAT66), with the same mapping and
// filtering as IPv4: the rulesets are in the inet family, or in an ip and an
// ip6 table where nftables needs the families apart.
type NATKind int

const (
	// EndpointIndependent is endpoint-independent mapping (RFC 4787 §4.1)
	// with endpoint-independent filtering (§5), a "full cone": a LAN socket
	// keeps one public address:port for every destination, and anyone who
	// learns it can send to it.
	//
	// Mainline nftables has no full-cone statement. masquerade gives the
	// endpoint-independent mapping (it keeps the source port where it can);
	// a chain after source NAT (postrouting, priority srcnat + 10) records
	// each public port with the LAN address and port it came from, and a
	// prerouting rule sends any new UDP flow to a recorded public port to
	// that LAN endpoint. The record is keyed by public port only, so such a
	// NAT holds a single device: Linux gives two LAN hosts the same public
	// port towards different destinations, and the record could not tell
	// them apart. For IPv6 the record is two maps (address, port) because
	// nftables 1.0.6 aborts on a map whose data is an IPv6 address
	// concatenated with a port.
	EndpointIndependent NATKind = iota + 1

	// PortDependentFiltering is endpoint-independent mapping (RFC 4787
	// §4.1) with address-and-port-dependent filtering (§5), a "port-
	// restricted cone": plain masquerade. A socket keeps one public
	// address:port, but only endpoints it has sent to may answer. Two
	// devices behind one such NAT is the lab's same-LAN scenario.
	PortDependentFiltering

	// Symmetric is address-and-port-dependent mapping (RFC 4787 §4.1) with
	// random ports, and address-and-port-dependent filtering (§5):
	// masquerade fully-random gives every new destination endpoint a new,
	// random public port, so the address a super peer observes is useless
	// to any other peer.
	Symmetric

	// UDPBlocked is a firewall that forwards only TCP to port 443 (and the
	// replies to it); every other packet from the LAN, all UDP included, is
	// dropped. What it forwards is masqueraded as in PortDependentFiltering.
	UDPBlocked
)

// String returns the kind's name as docs/NAT.md uses it.
func (k NATKind) String() string {
	switch k {
	case EndpointIndependent:
		return "endpoint-independent"
	case PortDependentFiltering:
		return "port-dependent-filtering"
	case Symmetric:
		return "symmetric"
	case UDPBlocked:
		return "udp-blocked"
	}
	return fmt.Sprintf("NATKind(%d)", int(k))
}

// rules returns the nftables ruleset for the kind, for `nft -f -`.
func (k NATKind) rules() (string, error) {
	switch k {
	case EndpointIndependent:
		return firewallRules("", "") + eiMappingRules, nil
	case PortDependentFiltering:
		return firewallRules("", ""), nil
	case Symmetric:
		return firewallRules("", " fully-random"), nil
	case UDPBlocked:
		return firewallRules(tcp443Only, ""), nil
	}
	return "", fmt.Errorf("natlab: unknown NAT kind %d", int(k))
}

// firewallRules is the stateful firewall and source NAT every kind shares:
// outbound adds rules for LAN→WAN traffic, masqueradeFlags is appended to the
// masquerade statement.
func firewallRules(outbound, masqueradeFlags string) string {
	r := strings.NewReplacer("{{outbound}}", outbound, "{{masquerade}}", masqueradeFlags)
	return r.Replace(`
table inet natlab {
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "wan" ct state established,related accept
		iifname "wan" meta l4proto ipv6-icmp accept
		iifname "wan" drop
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "wan" ct state established,related accept
		iifname "wan" ct status dnat accept
		iifname "wan" drop
{{outbound}}	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" masquerade{{masquerade}}
	}
}
`)
}

// tcp443Only is UDPBlocked's outbound policy.
const tcp443Only = `		oifname "wan" tcp dport 443 accept
		oifname "wan" drop
`

// eiMappingRules turn masquerade's endpoint-independent mapping into
// endpoint-independent filtering (see EndpointIndependent). "record" runs
// after masquerade has rewritten the packet, so udp sport is the public
// port and ct original holds the LAN endpoint; "admit" runs before routing,
// on the first packet of a flow only (nat chains see no others), and only
// for the router's own addresses: not for one that NAT.Rebind took away.
const eiMappingRules = `
table ip natlab_ei {
	map mapping {
		typeof udp dport : ip saddr . udp sport
		flags dynamic,timeout
		timeout 120s
	}
	chain record {
		type filter hook postrouting priority srcnat + 10; policy accept;
		oifname "wan" meta l4proto udp update @mapping { udp sport : ct original ip saddr . ct original proto-src }
	}
	chain admit {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "wan" meta l4proto udp fib daddr type local dnat to udp dport map @mapping
	}
}
table ip6 natlab_ei6 {
	map address {
		type inet_service : ipv6_addr
		flags dynamic,timeout
		timeout 120s
	}
	map port {
		type inet_service : inet_service
		flags dynamic,timeout
		timeout 120s
	}
	chain record {
		type filter hook postrouting priority srcnat + 10; policy accept;
		oifname "wan" meta l4proto udp update @address { udp sport : ct original ip6 saddr } update @port { udp sport : ct original proto-src }
	}
	chain admit {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "wan" meta l4proto udp fib daddr type local dnat to udp dport map @address : udp dport map @port
	}
}
`
