package sptest

import (
	"context"
	"net"
	"testing"

	"github.com/quic-go/quic-go"
)

// FromLoopback returns a TCP dialer and a QUIC transport whose
// connections leave from the loopback address src, another source prefix
// than 127.0.0.1 (Linux routes all of 127.0.0.0/8 to the loopback
// interface), for tests of per-source limits. It skips the test if src
// cannot be bound. The transport is closed when the test ends.
func FromLoopback(t testing.TB, src string) (func(ctx context.Context, network, addr string) (net.Conn, error), *quic.Transport) {
	ip := net.ParseIP(src)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
	if err != nil {
		t.Skipf("cannot bind %s: %v", src, err)
	}
	tr := &quic.Transport{Conn: pc}
	t.Cleanup(func() { tr.Close() })
	return (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}).DialContext, tr
}
