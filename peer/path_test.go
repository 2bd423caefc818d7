package peer

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

// fakeWriter is the sending side of a path, without a network: a
// device's socket (directWriter) or a relay leg (net.PacketConn).
type fakeWriter struct {
	net.PacketConn // nil: a relay leg is only written and closed
	mu             sync.Mutex
	sent           []string // "to: packet"
	closed         bool
}

func (w *fakeWriter) writeUDP(b []byte, to netip.AddrPort) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sent = append(w.sent, to.String()+": "+string(b))
	return len(b), nil
}

func (w *fakeWriter) WriteTo(b []byte, _ net.Addr) (int, error) {
	return w.writeUDP(b, netip.AddrPort{})
}

func (w *fakeWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	return nil
}

func (w *fakeWriter) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.sent
	w.sent = nil
	return s
}

// offlineDevice is a device without sockets or super peers: enough for
// a peerState's transitions.
func offlineDevice(t *testing.T) *Device {
	t.Helper()
	self, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Identity: self}.withDefaults()
	d := &Device{cfg: cfg, id: self.PeerID(), log: zap.NewNop(), closed: make(chan struct{}),
		peers: make(map[identity.PeerID]*peerState)}
	d.guard.init(cfg)
	d.policy.init(cfg)
	d.sock = newSock(nil, d)
	return d
}

// The transitions, driven one after another against one peer, report
// each change of path once, in order, and nothing else; the socket knows
// the peer's direct address only while it is one.
func TestPathTransitions(t *testing.T) {
	d := offlineDevice(t)
	w := d.Watch()
	defer w.Close()
	published, cancel := context.WithCancel(context.Background())
	cancel() // Next returns what was published, then ends
	other, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	p := d.peer(other.PeerID(), true)
	udp := &fakeWriter{}
	p.out = udp

	spA, spB := &superPeer{url: "https://a.example"}, &superPeer{url: "https://b.example"}
	legA, legB := &fakeWriter{}, &fakeWriter{}
	relayA := &relayPath{conn: legA, sp: spA, tr: rendezvous.TransportH3}
	relayB := &relayPath{conn: legB, sp: spB, tr: rendezvous.TransportH2}
	addr1, addr2 := netip.MustParseAddrPort("192.0.2.1:1000"), netip.MustParseAddrPort("198.51.100.2:2000")

	// pong answers a ping sent rtt ago to from.
	nonce := uint64(0)
	pong := func(from netip.AddrPort, rtt time.Duration) func() {
		return func() {
			nonce++
			p.mu.Lock()
			p.punch.pings[nonce] = pingSent{to: from, at: time.Now().Add(-rtt)}
			p.mu.Unlock()
			p.onPong(punch{typ: punchPong, sender: p.id, receiver: d.id, nonce: nonce}, from)
		}
	}
	locked := func(f func()) func() {
		return func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			f()
		}
	}
	relayAVia := "relay via https://a.example (h3)"
	// A pong maps its address to the peer, whether or not it becomes the
	// direct path: the peer's packets may come from there. The direct
	// address that timed out is unmapped; forgetting unmaps all.
	steps := []struct {
		name   string
		do     func()
		events []string         // reported by this step, in order
		mapped []netip.AddrPort // the addresses the socket maps to the peer
	}{
		{"relay up", locked(func() { p.relayUpLocked(relayA) }), []string{relayAVia}, nil},
		{"pong validates", pong(addr1, 20*time.Millisecond), []string{"direct " + addr1.String()}, []netip.AddrPort{addr1}},
		{"pong again: RTT only", pong(addr1, 30*time.Millisecond), nil, []netip.AddrPort{addr1}},
		{"slower address", pong(addr2, 15*time.Millisecond), nil, []netip.AddrPort{addr1, addr2}},
		{"faster address", pong(addr2, time.Millisecond), []string{"direct " + addr2.String()}, []netip.AddrPort{addr1, addr2}},
		{"timeout", locked(p.directLostLocked), []string{relayAVia}, []netip.AddrPort{addr1}},
		{"move to another relay", locked(func() {
			if old := p.relayUpLocked(relayB); old != relayA {
				t.Errorf("the move replaced %v, want relay A", old)
			}
		}), []string{"relay via https://b.example (h2)"}, []netip.AddrPort{addr1}},
		{"the replaced relay ends", locked(func() {
			if p.relayDownLocked(relayA) {
				t.Error("relay A is still the relay path after the move")
			}
		}), nil, []netip.AddrPort{addr1}},
		{"relay down", locked(func() {
			if !p.relayDownLocked(relayB) {
				t.Error("relay B is not the relay path")
			}
		}), []string{"none"}, []netip.AddrPort{addr1}},
		{"relay up again", locked(func() { p.relayUpLocked(relayA) }), []string{relayAVia}, []netip.AddrPort{addr1}},
		{"forget", func() {
			if !p.forgetIfIdle(-time.Hour) {
				t.Error("not forgotten")
			}
		}, []string{"none"}, nil},
	}
	for _, st := range steps {
		st.do()
		var events []string
		for {
			ev, err := w.Next(published)
			if err != nil {
				break
			}
			events = append(events, ev.(PathEvent).Path.String())
		}
		if !slices.Equal(events, st.events) {
			t.Errorf("%s: reported %q, want %q", st.name, events, st.events)
		}
		var mapped []netip.AddrPort
		for a := range d.sock.byAddr {
			mapped = append(mapped, a)
		}
		slices.SortFunc(mapped, netip.AddrPort.Compare)
		if !slices.Equal(mapped, st.mapped) {
			t.Errorf("%s: the socket maps %v, want %v", st.name, mapped, st.mapped)
		}
	}
	d.wg.Wait() // sendAllLocked's senders
	if !p.isGone() || len(d.sock.byVirt) != 0 {
		t.Error("a forgotten peer is not gone, or still known to the socket")
	}
	if !legA.closed {
		t.Error("forgetting did not close the relay")
	}
}

// A packet sent while the peer has no path waits for the first one, and
// the last packets sent go again over each new path.
func TestPathFlushAndTail(t *testing.T) {
	d := offlineDevice(t)
	p := newPeerState(d, identity.PeerID{1})
	udp, leg := &fakeWriter{}, &fakeWriter{}
	p.out = udp
	addr := netip.MustParseAddrPort("192.0.2.1:1000")

	p.send([]byte("early"))
	p.mu.Lock()
	p.relayUpLocked(&relayPath{conn: leg, sp: &superPeer{url: "https://a.example"}, tr: rendezvous.TransportH3})
	p.mu.Unlock()
	d.wg.Wait()
	if got := leg.take(); !slices.Equal(got, []string{"invalid AddrPort: early"}) {
		t.Errorf("the relay got %q, want the packet that waited", got)
	}
	p.send([]byte("relayed"))
	p.mu.Lock()
	p.directValidatedLocked(addr, time.Millisecond)
	p.mu.Unlock()
	d.wg.Wait()
	if got, want := udp.take(), []string{addr.String() + ": relayed"}; !slices.Equal(got, want) {
		t.Errorf("the direct path got %q, want the tail %q", got, want)
	}
}
