package peer

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

// countingConn counts the packets a stranger's QUIC transport reads. It
// is a plain net.PacketConn, so that quic-go reads through ReadFrom.
type countingConn struct {
	net.PacketConn
	read atomic.Int64
}

func (c *countingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	if err == nil {
		c.read.Add(1)
	}
	return n, a, err
}

// strangerEndpoint is a stranger's identity, its certificate, and a
// loopback socket to handshake from.
func strangerEndpoint(t *testing.T) (*identity.Identity, tls.Certificate, *net.UDPConn) {
	t.Helper()
	id := newID(t)
	cert, err := certificate(id)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return id, cert, udp
}

// A stranger that knows the device's address gets no packet back for a
// QUIC handshake, nor for an unknown version: not the certificate that
// names the peer ID, not a refusal that says a device listens there. The
// same handshake from an accepted peer's candidate address is answered.
func TestStrangerHandshakeUnanswered(t *testing.T) {
	s, _ := superPeerServer(t)
	d := newDevice(t, s)
	id, cert, udp := strangerEndpoint(t)
	conn := &countingConn{PacketConn: udp}
	tr := &quic.Transport{Conn: conn}
	defer tr.Close()
	handshake := func(versions ...quic.Version) error {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		qcfg := quicConfig()
		qcfg.Versions = versions
		qc, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(d.LocalAddr()), tlsConfig(cert, d.PeerID()), qcfg)
		if err == nil {
			qc.CloseWithError(0, "")
		}
		return err
	}
	if err := handshake(); err == nil {
		t.Error("a stranger's handshake completed")
	}
	if err := handshake(quic.Version2); err == nil {
		t.Error("a stranger's QUIC v2 handshake completed")
	}
	if n := conn.read.Load(); n > 0 {
		t.Fatalf("a stranger got %d packets back, want none", n)
	}
	if r := d.Status().Refusals; r.Handshake == 0 {
		t.Errorf("no handshake packet counted as a stranger's in Status: %+v", r)
	}

	d.Allow(id.PeerID())
	from := udp.LocalAddr().(*net.UDPAddr).AddrPort()
	d.onCandidates(d.sps[0], true, rendezvous.Candidates{Peer: id.PeerID(), LocalAddrs: []netip.AddrPort{from}})
	if err := handshake(); err != nil {
		t.Fatalf("a handshake from an accepted peer's candidate: %v", err)
	}
}
