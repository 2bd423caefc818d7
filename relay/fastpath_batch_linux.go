//go:build linux

package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchReader reads up to len(bufs) datagrams per recvmmsg(2). It calls
// the system itself rather than through x/net's ipv4.PacketConn.ReadBatch,
// which allocates a net.IP and a net.UDPAddr for every datagram's source
// (x/net internal/socket parseInetAddr): here the sources are decoded into
// netip.AddrPort values, and nothing is allocated per read.
type batchReader struct {
	rc    syscall.RawConn
	hs    []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for either family
	bufs  [][]byte
	read1 func(fd uintptr) bool // r.recv, made once: a method value allocates
	n     int
	errno syscall.Errno
}

// mmsghdr is struct mmsghdr of <sys/socket.h>; the padding makes it the
// C size on 64-bit platforms (none on 32-bit).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [unsafe.Sizeof(uintptr(0)) - 4]byte
}

func newBatchReader(conn *net.UDPConn, bufs [][]byte) (*batchReader, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &batchReader{
		rc:    rc,
		hs:    make([]mmsghdr, len(bufs)),
		iovs:  make([]unix.Iovec, len(bufs)),
		names: make([]unix.RawSockaddrInet6, len(bufs)),
		bufs:  bufs,
	}
	for i := range bufs {
		r.iovs[i].Base = &bufs[i][0]
		r.iovs[i].SetLen(len(bufs[i]))
		r.hs[i].hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		r.hs[i].hdr.Iov = &r.iovs[i]
		r.hs[i].hdr.SetIovlen(1)
	}
	r.read1 = r.recv
	return r, nil
}

// read waits for datagrams and returns how many it read, into bufs.
func (r *batchReader) read() (int, error) {
	for i := range r.hs {
		r.hs[i].hdr.Namelen = uint32(unsafe.Sizeof(r.names[i]))
		r.hs[i].hdr.Flags = 0
	}
	if err := r.rc.Read(r.read1); err != nil {
		return 0, err // the socket is closed
	}
	if r.errno != 0 {
		return 0, r.errno
	}
	return r.n, nil
}

func (r *batchReader) recv(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hs[0])), uintptr(len(r.hs)), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait until readable
		}
		r.n, r.errno = int(n), errno
		return true
	}
}

// packet returns datagram i of the last read and its source; a datagram
// that did not fit its buffer comes back whole-buffer long, which the
// caller drops as too large.
func (r *batchReader) packet(i int) ([]byte, netip.AddrPort) {
	h := &r.hs[i]
	n := int(h.len)
	if h.hdr.Flags&unix.MSG_TRUNC != 0 {
		n = len(r.bufs[i])
	}
	sa := &r.names[i]
	var addr netip.Addr
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		addr = netip.AddrFrom4(sa4.Addr)
	case unix.AF_INET6:
		addr = netip.AddrFrom16(sa.Addr).Unmap()
	}
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	return r.bufs[i][:n], netip.AddrPortFrom(addr, port)
}
