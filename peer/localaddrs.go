package peer

// The device's own addresses: its sockets', the local candidates it
// announces, and watching them change.

import (
	"net"
	"net/netip"
	"slices"

	"go.uber.org/zap"

	"github.com/netsody/superpeer/rendezvous"
)

// LocalAddr is the address of the device's first UDP socket.
func (d *Device) LocalAddr() netip.AddrPort { return d.LocalAddrs()[0] }

// LocalAddrs are the addresses of the device's UDP sockets, one per
// address family.
func (d *Device) LocalAddrs() []netip.AddrPort {
	as := make([]netip.AddrPort, 0, len(d.sock.udps))
	for _, u := range d.sock.udps {
		ap := u.LocalAddr().(*net.UDPAddr).AddrPort()
		as = append(as, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	return as
}

// localAddrs are the device's local candidates: for each socket, its
// address, or every interface address of its family when it listens on
// all of them.
func (d *Device) localAddrs() []netip.AddrPort {
	if d.cfg.LocalAddrs != nil {
		return d.cfg.LocalAddrs(d.LocalAddr().Port())
	}
	ifaddrs, _ := net.InterfaceAddrs()
	var as []netip.AddrPort
	for _, sockAddr := range d.LocalAddrs() {
		bound, port := sockAddr.Addr(), sockAddr.Port()
		if !bound.IsUnspecified() {
			as = append(as, sockAddr)
			continue
		}
		for _, ia := range ifaddrs {
			pfx, err := netip.ParsePrefix(ia.String())
			if err != nil {
				continue
			}
			a := pfx.Addr().Unmap()
			if a.Is4() != bound.Is4() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() {
				continue
			}
			as = append(as, netip.AddrPortFrom(a, port))
		}
	}
	if len(as) > rendezvous.MaxAddrs {
		as = as[:rendezvous.MaxAddrs]
	}
	return as
}

// watchLocalAddrs announces changed local addresses: to every super peer
// (FrameAddrs, for later candidates), and to every connected peer by an
// introduction through every super peer, so that a peer that is now on
// the same LAN, or was, punches the right addresses.
func (d *Device) watchLocalAddrs() {
	last := d.localAddrs()
	d.every(d.cfg.AddrCheckInterval, func() bool {
		ps := localPrefixes()
		d.prefixes.Store(&ps)
		now := d.localAddrs()
		for _, sp := range d.sps {
			sp.announce(now)
		}
		if !slices.Equal(now, last) {
			d.log.Info("local addresses changed", zap.Stringers("from", last), zap.Stringers("to", now))
			last = now
			d.mapping.recheck()
			d.introduceAgain(d.sps...)
		}
		return true
	})
}
