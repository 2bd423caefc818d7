package rendezvous

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"
	"go.uber.org/goleak"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/sptest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testServer runs a rendezvous Server behind a real HTTP/2 (TCP) and
// HTTP/3 (UDP) server on one loopback address.
type testServer struct {
	*sptest.Servers
	rv   *Server
	regs chan *Registration // what whoamiPath authenticated, if room
}

func newTestServer(t testing.TB, host string, cfg Config) *testServer {
	t.Helper()
	rv := NewServer(cfg)
	regs := make(chan *Registration, 8)
	mux := http.NewServeMux()
	mux.Handle(Path, rv)
	// Another service on the super peer that trusts the registration, as
	// the relay does.
	mux.HandleFunc(whoamiPath, func(w http.ResponseWriter, r *http.Request) {
		reg, ok := rv.Authenticate(r)
		if !ok {
			http.Error(w, "not registered", http.StatusForbidden)
			return
		}
		select {
		case regs <- reg:
		default:
		}
		io.WriteString(w, reg.PeerID().String())
	})
	ts := &testServer{Servers: sptest.Start(t, host, mux, func(s *http3.Server) { s.ConnContext = ConnContext }), rv: rv, regs: regs}
	t.Cleanup(func() { rv.Close() }) // runs before the servers close
	return ts
}

const whoamiPath = "/whoami"

func (ts *testServer) url(tr Transport) string {
	if tr == TransportH2 {
		return ts.H2URL
	}
	return ts.H3URL
}

func newIdentity(t testing.TB) *identity.Identity {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// dial registers a new device; the session is closed when the test ends.
func (ts *testServer) dial(t testing.TB, tr Transport, id *identity.Identity, mod ...func(*ClientConfig)) *Session {
	t.Helper()
	cfg := ClientConfig{Identity: id, URL: ts.url(tr), Transport: tr, TLSConfig: &tls.Config{RootCAs: ts.Pool}}
	for _, m := range mod {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("Dial %s: %v", tr, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openRaw opens a session's HTTP request without registering, for tests
// that write frames by hand.
func (ts *testServer) openRaw(t testing.TB, tr Transport, id *identity.Identity) *Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := open(ctx, ClientConfig{Identity: id, URL: ts.url(tr), Transport: tr, TLSConfig: &tls.Config{RootCAs: ts.Pool}})
	if err != nil {
		t.Fatalf("open %s: %v", tr, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// nextFrame reads one frame from a raw session, with a deadline.
func nextFrame(t testing.TB, s *Session) (frame, error) {
	t.Helper()
	type res struct {
		f   frame
		err error
	}
	ch := make(chan res, 1)
	go func() {
		var hdr [frameHeaderLen]byte
		f, err := readFrame(s.tr, &hdr)
		ch <- res{f, err}
	}()
	select {
	case r := <-ch:
		return r.f, r.err
	case <-time.After(5 * time.Second):
		s.tr.closeRead()
		<-ch
		t.Fatal("no frame within 5s")
		return frame{}, nil
	}
}

// wantError reads frames from a raw session until a FrameError, and checks
// its code, then that the super peer ends the stream.
func wantError(t testing.TB, s *Session, code ErrorCode) {
	t.Helper()
	for range 10 {
		f, err := nextFrame(t, s)
		if err != nil {
			t.Fatalf("want %s, stream ended: %v", code, err)
		}
		if f.typ != FrameError {
			continue
		}
		var m Error
		if err := m.decode(f.payload); err != nil {
			t.Fatal(err)
		}
		if m.Code != code {
			t.Fatalf("got error %s (%s), want %s", m.Code, m.Message, code)
		}
		if code.Fatal() {
			if f, err := nextFrame(t, s); err == nil {
				t.Fatalf("after fatal %s the stream goes on with %s", code, f.typ)
			}
		}
		return
	}
	t.Fatalf("no %s in 10 frames", code)
}
