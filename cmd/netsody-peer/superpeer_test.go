package main

import (
	"crypto/tls"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/netsody/superpeer"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/rendezvous"
)

// superPeer is a super peer without Caddy on loopback: rendezvous and
// relay behind HTTP/2 and HTTP/3 on one port, as sptest.Start serves
// them, but with its CA written to a PEM file for --ca.
type superPeer struct {
	URL string // https://127.0.0.1:port
	CA  string // PEM file of the CA that signed its certificate
}

func startSuperPeer(t *testing.T) superPeer { return startSuperPeerAt(t, "127.0.0.1:0") }

// startSuperPeerAt serves on addr; port 0 picks a port free for both TCP
// and UDP. cfg, if given, is the rendezvous configuration.
func startSuperPeerAt(t *testing.T, addr string, cfg ...rendezvous.Config) superPeer {
	t.Helper()
	var sc superpeer.Config
	if len(cfg) > 0 {
		sc.Rendezvous = cfg[0]
	}
	sp := superpeer.New(sc)
	t.Cleanup(func() { sp.Close() })

	cert, _ := sptest.Cert(t)
	var (
		ln  net.Listener
		pc  net.PacketConn
		err error
	)
	for range 50 {
		if ln, err = net.Listen("tcp", addr); err != nil {
			t.Fatal(err)
		}
		if pc, err = net.ListenPacket("udp", ln.Addr().String()); err == nil {
			break
		}
		ln.Close()
	}
	if err != nil {
		t.Fatalf("no port free for TCP and UDP: %v", err)
	}
	h2 := httptest.NewUnstartedServer(sp)
	h2.Listener.Close()
	h2.Listener = ln
	h2.EnableHTTP2 = true
	h2.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	h2.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes that a test means to fail
	h2.StartTLS()
	h3 := &http3.Server{Handler: sp, EnableDatagrams: true, ConnContext: superpeer.ConnContext}
	qln, err := (&quic.Transport{Conn: pc}).ListenEarly(
		http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}}),
		&quic.Config{EnableDatagrams: true, Allow0RTT: true})
	if err != nil {
		t.Fatal(err)
	}
	go h3.ServeListener(qln)
	t.Cleanup(func() {
		h3.Close()
		qln.Close()
		pc.Close()
		h2.Close()
	})

	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644); err != nil {
		t.Fatal(err)
	}
	return superPeer{URL: "https://" + ln.Addr().String(), CA: ca}
}

// closedPort is a loopback address that nothing serves, over TCP or UDP.
func closedPort(t *testing.T) string {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no port free for both TCP and UDP in 20 tries")
	return ""
}
