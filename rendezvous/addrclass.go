package rendezvous

import "net/netip"

// broadcast4 is the IPv4 limited broadcast address.
var broadcast4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// handOut returns the announced addresses that the super peer hands out
// to other devices as this device's candidates, and counts the others.
// Every device it is introduced to punches them, so an address that is
// not the device's own would aim that traffic elsewhere (issue 10 part
// 2). Never handed out: unspecified addresses and port 0 (refused as
// malformed before), multicast, IPv4 broadcast; loopback only to a device
// that reaches this super peer over loopback itself (a local test set-up),
// since another machine's loopback is the victim's own. docs/PROTOCOL.md
// lists them; devices check what they receive too.
func (s *session) handOut(as []netip.AddrPort) []netip.AddrPort {
	loopbackOK := s.observed().Addr().IsLoopback()
	var keep []netip.AddrPort // nil while every address is kept
	for i, a := range as {
		switch {
		case !handedOut(a, loopbackOK):
			s.srv.stats.AddrsDropped.Add(1)
			if keep == nil {
				keep = append(make([]netip.AddrPort, 0, len(as)), as[:i]...)
			}
		case keep != nil:
			keep = append(keep, a)
		}
	}
	if keep == nil {
		return as
	}
	return keep
}

// handedOut reports whether a is of a class the super peer hands out.
func handedOut(a netip.AddrPort, loopbackOK bool) bool {
	ip := a.Addr().Unmap()
	switch {
	case !ip.IsValid(), ip.IsUnspecified(), a.Port() == 0:
		return false
	case ip.IsMulticast(), ip == broadcast4:
		return false
	case ip.IsLoopback():
		return loopbackOK
	}
	return true
}
