//go:build linux

package peer

import (
	"encoding/binary"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// groOOB is the room for the control message that UDP_GRO adds to a read.
var groOOB = unix.CmsgSpace(4)

// enableGRO asks the kernel to hand over datagrams that came as one UDP
// GSO send (a super peer's fast path writes a device's packets so,
// relay/fastpath_gso_linux.go), or that the network card coalesced, as
// one read with their segment size (UDP_GRO, Linux 5.0 and later); the
// read loop cuts them apart. It reports whether the kernel took it.
func enableGRO(u *net.UDPConn) bool {
	rc, err := u.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	rc.Control(func(fd uintptr) {
		ok = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	})
	return ok
}

// groSegment returns the segment size that UDP_GRO reported in oob, the
// control messages of one read, or 0 if it reported none: the read is
// one datagram.
func groSegment(oob []byte) int {
	for len(oob) >= unix.CmsgLen(0) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.CmsgLen(0) || l > len(oob) {
			return 0
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(4) {
			return int(binary.NativeEndian.Uint32(oob[unix.CmsgLen(0):]))
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return 0
}
