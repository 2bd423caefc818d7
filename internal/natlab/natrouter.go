package natlab

import (
	"errors"
	"fmt"
	"net/netip"
)

// NAT is a NAT router with a LAN of devices behind it.
type NAT struct {
	kind     NATKind
	lan      int   // LAN number in the address plan
	router   *Host // the router's namespace; its addresses are the WAN's
	nDevices int   // guarded by router.lab.mu
}

// Kind returns the NAT's behaviour.
func (n *NAT) Kind() NATKind { return n.kind }

// Router returns the router's namespace, for running commands there (nft
// list ruleset, say). Its Addr and Addr6 are the NAT's public WAN addresses,
// and SetDelay works on it when the NAT was built WithDelay.
func (n *NAT) Router() *Host { return n.router }

// Addr returns the NAT's public IPv4 address, the source its devices'
// packets have on the internet.
func (n *NAT) Addr() netip.Addr { return n.router.Addr() }

// Rebind moves the NAT to its other public IPv4 address, as a home router
// does when its provider hands it a new address, or a carrier-grade NAT
// when it moves a subscriber: the old address is removed from the WAN
// interface, and the kernel drops every mapping masquerade made with it.
// Each device's next packet out gets a new mapping; what others send to an
// old one is lost. It alternates between the NAT's two addresses and
// returns the new one, which Addr reports from then on. IPv6 mappings are
// not moved.
func (n *NAT) Rebind() (netip.Addr, error) {
	l := n.router.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return netip.Addr{}, errors.New("natlab: lab is closed")
	}
	old, now := n.router.Addr(), natAltAddr4(n.lan)
	if old == now {
		now = natWANAddr4(n.lan)
	}
	// The new address first: without any, the kernel would drop the WAN
	// routes along with the last address.
	lines := []string{
		fmt.Sprintf("addr add %s/32 dev wan", now),
		fmt.Sprintf("addr del %s/32 dev wan", old),
	}
	if err := runIP(n.router.ns, "", lines); err != nil {
		return netip.Addr{}, fmt.Errorf("natlab: rebinding %s: %w", n.router.name, err)
	}
	n.router.mu.Lock()
	n.router.addr4 = now
	n.router.mu.Unlock()
	return now, nil
}

// Addr6 returns the NAT's public IPv6 address (NAT66), or the zero Addr in a
// lab without IPv6.
func (n *NAT) Addr6() netip.Addr { return n.router.addr6 }

// LANPrefix6 returns the IPv6 prefix of the NAT's LAN, or the zero Prefix
// in a lab without IPv6.
func (n *NAT) LANPrefix6() netip.Prefix {
	if !n.router.addr6.IsValid() {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(lanRouter6(n.lan), lanBits6).Masked()
}

// LANPrefix returns the IPv4 prefix of the NAT's LAN.
func (n *NAT) LANPrefix() netip.Prefix {
	return netip.PrefixFrom(lanRouter4(n.lan), lanBits4).Masked()
}

// AddDevice puts a device on the NAT's LAN, with a LAN address and a default
// route via the router. An EndpointIndependent NAT holds one device (see
// EndpointIndependent); devices that share a NAT use PortDependentFiltering.
func (n *NAT) AddDevice(name string) (*Host, error) {
	l := n.router.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	if n.kind == EndpointIndependent && n.nDevices >= 1 {
		return nil, errors.New("natlab: an EndpointIndependent NAT holds one device: its mapping record is keyed by public port, which Linux gives to two LAN hosts at once; put devices that share a NAT behind PortDependentFiltering")
	}
	if n.nDevices >= maxNodes {
		return nil, fmt.Errorf("natlab: more than %d devices on one LAN", maxNodes)
	}
	b := l.begin()
	defer b.rollback()
	if err := b.claim(name); err != nil {
		return nil, err
	}
	i := n.nDevices
	h := &Host{lab: l, name: name, ns: l.prefix + name, addr4: lanDevice4(n.lan, i)}
	if l.hasIPv6() {
		h.addr6 = lanDevice6(n.lan, i)
	}
	if err := b.device(n, h, i); err != nil {
		return nil, fmt.Errorf("natlab: adding device %s behind %s: %w", name, n.router.name, err)
	}
	n.nDevices++
	b.commit()
	return h, nil
}
