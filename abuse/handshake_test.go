package abuse_test

// Attack c: a stranger that knows a device's address (from anywhere: a
// log, a scan, an old introduction) opens a QUIC connection to it.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/peer"
	"github.com/netsody/superpeer/rendezvous"
)

// strangerTLS is the TLS configuration of a device of identity id, as
// peer's own (peer/tls.go): a self-signed Ed25519 certificate naming its
// peer ID, the device-to-device ALPN.
func strangerTLS(t *testing.T, id *identity.Identity) *tls.Config {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: id.PeerID().String()},
		NotBefore:    time.Unix(0, 0),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, id.PrivateKey.Public(), id.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: id.PrivateKey}},
		NextProtos:         []string{peer.ALPN},
		ServerName:         "netsody-peer",
		InsecureSkipVerify: true, // the stranger does not care who answers
	}
}

// handshakeHolds dials d's address as id from sock (a fresh socket if
// nil) and reports whether the connection is up a second after: false if
// the handshake fails (the device refuses the certificate), times out
// (the device drops the Initial), or the device closes the connection
// right after it (a TLS 1.3 client finishes before the server has
// checked its certificate).
func handshakeHolds(t *testing.T, d *peer.Device, id *identity.Identity, sock net.PacketConn) (bool, error) {
	t.Helper()
	if sock == nil {
		sock = udpSocket(t)
	}
	tr := &quic.Transport{Conn: sock}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	to, err := net.ResolveUDPAddr("udp", d.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := tr.Dial(ctx, to, strangerTLS(t, id), &quic.Config{HandshakeIdleTimeout: 2 * time.Second})
	if err != nil {
		return false, err
	}
	defer c.CloseWithError(0, "")
	select {
	case <-c.Context().Done():
		return false, context.Cause(c.Context())
	case <-time.After(time.Second):
		return true, nil
	}
}

// udpSocket is a UDP socket on 127.0.0.1, closed with the test.
func udpSocket(t *testing.T) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// A stranger that knows the device's address and speaks its protocol
// still gets no connection, whether the device refuses its certificate
// or drops its packets; the device's Accept returns nothing. An allowed
// peer's handshake, the same way, holds: the check sees a connection
// when there is one.
func TestStrangerCannotConnect(t *testing.T) {
	c := start(t, "")
	d := newDevice(t, c)
	accepted := make(chan *peer.Conn, 1)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		if conn, err := d.Accept(ctx); err == nil {
			accepted <- conn
		}
	}()
	id := newID(t)
	if up, err := handshakeHolds(t, d, id, nil); up {
		t.Fatal("a stranger's QUIC connection to the device holds")
	} else {
		t.Logf("the stranger's connection failed: %v", err)
	}
	select {
	case conn := <-accepted:
		conn.CloseWithError(0, "")
		t.Fatal("the device's Accept returned the stranger's connection")
	default:
	}

	// The same handshake from an accepted peer's candidate address holds:
	// the peer registers at Caddy announcing its socket, is allowed and
	// introduced, so the device knows the address.
	d.Allow(id.PeerID())
	sock := udpSocket(t)
	p := join(t, c, "127.0.0.1", rendezvous.TransportH2, func(cfg *rendezvous.ClientConfig) {
		cfg.Identity = id
		cfg.LocalAddrs = []netip.AddrPort{sock.LocalAddr().(*net.UDPAddr).AddrPort()}
	})
	if _, err, _ := introduce(t, p, d.PeerID(), rendezvous.IntroduceOptions{}); err != nil {
		t.Fatalf("introducing the allowed peer: %v", err)
	}
	if up, err := handshakeHolds(t, d, id, sock); !up {
		t.Fatalf("an allowed peer's connection failed: %v", err)
	}
	select {
	case conn := <-accepted:
		if conn.Peer() != id.PeerID() {
			t.Errorf("accepted %s, want the allowed %s", conn.Peer().Short(), id.PeerID().Short())
		}
		conn.CloseWithError(0, "")
	case <-time.After(5 * time.Second):
		t.Error("the allowed peer's connection was not accepted")
	}
}

// A device drops QUIC Initials from addresses not mapped to a peer it
// accepts: a stranger that knows its address gets no answer at all, so
// not its certificate, which names its peer ID.
func TestStrangerInitialDropped(t *testing.T) {
	c := start(t, "")
	d := newDevice(t, c)
	tlsConf := strangerTLS(t, newID(t))
	sawCert := false
	tlsConf.VerifyPeerCertificate = func([][]byte, [][]*x509.Certificate) error { sawCert = true; return nil }
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, d.LocalAddr().String(), tlsConf, &quic.Config{HandshakeIdleTimeout: 2 * time.Second})
	if err == nil {
		conn.CloseWithError(0, "")
	}
	var hto *quic.HandshakeTimeoutError
	var ito *quic.IdleTimeoutError
	if sawCert || !(errors.As(err, &hto) || errors.As(err, &ito) || errors.Is(err, context.DeadlineExceeded)) {
		t.Errorf("a stranger's handshake: %v, certificate seen %v; want no answer at all", err, sawCert)
	}
}
