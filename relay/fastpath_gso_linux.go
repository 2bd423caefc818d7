//go:build linux

package relay

import (
	"encoding/binary"
	"errors"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchWriter writes the fast path's write batch with one sendmmsg(2) and
// as few messages as it can: the DATA packets of a batch bound for one
// device, of one size (the last may be shorter), leave as one UDP GSO
// message (UDP_SEGMENT, Linux 4.18 and later), which the kernel cuts into
// datagrams once, below the socket layer, rather than taking each through
// the stack. A receiver on the same host whose socket has UDP_GRO (the
// device's, peer/sock_gro_linux.go) gets them as one read. A device's
// packets keep their order; those of different devices may pass each
// other, as they may on any network.
//
// Where the kernel refuses GSO (EIO: a device without checksum offload)
// the writer stops using it; a message it refuses otherwise (EMSGSIZE or,
// before Linux 6.x, EINVAL: a segment larger than the route's MTU
// allows) is sent again one datagram a message, and so is everything to
// that address from then on (boundAddr.noGSO; a new address of the
// binding tries again), rather than refused again each batch.
type batchWriter struct {
	rc  syscall.RawConn
	v6  bool
	gso bool // UDP_SEGMENT is used

	// The plan of one write, made again each time (plan).
	msgs   []gsoMessage
	of     []int // of[i]: the message that packet i of the batch joined
	hs     []mmsghdr
	iovs   []unix.Iovec
	names  []unix.RawSockaddrInet6 // large enough for either family
	cmsgs  []byte                  // one UDP_SEGMENT control message per message
	again  []outPacket             // what a refused GSO message held, sent again
	write1 func(fd uintptr) bool   // w.sendmmsg, made once: a method value allocates
	from   int                     // the first message write1 sends
	n      int
	errno  syscall.Errno

	refused int // GSO messages the kernel refused, for tests
}

// gsoMessage is one message of a write: count packets of seg bytes (the
// last may be shorter) to one address.
type gsoMessage struct {
	to           *boundAddr
	seg, count   int
	bytes, first int // first: its first iovec
	open         bool
}

const (
	// gsoMaxSegments is the most datagrams per GSO message: the kernel's
	// UDP_MAX_SEGMENTS before Linux 6.7 (128 since).
	gsoMaxSegments = 64
	// gsoMaxBytes is the most payload per GSO message: one UDP datagram's
	// length field, less IPv6's header.
	gsoMaxBytes = 65535 - 48
)

var gsoCmsgSpace = unix.CmsgSpace(2)

func newBatchWriter(conn *net.UDPConn, v6 bool) (*batchWriter, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	w := &batchWriter{
		rc:    rc,
		v6:    v6,
		msgs:  make([]gsoMessage, 0, fastPathBatch),
		of:    make([]int, fastPathBatch),
		hs:    make([]mmsghdr, fastPathBatch),
		iovs:  make([]unix.Iovec, fastPathBatch),
		names: make([]unix.RawSockaddrInet6, fastPathBatch),
		cmsgs: make([]byte, fastPathBatch*gsoCmsgSpace),
		again: make([]outPacket, 0, fastPathBatch),
	}
	w.write1 = w.sendmmsg
	// The kernel knows UDP_SEGMENT if it answers for it (quic-go's test).
	rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
		w.gso = err == nil
	})
	return w, nil
}

// write sends out (at most fastPathBatch packets), and returns how many
// datagrams were sent and how many the socket refused.
func (w *batchWriter) write(out []outPacket) (sent, failed int) {
	sent, failed = w.writeOnce(out, w.gso)
	if len(w.again) > 0 { // GSO messages refused: their packets one by one
		sent2, failed2 := w.writeOnce(w.again, false)
		sent, failed = sent+sent2, failed+failed2
		clear(w.again)
		w.again = w.again[:0]
	}
	return sent, failed
}

func (w *batchWriter) writeOnce(out []outPacket, gso bool) (sent, failed int) {
	w.plan(out, gso)
	for w.from = 0; w.from < len(w.msgs); {
		if err := w.rc.Write(w.write1); err != nil {
			break // the socket is closed
		}
		for _, m := range w.msgs[w.from : w.from+w.n] {
			sent += m.count
		}
		w.from += w.n
		if w.errno == 0 {
			continue
		}
		m := &w.msgs[w.from]
		w.from++
		if m.count == 1 {
			failed++
			continue
		}
		w.refused++
		if errors.Is(w.errno, unix.EIO) {
			w.gso = false // the kernel has GSO but this route cannot use it
		} else {
			m.to.noGSO.Store(true) // nor the route to this address
		}
		for _, iov := range w.iovs[m.first : m.first+m.count] {
			w.again = append(w.again, outPacket{b: unsafe.Slice(iov.Base, iov.Len), to: m.to})
		}
	}
	for w.from < len(w.msgs) { // closed: the rest was not sent
		failed += w.msgs[w.from].count
		w.from++
	}
	clear(w.msgs[:cap(w.msgs)])
	clear(w.iovs)
	return sent, failed
}

// plan groups out into messages (w.msgs) and lays them out for sendmmsg:
// packet i joins the open message to its address if it is of that
// message's size, or shorter (which closes it: a GSO message's short
// datagram is its last), and there is room; otherwise it starts one.
func (w *batchWriter) plan(out []outPacket, gso bool) {
	w.msgs = w.msgs[:0]
	for i, p := range out {
		group := gso && !p.to.noGSO.Load()
		j := -1
		if group {
			for k := len(w.msgs) - 1; k >= 0; k-- {
				m := &w.msgs[k]
				if m.to.ap == p.to.ap {
					if m.open && len(p.b) <= m.seg && m.count < gsoMaxSegments && m.bytes+len(p.b) <= gsoMaxBytes {
						j = k
					}
					break // only the address's last message may take more
				}
			}
		}
		if j < 0 {
			j = len(w.msgs)
			w.msgs = append(w.msgs, gsoMessage{to: p.to, seg: len(p.b), open: group})
		}
		m := &w.msgs[j]
		m.count++
		m.bytes += len(p.b)
		m.open = m.open && len(p.b) == m.seg
		w.of[i] = j
	}
	first := 0
	for j := range w.msgs {
		m := &w.msgs[j]
		m.first = first
		first += m.count
		m.count = 0 // counted again as the iovecs are laid out
	}
	for i, p := range out {
		m := &w.msgs[w.of[i]]
		iov := &w.iovs[m.first+m.count]
		iov.Base = &p.b[0]
		iov.SetLen(len(p.b))
		m.count++
	}
	for j := range w.msgs {
		m := &w.msgs[j]
		h := &w.hs[j].hdr
		*h = unix.Msghdr{}
		h.Name = (*byte)(unsafe.Pointer(&w.names[j]))
		h.Namelen = w.sockaddr(&w.names[j], m.to)
		h.Iov = &w.iovs[m.first]
		h.SetIovlen(m.count)
		if m.count > 1 {
			c := w.cmsgs[j*gsoCmsgSpace : (j+1)*gsoCmsgSpace]
			ch := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
			ch.Level, ch.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
			ch.SetLen(unix.CmsgLen(2))
			binary.NativeEndian.PutUint16(c[unix.CmsgLen(0):], uint16(m.seg))
			h.Control = &c[0]
			h.SetControllen(gsoCmsgSpace)
		}
	}
}

// sockaddr writes a's address into sa, as the socket's family wants it,
// and returns its length.
func (w *batchWriter) sockaddr(sa *unix.RawSockaddrInet6, a *boundAddr) uint32 {
	port := a.ap.Port()
	if !w.v6 {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		*sa4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.ap.Addr().As4()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:], port)
		return unix.SizeofSockaddrInet4
	}
	*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.ap.Addr().As16()}
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], port)
	return unix.SizeofSockaddrInet6
}

// sendmmsg sends w.msgs from w.from; false waits until the socket is
// writable.
func (w *batchWriter) sendmmsg(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.hs[w.from])), uintptr(len(w.msgs)-w.from), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		w.n, w.errno = int(n), errno
		if errno != 0 {
			w.n = 0
		}
		return true
	}
}
