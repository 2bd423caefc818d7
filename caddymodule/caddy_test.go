package caddymodule_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/rendezvous"
)

func TestMain(m *testing.M) { testcaddy.Main(m) }

const siteCaddyfile = testcaddy.Global + `
localhost {
	netsody_superpeer
	root * {DIR}/site
	file_server
}
`

func startSite(t *testing.T, content string) *testcaddy.Caddy {
	t.Helper()
	return startWith(t, siteCaddyfile, content)
}

func startWith(t *testing.T, caddyfile, content string) *testcaddy.Caddy {
	t.Helper()
	dir := t.TempDir()
	_ = dir
	c := testcaddy.Start(t, strings.Replace(caddyfile, "{DIR}/site", "{DIR}/site", 1))
	writeSite(t, c, content)
	return c
}

func writeSite(t *testing.T, c *testcaddy.Caddy, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(c.Dir, "site"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "site", "index.html"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// get fetches path over the given HTTP version and returns status, body
// and Alt-Svc.
func get(t *testing.T, c *testcaddy.Caddy, host, proto, path string) (int, string, string) {
	t.Helper()
	tlsConf := &tls.Config{RootCAs: c.Roots, ServerName: "localhost"}
	var rt http.RoundTripper
	switch proto {
	case "h3":
		tr := &http3.Transport{TLSClientConfig: tlsConf}
		defer tr.Close()
		rt = tr
	default:
		var p http.Protocols
		if proto == "h2" {
			p.SetHTTP2(true)
		} else {
			p.SetHTTP1(true)
		}
		tr := &http.Transport{TLSClientConfig: tlsConf, Protocols: &p}
		defer tr.CloseIdleConnections()
		rt = tr
	}
	url := "https://" + netip.AddrPortFrom(netip.MustParseAddr(host), uint16(c.Port)).String() + path
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Host = "localhost"
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s GET %s: %v", proto, url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	wantMajor := map[string]int{"h1": 1, "h2": 2, "h3": 3}[proto]
	if resp.ProtoMajor != wantMajor {
		t.Fatalf("%s GET answered over HTTP/%d", proto, resp.ProtoMajor)
	}
	return resp.StatusCode, string(body), resp.Header.Get("Alt-Svc")
}

func checkWebsite(t *testing.T, c *testcaddy.Caddy, content string) {
	t.Helper()
	for _, proto := range []string{"h1", "h2", "h3"} {
		status, body, altSvc := get(t, c, "127.0.0.1", proto, "/")
		if status != http.StatusOK || body != content {
			t.Errorf("%s: %d %q, want 200 %q", proto, status, body, content)
		}
		want := `h3=":` + strconv.Itoa(c.Port) + `"; ma=2592000`
		if proto != "h3" && altSvc != want {
			t.Errorf("%s: Alt-Svc %q, want %q", proto, altSvc, want)
		}
	}
}

type device struct {
	s     *rendezvous.Session
	id    *identity.Identity
	cands chan rendezvous.Candidates
}

func register(t *testing.T, c *testcaddy.Caddy, host string, tr rendezvous.Transport, mod ...func(*rendezvous.ClientConfig)) *device {
	t.Helper()
	d, err := tryRegister(t, c, host, tr, mod...)
	if err != nil {
		t.Fatalf("register over %s via %s: %v", tr, host, err)
	}
	return d
}

// tryRegister is register for a registration that may be refused.
func tryRegister(t *testing.T, c *testcaddy.Caddy, host string, tr rendezvous.Transport, mod ...func(*rendezvous.ClientConfig)) (*device, error) {
	t.Helper()
	d := &device{id: newIdentity(t), cands: make(chan rendezvous.Candidates, 16)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := c.ClientConfig(d.id, host, tr)
	cfg.OnCandidates = func(m rendezvous.Candidates) { d.cands <- m }
	cfg.LocalAddrs = []netip.AddrPort{netip.MustParseAddrPort("192.168.7.7:7777")}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := rendezvous.Dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { s.Close() })
	d.s = s
	return d, nil
}

func newIdentity(t *testing.T) *identity.Identity {
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// lookup checks that a finds b and that b hears of a at the same time.
func lookup(t *testing.T, a, b *device) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := a.s.Introduce(ctx, b.id.PeerID(), rendezvous.IntroduceOptions{})
	if err != nil {
		t.Fatalf("lookup %s→%s: %v", a.s.Transport(), b.s.Transport(), err)
	}
	if got.Observed != b.s.Observed() {
		t.Errorf("lookup: observed %v, want %v", got.Observed, b.s.Observed())
	}
	<-a.cands
	select {
	case m := <-b.cands:
		if m.Peer != a.id.PeerID() || m.Observed != a.s.Observed() || m.Initiator {
			t.Errorf("responder got %+v", m)
		}
	case <-ctx.Done():
		t.Fatal("responder got no candidates")
	}
}

// The super peer and the website share a site block and a port: the
// website answers over h1, h2 and h3 with Alt-Svc naming h3, and devices
// register over h3 and h2 on 127.0.0.1 and ::1 and find each other.
func TestSuperPeerBesideWebsite(t *testing.T) {
	c := startSite(t, "hello from the website")
	checkWebsite(t, c, "hello from the website")
	if !strings.Contains(c.Logs(), `"protocols":["h1","h2"]`) {
		t.Error("Caddy's server still serves h3 itself")
	}
	for _, host := range []string{"127.0.0.1", "::1"} {
		var devs []*device
		for _, tr := range []rendezvous.Transport{rendezvous.TransportH3, rendezvous.TransportH3, rendezvous.TransportH2, rendezvous.TransportH2} {
			d := register(t, c, host, tr)
			if got := d.s.Observed().Addr(); got != netip.MustParseAddr(host) {
				t.Errorf("%s via %s: observed %v", tr, host, d.s.Observed())
			}
			local, _ := netip.ParseAddrPort(d.s.LocalAddr().String())
			if d.s.Observed().Port() != local.Port() {
				t.Errorf("%s via %s: observed port %d, local port %d", tr, host, d.s.Observed().Port(), local.Port())
			}
			devs = append(devs, d)
		}
		for i, a := range devs {
			for j, b := range devs {
				if i != j {
					lookup(t, a, b)
				}
			}
		}
		for _, d := range devs {
			d.s.Close()
		}
	}
	// Unknown peers get a clear not-found.
	d := register(t, c, "127.0.0.1", rendezvous.TransportH3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := d.s.Introduce(ctx, newIdentity(t).PeerID(), rendezvous.IntroduceOptions{})
	var e *rendezvous.Error
	if !errors.As(err, &e) || e.Code != rendezvous.ErrCodePeerNotFound {
		t.Fatalf("unknown peer: %v", err)
	}
	// A GET on the session path is the super peer's, with a reason.
	status, body, _ := get(t, c, "127.0.0.1", "h2", rendezvous.Path)
	if status != http.StatusMethodNotAllowed || !strings.Contains(body, "POST") {
		t.Errorf("GET %s: %d %q", rendezvous.Path, status, body)
	}
}

// Two site blocks on one port, the directive in one: both sites answer
// over h1, h2 and h3; the super peer answers only in its own.
func TestTwoSitesOnePort(t *testing.T) {
	c := testcaddy.Start(t, testcaddy.Global+`
localhost {
	netsody_superpeer
	respond "super peer site"
}
127.0.0.1 {
	tls internal
	respond "other site"
}
`)
	for _, proto := range []string{"h1", "h2", "h3"} {
		if status, body, _ := get(t, c, "127.0.0.1", proto, "/"); status != 200 || body != "super peer site" {
			t.Errorf("%s localhost: %d %q", proto, status, body)
		}
	}
	register(t, c, "127.0.0.1", rendezvous.TransportH3)
	// The other site, by its own name, over each protocol.
	tlsConf := &tls.Config{RootCAs: c.Roots, ServerName: "127.0.0.1"}
	h3 := &http3.Transport{TLSClientConfig: tlsConf}
	defer h3.Close()
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	h12 := &http.Transport{TLSClientConfig: tlsConf, Protocols: &p}
	defer h12.CloseIdleConnections()
	for _, rt := range []http.RoundTripper{h12, h3} {
		req, _ := http.NewRequest(http.MethodGet, "https://127.0.0.1:"+strconv.Itoa(c.Port)+"/", nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "other site" {
			t.Errorf("HTTP/%d other site: %q", resp.ProtoMajor, body)
		}
	}
}

// Stopping Caddy ends sessions with a reason, promptly, on both transports.
func TestStopEndsSessions(t *testing.T) {
	c := startSite(t, "x")
	devs := []*device{register(t, c, "127.0.0.1", rendezvous.TransportH3), register(t, c, "127.0.0.1", rendezvous.TransportH2)}
	took := c.Stop(t)
	t.Logf("caddy exited %v after stop with 2 live sessions", took.Round(time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("caddy took %v to exit; sessions should end at once", took)
	}
	for _, d := range devs {
		select {
		case <-d.s.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s session still alive after caddy exited", d.s.Transport())
		}
		var e *rendezvous.Error
		if !errors.As(d.s.Err(), &e) || e.Code != rendezvous.ErrCodeShuttingDown {
			t.Errorf("%s session ended with %v, want shutting down", d.s.Transport(), d.s.Err())
		}
	}
}

// shortIdleGlobal is the global options with Caddy's idle timeouts cut
// to 1s.
var shortIdleGlobal = strings.Replace(testcaddy.Global, "skip_install_trust",
	"skip_install_trust\n\tservers {\n\t\ttimeouts {\n\t\t\tread_body_idle 1s\n\t\t\twrite_idle 1s\n\t\t}\n\t}", 1)

// Caddy's idle timeouts (cut to 1s here; 1m by default) do not cut
// sessions that are quiet for longer: the handler lifts them.
func TestIdleTimeoutsDoNotCutSessions(t *testing.T) {
	c := testcaddy.Start(t, shortIdleGlobal+`
localhost {
	netsody_superpeer {
		keepalive_interval 20s
		session_timeout 60s
	}
	respond "x"
}
`)
	devs := []*device{register(t, c, "127.0.0.1", rendezvous.TransportH2), register(t, c, "127.0.0.1", rendezvous.TransportH3)}
	ra, rb := relayPair(t, devs[0], devs[1])
	time.Sleep(3 * time.Second) // three idle timeouts, no frame either way
	for _, d := range devs {
		if err := d.s.Err(); err != nil {
			t.Fatalf("%s session cut while idle: %v", d.s.Transport(), err)
		}
	}
	lookup(t, devs[0], devs[1])
	lookup(t, devs[1], devs[0])
	// The relay session, idle as long, still carries packets both ways.
	if sent, got, _ := transfer(t, ra, rb, 12000); got != sent {
		t.Errorf("relay after idling, h2→h3: %d of %d", got, sent)
	}
	if sent, got, _ := transfer(t, rb, ra, 12000); got != sent {
		t.Errorf("relay after idling, h3→h2: %d of %d", got, sent)
	}
}

// Until a session registers, Caddy's idle timeouts (1s here) apply to it
// on HTTP/2: a session that sends nothing is cut by them long before the
// register timeout (30s here), while a registered device, as quiet, is
// not. A host's unregistered sessions stop at max_unregistered_per_prefix,
// and the refusal is counted.
func TestIdleTimeoutsCutUnregisteredSessions(t *testing.T) {
	c := testcaddy.Start(t, shortIdleGlobal+`
localhost {
	netsody_superpeer {
		register_timeout 30s
		max_unregistered_per_prefix 2
	}
	respond "x"
}
`)
	dev := register(t, c, "127.0.0.1", rendezvous.TransportH2)
	start := time.Now()
	cut := make(chan time.Duration, 2)
	for range 2 {
		body := openUnregistered(t, c, http.StatusOK)
		go func() {
			io.Copy(io.Discard, body)
			cut <- time.Since(start)
		}()
	}
	openUnregistered(t, c, http.StatusTooManyRequests)
	for range 2 {
		select {
		case took := <-cut:
			t.Logf("an unregistered HTTP/2 session was cut after %v", took.Round(time.Millisecond))
		case <-time.After(10 * time.Second):
			t.Fatal("an unregistered HTTP/2 session outlived Caddy's idle timeouts by 9s")
		}
	}
	time.Sleep(time.Until(start.Add(2 * time.Second))) // two idle timeouts for the device
	if err := dev.s.Err(); err != nil {
		t.Fatalf("a registered device, as quiet, was cut: %v", err)
	}
	if m := relayMetrics(t, c); m[`netsody_superpeer_sessions_refused_total{reason="prefix_unregistered"}`] != 1 {
		t.Errorf("the per-prefix refusal is not counted: %v", m)
	}
}

// openUnregistered opens a rendezvous session over HTTP/2, on a connection
// of its own, that sends nothing, and checks the status; it returns the
// response body, closed when the test ends.
func openUnregistered(t *testing.T, c *testcaddy.Caddy, want int) io.Reader {
	t.Helper()
	var p http.Protocols
	p.SetHTTP2(true)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.Roots, ServerName: "localhost"}, Protocols: &p}
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, "https://127.0.0.1:"+strconv.Itoa(c.Port)+rendezvous.Path, pr)
	req.Host = "localhost"
	req.Header.Set("Content-Type", rendezvous.ContentType)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pw.Close(); resp.Body.Close(); tr.CloseIdleConnections() })
	if resp.StatusCode != want {
		t.Fatalf("an unregistered session: %s, want %d", resp.Status, want)
	}
	return resp.Body
}

// A registration in 0-RTT data is refused with 425 through Caddy too. A
// relay holds back the client's packets after its first flight (the
// ClientHello and 0-RTT data), as they would be when an attacker replays
// that flight, so the super peer sees the request before the handshake
// completes.
func TestZeroRTTRefusedThroughCaddy(t *testing.T) {
	c := startSite(t, "x")
	tlsConf := &tls.Config{RootCAs: c.Roots, ServerName: "localhost", NextProtos: []string{http3.NextProtoH3}}
	conn := sptest.EarlyConn(t, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: c.Port}, tlsConf, &quic.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	str, err := (&http3.Transport{}).NewClientConn(conn).OpenRequestStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("https://localhost" + rendezvous.Path)
	if err := str.SendRequestHeader(&http.Request{Method: http.MethodPost, URL: u, Host: "localhost", Header: http.Header{}, Body: http.NoBody, ContentLength: -1}); err != nil {
		t.Fatal(err)
	}
	resp, err := str.ReadResponse()
	if err != nil {
		t.Fatal(err)
	}
	if !conn.ConnectionState().Used0RTT {
		t.Fatal("the request did not go out in 0-RTT data; the test proves nothing")
	}
	if resp.StatusCode != http.StatusTooEarly {
		t.Fatalf("0-RTT session: %d, want 425", resp.StatusCode)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "0-RTT") {
		t.Errorf("425 without a reason: %q", body)
	}
}

// Inside Caddy too, a device whose NAT rebinds is followed: the session
// moves with its QUIC connection, the device hears its new address, other
// devices get it as its candidate, and the metrics count it.
func TestRebindingThroughCaddy(t *testing.T) {
	c := startSite(t, "x")
	nat := sptest.StartUDPProxy(t, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(c.Port)), nil)
	observed := make(chan netip.AddrPort, 4)
	a := register(t, c, "127.0.0.1", rendezvous.TransportH3, func(cfg *rendezvous.ClientConfig) {
		cfg.Addr = nat.Addr().String()
		cfg.OnObserved = func(ap netip.AddrPort) { observed <- ap }
	})
	b := register(t, c, "127.0.0.1", rendezvous.TransportH3)
	moved := nat.Rebind()
	if len(moved) != 1 {
		t.Fatalf("the NAT rebound %d mappings, want 1", len(moved))
	}
	a.s.Ping() // the device's next packet, from the new mapping
	select {
	case got := <-observed:
		if got != moved[0] {
			t.Fatalf("observed %v, want the new mapping %v", got, moved[0])
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no new address within 5s of the rebinding (still %v)", a.s.Observed())
	}
	lookup(t, b, a) // checks that B gets A's current observed address
	if n := relayMetrics(t, c)["netsody_superpeer_rebindings_total"]; n != 1 {
		t.Errorf("netsody_superpeer_rebindings_total = %v, want 1", n)
	}
}
