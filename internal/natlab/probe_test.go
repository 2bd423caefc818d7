package natlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// RFC 5780-style probes made of plain UDP sockets. Every socket is opened
// in a namespace with Host.Do and then driven from the test goroutine; each
// probe is a bounded number of attempts, each read has a deadline.

const (
	probeAttempts = 5
	probeWait     = 300 * time.Millisecond // per attempt, when an answer is expected
	silentAttempt = 3
	silentWait    = 150 * time.Millisecond // per attempt, when none is
)

// ip returns h's address of the family.
func ip(h *Host, v6 bool) netip.Addr {
	if v6 {
		return h.Addr6()
	}
	return h.Addr()
}

// udpOn opens a UDP socket on h, on port (0: any) of the family's wildcard
// address.
func udpOn(t *testing.T, h *Host, v6 bool, port uint16) *net.UDPConn {
	t.Helper()
	network, addr := "udp4", fmt.Sprintf("0.0.0.0:%d", port)
	if v6 {
		network, addr = "udp6", fmt.Sprintf("[::]:%d", port)
	}
	pc, err := h.ListenPacket(network, addr)
	if err != nil {
		t.Fatalf("listening on %s %s: %v", h.Name(), addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.(*net.UDPConn)
}

// endpoint is a socket and the address others send to it at.
type endpoint struct {
	conn *net.UDPConn
	addr netip.AddrPort
}

// serverOn opens a UDP socket on public host h at port.
func serverOn(t *testing.T, h *Host, v6 bool, port uint16) endpoint {
	t.Helper()
	return endpoint{udpOn(t, h, v6, port), netip.AddrPortFrom(ip(h, v6), port)}
}

// send sends a fresh nonce from "from" to addr until "to" receives it, and
// returns the source address "to" saw. It fails after probeAttempts.
func send(from *net.UDPConn, to *net.UDPConn, addr netip.AddrPort) (netip.AddrPort, error) {
	for range probeAttempts {
		if src, ok := attempt(from, to, addr, probeWait); ok {
			return src, nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("no datagram from %v to %v in %d attempts", from.LocalAddr(), addr, probeAttempts)
}

// silent reports whether nothing sent from "from" to addr reaches "to".
func silent(from *net.UDPConn, to *net.UDPConn, addr netip.AddrPort) bool {
	for range silentAttempt {
		if _, ok := attempt(from, to, addr, silentWait); ok {
			return false
		}
	}
	return true
}

// attempt sends one nonce and waits up to wait for it to arrive.
func attempt(from, to *net.UDPConn, addr netip.AddrPort, wait time.Duration) (netip.AddrPort, bool) {
	nonce := fmt.Appendf(nil, "probe %x", rand.Uint64())
	if _, err := from.WriteToUDPAddrPort(nonce, addr); err != nil {
		return netip.AddrPort{}, false
	}
	if err := to.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return netip.AddrPort{}, false
	}
	buf := make([]byte, 1500)
	for { // ends at the deadline at the latest
		n, src, err := to.ReadFromUDPAddrPort(buf)
		if err != nil {
			return netip.AddrPort{}, false
		}
		if bytes.Equal(buf[:n], nonce) {
			return netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), true
		}
	}
}

// udpRTT measures one round trip: client sends to the server's address, the
// server answers the source it saw.
func udpRTT(client *net.UDPConn, server endpoint) (time.Duration, netip.AddrPort, error) {
	start := time.Now()
	nonce := fmt.Appendf(nil, "rtt %x", rand.Uint64())
	if _, err := client.WriteToUDPAddrPort(nonce, server.addr); err != nil {
		return 0, netip.AddrPort{}, err
	}
	deadline := time.Now().Add(2 * time.Second)
	buf := make([]byte, 1500)
	server.conn.SetReadDeadline(deadline)
	var src netip.AddrPort
	for {
		n, from, err := server.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return 0, netip.AddrPort{}, fmt.Errorf("server: %w", err)
		}
		if bytes.Equal(buf[:n], nonce) {
			src = from
			break
		}
	}
	if _, err := server.conn.WriteToUDPAddrPort(nonce, src); err != nil {
		return 0, netip.AddrPort{}, err
	}
	client.SetReadDeadline(deadline)
	for {
		n, _, err := client.ReadFromUDPAddrPort(buf)
		if err != nil {
			return 0, netip.AddrPort{}, fmt.Errorf("client: %w", err)
		}
		if bytes.Equal(buf[:n], nonce) {
			return time.Since(start), netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), nil
		}
	}
}

// tcpConnect dials addr from h and returns how long the handshake took.
func tcpConnect(h *Host, addr netip.AddrPort, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	c, err := h.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return 0, err
	}
	d := time.Since(start)
	return d, c.Close()
}

// isTimeout reports whether err is a deadline or dial timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// families returns the address families the lab can test, logging why IPv6
// is missing when it is.
func families(t *testing.T, l *Lab) []bool {
	t.Helper()
	if ok, err := l.IPv6(); !ok {
		t.Logf("IPv6 not tested: %v", err)
		return []bool{false}
	}
	return []bool{false, true}
}

func familyName(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// tcpDial connects from h to addr, giving up after 5 s.
func tcpDial(h *Host, addr netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return h.DialContext(ctx, "tcp", addr.String())
}

// listenTCP listens on h at addr.
func listenTCP(h *Host, addr netip.AddrPort) (net.Listener, error) {
	return h.Listen("tcp", addr.String())
}
