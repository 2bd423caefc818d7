package sptest

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// FirstFlightRelay relays one client's UDP to server. It forwards the
// client's first datagram (the ClientHello) and its 0-RTT packets at once
// and holds back every other client datagram, the one with the client's
// Finished among them, by delay: as when an attacker replays the first
// flight. A server then sees 0-RTT requests before the handshake completes.
func FirstFlightRelay(t testing.TB, server *net.UDPAddr, delay time.Duration) *net.UDPAddr {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.DialUDP("udp", nil, server)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		client *net.UDPAddr
		wg     sync.WaitGroup
	)
	wg.Add(2)
	go func() { // client → server
		defer wg.Done()
		buf := make([]byte, 2048)
		for first := true; ; first = false {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			mu.Lock()
			client = from
			mu.Unlock()
			pkt := append([]byte(nil), buf[:n]...)
			// QUIC v1 long header: 1 1 T T ..., type 1 is 0-RTT (RFC 9000 §17.2).
			zeroRTT := pkt[0]&0xc0 == 0xc0 && (pkt[0]>>4)&0x3 == 1
			if first || zeroRTT {
				back.Write(pkt)
				continue
			}
			wg.Add(1)
			time.AfterFunc(delay, func() { defer wg.Done(); back.Write(pkt) })
		}
	}()
	go func() { // server → client
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			n, err := back.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			to := client
			mu.Unlock()
			if to != nil {
				front.WriteToUDP(buf[:n], to)
			}
		}
	}()
	t.Cleanup(func() { front.Close(); back.Close(); wg.Wait() })
	return front.LocalAddr().(*net.UDPAddr)
}

// EarlyConn returns a QUIC connection to server whose first flight carried
// 0-RTT data: a first connection earns a session ticket, then the
// connection is dialled early through FirstFlightRelay, so that server
// sees its early requests before the handshake completes. tlsConf must
// carry RootCAs, ServerName and NextProtos; the connection is closed when
// the test ends. Callers check conn.ConnectionState().Used0RTT after their
// request, or the test proves nothing.
func EarlyConn(t testing.TB, server *net.UDPAddr, tlsConf *tls.Config, qc *quic.Config) *quic.Conn {
	t.Helper()
	const delay = 150 * time.Millisecond
	via := FirstFlightRelay(t, server, delay)
	tlsConf = tlsConf.Clone()
	tlsConf.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: pc}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := tr.Dial(ctx, server, tlsConf, qc)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://"+tlsConf.ServerName+"/", nil)
	if resp, err := (&http3.Transport{}).NewClientConn(first).RoundTrip(req); err == nil {
		resp.Body.Close()
	}
	time.Sleep(100 * time.Millisecond) // the session ticket
	first.CloseWithError(0, "")
	conn, err := tr.DialEarly(ctx, via, tlsConf, qc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.CloseWithError(0, "")
		time.Sleep(2 * delay) // let the close pass the relay, or the server waits it out
		tr.Close()
		pc.Close()
	})
	return conn
}
