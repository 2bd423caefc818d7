package peer

import (
	"errors"
	"maps"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/stun"
)

// sock is the device's one UDP socket, seen by its QUIC transport as a
// net.PacketConn. Super peers are reached at their real addresses. Each
// peer device appears under a stable virtual address (virtualAddr), so
// the end-to-end QUIC connection sees one unchanging path while the
// packets travel over whichever real path is best now: a direct address
// that answered a punch, or a relay session through a super peer. QUIC
// retransmits what is lost while the path changes, so a switch loses no
// byte. (This is the shape of Tailscale's magicsock.)
type sock struct {
	udps []*net.UDPConn // one per address family; the first is the primary
	dev  *Device

	in     chan packet // towards QUIC; bounded, drops when full
	closed chan struct{}
	once   sync.Once

	dmu      sync.Mutex // guards the read deadline
	deadline time.Time
	wake     chan struct{} // closed when the deadline changes

	mu     sync.RWMutex                  // guards the following; taken after peerState.mu
	byAddr map[netip.AddrPort]*peerState // a peer's addresses that answered or pinged
	byVirt map[netip.AddrPort]*peerState
	// The addresses a QUIC handshake may come from, besides byAddr's
	// (handshakeAllowed): an accepted peer's candidates, and the
	// addresses the device itself began a handshake with (its super
	// peers), up to maxDialedAddrs.
	byCand map[netip.AddrPort]*peerState
	dialed map[netip.AddrPort]*net.UDPAddr // the address as QUIC is handed it, made once
	// The relay fast paths, by binding ID (fastpath.go).
	byBinding map[uint64]*fastLeg

	dropped   atomic.Uint64 // packets dropped because QUIC was not reading
	strangers atomic.Uint64 // handshake packets dropped from unknown addresses
}

type packet struct {
	b    []byte
	from net.Addr
	buf  *[]byte // b's, from packetBufs, returned once read
}

func newSock(udps []*net.UDPConn, dev *Device) *sock {
	s := &sock{
		udps:   udps,
		dev:    dev,
		in:     make(chan packet, inQueue),
		closed: make(chan struct{}),
		wake:   make(chan struct{}),
		byAddr: make(map[netip.AddrPort]*peerState),
		byVirt: make(map[netip.AddrPort]*peerState),
		byCand: make(map[netip.AddrPort]*peerState),
		dialed: make(map[netip.AddrPort]*net.UDPAddr),

		byBinding: make(map[uint64]*fastLeg),
	}
	return s
}

// virtualAddr is the address under which QUIC knows peer p: an IPv6
// unique local address (fd00::/8) made from the peer ID, port 1. It is
// never on the wire.
func virtualAddr(p identity.PeerID) netip.AddrPort {
	var a [16]byte
	a[0] = 0xfd
	copy(a[1:], p[:15])
	return netip.AddrPortFrom(netip.AddrFrom16(a), 1)
}

// socketFor returns the socket of addr's family, or nil.
func (s *sock) socketFor(addr netip.AddrPort) *net.UDPConn {
	is4 := addr.Addr().Unmap().Is4()
	for _, u := range s.udps {
		if u.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap().Is4() == is4 {
			return u
		}
	}
	return nil
}

// writeUDP sends b to addr from the socket of addr's family.
func (s *sock) writeUDP(b []byte, addr netip.AddrPort) (int, error) {
	u := s.socketFor(addr)
	if u == nil {
		return 0, errNoSocket
	}
	return u.WriteToUDPAddrPort(b, addr)
}

var errNoSocket = errors.New("peer: no socket of that address family")

// readLoop reads one socket until it is closed: punch messages and STUN
// responses go to the device, packets from a peer's direct path to QUIC under the peer's
// virtual address, everything else (super peers) to QUIC as it is. A read
// of several datagrams coalesced by the kernel (UDP_GRO) is cut into them.
func (s *sock) readLoop(udp *net.UDPConn) {
	buf := make([]byte, maxUDPPayload)
	var oob []byte
	if enableGRO(udp) {
		oob = make([]byte, groOOB)
	}
	for {
		n, oobn, _, from, err := udp.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			select {
			case <-s.closed:
				return
			default:
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		seg := n
		if g := groSegment(oob[:oobn]); g > 0 {
			seg = g
		}
		for b := buf[:n]; len(b) > 0; b = b[min(seg, len(b)):] {
			s.demux(b[:min(seg, len(b))], from)
		}
	}
}

// demux routes one packet read from the socket; b is reused after it
// returns.
func (s *sock) demux(b []byte, from netip.AddrPort) {
	if relay.IsFastPath(b) {
		s.fastPacket(b, from)
		return
	}
	if stun.IsResponse(b) { // the answer to the device's STUN, or a forgery: never QUIC's
		s.dev.mapping.onSTUN(b, from)
		return
	}
	if isPunch(b) {
		s.dev.handlePunch(b, from)
		return
	}
	s.mu.RLock()
	p := s.byAddr[from]
	sp := s.dialed[from] // a super peer's packets allocate no address each
	s.mu.RUnlock()
	if p == nil && isLongHeader(b) && !s.handshakeAllowed(from) {
		s.strangers.Add(1)
		return
	}
	switch {
	case p != nil:
		s.deliverCopy(b, p.virtUDP)
	case sp != nil:
		s.deliverCopy(b, sp)
	default:
		s.deliverCopy(b, net.UDPAddrFromAddrPort(from))
	}
}

// isLongHeader reports a QUIC long-header packet (RFC 8999 section
// 5.1): Initial, 0-RTT, Handshake, Retry, or a version negotiation; the
// packets of a handshake.
func isLongHeader(b []byte) bool { return len(b) > 0 && b[0]&0x80 != 0 }

// handshakeAllowed reports whether a QUIC handshake may come from addr,
// which is not a peer's direct path: only from an accepted peer's
// candidate, or from an address the device began a handshake with (a
// super peer answering). Anyone else who knows the device's address
// gets no answer at all: the listener's certificate names its peer ID,
// and even a refusal says that a device listens there. An honest peer's
// handshake comes over its direct path (its punch mapped the address)
// or through a relay, not the socket.
func (s *sock) handshakeAllowed(addr netip.AddrPort) bool {
	s.mu.RLock()
	p := s.byCand[addr]
	_, dialed := s.dialed[addr]
	s.mu.RUnlock()
	return dialed || p != nil && s.dev.policy.accepts(p.id)
}

// noteDialed remembers that the device sent a handshake packet to addr,
// so that the answer gets through (handshakeAllowed).
func (s *sock) noteDialed(addr netip.AddrPort) {
	s.mu.RLock()
	_, known := s.dialed[addr]
	s.mu.RUnlock()
	if known {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.dialed) >= maxDialedAddrs {
		for a := range s.dialed { // any one: a super peer still dialling adds itself again
			delete(s.dialed, a)
			break
		}
	}
	s.dialed[addr] = net.UDPAddrFromAddrPort(addr)
}

// deliver hands a packet to QUIC, or drops it when QUIC is behind.
func (s *sock) deliver(p packet) {
	select {
	case s.in <- p:
	default:
		s.dropped.Add(1)
		p.release()
	}
}

// release returns a packet's buffer to its pool.
func (p packet) release() {
	if p.buf != nil {
		*p.buf = p.b[:0]
		packetBufs.Put(p.buf)
	}
}

// ReadFrom implements net.PacketConn for the QUIC transport.
func (s *sock) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		s.dmu.Lock()
		deadline, wake := s.deadline, s.wake
		s.dmu.Unlock()
		var timeout <-chan time.Time
		if !deadline.IsZero() {
			d := time.Until(deadline)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case p := <-s.in:
			n := copy(b, p.b)
			p.release()
			return n, p.from, nil
		case <-timeout:
			return 0, nil, os.ErrDeadlineExceeded
		case <-wake:
		case <-s.closed:
			return 0, nil, net.ErrClosed
		}
	}
}

// WriteTo implements net.PacketConn: a peer's virtual address goes over
// the peer's current path, any other address straight to the socket.
func (s *sock) WriteTo(b []byte, addr net.Addr) (int, error) {
	ap := addrPort(addr)
	s.mu.RLock()
	p := s.byVirt[ap]
	s.mu.RUnlock()
	if p != nil {
		p.send(b)
		return len(b), nil
	}
	if isLongHeader(b) {
		s.noteDialed(ap)
	}
	return s.writeUDP(b, ap)
}

func addrPort(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

func (s *sock) SetReadDeadline(t time.Time) error {
	s.dmu.Lock()
	s.deadline = t
	close(s.wake)
	s.wake = make(chan struct{})
	s.dmu.Unlock()
	return nil
}

// SetReadBuffer, SetWriteBuffer and SyscallConn reach the real socket, so
// that quic-go can size its buffers and set the don't-fragment bit.
func (s *sock) SetReadBuffer(n int) error {
	return s.each(func(u *net.UDPConn) error { return u.SetReadBuffer(n) })
}
func (s *sock) SetWriteBuffer(n int) error {
	return s.each(func(u *net.UDPConn) error { return u.SetWriteBuffer(n) })
}
func (s *sock) SyscallConn() (syscall.RawConn, error) { return s.udps[0].SyscallConn() }

func (s *sock) each(f func(*net.UDPConn) error) error {
	var errs []error
	for _, u := range s.udps {
		errs = append(errs, f(u))
	}
	return errors.Join(errs...)
}

func (s *sock) SetDeadline(t time.Time) error    { return s.SetReadDeadline(t) }
func (s *sock) SetWriteDeadline(time.Time) error { return nil }
func (s *sock) LocalAddr() net.Addr              { return s.udps[0].LocalAddr() }

// Close closes the socket.
func (s *sock) Close() error {
	var err error
	s.once.Do(func() {
		close(s.closed)
		err = s.each((*net.UDPConn).Close)
	})
	return err
}

// addPeer makes p's virtual address known.
func (s *sock) addPeer(p *peerState) {
	s.mu.Lock()
	s.byVirt[p.virt] = p
	s.mu.Unlock()
}

// forget removes every mapping of p.
func (s *sock) forget(p *peerState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byVirt[p.virt] == p {
		delete(s.byVirt, p.virt)
	}
	for _, m := range []map[netip.AddrPort]*peerState{s.byAddr, s.byCand} {
		maps.DeleteFunc(m, func(_ netip.AddrPort, q *peerState) bool { return q == p })
	}
}

// mapCandidate lets a handshake come from p's candidate addr.
func (s *sock) mapCandidate(addr netip.AddrPort, p *peerState) { s.set(s.byCand, addr, p) }

// unmapCandidate undoes mapCandidate.
func (s *sock) unmapCandidate(addr netip.AddrPort, p *peerState) { s.unset(s.byCand, addr, p) }

// mapDirect makes packets from addr count as p's.
func (s *sock) mapDirect(addr netip.AddrPort, p *peerState) { s.set(s.byAddr, addr, p) }

// unmapDirect stops packets from addr counting as p's.
func (s *sock) unmapDirect(addr netip.AddrPort, p *peerState) { s.unset(s.byAddr, addr, p) }

// set maps addr to p in m, one of the socket's maps.
func (s *sock) set(m map[netip.AddrPort]*peerState, addr netip.AddrPort, p *peerState) {
	s.mu.Lock()
	m[addr] = p
	s.mu.Unlock()
}

// unset removes addr from m if it is p's.
func (s *sock) unset(m map[netip.AddrPort]*peerState, addr netip.AddrPort, p *peerState) {
	s.mu.Lock()
	if m[addr] == p {
		delete(m, addr)
	}
	s.mu.Unlock()
}

var _ net.PacketConn = (*sock)(nil)
