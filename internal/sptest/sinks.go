package sptest

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/netsody/superpeer/identity"
)

// Sinks stand in for a stranger's victims: UDP sockets that count the
// packets they receive, so that a test can announce their addresses and
// measure what a device sends there.
type Sinks struct {
	conns []*net.UDPConn
	got   []atomic.Int64
}

// NewSinks binds a sink on each of ips (port 0: any), counting the
// packets for which count is true (nil counts every packet); they close
// when the test ends.
func NewSinks(t testing.TB, ips []netip.Addr, count func([]byte) bool) *Sinks {
	t.Helper()
	s := &Sinks{got: make([]atomic.Int64, len(ips))}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		for _, c := range s.conns {
			c.Close()
		}
		wg.Wait()
	})
	for i, ip := range ips {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			t.Fatal(err)
		}
		s.conns = append(s.conns, c)
		wg.Go(func() {
			buf := make([]byte, 2048)
			for {
				n, _, err := c.ReadFromUDP(buf)
				if err != nil {
					return
				}
				if count == nil || count(buf[:n]) {
					s.got[i].Add(1)
				}
			}
		})
	}
	return s
}

// Loopback4 is n addresses of 127.0.0.0/8 from 127.0.0.2 on, repeating
// after 200: a device sends there only when its super peer is on
// loopback too.
func Loopback4(n int) []netip.Addr {
	ips := make([]netip.Addr, n)
	for i := range ips {
		ips[i] = netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i%200)})
	}
	return ips
}

// Addrs is the addresses of sinks from to to.
func (s *Sinks) Addrs(from, to int) []netip.AddrPort {
	var as []netip.AddrPort
	for _, c := range s.conns[from:to] {
		as = append(as, c.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	return as
}

// Total is the packets counted at all sinks, and the most at one.
func (s *Sinks) Total() (sum, most int64) {
	for i := range s.got {
		n := s.got[i].Load()
		sum, most = sum+n, max(most, n)
	}
	return sum, most
}

// RoundTrip sends msg on a new stream of c, whose other end echoes it,
// and checks what comes back, within 10 s.
func RoundTrip(t testing.TB, c interface {
	OpenStreamSync(context.Context) (*quic.Stream, error)
}, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	str, err := c.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := str.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	str.Close()
	if got, err := io.ReadAll(str); err != nil || string(got) != msg {
		t.Fatalf("echo: %q, %v", got, err)
	}
}

// NewIdentity generates a fresh identity: a device, or a stranger
// (identities are free).
func NewIdentity(t testing.TB) *identity.Identity {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id
}
