package relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/masque-go"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/yosida95/uritemplate/v3"
	"golang.org/x/net/http2"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/rendezvous"
)

var legs = []struct {
	name string
	a, b rendezvous.Transport
}{
	{"h3-h3", rendezvous.TransportH3, rendezvous.TransportH3},
	{"h2-h2", rendezvous.TransportH2, rendezvous.TransportH2},
	{"h3-h2", rendezvous.TransportH3, rendezvous.TransportH2},
}

// exchange sends n packets each way and checks they arrive intact.
func exchange(t *testing.T, a, b net.PacketConn, n int) {
	t.Helper()
	for i := range n {
		for _, dir := range []struct {
			from, to net.PacketConn
			name     string
		}{{a, b, "A→B"}, {b, a, "B→A"}} {
			msg := fmt.Appendf(nil, "%s packet %d", dir.name, i)
			if _, err := dir.from.WriteTo(msg, nil); err != nil {
				t.Fatalf("%s write: %v", dir.name, err)
			}
			got := readWithin(t, dir.to, 5*time.Second)
			if !bytes.Equal(got, msg) {
				t.Fatalf("%s: got %q, want %q", dir.name, got, msg)
			}
		}
	}
}

func readWithin(t *testing.T, c net.PacketConn, d time.Duration) []byte {
	t.Helper()
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	go func() {
		buf := make([]byte, 2048)
		n, _, err := c.ReadFrom(buf)
		ch <- res{buf[:n], err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("read: %v", r.err)
		}
		return r.b
	case <-time.After(d):
		c.Close()
		<-ch
		t.Fatalf("nothing arrived within %v", d)
		return nil
	}
}

func TestRelayBetweenTransports(t *testing.T) {
	ts := newTestServer(t, Config{})
	for _, tc := range legs {
		t.Run(tc.name, func(t *testing.T) {
			a, b := ts.device(t, tc.a), ts.device(t, tc.b)
			ca, cb := pair(t, a, b)
			exchange(t, ca, cb, 20)
		})
	}
	if got := ts.rl.Stats().Paired.Load(); got != 3 {
		t.Errorf("paired %d, want 3", got)
	}
}

// When one side closes, the other learns why and its session ends.
func TestCloseReachesTheOtherSide(t *testing.T) {
	ts := newTestServer(t, Config{})
	a, b := ts.device(t, rendezvous.TransportH3), ts.device(t, rendezvous.TransportH2)
	ca, cb := pair(t, a, b)
	exchange(t, ca, cb, 1)
	ca.Close()
	buf := make([]byte, 100)
	_, _, err := cb.ReadFrom(buf)
	var closed *ClosedError
	if !errors.As(err, &closed) || !strings.Contains(closed.Reason, a.id.PeerID().Short()) {
		t.Fatalf("B's read after A closed: %v, want a ClosedError naming A", err)
	}
}

// A device's relay sessions end when its rendezvous session does.
func TestDeviceGoneEndsRelay(t *testing.T) {
	ts := newTestServer(t, Config{})
	a, b := ts.device(t, rendezvous.TransportH2), ts.device(t, rendezvous.TransportH2)
	ca, cb := pair(t, a, b)
	exchange(t, ca, cb, 1)
	a.s.Close() // A leaves the super peer: its registration and its connection end
	buf := make([]byte, 100)
	_, _, err := cb.ReadFrom(buf)
	// Which of the two the relay notices first is up to the scheduler;
	// either way B is told that A is gone.
	var closed *ClosedError
	if !errors.As(err, &closed) || !strings.Contains(closed.Reason, "rendezvous session ended") && !strings.Contains(closed.Reason, a.id.PeerID().Short()) {
		t.Fatalf("B's read after A left: %v", err)
	}
}

// A relay session ends with the registration that authenticated it, even
// while its connection lives on: here A's device keeps its connection
// after a newer session of A's, on another connection, replaced its
// registration.
func TestRegistrationEndEndsRelay(t *testing.T) {
	ts := newTestServer(t, Config{})
	a := ts.keptDevice(t)
	// B over HTTP/2, whose leg carries the reason in a CLOSE capsule.
	b := ts.device(t, rendezvous.TransportH2)
	ca, cb := pair(t, a, b)
	exchange(t, ca, cb, 1)
	ts.deviceWith(t, func(c *rendezvous.ClientConfig) { c.Identity = a.id })
	read := make(chan error, 1)
	go func() {
		_, _, err := cb.ReadFrom(make([]byte, 100))
		read <- err
	}()
	select {
	case err := <-read:
		var closed *ClosedError
		if !errors.As(err, &closed) || !strings.Contains(closed.Reason, "replaced") {
			t.Fatalf("B's read after A's registration was replaced: %v, want a reason naming the replacement", err)
		}
	case <-time.After(5 * time.Second):
		cb.Close()
		<-read
		t.Fatal("the relay session outlived the registration that authenticated it")
	}
}

// keptConn is an HTTP/2 connection that its device does not close.
type keptConn struct{ *http2.ClientConn }

func (keptConn) Close() error { return nil }

// keptDevice registers a device over HTTP/2 that keeps its connection
// after its session ends (replaced, say), until the test ends.
func (ts *testServer) keptDevice(t *testing.T) *device {
	var kept net.Conn
	t.Cleanup(func() {
		if kept != nil {
			kept.Close()
		}
	})
	return ts.deviceWith(t, func(c *rendezvous.ClientConfig) {
		c.URL, c.Transport = ts.H2URL, rendezvous.TransportH2
		c.NewH2Conn = func(tc *tls.Conn) (rendezvous.H2Conn, error) {
			kept = tc
			cc, err := new(http2.Transport).NewClientConn(tc)
			return keptConn{cc}, err
		}
	})
}

// Without consent nothing is relayed: A's session waits for B's and ends
// with 504 when B never asks, and B never receives a byte from A.
func TestNoConsentNoRelay(t *testing.T) {
	ts := newTestServer(t, Config{PairTimeout: 300 * time.Millisecond})
	for _, tr := range []rendezvous.Transport{rendezvous.TransportH3, rendezvous.TransportH2} {
		a, b := ts.device(t, tr), ts.device(t, tr)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := a.dial(ctx, b.id.PeerID())
		cancel()
		wantRefused(t, err, http.StatusGatewayTimeout, "connection_timeout")
	}
	if ts.rl.Stats().Datagrams.Load() != 0 || ts.rl.Stats().PairTimeouts.Load() != 2 {
		t.Errorf("datagrams %d, pair timeouts %d", ts.rl.Stats().Datagrams.Load(), ts.rl.Stats().PairTimeouts.Load())
	}
}

// With HidePresence, a request towards an unregistered device is
// answered exactly as one towards a device that never opens its side:
// the pair timeout's refusal, after the pair timeout.
func TestHidePresence(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ts := newTestServer(t, Config{PairTimeout: timeout, HidePresence: true})
	a, b := ts.device(t, rendezvous.TransportH2), ts.device(t, rendezvous.TransportH3)
	offline, _ := identity.Generate()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got []RefusedError
	for _, peer := range []identity.PeerID{offline.PeerID(), b.id.PeerID()} {
		start := time.Now()
		_, err := a.dial(ctx, peer)
		took := time.Since(start)
		wantRefused(t, err, http.StatusGatewayTimeout, "connection_timeout")
		if took < timeout {
			t.Errorf("%s: refused after %v, before the pair timeout %v", peer.Short(), took, timeout)
		}
		var ref *RefusedError
		errors.As(err, &ref)
		r := *ref
		r.ProxyStatus = strings.ReplaceAll(r.ProxyStatus, peer.String(), "PEER")
		r.Reason = strings.ReplaceAll(r.Reason, peer.String(), "PEER")
		got = append(got, r)
	}
	if got[0] != got[1] {
		t.Errorf("offline: %+v\nonline: %+v", got[0], got[1])
	}
}

func wantRefused(t *testing.T, err error, status int, proxyErr string) {
	t.Helper()
	var ref *RefusedError
	if !errors.As(err, &ref) {
		t.Fatalf("err = %v, want a refusal with %d", err, status)
	}
	if ref.Status != status || !strings.Contains(ref.ProxyStatus, "error="+proxyErr) || ref.Reason == "" {
		t.Fatalf("refused with %d, Proxy-Status %q, reason %q; want %d and error=%s", ref.Status, ref.ProxyStatus, ref.Reason, status, proxyErr)
	}
}

// The relay is not an open proxy: addresses, hostnames, unregistered
// peers and unauthenticated connections are refused, and no socket is
// opened (the relay has no code that opens one).
func TestRefusals(t *testing.T) {
	ts := newTestServer(t, Config{MaxSessionsPerDevice: 1, PairTimeout: 2 * time.Second})
	stranger, _ := identity.Generate()
	for _, tr := range []rendezvous.Transport{rendezvous.TransportH3, rendezvous.TransportH2} {
		t.Run(string(tr), func(t *testing.T) {
			a, b := ts.device(t, tr), ts.device(t, tr)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for _, target := range []string{"192.0.2.1", "2001:db8::1", "example.com"} {
				err := dialRaw(ctx, a.s, target)
				wantRefused(t, err, http.StatusForbidden, "http_request_denied")
			}
			_, err := a.dial(ctx, stranger.PeerID())
			wantRefused(t, err, http.StatusNotFound, "destination_not_found")
			_, err = a.dial(ctx, a.id.PeerID())
			wantRefused(t, err, http.StatusBadRequest, "http_request_error")

			// Too many sessions: the first waits, the second is refused.
			first := make(chan error, 1)
			go func() { _, err := a.dial(ctx, b.id.PeerID()); first <- err }()
			waitFor(t, func() bool { return ts.rl.sessions(a.id.PeerID()) == 1 })
			c := ts.device(t, tr)
			_, err = a.dial(ctx, c.id.PeerID())
			wantRefused(t, err, http.StatusTooManyRequests, "http_request_denied")
			wantRefused(t, <-first, http.StatusGatewayTimeout, "connection_timeout")
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// dialRaw asks the relay for an arbitrary target_host.
func dialRaw(ctx context.Context, s *rendezvous.Session, host string) error {
	if s.Transport() == rendezvous.TransportH3 {
		tmpl := uritemplate.MustNew(Template(s.Authority()))
		req, err := masque.NewRequest(ctx, tmpl, net.JoinHostPort(host, "443"))
		if err != nil {
			return err
		}
		c, resp, err := masque.NewClientConn(s.HTTP3()).Dial(req)
		if err == nil {
			c.Close()
			return errors.New("relay accepted")
		}
		if resp == nil {
			return err
		}
		return refusedError(resp)
	}
	u := "https://" + s.Authority() + PathPrefix + host + "/443/"
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(""))
	resp, err := s.HTTP2().RoundTrip(req)
	if err != nil {
		return err
	}
	return refusedError(resp)
}

// A connection that has not registered cannot relay, even towards a
// registered device; neither can a request in 0-RTT data.
func TestUnauthenticatedConnection(t *testing.T) {
	ts := newTestServer(t, Config{})
	b := ts.device(t, rendezvous.TransportH3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// HTTP/3: masque-go's client on a fresh, unregistered connection.
	tlsConf := &tls.Config{RootCAs: ts.Pool, NextProtos: []string{http3.NextProtoH3}}
	conn, err := quic.DialAddr(ctx, ts.PC.LocalAddr().String(), tlsConf, &quic.Config{EnableDatagrams: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	cc := (&http3.Transport{EnableDatagrams: true}).NewClientConn(conn)
	_, err = DialH3(ctx, cc, "127.0.0.1:"+portOf(ts.H3URL), b.id.PeerID())
	wantRefused(t, err, http.StatusForbidden, "http_request_denied")
	// HTTP/2.
	var p http.Protocols
	p.SetHTTP2(true)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ts.Pool}, Protocols: &p}
	defer tr.CloseIdleConnections()
	h2, err := tr.NewClientConn(ctx, "https", strings.TrimPrefix(ts.H2URL, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	_, err = DialH2(ctx, h2, strings.TrimPrefix(ts.H2URL, "https://"), b.id.PeerID())
	wantRefused(t, err, http.StatusForbidden, "http_request_denied")
}

func portOf(u string) string {
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(u, "https://"))
	return port
}

// Datagrams over the size limit are dropped and counted; the rest flow.
func TestOversizedDatagrams(t *testing.T) {
	ts := newTestServer(t, Config{MaxDatagramSize: 200})
	for _, tc := range legs {
		t.Run(tc.name, func(t *testing.T) {
			before := ts.rl.Stats().Dropped(DropTooLarge)
			a, b := ts.device(t, tc.a), ts.device(t, tc.b)
			ca, cb := pair(t, a, b)
			if _, err := ca.WriteTo(bytes.Repeat([]byte{1}, 500), nil); err != nil {
				t.Fatal(err)
			}
			exchange(t, ca, cb, 1) // what follows still flows, and nothing else arrived first
			waitFor(t, func() bool { return ts.rl.Stats().Dropped(DropTooLarge) == before+1 })
		})
	}
}

// The HTTP/2 leg is throttled to its rate by backpressure: nothing is lost.
// HTTP/3 datagrams beyond the bucket are dropped and counted.
func TestRateLimit(t *testing.T) {
	ts := newTestServer(t, Config{Rate: 50_000, Burst: 10_000})
	t.Run("h2 backpressure", func(t *testing.T) {
		a, b := ts.device(t, rendezvous.TransportH2), ts.device(t, rendezvous.TransportH2)
		ca, cb := pair(t, a, b)
		const n, size = 40, 1000 // 40 kB: 10 kB burst, then ~0.6s at 50 kB/s
		start := time.Now()
		go func() {
			for range n {
				if _, err := ca.WriteTo(make([]byte, size), nil); err != nil {
					return
				}
			}
		}()
		for i := range n {
			if got := readWithin(t, cb, 5*time.Second); len(got) != size {
				t.Fatalf("packet %d: %d bytes", i, len(got))
			}
		}
		if took := time.Since(start); took < 400*time.Millisecond {
			t.Errorf("40 kB passed a 50 kB/s bucket with a 10 kB burst in %v: not throttled", took)
		}
	})
	t.Run("h3 drops", func(t *testing.T) {
		before := ts.rl.Stats().Dropped(DropRateLimited)
		a, b := ts.device(t, rendezvous.TransportH3), ts.device(t, rendezvous.TransportH3)
		ca, _ := pair(t, a, b)
		for range 40 {
			if _, err := ca.WriteTo(make([]byte, 1000), nil); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, func() bool { return ts.rl.Stats().Dropped(DropRateLimited) >= before+20 })
	})
}

// A relay request in 0-RTT data, seen before the handshake completes, is
// refused with 425.
func TestZeroRTTRefused(t *testing.T) {
	ts := newTestServer(t, Config{})
	b := ts.device(t, rendezvous.TransportH3)
	tlsConf := &tls.Config{RootCAs: ts.Pool, ServerName: "127.0.0.1", NextProtos: []string{http3.NextProtoH3}}
	conn := sptest.EarlyConn(t, ts.PC.LocalAddr().(*net.UDPAddr), tlsConf, &quic.Config{EnableDatagrams: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	str, err := (&http3.Transport{EnableDatagrams: true}).NewClientConn(conn).OpenRequestStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(strings.Replace(Template(strings.TrimPrefix(ts.H3URL, "https://")), "{target_host}/{target_port}", b.id.PeerID().String()+"/443", 1))
	connect := &http.Request{Method: http.MethodConnect, Proto: "connect-udp", URL: u, Host: u.Host,
		Header: http.Header{http3.CapsuleProtocolHeader: {"?1"}}}
	if err := str.SendRequestHeader(connect); err != nil {
		t.Fatal(err)
	}
	resp, err := str.ReadResponse()
	if err != nil {
		t.Fatal(err)
	}
	if !conn.ConnectionState().Used0RTT {
		t.Fatal("the request did not go out in 0-RTT data; the test proves nothing")
	}
	if resp.StatusCode != http.StatusTooEarly || !strings.Contains(resp.Header.Get("Proxy-Status"), "0-RTT") {
		t.Fatalf("0-RTT relay request: %d %q, want 425", resp.StatusCode, resp.Header.Get("Proxy-Status"))
	}
}
