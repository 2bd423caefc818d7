package peer

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/netsody/superpeer/identity"
)

// hubOnly is a device with nothing but what publishing needs.
func hubOnly() *Device {
	return &Device{closed: make(chan struct{}), log: zap.NewNop()}
}

func pathTo(port uint16) Path {
	return Path{Kind: PathDirect, Addr: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), port)}
}

func peerNo(i int) identity.PeerID { return identity.PeerID{byte(i), byte(i >> 8)} }

// next reads one event that must be there already.
func next(t *testing.T, w *Watcher) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ev, err := w.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return ev
}

// A reader that keeps up gets every event, in the order published, and
// every Watcher gets them all.
func TestWatcherInOrder(t *testing.T) {
	d := hubOnly()
	w1, w2 := d.Watch(), d.Watch()
	defer w1.Close()
	defer w2.Close()
	var want []Event
	for i := range 10 {
		ev := Event(PathEvent{Peer: peerNo(i % 2), Path: pathTo(uint16(i))})
		if i == 4 {
			ev = SuperPeerEvent{Status: SuperPeerStatus{URL: "https://sp", Connected: true}}
		}
		want = append(want, ev)
		d.publish(ev)
	}
	for _, w := range []*Watcher{w1, w2} {
		for i, ev := range want {
			if got := next(t, w); got != ev {
				t.Fatalf("event %d: %+v, want %+v", i, got, ev)
			}
		}
	}
}

// A reader that never reads does not hold the device up, and when it
// reads at last it finds each subject's latest state, in order, within
// maxUnread events: also that of a subject which changed once, long ago.
func TestWatcherSlowReaderCoalesces(t *testing.T) {
	d := hubOnly()
	w := d.Watch()
	defer w.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.publish(SuperPeerEvent{Status: SuperPeerStatus{URL: "https://early"}})
		for i := range 10 * maxUnread {
			d.publish(PathEvent{Peer: peerNo(i % 3), Path: pathTo(uint16(i))})
		}
		d.publish(SuperPeerEvent{Status: SuperPeerStatus{URL: "https://sp"}})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("publishing waits for a reader that does not read")
	}
	w.mu.Lock()
	n := len(w.unread)
	w.mu.Unlock()
	if n > maxUnread {
		t.Fatalf("%d unread events held, want at most %d", n, maxUnread)
	}
	latest := map[identity.PeerID]uint16{}
	var order []Event
	for range n {
		ev := next(t, w)
		order = append(order, ev)
		if pe, ok := ev.(PathEvent); ok {
			if pe.Path.Addr.Port() < latest[pe.Peer] {
				t.Fatalf("events of peer %x out of order: %s after port %d", pe.Peer[:2], pe.Path, latest[pe.Peer])
			}
			latest[pe.Peer] = pe.Path.Addr.Port()
		}
	}
	last := 10*maxUnread - 1
	for i := range 3 {
		if want := uint16(last - (last-i)%3); latest[peerNo(i)] != want {
			t.Errorf("peer %d: last event has port %d, want the latest, %d", i, latest[peerNo(i)], want)
		}
	}
	if ev, ok := order[0].(SuperPeerEvent); !ok || ev.Status.URL != "https://early" {
		t.Errorf("first event %+v, want the early super peer's, published first and never replaced", order[0])
	}
	if ev, ok := order[len(order)-1].(SuperPeerEvent); !ok || ev.Status.URL != "https://sp" {
		t.Errorf("last event %+v, want the super peer's, published last", order[len(order)-1])
	}
}

// Next ends with its context, with Close, and with the device; after
// Close it still returns what came before; a closed Watcher gets
// nothing more and nothing holds on to it.
func TestWatcherEnds(t *testing.T) {
	d := hubOnly()
	w := d.Watch()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := w.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next with nothing to read: %v, want the context's deadline", err)
	}

	got := make(chan error, 1)
	go func() {
		_, err := w.Next(context.Background())
		got <- err
	}()
	d.publish(PathEvent{Peer: peerNo(1), Path: pathTo(1)})
	if err := <-got; err != nil {
		t.Fatalf("Next woken by an event: %v", err)
	}
	go func() {
		_, err := w.Next(context.Background())
		got <- err
	}()
	w.Close()
	if err := <-got; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Next after Close: %v, want net.ErrClosed", err)
	}
	d.publish(PathEvent{Peer: peerNo(1), Path: pathTo(2)})
	if len(d.events.watchers) != 0 || len(w.unread) != 0 {
		t.Fatalf("a closed Watcher is still published to: %d watchers, %d unread", len(d.events.watchers), len(w.unread))
	}

	// The device's close ends a blocked Next, after the unread events.
	w = d.Watch()
	d.publish(PathEvent{Peer: peerNo(2), Path: pathTo(3)})
	close(d.closed)
	if ev := next(t, w); ev != (PathEvent{Peer: peerNo(2), Path: pathTo(3)}) {
		t.Fatalf("after the device closed: %+v, want the event before", ev)
	}
	if _, err := w.Next(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Next on a closed device: %v, want net.ErrClosed", err)
	}
}

// A real device reports its super peer and a new path as events, and
// WaitSuperPeer returns once a super peer is connected.
func TestWatchDevice(t *testing.T) {
	s, _ := superPeerServer(t)
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Identity: id, SuperPeers: []string{s.H3URL}, RootCAs: s.Pool, ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	w := a.Watch()
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.WaitSuperPeer(ctx); err != nil {
		t.Fatalf("WaitSuperPeer: %v", err)
	}
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("no event of %s connected: %v", s.H3URL, err)
		}
		if sp, ok := ev.(SuperPeerEvent); ok && sp.Status.Connected && sp.Status.URL == s.H3URL {
			break
		}
	}

	b := newDevice(t, s)
	echo(t, b)
	c := dial(t, a, b)
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("no direct path event: %v; path %s", err, c.Path())
		}
		if pe, ok := ev.(PathEvent); ok && pe.Peer == b.PeerID() && pe.Path.Kind == PathDirect {
			break
		}
	}
}

// WaitSuperPeer says why no super peer is connected when its context ends.
func TestWaitSuperPeerFails(t *testing.T) {
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	dead, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}) // a port that does not answer
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	url := "https://" + dead.LocalAddr().String()
	a, err := New(Config{Identity: id, SuperPeers: []string{url}, ListenAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := a.WaitSuperPeer(ctx); err == nil || !strings.Contains(err.Error(), url) {
		t.Fatalf("WaitSuperPeer with no super peer up: %v, want an error that names %s", err, url)
	}
}
