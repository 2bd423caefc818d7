package sptest

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// UDPDelay relays UDP to target, delaying every packet by delay each way,
// so that a super peer behind it is further away. Each client address gets
// its own upstream socket. It returns the address to use instead of
// target.
func UDPDelay(t testing.TB, target netip.AddrPort, delay time.Duration) netip.AddrPort {
	t.Helper()
	return UDPDelayFunc(t, target, func() time.Duration { return delay })
}

// UDPDelayFunc is UDPDelay with a delay that may change while it runs.
func UDPDelayFunc(t testing.TB, target netip.AddrPort, delay func() time.Duration) netip.AddrPort {
	t.Helper()
	front, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(target.Addr(), 0)))
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		backs = map[netip.AddrPort]*net.UDPConn{}
		wg    sync.WaitGroup
	)
	later := func(f func()) {
		wg.Add(1)
		time.AfterFunc(delay(), func() { defer wg.Done(); f() })
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, from, err := front.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			mu.Lock()
			back := backs[from]
			if back == nil {
				back, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(target))
				if err != nil {
					mu.Unlock()
					continue
				}
				backs[from] = back
				wg.Add(1)
				go func(back *net.UDPConn, client netip.AddrPort) {
					defer wg.Done()
					b := make([]byte, 64<<10)
					for {
						n, err := back.Read(b)
						if err != nil {
							return
						}
						pkt := append([]byte(nil), b[:n]...)
						later(func() { front.WriteToUDPAddrPort(pkt, client) })
					}
				}(back, from)
			}
			mu.Unlock()
			pkt := append([]byte(nil), buf[:n]...)
			later(func() { back.Write(pkt) })
		}
	}()
	t.Cleanup(func() {
		front.Close()
		mu.Lock()
		for _, b := range backs {
			b.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return front.LocalAddr().(*net.UDPAddr).AddrPort()
}

// UDPBlocked gives a port that forwards TCP to target and silently drops
// UDP (a socket nobody reads), as a network that blocks UDP does.
func UDPBlocked(t testing.TB, target netip.AddrPort) netip.AddrPort {
	t.Helper()
	var (
		ln   net.Listener
		hole net.PacketConn
		err  error
	)
	for range 50 {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(target.Addr(), 0).String())
		if err != nil {
			t.Fatal(err)
		}
		hole, err = net.ListenPacket("udp", ln.Addr().String())
		if err == nil {
			break
		}
		ln.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target.String())
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(up, c); up.Close() }()
			go func() { defer wg.Done(); io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		hole.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}
