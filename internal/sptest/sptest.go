// Package sptest runs a handler behind a real HTTP/2 (TCP) and HTTP/3
// (UDP, with datagrams) server on loopback, with an in-memory CA, for the
// protocol packages' tests.
package sptest

import (
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
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

var (
	certOnce sync.Once
	cert     tls.Certificate
	certPool *x509.CertPool
	certErr  error
)

// Cert returns a certificate for localhost, 127.0.0.1 and ::1, and a pool
// that trusts it: one per test process, so that a device trusts every
// test super peer.
func Cert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	certOnce.Do(func() { cert, certPool, certErr = makeCert() })
	if certErr != nil {
		t.Fatal(certErr)
	}
	return cert, certPool
}

func makeCert() (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "netsody test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}

// Servers serve one handler over HTTP/2 and HTTP/3 on a loopback host.
type Servers struct {
	H2URL, H3URL string // https://host:port of each: the same port
	Pool         *x509.CertPool
	H2           *httptest.Server
	H3           *http3.Server
	PC           net.PacketConn // the HTTP/3 socket
	ln           *quic.EarlyListener
}

// Start serves handler on host ("127.0.0.1" or "::1"); the servers close
// when the test ends. Each of h3 may change the HTTP/3 server before it
// starts (to set its ConnContext, say).
func Start(t testing.TB, host string, handler http.Handler, h3 ...func(*http3.Server)) *Servers {
	t.Helper()
	cert, pool := Cert(t)
	s := &Servers{Pool: pool}
	s.H2 = httptest.NewUnstartedServer(handler)
	// Both on one port, as a super peer is: a device has one URL for it.
	ln, pc := listenTCPUDP(t, host)
	s.PC = pc
	s.H2.Listener.Close()
	s.H2.Listener = ln
	s.H2.EnableHTTP2 = true
	s.H2.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.H2.StartTLS()
	s.H2URL = "https://" + ln.Addr().String()

	s.H3 = &http3.Server{Handler: handler, EnableDatagrams: true}
	for _, f := range h3 {
		f(s.H3)
	}
	var err error
	s.ln, err = (&quic.Transport{Conn: s.PC}).ListenEarly(
		http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}}),
		&quic.Config{EnableDatagrams: true, Allow0RTT: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.H3.ServeListener(s.ln)
	s.H3URL = "https://" + s.PC.LocalAddr().String()
	t.Cleanup(s.Close)
	return s
}

// Close stops both servers.
func (s *Servers) Close() {
	s.H3.Close()
	s.ln.Close()
	s.PC.Close()
	s.H2.Close()
}
