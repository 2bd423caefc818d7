package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

// targetFastCPU is issue 12's target for the fast path: the super peer's
// CPU per relayed datagram at most 1.5× the plain forwarder's.
const targetFastCPU = 1.5

// fastValidateTimeout bounds a device's address validation on the fast
// path; fastProbeEvery is how often it probes meanwhile.
const (
	fastValidateTimeout = 5 * time.Second
	fastProbeEvery      = 200 * time.Millisecond
)

// measureFast measures the path through the super peer's fast path on
// both legs: the devices register and pair over HTTP/2, ask for bindings
// on their legs, and then send from UDP sockets of their own to the fast
// path's port, as a device that validated it does.
func measureFast(ctx context.Context, b *testing.B, c *testcaddy.Caddy, sp Process, port int) pathResult {
	b.Helper()
	l, ends, err := dialFastLink(ctx, c, port)
	if err != nil {
		b.Fatalf("setting up the fast↔fast relay: %v", err)
	}
	defer l.close()
	r := measure(ctx, b, l, sp.PID, &sp)
	r.key, r.cpuTarget = "fast", targetFastCPU
	if n := ends[0].onLeg.Load() + ends[1].onLeg.Load(); n > 0 {
		fmt.Printf("fast↔fast: %d datagrams came on the HTTP/2 legs instead of the fast path\n", n)
	}
	return r
}

// dialFastLink opens two HTTP/2 relay legs towards each other and moves
// both onto the fast path.
func dialFastLink(ctx context.Context, c *testcaddy.Caddy, port int) (*link, [2]*fastConn, error) {
	var ends [2]*fastConn
	a, b, closeLegs, err := dialRelayLegs(ctx, c, rendezvous.TransportH2)
	if err != nil {
		return nil, ends, err
	}
	sp := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	closeAll := func() {
		for _, e := range ends {
			if e != nil {
				e.sock.Close()
			}
		}
		closeLegs()
		for _, e := range ends {
			if e != nil {
				e.legs.Wait()
			}
		}
	}
	fail := func(err error) (*link, [2]*fastConn, error) {
		closeAll()
		return nil, ends, err
	}
	for i, leg := range []net.PacketConn{a, b} {
		if ends[i], err = newFastConn(ctx, leg.(*relay.StreamConn), sp); err != nil {
			return fail(fmt.Errorf("device %c's fast path: %w", 'A'+i, err))
		}
	}
	// Each device sends once on its fast path, so that the super peer
	// sends the other's packets there too (relay.fastPathActive).
	for _, e := range ends {
		if _, err := e.WriteTo([]byte{0}, nil); err != nil {
			return fail(err)
		}
	}
	return newLink("fast↔fast", ends[0], ends[1], nil, nil, closeAll), ends, nil
}

// fastConn is a device's relay session on the fast path: a UDP socket of
// its own, validated with the binding its leg got. What the super peer
// still sends on the leg is read and counted, not delivered.
type fastConn struct {
	sock  *net.UDPConn
	sp    netip.AddrPort
	fc    *relay.FastPathClient
	onLeg atomic.Uint64 // datagrams that came on the leg
	legs  sync.WaitGroup

	wmu  sync.Mutex // guards wbuf: both of B's goroutines write
	wbuf []byte
	rbuf []byte // ReadFrom's: one reader
}

func newFastConn(ctx context.Context, leg *relay.StreamConn, sp netip.AddrPort) (*fastConn, error) {
	ctx, cancel := context.WithTimeout(ctx, fastValidateTimeout)
	defer cancel()
	sock, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	sock.SetReadBuffer(relaySocketBuffer)
	sock.SetWriteBuffer(relaySocketBuffer)
	c := &fastConn{sock: sock, sp: sp, wbuf: make([]byte, 0, 2048), rbuf: make([]byte, 2048)}
	// The leg's reader takes the binding too: it comes on the leg.
	c.legs.Go(func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := leg.ReadFrom(buf); err != nil {
				return
			}
			c.onLeg.Add(1)
		}
	})
	bnd, err := leg.RequestFastPath(ctx)
	if err == nil && bnd.Port != sp.Port() {
		err = fmt.Errorf("the binding names port %d, the super peer serves %d", bnd.Port, sp.Port())
	}
	if err != nil {
		sock.Close()
		return nil, err // the leg's reader ends with the leg
	}
	c.fc = relay.NewFastPathClient(bnd)
	if err := c.validate(ctx); err != nil {
		sock.Close()
		return nil, err // the leg's reader ends with the leg
	}
	return c, nil
}

// validate probes until the super peer has bound the socket's address.
func (c *fastConn) validate(ctx context.Context) error {
	buf := make([]byte, 2048)
	for !c.fc.Bound() {
		if _, err := c.sock.WriteToUDPAddrPort(c.fc.AppendProbe(nil), c.sp); err != nil {
			return err
		}
		c.sock.SetReadDeadline(time.Now().Add(fastProbeEvery))
		for !c.fc.Bound() {
			n, err := c.sock.Read(buf)
			if err != nil {
				break // probe again
			}
			if _, answer, err := c.fc.Handle(buf[:n], nil); err == nil && answer != nil {
				c.sock.WriteToUDPAddrPort(answer, c.sp)
			}
		}
		if ctx.Err() != nil {
			return errors.New("the fast path did not validate the address (is its port open?)")
		}
	}
	return c.sock.SetReadDeadline(time.Time{})
}

// WriteTo sends p to the peer as DATA (context ID 0, then p).
func (c *fastConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = append(c.fc.AppendData(c.wbuf[:0], nil), 0)
	c.wbuf = append(c.wbuf, p...)
	if _, err := c.sock.WriteToUDPAddrPort(c.wbuf, c.sp); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ReadFrom returns the next datagram from the peer; other fast-path
// packets (a late BOUND) are skipped.
func (c *fastConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, err := c.sock.Read(c.rbuf)
		if err != nil {
			return 0, nil, err
		}
		payload, _, err := c.fc.Handle(c.rbuf[:n], nil)
		if err != nil || len(payload) == 0 || payload[0] != 0 {
			continue
		}
		return copy(p, payload[1:]), nil, nil
	}
}

// The rest of net.PacketConn, which link does not use.
func (c *fastConn) Close() error                       { return c.sock.Close() }
func (c *fastConn) LocalAddr() net.Addr                { return c.sock.LocalAddr() }
func (c *fastConn) SetDeadline(t time.Time) error      { return c.sock.SetDeadline(t) }
func (c *fastConn) SetReadDeadline(t time.Time) error  { return c.sock.SetReadDeadline(t) }
func (c *fastConn) SetWriteDeadline(t time.Time) error { return c.sock.SetWriteDeadline(t) }
