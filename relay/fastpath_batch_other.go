//go:build !linux

package relay

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// batchReader reads one datagram per call where recvmmsg(2) is not
// available; ReadFromUDPAddrPort allocates nothing.
type batchReader struct {
	conn *net.UDPConn
	bufs [][]byte
	n    int
	src  netip.AddrPort
}

func newBatchReader(conn *net.UDPConn, bufs [][]byte) (*batchReader, error) {
	return &batchReader{conn: conn, bufs: bufs}, nil
}

func (r *batchReader) read() (int, error) {
	n, src, err := r.conn.ReadFromUDPAddrPort(r.bufs[0])
	if err != nil {
		return 0, err
	}
	r.n, r.src = n, netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	return 1, nil
}

func (r *batchReader) packet(int) ([]byte, netip.AddrPort) { return r.bufs[0][:r.n], r.src }

// batchWriter is x/net's batch write where there is no UDP GSO: one
// datagram per message (sendmmsg(2) where the system has it, else one
// write per datagram).
type batchWriter struct {
	w interface {
		WriteBatch(ms []ipv4.Message, flags int) (int, error)
	}
	ms []ipv4.Message
}

func newBatchWriter(conn *net.UDPConn, v6 bool) (*batchWriter, error) {
	w := &batchWriter{ms: make([]ipv4.Message, fastPathBatch)}
	if v6 {
		w.w = ipv6.NewPacketConn(conn)
	} else {
		w.w = ipv4.NewPacketConn(conn)
	}
	for i := range w.ms {
		w.ms[i].Buffers = make([][]byte, 1)
	}
	return w, nil
}

// write sends out, and returns how many datagrams were sent and how many
// the socket refused.
func (w *batchWriter) write(out []outPacket) (sent, failed int) {
	ms := w.ms[:len(out)]
	for i, p := range out {
		ms[i].Buffers[0], ms[i].Addr = p.b, p.to.ua
	}
	for i := 0; i < len(ms); {
		n, err := w.w.WriteBatch(ms[i:], 0)
		sent += n
		if err != nil {
			n++ // skip the one refused
			failed++
		}
		i += n
	}
	for i := range ms {
		ms[i].Buffers[0], ms[i].Addr = nil, nil
	}
	return sent, failed
}
