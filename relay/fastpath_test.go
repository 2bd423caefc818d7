package relay

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/netsody/superpeer/rendezvous"
)

// newFastServer is a test server that serves the fast path on a loopback
// port.
func newFastServer(t testing.TB, cfg Config) (*testServer, netip.AddrPort) {
	t.Helper()
	ts := newTestServer(t, cfg)
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- ts.rl.ServeFastPath(conn) }()
	t.Cleanup(func() {
		conn.Close()
		if err := <-served; err != nil {
			t.Errorf("ServeFastPath: %v", err)
		}
	})
	for i := 0; ts.rl.fast.Load() == nil; i++ {
		if i == 1000 {
			t.Fatal("the fast path did not start")
		}
		time.Sleep(time.Millisecond)
	}
	return ts, conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// fpDevice is a device's socket on the fast path, with the client the
// device library will use.
type fpDevice struct {
	c      *FastPathClient
	conn   *net.UDPConn
	server netip.AddrPort
	data   chan []byte // DATA payloads
	ctrl   chan []byte // every other fast-path packet, whole
	done   chan struct{}
}

func newFPDevice(t testing.TB, b FastPathBinding, server netip.AddrPort) *fpDevice {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	d := &fpDevice{c: NewFastPathClient(b), conn: conn, server: netip.AddrPortFrom(server.Addr(), b.Port),
		data: make(chan []byte, 1024), ctrl: make(chan []byte, 64), done: make(chan struct{})}
	go d.readLoop()
	t.Cleanup(func() { conn.Close(); <-d.done })
	return d
}

func (d *fpDevice) readLoop() {
	defer close(d.done)
	buf := make([]byte, 2048)
	for {
		n, _, err := d.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		p := append([]byte(nil), buf[:n]...)
		ch := d.ctrl
		if IsFastPath(p) && p[0] == fpData {
			ch = d.data
		}
		select {
		case ch <- p:
		default:
		}
	}
}

func (d *fpDevice) write(t testing.TB, p []byte) {
	t.Helper()
	if _, err := d.conn.WriteToUDPAddrPort(p, d.server); err != nil {
		t.Fatal(err)
	}
}

func (d *fpDevice) sendData(t testing.TB, payload []byte) { d.write(t, d.c.AppendData(nil, payload)) }

// nextCtrl returns the next control packet, or nil after a while.
func (d *fpDevice) nextCtrl(wait time.Duration) []byte {
	select {
	case p := <-d.ctrl:
		return p
	case <-time.After(wait):
		return nil
	}
}

// validate runs PROBE, CHALLENGE, ANSWER, BOUND until bound.
func (d *fpDevice) validate(t testing.TB) {
	t.Helper()
	for range 10 {
		d.write(t, d.c.AppendProbe(nil))
		for !d.c.Bound() {
			p := d.nextCtrl(500 * time.Millisecond)
			if p == nil {
				break
			}
			_, answer, err := d.c.Handle(p, nil)
			if err != nil {
				t.Fatal(err)
			}
			if answer != nil {
				d.write(t, answer)
			}
		}
		if d.c.Bound() {
			return
		}
	}
	t.Fatal("the fast path never bound")
}

func (d *fpDevice) recv(t testing.TB) []byte {
	t.Helper()
	select {
	case p := <-d.data:
		payload, _, err := d.c.Handle(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		return payload
	case <-time.After(5 * time.Second):
		t.Fatal("nothing relayed on the fast path")
	}
	return nil
}

// end is one device's end of a relayed transfer: how it sends an HTTP
// datagram payload, and what it receives.
type end struct {
	send func(p []byte)
	recv <-chan []byte
}

func (d *fpDevice) end(t testing.TB) end {
	out := make(chan []byte, 1024)
	go func() {
		for p := range d.data {
			payload, _, err := d.c.Handle(p, nil)
			if err == nil {
				out <- payload
			}
		}
	}()
	t.Cleanup(func() { close(d.data) })
	return end{send: func(p []byte) { d.sendData(t, p) }, recv: out}
}

// merge receives from both a and b until the test ends.
func merge(t testing.TB, a, b <-chan []byte) <-chan []byte {
	out := make(chan []byte, 1024)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	for _, in := range []<-chan []byte{a, b} {
		go func() {
			for {
				select {
				case p, ok := <-in:
					if !ok {
						return
					}
					select {
					case out <- p:
					default:
					}
				case <-stop:
					return
				}
			}
		}()
	}
	return out
}

func (l *rawLeg) end(t testing.TB) end {
	return end{send: func(p []byte) { l.sendData(p) }, recv: l.data}
}

// transfer sends n datagrams of size bytes from a to b, each acknowledged
// by b through the relay and sent again until it is, and checks that b
// got exactly what a sent (SHA-256).
func transfer(t *testing.T, a, b end, n, size int) {
	t.Helper()
	sent := sha256.New()
	payloads := make([][]byte, n)
	for i := range payloads {
		p := make([]byte, size)
		p[0] = 0 // context ID
		binary.BigEndian.PutUint32(p[1:], uint32(i))
		for j := 5; j < size; j++ {
			p[j] = byte(i*7 + j)
		}
		payloads[i] = p
		sent.Write(p)
	}
	var mu sync.Mutex
	got := make([][]byte, n)
	stop := make(chan struct{})
	defer close(stop)
	go func() { // b: keep and acknowledge
		for {
			select {
			case p := <-b.recv:
				if len(p) < 5 {
					continue
				}
				i := binary.BigEndian.Uint32(p[1:])
				if int(i) < n {
					mu.Lock()
					got[i] = p
					mu.Unlock()
					b.send(p[:5])
				}
			case <-stop:
				return
			}
		}
	}()
	acked := make([]bool, n)
	left := n
	for round := 0; left > 0; round++ {
		if round == 50 {
			t.Fatalf("%d of %d datagrams never acknowledged", left, n)
		}
		for i, p := range payloads {
			if !acked[i] {
				a.send(p)
			}
		}
		deadline := time.After(300 * time.Millisecond)
	collect:
		for left > 0 {
			select {
			case p := <-a.recv:
				if i := int(binary.BigEndian.Uint32(p[1:])); len(p) == 5 && i < n && !acked[i] {
					acked[i] = true
					left--
				}
			case <-deadline:
				break collect
			}
		}
	}
	received := sha256.New()
	mu.Lock()
	for _, p := range got {
		received.Write(p)
	}
	mu.Unlock()
	if !bytes.Equal(sent.Sum(nil), received.Sum(nil)) {
		t.Fatal("SHA-256 of what arrived differs from what was sent")
	}
}

// A device binds over its leg, HTTP/3 or HTTP/2, validates its address,
// and its packets go to the peer's leg whatever its transport: HTTP/3
// datagrams, HTTP/2 capsules, or its own fast path.
func TestFastPathMixedLegs(t *testing.T) {
	for _, tc := range []struct {
		name       string
		trA, trB   rendezvous.Transport
		fastB      bool
		transferOK bool
	}{
		{"h3 fast to h2", rendezvous.TransportH3, rendezvous.TransportH2, false, true},
		{"h2 fast to h3", rendezvous.TransportH2, rendezvous.TransportH3, false, true},
		{"h3 fast to h2 fast", rendezvous.TransportH3, rendezvous.TransportH2, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, fpAddr := newFastServer(t, Config{})
			a, b := ts.device(t, tc.trA), ts.device(t, tc.trB)
			la, lb := pairRaw(t, a, b)
			fa := newFPDevice(t, la.bind(t), fpAddr)
			fa.validate(t)
			endB := lb.end(t)
			if tc.fastB {
				fb := newFPDevice(t, lb.bind(t), fpAddr)
				fb.validate(t)
				// b reads its leg too, as a device does: its peer's packets
				// come on its fast path only once it sends there (to).
				endB = fb.end(t)
				endB.recv = merge(t, endB.recv, lb.data)
			}
			transfer(t, fa.end(t), endB, 200, 1000)
			st := &ts.rl.Stats().FastPath
			if st.Validations.Load() == 0 || st.Datagrams.Load() == 0 {
				t.Fatalf("validations %d, datagrams sent on the fast path %d", st.Validations.Load(), st.Datagrams.Load())
			}
		})
	}
}
