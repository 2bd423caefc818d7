package rendezvous

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go/quicvarint"
)

// A payload full of empty unknown extensions, the most a frame can hold,
// is skipped without an allocation per extension: the extension area
// costs a hostile device's frames no garbage on the super peer.
func TestExtensionAreaAllocatesNothing(t *testing.T) {
	ping := (&Ping{Nonce: 1}).frame()[frameHeaderLen:]
	reg := (&Register{Protocol: ours}).frame()[frameHeaderLen:]
	fill := func(p []byte) []byte {
		p = append([]byte(nil), p...)
		for len(p)+2 <= MaxPayload {
			p = quicvarint.Append(p, 0x3f)
			p = append(p, 0)
		}
		return p
	}
	ping, reg = fill(ping), fill(reg)
	var pm Ping
	if err := pm.decode(ping); err != nil {
		t.Fatal(err)
	}
	var rm Register
	if err := rm.decode(reg); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = pm.decode(ping) }); n > 0 {
		t.Errorf("skipping %d extensions of a ping: %.0f allocations", (len(ping)-12)/2, n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = rm.decode(reg) }); n > 1 {
		t.Errorf("skipping the unknown extensions of a register: %.0f allocations", n)
	}
}

// A session that never registers ends at the register timeout, counted
// from its request, even if it sends frames of unknown types and the
// session timeout is longer: otherwise a stranger holds a place under
// MaxSessions and its prefix's limit, and a reader, for as long as its
// connection lives.
func TestUnregisteredSessionExpires(t *testing.T) {
	const deadline = 300 * time.Millisecond
	ts := newTestServer(t, "127.0.0.1", Config{RegisterTimeout: deadline})
	for _, tr := range transports {
		// The deadline runs from the request's arrival, within openRaw.
		start := time.Now()
		s := ts.openRaw(t, tr, newIdentity(t))
		stop := make(chan struct{})
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			for {
				if s.writeFrame(appendFrame(nil, 0x7f, nil)) != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		wantError(t, s, ErrCodeExpired)
		if took := time.Since(start); took < deadline || took > deadline+2*time.Second {
			t.Errorf("%s: an unregistered session ended after %v, want %v", tr, took, deadline)
		}
		close(stop)
		<-sent
	}
	waitFor(t, "the expired sessions to go", func() bool { _, all := ts.rv.Sessions(); return all == 0 })
	if n := ts.rv.Stats().RegisterTimeouts.Load(); n != uint64(len(transports)) {
		t.Errorf("%d register timeouts counted, want %d", n, len(transports))
	}
	if n := ts.rv.prefixes.len(); n != 0 {
		t.Errorf("%d per-prefix entries left after the sessions ended", n)
	}
}

// waitFor polls cond until it holds, for at most 5s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5s for %s", what)
		}
	}
}

// blockedStream is a device whose writes stall (a slow link) until
// released.
type blockedStream struct {
	release chan struct{}
	closed  chan struct{}
	once    sync.Once
}

func (b *blockedStream) Read([]byte) (int, error) { <-b.closed; return 0, io.EOF }
func (b *blockedStream) write([]byte, time.Duration) error {
	select {
	case <-b.release:
		return nil
	case <-b.closed:
		return io.ErrClosedPipe
	}
}
func (b *blockedStream) closeRead() { b.once.Do(func() { close(b.closed) }) }
func (b *blockedStream) finish()    {}

var fakes int // numbers the fake sessions' bindings

// fakeRegistered is a registered session on srv over str, as handleRegister
// leaves it, without the network.
func fakeRegistered(t *testing.T, srv *Server, str stream) *session {
	return fakeRegisteredAs(t, srv, str, ours)
}

// noConsent is what a device without OnRequest announces.
var noConsent = Protocol{Version: ProtocolVersion, Capabilities: supportedCaps &^ CapConsent}

// fakeRegisteredAs is fakeRegistered for a device that announced proto.
func fakeRegisteredAs(t *testing.T, srv *Server, str stream, proto Protocol) *session {
	fakes++
	r := httptest.NewRequest(http.MethodPost, Path, nil)
	r.ProtoMajor = 2
	s := newSession(srv, r, Binding{byte(fakes)}, netip.MustParseAddrPort("192.0.2.1:1"))
	s.str = str
	s.become(newIdentity(t).PeerID(), proto, srv.config())
	srv.register(s)
	return s
}

// Strangers who know a device's peer ID cannot end its session: while a
// write to it stalls for a moment, their introductions (each within its
// own rate limit) are refused to them rather than overflowing its queue.
func TestStrangersCannotOverflowADevice(t *testing.T) {
	srv := NewServer(Config{})
	victimStr := &blockedStream{release: make(chan struct{}), closed: make(chan struct{})}
	victim := fakeRegistered(t, srv, victimStr)
	victim.send((&Pong{}).frame()) // the writer now stalls on this
	var strangers []*session
	for range 2 * maxQueuedFrames / DefaultConnectBurst {
		st := &blockedStream{release: make(chan struct{}), closed: make(chan struct{})}
		close(st.release)
		stranger := fakeRegistered(t, srv, st)
		strangers = append(strangers, stranger)
		for range DefaultConnectBurst {
			stranger.handleConnect(&Connect{Peer: victim.peer})
		}
	}
	victim.mu.Lock()
	ended := victim.ended
	victim.mu.Unlock()
	close(victimStr.release)
	for _, s := range append(strangers, victim) {
		s.end(&Error{Code: ErrCodeShuttingDown})
		s.out.wait()
	}
	if ended != nil {
		t.Fatalf("strangers' introductions ended the device's session: %s", ended.Code)
	}
}

// A session that is ending — replaced, say, while its last frame cannot
// drain to a stalled device — no longer authenticates its connection, so
// no relay session can start on a registration that is over.
func TestEndingSessionAuthenticatesNothing(t *testing.T) {
	srv := NewServer(Config{})
	str := &blockedStream{release: make(chan struct{}), closed: make(chan struct{})}
	s := fakeRegistered(t, srv, str)
	s.send((&Pong{}).frame()) // the writer now stalls on this
	if srv.registered(s.binding) != s {
		t.Fatal("a live registered session does not authenticate its connection")
	}
	s.end(&Error{Code: ErrCodeReplaced})
	if srv.registered(s.binding) != nil {
		t.Error("an ending session still authenticates its connection")
	}
	select {
	case <-s.reg.Done():
		if !strings.Contains(s.reg.EndReason(), "replaced") {
			t.Errorf("the registration ended with %q, want a reason naming the replacement", s.reg.EndReason())
		}
	default:
		t.Error("the registration lasts while its session's last frame drains")
	}
	close(str.release)
	s.out.wait()
}
