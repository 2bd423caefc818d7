package sptest

import (
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
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
	return StartUDPProxy(t, target, delay).Addr()
}

// UDPProxy relays UDP to a target from one upstream socket per client
// address, as a NAT maps each device to a port of its own, optionally
// delaying every packet. Rebind gives the clients new mappings.
type UDPProxy struct {
	front  *net.UDPConn
	target netip.AddrPort
	delay  func() time.Duration

	mu    sync.Mutex // guards backs
	backs map[netip.AddrPort]*net.UDPConn
	wg    sync.WaitGroup
	// blocked drops every packet, both ways (SetBlocked).
	blocked atomic.Bool
}

// SetBlocked starts (true) or stops dropping every packet both ways, as
// a firewall rule would; the clients keep their mappings.
func (p *UDPProxy) SetBlocked(blocked bool) { p.blocked.Store(blocked) }

// StartUDPProxy relays to target until the test ends; delay (nil for none)
// is asked for every packet.
func StartUDPProxy(t testing.TB, target netip.AddrPort, delay func() time.Duration) *UDPProxy {
	t.Helper()
	front, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(target.Addr(), 0)))
	if err != nil {
		t.Fatal(err)
	}
	return startUDPProxy(t, front, target, delay)
}

// startUDPProxy relays what comes to front as StartUDPProxy does.
func startUDPProxy(t testing.TB, front *net.UDPConn, target netip.AddrPort, delay func() time.Duration) *UDPProxy {
	if delay == nil {
		delay = func() time.Duration { return 0 }
	}
	p := &UDPProxy{front: front, target: target, delay: delay, backs: map[netip.AddrPort]*net.UDPConn{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		front.Close()
		p.mu.Lock()
		for _, b := range p.backs {
			b.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// Addr is the address to use instead of the target.
func (p *UDPProxy) Addr() netip.AddrPort { return p.front.LocalAddr().(*net.UDPAddr).AddrPort() }

// Rebind gives every client a new upstream socket, as a NAT that lost its
// mappings (or changed its address) does: the target sees the client's
// packets come from a new address, and what it sends to the old one is
// lost. It returns the new addresses.
func (p *UDPProxy) Rebind() []netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	var now []netip.AddrPort
	for client, old := range p.backs {
		back, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(p.target))
		if err != nil {
			continue
		}
		old.Close()
		p.backs[client] = back
		p.wg.Add(1)
		go p.replies(back, client)
		now = append(now, back.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	return now
}

func (p *UDPProxy) later(f func()) {
	p.wg.Add(1)
	time.AfterFunc(p.delay(), func() { defer p.wg.Done(); f() })
}

// serve relays from clients to the target.
func (p *UDPProxy) serve() {
	defer p.wg.Done()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := p.front.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		back := p.backs[from]
		if back == nil {
			back, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(p.target))
			if err != nil {
				p.mu.Unlock()
				continue
			}
			p.backs[from] = back
			p.wg.Add(1)
			go p.replies(back, from)
		}
		p.mu.Unlock()
		if p.blocked.Load() {
			continue
		}
		pkt := append([]byte(nil), buf[:n]...)
		p.later(func() { back.Write(pkt) })
	}
}

// replies relays what the target sends to back to client.
func (p *UDPProxy) replies(back *net.UDPConn, client netip.AddrPort) {
	defer p.wg.Done()
	b := make([]byte, 64<<10)
	for {
		n, err := back.Read(b)
		if err != nil {
			return
		}
		if p.blocked.Load() {
			continue
		}
		pkt := append([]byte(nil), b[:n]...)
		p.later(func() { p.front.WriteToUDPAddrPort(pkt, client) })
	}
}

// UDPBlocked gives a port that forwards TCP to target and silently drops
// UDP (a socket nobody reads), as a network that blocks UDP does.
func UDPBlocked(t testing.TB, target netip.AddrPort) netip.AddrPort {
	t.Helper()
	ln, hole := listenTCPUDP(t, target.Addr().String())
	t.Cleanup(func() { hole.Close() })
	forwardTCP(t, ln, target)
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// UDPSwitch gives a port that forwards TCP to target, and UDP as a
// UDPProxy does while UDP is not blocked (SetBlocked): a network that
// starts or stops blocking UDP while a device uses it.
func UDPSwitch(t testing.TB, target netip.AddrPort) *UDPProxy {
	t.Helper()
	ln, front := listenTCPUDP(t, target.Addr().String())
	forwardTCP(t, ln, target)
	return startUDPProxy(t, front.(*net.UDPConn), target, nil)
}

// listenTCPUDP listens on one port of host for TCP and UDP both, as a
// super peer does.
func listenTCPUDP(t testing.TB, host string) (net.Listener, net.PacketConn) {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		if err == nil {
			return ln, pc
		}
		ln.Close()
	}
	t.Fatalf("no port free for TCP and UDP on %s", host)
	return nil, nil
}

// forwardTCP forwards every connection to ln to target, until the test
// ends.
func forwardTCP(t testing.TB, ln net.Listener, target netip.AddrPort) {
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
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}
