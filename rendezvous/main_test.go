package rendezvous

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"go.uber.org/goleak"

	"github.com/netsody/superpeer/identity"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testCA makes a certificate for localhost, 127.0.0.1 and ::1, and a pool
// that trusts it.
func testCA(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "netsody test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}

// testServer runs a rendezvous Server behind a real HTTP/2 (TCP) and
// HTTP/3 (UDP) server on one loopback address.
type testServer struct {
	rv    *Server
	h2URL string
	h3URL string
	pool  *x509.CertPool
	h3    *http3.Server
	ln    *quic.EarlyListener
	pc    net.PacketConn
	h2    *httptest.Server
}

func newTestServer(t testing.TB, host string, cfg Config) *testServer {
	t.Helper()
	cert, pool := testCA(t)
	ts := &testServer{rv: NewServer(cfg), pool: pool}
	mux := http.NewServeMux()
	mux.Handle(Path, ts.rv)

	ts.h2 = httptest.NewUnstartedServer(mux)
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	ts.h2.Listener.Close()
	ts.h2.Listener = ln
	ts.h2.EnableHTTP2 = true
	ts.h2.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	ts.h2.StartTLS()
	ts.h2URL = "https://" + ln.Addr().String()

	ts.pc, err = net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	ts.h3 = &http3.Server{Handler: mux, EnableDatagrams: true}
	ts.ln, err = (&quic.Transport{Conn: ts.pc}).ListenEarly(
		http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}}),
		&quic.Config{EnableDatagrams: true, Allow0RTT: true})
	if err != nil {
		t.Fatal(err)
	}
	go ts.h3.ServeListener(ts.ln)
	ts.h3URL = "https://" + ts.pc.LocalAddr().String()
	t.Cleanup(ts.close)
	return ts
}

func (ts *testServer) close() {
	ts.rv.Close()
	ts.h3.Close()
	ts.ln.Close()
	ts.pc.Close()
	ts.h2.Close()
}

func (ts *testServer) url(tr Transport) string {
	if tr == TransportH2 {
		return ts.h2URL
	}
	return ts.h3URL
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
	cfg := ClientConfig{Identity: id, URL: ts.url(tr), Transport: tr, TLSConfig: &tls.Config{RootCAs: ts.pool}}
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
	s, err := open(ctx, ClientConfig{Identity: id, URL: ts.url(tr), Transport: tr, TLSConfig: &tls.Config{RootCAs: ts.pool}})
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
		f, err := readFrame(s.body, &hdr)
		ch <- res{f, err}
	}()
	select {
	case r := <-ch:
		return r.f, r.err
	case <-time.After(5 * time.Second):
		s.body.Close()
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
		m, err := decodeError(f.payload)
		if err != nil {
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
