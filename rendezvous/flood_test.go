package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
)

// Introductions from dozens of strangers, each within its own connect
// rate limit, do not end the session of a device that reads its frames
// slowly: the introductions it cannot take are refused to the strangers,
// and its session goes on.
func TestStrangersDoNotEndASlowDevice(t *testing.T) {
	const strangers, each = 40, DefaultConnectBurst
	ts := newTestServer(t, "127.0.0.1", Config{})
	var got atomic.Int64
	victim := ts.dial(t, TransportH3, newIdentity(t), func(c *ClientConfig) {
		// The reader sleeps on every frame: a slow device.
		c.OnCandidates = func(Candidates) { got.Add(1); time.Sleep(2 * time.Millisecond) }
	})
	var ss []*Session
	for i := range strangers {
		ss = append(ss, ts.dial(t, transports[i%2], newIdentity(t)))
	}
	connect := (&Connect{Peer: victim.cfg.Identity.PeerID()}).frame()
	var wg sync.WaitGroup
	for _, s := range ss {
		wg.Go(func() {
			for range each {
				if err := s.writeFrame(connect); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	st := ts.rv.Stats()
	waitFor(t, "every connect to be answered", func() bool {
		return st.Connects.Load()+st.Refused[ErrCodeRateLimited].Load()+st.Refused[ErrCodePeerNotFound].Load() == strangers*each
	})
	if err := victim.Err(); err != nil {
		t.Fatalf("strangers' introductions ended the device's session: %v", err)
	}
	if !ts.rv.Registered(victim.cfg.Identity.PeerID()) {
		t.Fatal("the device is no longer registered")
	}
	// Still served: it reaches one of the strangers.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := victim.Introduce(ctx, ss[0].cfg.Identity.PeerID(), IntroduceOptions{}); err != nil {
		t.Fatalf("the device cannot introduce itself after the flood: %v", err)
	}
	t.Logf("%d introductions sent, %d delivered (%d candidates read), %d over the device's rate, %d dropped, %d coalesced",
		strangers*each, st.Connects.Load(), got.Load(), st.IntroductionsLimited.Load(), st.IntroductionsDropped.Load(), st.IntroductionsCoalesced.Load())
}

// Fifty devices that connect to one device at once all reach it: those
// over its introduction rate get ErrCodeRateLimited, retry, and get
// through; the device stays registered and receives every one.
func TestManyPeersConnectAtOnce(t *testing.T) {
	const peers = 50
	ts := newTestServer(t, "127.0.0.1", Config{})
	var mu sync.Mutex
	seen := map[identity.PeerID]bool{}
	target := ts.dial(t, TransportH3, newIdentity(t), func(c *ClientConfig) {
		c.OnCandidates = func(c Candidates) { mu.Lock(); seen[c.Peer] = true; mu.Unlock() }
	})
	var ss []*Session
	for i := range peers {
		ss = append(ss, ts.dial(t, transports[i%2], newIdentity(t)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var limited atomic.Int64
	errs := make(chan error, peers)
	start := make(chan struct{})
	for _, s := range ss {
		go func() {
			<-start
			for {
				_, err := s.Introduce(ctx, target.cfg.Identity.PeerID(), IntroduceOptions{})
				var e *Error
				if errors.As(err, &e) && e.Code == ErrCodeRateLimited {
					limited.Add(1)
					time.Sleep(100 * time.Millisecond) // a device's retry
					continue
				}
				errs <- err
				return
			}
		}()
	}
	close(start)
	for range peers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := target.Err(); err != nil {
		t.Fatalf("the device's session ended: %v", err)
	}
	waitFor(t, "the device to see every peer", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == peers })
	if limited.Load() == 0 {
		t.Error("no introduction was rate limited: the test did not reach the limit")
	}
	t.Logf("%d peers at once: %d rate-limited answers, retried", peers, limited.Load())
}

// What others cause stays within its share of a device's queue, in
// frames and in bytes, while a write to the device stalls; one asker has
// at most one introduction waiting; and the device's own frames wait for
// room rather than ending its session. (The device does not ask for
// consent: the frames are candidates, the longest others cause.)
func TestQueueBoundsWhileAWriteStalls(t *testing.T) {
	srv := NewServer(Config{IntroductionBurst: 1000})
	vs := &blockedStream{release: make(chan struct{}), closed: make(chan struct{})}
	victim := fakeRegisteredAs(t, srv, vs, noConsent)
	victim.send((&Pong{}).frame()) // the writer now stalls on this
	waitFor(t, "the writer to take the frame", func() bool { f, _ := victim.out.queued(); return f == 0 })
	// Strangers with the most local addresses: long candidates.
	var many []netip.AddrPort
	for i := range MaxAddrs {
		many = append(many, netip.MustParseAddrPort(fmt.Sprintf("[2001:db8::%x]:1", i+1)))
	}
	var strangers []*session
	for range 40 {
		st := &blockedStream{release: make(chan struct{}), closed: make(chan struct{})}
		close(st.release)
		s := fakeRegistered(t, srv, st)
		s.local = many
		strangers = append(strangers, s)
	}
	for _, s := range strangers {
		for range 3 { // two coalesced into the first, if it was queued
			s.handleConnect(&Connect{Peer: victim.peer})
		}
	}
	frames, bytes := victim.out.queued()
	st := srv.Stats()
	if bytes > maxOfferedBytes || frames > maxOfferedFrames {
		t.Errorf("others' frames take %d frames, %d bytes of the queue; their share is %d, %d", frames, bytes, maxOfferedFrames, maxOfferedBytes)
	}
	if st.IntroductionsDropped.Load() == 0 || st.IntroductionsCoalesced.Load() != 2*uint64(frames) {
		t.Errorf("%d queued, %d dropped, %d coalesced: want some dropped, two coalesced per queued",
			frames, st.IntroductionsDropped.Load(), st.IntroductionsCoalesced.Load())
	}
	// A dropped introduction is refused to its asker, which retries; none
	// is answered as if delivered.
	if limited, dropped := st.Refused[ErrCodeRateLimited].Load(), st.IntroductionsDropped.Load(); limited != dropped {
		t.Errorf("%d introductions dropped, %d askers told rate limited", dropped, limited)
	}
	// The device's own frames fill the rest, then wait.
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		for range 2 * maxQueuedFrames {
			victim.handle(frame{typ: FramePing, payload: (&Ping{}).frame()[frameHeaderLen:]})
		}
	}()
	waitFor(t, "the queue to fill", func() bool { f, _ := victim.out.queued(); return f == maxQueuedFrames })
	if !victim.live() {
		t.Fatal("a full queue ended the session")
	}
	close(vs.release)
	<-pinged
	for _, s := range append(strangers, victim) {
		s.end(&Error{Code: ErrCodeShuttingDown})
		s.out.wait()
	}
}

// A device whose writes stall for the write timeout is ended: that, and
// not a full queue, is a slow reader.
func TestStalledWriteEndsSession(t *testing.T) {
	const timeout = 50 * time.Millisecond
	srv := NewServer(Config{WriteTimeout: timeout})
	str := &timeoutStream{closed: make(chan struct{})}
	s := fakeRegistered(t, srv, str)
	start := time.Now()
	s.send((&Pong{}).frame())
	select {
	case <-str.closed:
	case <-time.After(5 * time.Second):
		s.end(&Error{Code: ErrCodeShuttingDown}) // lets the writer go
		s.out.wait()
		t.Fatalf("a device that took no frame for 5s is still served; the write timeout is %v", timeout)
	}
	if took := time.Since(start); took < timeout {
		t.Errorf("ended after %v, before the write timeout %v", took, timeout)
	}
	s.out.wait()
	s.mu.Lock()
	ended := s.ended
	s.mu.Unlock()
	if ended == nil || ended.Code != ErrCodeSlowReader {
		t.Fatalf("ended with %v, want slow reader", ended)
	}
}

// timeoutStream is a device that never takes a frame: every write times
// out.
type timeoutStream struct {
	closed chan struct{}
	once   sync.Once
}

func (b *timeoutStream) Read([]byte) (int, error) { <-b.closed; return 0, errors.New("closed") }
func (b *timeoutStream) write(_ []byte, timeout time.Duration) error {
	select {
	case <-time.After(timeout):
		return context.DeadlineExceeded
	case <-b.closed:
		return errors.New("closed")
	}
}
func (b *timeoutStream) closeRead() { b.once.Do(func() { close(b.closed) }) }
func (b *timeoutStream) finish()    {}

// The super peer hands out no announced address of a class that would aim
// other devices' punches somewhere else: multicast, broadcast, and
// loopback unless the device itself came over loopback; and it bounds
// how often a device announces, with a refusal that does not end the
// session.
func TestAnnouncedAddrs(t *testing.T) {
	srv := NewServer(Config{})
	str := &blockedStream{release: make(chan struct{}), closed: make(chan struct{})}
	close(str.release)
	s := fakeRegistered(t, srv, str) // reaches the super peer from 192.0.2.1
	defer func() { s.end(&Error{Code: ErrCodeShuttingDown}); s.out.wait() }()
	announce := func(as ...string) *Error {
		var m Addrs
		for _, a := range as {
			m.LocalAddrs = append(m.LocalAddrs, netip.MustParseAddrPort(a))
		}
		return s.handle(frame{typ: FrameAddrs, payload: m.frame()[frameHeaderLen:]})
	}
	if e := announce("224.0.0.1:5", "255.255.255.255:5", "127.0.0.1:5", "[::1]:5", "[ff02::1]:5", "192.0.2.7:5", "10.0.0.2:5"); e != nil {
		t.Fatal(e)
	}
	if got := s.candidates().LocalAddrs; fmt.Sprint(got) != "[192.0.2.7:5 10.0.0.2:5]" {
		t.Errorf("handed out %v", got)
	}
	if n := srv.Stats().AddrsDropped.Load(); n != 5 {
		t.Errorf("%d addresses counted as dropped, want 5", n)
	}
	if handedOut(netip.MustParseAddrPort("127.0.0.1:5"), true) != true {
		t.Error("loopback refused to a device on loopback")
	}
	for range DefaultAddrsBurst + 3 {
		if e := announce("192.0.2.8:5"); e != nil {
			t.Fatalf("announcing too often ended the session: %v", e)
		}
	}
	if n := srv.Stats().AddrsLimited.Load(); n < 2 {
		t.Errorf("%d announcements over the rate, want at least 2", n)
	}
	// Over the rate, what is announced is ignored.
	if e := announce("192.0.2.9:5"); e != nil {
		t.Fatal(e)
	}
	if got := s.candidates().LocalAddrs; fmt.Sprint(got) != "[192.0.2.8:5]" {
		t.Errorf("an announcement over the rate was handed out: %v", got)
	}
}
