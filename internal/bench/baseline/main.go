// Command baseline is the yardstick of the idle-device memory benchmark: a
// bare Go net/http server, with HTTP/2 enabled as Go enables it by default,
// serving HTTPS on a loopback port with an in-memory self-signed
// certificate. It holds nothing per connection beyond what net/http and
// crypto/tls hold, which is what the super peer's per-device cost is
// compared with.
//
// A second, plain-HTTP loopback port serves /debug/vars (expvar, with
// memstats) and /debug/pprof/ (GET /debug/pprof/heap?gc=1 forces a GC), as
// Caddy's admin endpoint does, so that the benchmark measures both
// processes alike. Once listening it prints
//
//	https 127.0.0.1:PORT
//	admin 127.0.0.1:PORT
//
// and it runs until its standard input ends, so that it never outlives the
// benchmark that started it.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	_ "expvar" // /debug/vars on http.DefaultServeMux
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	_ "net/http/pprof" // /debug/pprof/ on http.DefaultServeMux
	"os"
	"time"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("baseline: ")
	cert, err := selfSigned()
	if err != nil {
		log.Fatal(err)
	}
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, "hi\n")
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: 10 * time.Second,
	}
	admin := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
	go func() { log.Fatal(srv.ServeTLS(tlsLn, "", "")) }()
	go func() { log.Fatal(admin.Serve(adminLn)) }()
	fmt.Printf("https %s\nadmin %s\ncert %s\n", tlsLn.Addr(), adminLn.Addr(), base64.StdEncoding.EncodeToString(cert.Certificate[0]))
	io.Copy(io.Discard, os.Stdin)
}

// selfSigned makes a P-256 certificate for 127.0.0.1 and localhost, the
// kind of key Caddy's internal CA issues.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "netsody benchmark baseline"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
