package rendezvous

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/netsody/superpeer/internal/sptest"
)

var transports = []Transport{TransportH3, TransportH2}

// Two devices on each transport register; every device finds every other
// across transports, both sides get each other's candidates at once, and
// observed addresses are the devices' own.
func TestRegisterAndLookup(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			ts := newTestServer(t, host, Config{})
			type device struct {
				s     *Session
				cands chan Candidates
			}
			var devs []device
			for _, tr := range []Transport{TransportH3, TransportH3, TransportH2, TransportH2} {
				cands := make(chan Candidates, 8)
				local := []netip.AddrPort{netip.MustParseAddrPort("192.168.1.7:4242")}
				s := ts.dial(t, tr, newIdentity(t), func(c *ClientConfig) {
					c.OnCandidates = func(m Candidates) { cands <- m }
					c.LocalAddrs = local
				})
				if s.Transport() != tr {
					t.Fatalf("transport %s, want %s", s.Transport(), tr)
				}
				mine := netip.MustParseAddrPort(s.LocalAddr().String())
				want := netip.AddrPortFrom(netip.MustParseAddr(host), mine.Port())
				if s.Observed() != want {
					t.Errorf("%s: observed %v, want %v", tr, s.Observed(), want)
				}
				devs = append(devs, device{s, cands})
			}
			if reg, _ := ts.rv.Sessions(); reg != 4 {
				t.Fatalf("%d registered, want 4", reg)
			}
			for i, a := range devs {
				for j, b := range devs {
					if i == j {
						continue
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					got, err := a.s.Introduce(ctx, b.s.cfg.Identity.PeerID(), IntroduceOptions{})
					cancel()
					if err != nil {
						t.Fatalf("%d→%d: %v", i, j, err)
					}
					if !got.Initiator || got.Observed != b.s.Observed() || len(got.LocalAddrs) != 1 {
						t.Errorf("%d→%d: initiator got %+v", i, j, got)
					}
					if c := <-a.cands; c.Peer != b.s.cfg.Identity.PeerID() {
						t.Errorf("%d→%d: OnCandidates for %s", i, j, c.Peer.Short())
					}
					select {
					case c := <-b.cands:
						if c.Initiator || c.Peer != a.s.cfg.Identity.PeerID() || c.Observed != a.s.Observed() {
							t.Errorf("%d→%d: responder got %+v", i, j, c)
						}
						if all := c.All(); len(all) != 2 || all[1] != c.Observed {
							t.Errorf("All() = %v: local addresses first, then observed", all)
						}
					case <-time.After(5 * time.Second):
						t.Fatalf("%d→%d: responder got no candidates", i, j)
					}
				}
			}
		})
	}
}

func TestLookupNotFound(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{})
	for _, tr := range transports {
		s := ts.dial(t, tr, newIdentity(t))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := s.Introduce(ctx, newIdentity(t).PeerID(), IntroduceOptions{})
		cancel()
		var e *Error
		if !errors.As(err, &e) || e.Code != ErrCodePeerNotFound {
			t.Fatalf("%s: err = %v, want peer not found", tr, err)
		}
		// The session goes on.
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		_, err = s.Introduce(ctx, s.cfg.Identity.PeerID(), IntroduceOptions{})
		cancel()
		if !errors.As(err, &e) || e.Code != ErrCodeBadRequest {
			t.Fatalf("%s: self lookup err = %v, want bad request", tr, err)
		}
	}
}

// A newer session for the same key replaces the old one, which is told
// why, and so is what its registration authenticated.
func TestReplaced(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{})
	id := newIdentity(t)
	old := ts.dial(t, TransportH3, id)
	resp, err := old.HTTP3().RoundTrip(mustRequest(t, http.MethodGet, "https://"+old.Authority()+whoamiPath))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	reg := <-ts.regs
	if reg.PeerID() != id.PeerID() || reg.EndReason() != "" {
		t.Fatalf("registration of %s ended %q, want %s live", reg.PeerID(), reg.EndReason(), id.PeerID())
	}
	ts.dial(t, TransportH2, id)
	select {
	case <-reg.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("old registration not ended")
	}
	if !strings.Contains(reg.EndReason(), "replaced") {
		t.Errorf("registration ended with %q, want a reason naming the replacement", reg.EndReason())
	}
	select {
	case <-old.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("old session not ended")
	}
	var e *Error
	if !errors.As(old.Err(), &e) || e.Code != ErrCodeReplaced {
		t.Fatalf("old session ended with %v, want replaced", old.Err())
	}
	if reg, _ := ts.rv.Sessions(); reg != 1 {
		t.Fatalf("%d registered, want 1", reg)
	}
}

// Keepalives measure RTT in both directions.
func TestKeepaliveRTT(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{KeepaliveInterval: 30 * time.Millisecond, SessionTimeout: time.Second})
	for _, tr := range transports {
		s := ts.dial(t, tr, newIdentity(t))
		deadline := time.Now().Add(5 * time.Second)
		for s.RTT() == 0 || s.ServerRTT() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: RTT %v, server RTT %v after 5s", tr, s.RTT(), s.ServerRTT())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// A device whose NAT rebinds is followed: its QUIC connection migrates
// to the new address, the super peer tells it (FrameObserved), and other
// devices get the new address as its candidate. The super peer looks
// after a frame from the device (a ping) and after another request on its
// connection (a relay session being opened, say).
func TestRebinding(t *testing.T) {
	triggers := map[string]func(t *testing.T, s *Session){
		"ping": func(t *testing.T, s *Session) { s.Ping() },
		"request": func(t *testing.T, s *Session) {
			resp, err := s.HTTP3().RoundTrip(mustRequest(t, http.MethodGet, "https://"+s.Authority()+whoamiPath))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: %s", whoamiPath, resp.Status)
			}
		},
	}
	for name, trigger := range triggers {
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t, "127.0.0.1", Config{})
			nat := sptest.StartUDPProxy(t, ts.PC.LocalAddr().(*net.UDPAddr).AddrPort(), nil)
			observed := make(chan netip.AddrPort, 4)
			idA := newIdentity(t)
			a := ts.dial(t, TransportH3, idA, func(c *ClientConfig) {
				c.Addr = nat.Addr().String()
				c.OnObserved = func(ap netip.AddrPort) { observed <- ap }
			})
			idB := newIdentity(t)
			b := ts.dial(t, TransportH3, idB)
			before := a.Observed()
			// Past the look the super peer takes after the device's pong
			// to its first ping: from here on, only the trigger tells it.
			time.Sleep(2 * followMin)

			moved := nat.Rebind()
			if len(moved) != 1 || moved[0] == before {
				t.Fatalf("the NAT rebound %v to %v", before, moved)
			}
			// Nothing tells the super peer but the device's next packet;
			// it then validates the new path and looks again.
			trigger(t, a)
			waitObserved(t, a, observed, moved[0])
			if a.Observed() != moved[0] {
				t.Errorf("Observed() = %v, want %v", a.Observed(), moved[0])
			}
			// Counted right after the frame is queued: perhaps after the
			// device read it.
			waitFor(t, "the rebinding to be counted", func() bool { return ts.rv.Stats().Rebindings.Load() >= 1 })
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := b.Introduce(ctx, idA.PeerID(), IntroduceOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if c.Observed != moved[0] {
				t.Errorf("B gets A's candidate %v, want the new mapping %v", c.Observed, moved[0])
			}
			select {
			case got := <-observed:
				t.Errorf("a second FrameObserved (%v) without a second rebinding", got)
			case <-time.After(4 * followMin): // the looks the frames above asked for
			}
			if n := ts.rv.Stats().Rebindings.Load(); n != 1 {
				t.Errorf("%d rebindings counted, want 1", n)
			}
		})
	}
}

// A look at the device's address that is already pending does not swallow
// the one a later frame asks for: here the pending look comes before the
// new path is validated, and only the later one sees the move.
func TestRebindingDuringPendingLook(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{})
	const oneWay = 50 * time.Millisecond
	nat := sptest.StartUDPProxy(t, ts.PC.LocalAddr().(*net.UDPAddr).AddrPort(), func() time.Duration { return oneWay })
	observed := make(chan netip.AddrPort, 4)
	a := ts.dial(t, TransportH3, newIdentity(t), func(c *ClientConfig) {
		c.Addr = nat.Addr().String()
		c.OnObserved = func(ap netip.AddrPort) { observed <- ap }
	})
	time.Sleep(time.Second) // the looks after registration are done
	// A frame over the old path: a look follows 3 RTTs (300 ms) after it
	// arrives. 250 ms later the NAT rebinds and a ping comes over the new
	// path, 50 ms before that look; the path is validated one RTT after
	// the ping arrives, 50 ms after the look.
	if err := a.SetLocalAddrs([]netip.AddrPort{netip.MustParseAddrPort("192.0.2.7:7")}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(250 * time.Millisecond)
	moved := nat.Rebind()
	a.Ping()
	waitObserved(t, a, observed, moved[0])
}

// waitObserved waits for the FrameObserved that tells s its new address.
func waitObserved(t *testing.T, s *Session, observed <-chan netip.AddrPort, want netip.AddrPort) {
	t.Helper()
	select {
	case got := <-observed:
		if got != want {
			t.Fatalf("observed %v, want the new mapping %v", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no FrameObserved within 5s of the rebinding (still %v)", s.Observed())
	}
}

// Frames from a busy device do not hold off the super peer's keepalive
// (a look at the device's address after each frame shares its timer).
func TestKeepaliveWhileBusy(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{KeepaliveInterval: 300 * time.Millisecond, SessionTimeout: 3 * time.Second})
	s := ts.dial(t, TransportH3, newIdentity(t), func(c *ClientConfig) { c.KeepaliveInterval = 50 * time.Millisecond })
	// The super peer's first ping comes at registration and carries no
	// RTT; the next ones carry it. Device pings every 50 ms each look again
	// 250 ms later, which must not keep postponing the 300 ms ping.
	deadline := time.Now().Add(3 * time.Second)
	for s.ServerRTT() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no ping with the super peer's RTT within 3s while the device was busy")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}

// A device that stops answering expires.
func TestExpiry(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{KeepaliveInterval: 50 * time.Millisecond, SessionTimeout: 200 * time.Millisecond})
	for _, tr := range transports {
		s := ts.openRaw(t, tr, newIdentity(t))
		if err := s.register(context.Background()); err != nil {
			t.Fatal(err)
		}
		// Never answer the pings.
		wantError(t, s, ErrCodeExpired)
	}
}

func TestServerClose(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{})
	var ss []*Session
	for _, tr := range transports {
		ss = append(ss, ts.dial(t, tr, newIdentity(t)))
	}
	ts.rv.Close()
	for _, s := range ss {
		<-s.Done()
		var e *Error
		if !errors.As(s.Err(), &e) || e.Code != ErrCodeShuttingDown {
			t.Errorf("%s ended with %v, want shutting down", s.Transport(), s.Err())
		}
	}
}

// Each refusal gets its documented error and ends the session.
func TestRefusals(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{})
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			t.Run("replayed registration", func(t *testing.T) {
				id := newIdentity(t)
				first := ts.openRaw(t, tr, id)
				recorded := signRegistration(first.binding, id, nil).frame()
				second := ts.openRaw(t, tr, id)
				if err := second.writeFrame(recorded); err != nil {
					t.Fatal(err)
				}
				wantError(t, second, ErrCodeBadSignature)
				// On its own connection it is accepted.
				if err := first.writeFrame(recorded); err != nil {
					t.Fatal(err)
				}
				if f, err := nextFrame(t, first); err != nil || f.typ != FrameRegistered {
					t.Fatalf("original registration: %v %v", f.typ, err)
				}
			})
			t.Run("signature by another key", func(t *testing.T) {
				victim, attacker := newIdentity(t), newIdentity(t)
				s := ts.openRaw(t, tr, attacker)
				m := signRegistration(s.binding, attacker, nil)
				m.Peer = victim.PeerID()
				if err := s.writeFrame(m.frame()); err != nil {
					t.Fatal(err)
				}
				wantError(t, s, ErrCodeBadSignature)
			})
			t.Run("lookup before registration", func(t *testing.T) {
				s := ts.openRaw(t, tr, newIdentity(t))
				if err := s.writeFrame((&Connect{Peer: newIdentity(t).PeerID()}).frame()); err != nil {
					t.Fatal(err)
				}
				wantError(t, s, ErrCodeNotRegistered)
			})
			t.Run("malformed frame", func(t *testing.T) {
				s := ts.openRaw(t, tr, newIdentity(t))
				if err := s.writeFrame(appendFrame(nil, FrameRegister, []byte{1, 2, 3})); err != nil {
					t.Fatal(err)
				}
				wantError(t, s, ErrCodeMalformedFrame)
			})
			t.Run("malformed after registration", func(t *testing.T) {
				s := ts.openRaw(t, tr, newIdentity(t))
				if err := s.register(context.Background()); err != nil {
					t.Fatal(err)
				}
				bad := appendFrame(nil, FrameAddrs, []byte{1, 9, 0, 0}) // address family 9
				if err := s.writeFrame(bad); err != nil {
					t.Fatal(err)
				}
				wantError(t, s, ErrCodeMalformedFrame)
			})
			t.Run("oversized frame", func(t *testing.T) {
				s := ts.openRaw(t, tr, newIdentity(t))
				hdr := binary.BigEndian.AppendUint16([]byte{byte(FrameRegister)}, MaxPayload+1)
				if err := s.writeFrame(hdr); err != nil {
					t.Fatal(err)
				}
				wantError(t, s, ErrCodeFrameTooLarge)
			})
			t.Run("second registration", func(t *testing.T) {
				id := newIdentity(t)
				s := ts.openRaw(t, tr, id)
				if err := s.register(context.Background()); err != nil {
					t.Fatal(err)
				}
				if err := s.writeFrame(signRegistration(s.binding, id, nil).frame()); err != nil {
					t.Fatal(err)
				}
				wantError(t, s, ErrCodeAlreadyRegistered)
			})
			t.Run("unknown frame type is skipped", func(t *testing.T) {
				s := ts.openRaw(t, tr, newIdentity(t))
				if err := s.writeFrame(appendFrame(nil, 0x7f, []byte("later"))); err != nil {
					t.Fatal(err)
				}
				if err := s.register(context.Background()); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

func TestAdmissionAndRateLimit(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{
		ConnectRate: 0.001, ConnectBurst: 2,
		Admit: func(_ context.Context, req AdmissionRequest) error {
			if req.ProofOfWork != 7 {
				return errors.New("proof of work too weak")
			}
			return nil
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := Dial(ctx, ClientConfig{Identity: newIdentity(t), URL: ts.H3URL, TLSConfig: &tls.Config{RootCAs: ts.Pool}})
	var e *Error
	if !errors.As(err, &e) || e.Code != ErrCodeRefused || !strings.Contains(e.Message, "too weak") {
		t.Fatalf("err = %v, want refused", err)
	}
	id := newIdentity(t)
	id.ProofOfWork = 7
	s := ts.dial(t, TransportH3, id)
	other := newIdentity(t).PeerID()
	for i := range 3 {
		_, err := s.Introduce(ctx, other, IntroduceOptions{})
		want := ErrCodePeerNotFound
		if i == 2 {
			want = ErrCodeRateLimited
		}
		if !errors.As(err, &e) || e.Code != want {
			t.Fatalf("lookup %d: err = %v, want %s", i, err, want)
		}
	}
}

// HTTP-level refusals, before a session starts.
func TestHTTPRefusals(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{MaxSessions: 1})
	client := ts.H2.Client()
	resp, err := client.Get(ts.H2URL + Path)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(string(body), "POST") {
		t.Errorf("GET: %d %q", resp.StatusCode, body)
	}
	// HTTP/1.1
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ts.Pool}}
	defer tr.CloseIdleConnections()
	resp, err = (&http.Client{Transport: tr}).Post(ts.H2URL+Path, ContentType, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusHTTPVersionNotSupported {
		t.Errorf("HTTP/1.1: %d", resp.StatusCode)
	}
	// At capacity.
	ts.dial(t, TransportH3, newIdentity(t))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = Dial(ctx, ClientConfig{Identity: newIdentity(t), URL: ts.H2URL, Transport: TransportH2, TLSConfig: &tls.Config{RootCAs: ts.Pool}})
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("over capacity: %v, want 503", err)
	}
}

// A session opened in 0-RTT data is refused with 425 Too Early.
func TestZeroRTTRefused(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{})
	tlsConf := &tls.Config{RootCAs: ts.Pool, ServerName: "127.0.0.1", NextProtos: []string{http3.NextProtoH3}}
	conn := sptest.EarlyConn(t, ts.PC.LocalAddr().(*net.UDPAddr), tlsConf, &quic.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	str, err := (&http3.Transport{}).NewClientConn(conn).OpenRequestStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := newSessionRequest(mustRequest(t, "POST", ts.H3URL+Path).URL, http.NoBody)
	if err := str.SendRequestHeader(req); err != nil {
		t.Fatal(err)
	}
	resp, err := str.ReadResponse()
	if err != nil {
		t.Fatal(err)
	}
	if !conn.ConnectionState().Used0RTT {
		t.Fatal("the request did not go out in 0-RTT data; the test proves nothing")
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusTooEarly || !strings.Contains(string(body), "0-RTT") {
		t.Fatalf("0-RTT session: %d %q, want 425", resp.StatusCode, body)
	}
}

func mustRequest(t testing.TB, method, url string) *http.Request {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// A super peer that cannot be reached is an error for the device, over
// either transport, never a crash.
func TestDialUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens on TCP there now, and nothing on UDP
	for _, tr := range transports {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		s, err := Dial(ctx, ClientConfig{Identity: newIdentity(t), URL: "https://" + addr, Transport: tr})
		cancel()
		if err == nil {
			s.Close()
			t.Fatalf("%s: Dial to %s succeeded", tr, addr)
		}
	}
}

// A device that opens both transports and registers only on one keeps
// that registration: the other, never registered, replaces nothing.
func TestOpenThenRegister(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{})
	id := newIdentity(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var opened []*Session
	for _, tr := range transports {
		s, err := Open(ctx, ClientConfig{Identity: id, URL: ts.url(tr), Transport: tr, TLSConfig: &tls.Config{RootCAs: ts.Pool}})
		if err != nil {
			t.Fatalf("Open %s: %v", tr, err)
		}
		defer s.Close()
		opened = append(opened, s)
	}
	if reg, _ := ts.rv.Sessions(); reg != 0 {
		t.Fatalf("%d registered after Open alone, want 0", reg)
	}
	winner, loser := opened[0], opened[1]
	if err := winner.Register(ctx); err != nil {
		t.Fatal(err)
	}
	loser.Close()
	if err := winner.Register(ctx); err == nil {
		t.Error("a second Register succeeded")
	}
	if _, err := winner.Introduce(ctx, newIdentity(t).PeerID(), IntroduceOptions{}); !isPeerNotFound(err) {
		t.Fatalf("the winner's session after the loser closed: %v, want peer not found", err)
	}
	if reg, _ := ts.rv.Sessions(); reg != 1 {
		t.Fatalf("%d registered, want 1", reg)
	}
}

func isPeerNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == ErrCodePeerNotFound
}
