package rendezvous

import (
	"bytes"
	"crypto/ed25519"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
)

// fuzzPeer is a fixed peer ID, registered in every run, that a fuzzed
// FrameConnect can name.
func fuzzPeer(b byte) identity.PeerID {
	seed := bytes.Repeat([]byte{b}, ed25519.SeedSize)
	return identity.PeerID(ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey))
}

// feedStream is a device that sends data and takes every frame.
type feedStream struct {
	r       io.Reader
	written int
}

func (f *feedStream) Read(b []byte) (int, error)            { return f.r.Read(b) }
func (f *feedStream) write(b []byte, _ time.Duration) error { f.written += len(b); return nil }
func (f *feedStream) closeRead()                            {}
func (f *feedStream) finish()                               {}

// FuzzSessionFrames drives a super peer's session with a fuzzed byte
// stream, cut into frames by the session's own reader: registered or not,
// next to a registered target whose writes stall, so that the fuzzer's
// introductions fill its queue. The session must end cleanly at the end
// of the stream — no panic, no goroutine left — and the target's queue
// must stay within its bounds.
func FuzzSessionFrames(f *testing.F) {
	target := fuzzPeer(1)
	ping := (&Ping{Nonce: 1}).frame()
	connect := (&Connect{Peer: target, Relay: true}).frame()
	addrs := (&Addrs{LocalAddrs: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("[::1]:2")}}).frame()
	f.Add(false, (&Register{Peer: fuzzPeer(2), Protocol: ours}).frame())
	f.Add(false, (&Register{Peer: fuzzPeer(2), Protocol: ours, RelayOnly: true}).frame())
	f.Add(false, append(appendFrame(nil, 0x7f, nil), ping...))
	f.Add(true, bytes.Join([][]byte{ping, addrs, connect, connect, (&Pong{Nonce: 1}).frame(), appendFrame(nil, 0x42, []byte{1, 2})}, nil))
	f.Add(true, bytes.Repeat(connect, 40))
	f.Add(true, bytes.Repeat(addrs, 10))
	f.Add(true, []byte{byte(FrameConnect), 0xff, 0xff})
	answer := (&Answer{Peer: target, Accept: true}).frame()
	f.Add(true, bytes.Join([][]byte{connect, answer, (&Answer{Peer: fuzzPeer(3)}).frame(), connect}, nil))
	f.Add(true, (&Request{Peer: target}).frame()) // from the wrong end
	f.Add(false, answer)
	f.Add(true, (&Move{Deadline: time.Second, Reason: "x"}).frame()) // from the wrong end
	f.Add(true, (&Headroom{Bandwidth: 1, Sessions: 1}).frame())      // from the wrong end
	mapping := (&Mapping{Mapping: MappingDependent}).frame()
	f.Add(true, bytes.Join([][]byte{mapping, connect, bytes.Repeat(mapping, 8)}, nil))
	f.Add(true, appendFrame(nil, FrameMapping, []byte{1, 2, 3})) // too long
	f.Fuzz(func(t *testing.T, registered bool, data []byte) {
		base := runtime.NumGoroutine()
		srv := NewServer(Config{})
		victim := &blockedStream{release: make(chan struct{}), closed: make(chan struct{})}
		other := fakeRegistered(t, srv, victim)
		other.become(target, ours, srv.config())
		srv.register(other)
		other.send((&Pong{}).frame()) // its writer stalls on this

		r := httptest.NewRequest(http.MethodPost, Path, nil)
		r.ProtoMajor = 2
		s := newSession(srv, r, Binding{0xf0}, netip.MustParseAddrPort("198.51.100.1:1"))
		in := &feedStream{r: bytes.NewReader(data)}
		s.str = in
		if registered {
			s.become(fuzzPeer(2), ours, srv.config())
			srv.register(s)
		}
		if !srv.add(s) {
			t.Fatal("server closed")
		}
		s.run()
		srv.remove(s)

		if frames, n := other.out.queued(); frames > maxQueuedFrames || n > maxQueuedBytes {
			t.Fatalf("the target's queue holds %d frames, %d bytes", frames, n)
		}
		if frames, n := s.out.queued(); frames != 0 || n != 0 {
			t.Fatalf("after the session ended, %d frames, %d bytes are queued", frames, n)
		}
		close(victim.release)
		other.end(&Error{Code: ErrCodeShuttingDown})
		other.out.wait()
		srv.Close()
		for deadline := time.Now().Add(2 * time.Second); runtime.NumGoroutine() > base; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Fatalf("%d goroutines after the session, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
			}
		}
	})
}
