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
func (n *NAT) Addr() netip.Addr { return n.router.addr4 }

// Addr6 returns the NAT's public IPv6 address (NAT66), or the zero Addr in a
// lab without IPv6.
func (n *NAT) Addr6() netip.Addr { return n.router.addr6 }

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
