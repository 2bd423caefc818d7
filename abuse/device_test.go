package abuse_test

// Devices of the peer package against the real Caddy, and what a
// stranger can do to them.

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/peer"
)

// newDevice starts a peer.Device on 127.0.0.1 with c as its super peer
// and waits for its session.
func newDevice(t *testing.T, c *testcaddy.Caddy, mods ...func(*peer.Config)) *peer.Device {
	t.Helper()
	cfg := peer.Config{Identity: newID(t), SuperPeers: []string{url(c)}, RootCAs: c.Roots, ListenAddr: "127.0.0.1:0"}
	for _, m := range mods {
		m(&cfg)
	}
	d, err := peer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	waitFor(t, 10*time.Second, "the device's session with Caddy", func() bool {
		st := d.Status().SuperPeers
		return len(st) > 0 && st[0].Connected
	})
	return d
}

// echo accepts one connection on d and echoes its streams until the test
// ends.
func echo(t *testing.T, d *peer.Device) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		c, err := d.Accept(ctx)
		if err != nil {
			return
		}
		defer c.CloseWithError(0, "")
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			str, err := c.AcceptStream(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				io.Copy(str, str)
				str.Close()
			})
		}
	}()
}

// roundTrip dials to from within 10 s and checks an echo of msg.
func roundTrip(t *testing.T, from, to *peer.Device, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := from.Dial(ctx, to.PeerID())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseWithError(0, "")
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

// sinks stand in for a stranger's victims: UDP sockets on loopback that
// count every packet they receive.
type sinks struct {
	conns []*net.UDPConn
	got   []atomic.Int64
}

// newSinks binds n sinks on 127.0.0.x: loopback, which a device punches
// only when its super peer is on loopback too.
func newSinks(t *testing.T, n int) *sinks {
	t.Helper()
	var ips []netip.Addr
	for i := range n {
		ips = append(ips, netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i%200)}))
	}
	return bindSinks(t, ips)
}

// newSinksOn binds n sinks on ip.
func newSinksOn(t *testing.T, ip netip.Addr, n int) *sinks {
	t.Helper()
	ips := make([]netip.Addr, n)
	for i := range ips {
		ips[i] = ip
	}
	return bindSinks(t, ips)
}

func bindSinks(t *testing.T, ips []netip.Addr) *sinks {
	t.Helper()
	s := &sinks{got: make([]atomic.Int64, len(ips))}
	var wg sync.WaitGroup
	for i, ip := range ips {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			t.Fatal(err)
		}
		s.conns = append(s.conns, c)
		wg.Go(func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := c.ReadFromUDP(buf); err != nil {
					return
				}
				s.got[i].Add(1)
			}
		})
	}
	t.Cleanup(func() {
		for _, c := range s.conns {
			c.Close()
		}
		wg.Wait()
	})
	return s
}

func (s *sinks) addrs(from, to int) []netip.AddrPort {
	var as []netip.AddrPort
	for _, c := range s.conns[from:to] {
		as = append(as, c.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	return as
}

// total is the packets all sinks got, and the most one got.
func (s *sinks) total() (sum, most int64) {
	for i := range s.got {
		n := s.got[i].Load()
		sum, most = sum+n, max(most, n)
	}
	return sum, most
}
