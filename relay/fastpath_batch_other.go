//go:build !linux

package relay

import (
	"net"
	"net/netip"
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
