package caddymodule

// Keeping an endpoint's QUIC connections through a reload that removes
// the super peer. Caddy binds its sockets with SO_REUSEPORT, and a
// reload starts the new config before it stops the old one: a new config
// without netsody_superpeer opens Caddy's own HTTP/3 socket on the port
// while the endpoint still serves the drain on its own. The kernel then
// spreads the port's packets over both sockets by a hash of their
// addresses, so about half of the devices' connections lose every packet
// they send the endpoint: Caddy's listener drops packets of connections
// it does not know. The drain cannot see their relay legs close, and the
// endpoint's shutdown cannot see them close their connections.
//
// So the endpoint's connection IDs start with a marker of its own
// (markedCIDs), and a classic BPF program on the port's SO_REUSEPORT
// group (steer_linux.go) sends every packet that names such a connection
// ID to the endpoint's socket; any other packet (a new connection, or one
// of Caddy's) goes where the kernel's hash sends it, which is the
// endpoint's socket while it is alone. The program picks a socket by its
// index in the group, which the kernel does not tell: the endpoint finds
// its own by probing (findOwnIndex) when it opens, and again when the
// super peer drains for a reload, since the index changes when a socket
// before it leaves (Caddy's own HTTP/3 socket, after a reload that added
// the super peer). The endpoint takes the program off before it closes.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	"github.com/quic-go/quic-go"
)

// markedCIDs generates the endpoint's connection IDs: its marker, then
// random bytes. The marker tells observers no more than the endpoint's
// address does: that the connections are this endpoint's.
type markedCIDs struct{ marker uint16 }

func newMarkedCIDs() (markedCIDs, error) {
	var b [2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return markedCIDs{}, err
	}
	return markedCIDs{marker: binary.BigEndian.Uint16(b[:])}, nil
}

func (g markedCIDs) GenerateConnectionID() (quic.ConnectionID, error) {
	b := make([]byte, connIDLen)
	binary.BigEndian.PutUint16(b, g.marker)
	if _, err := rand.Read(b[2:]); err != nil {
		return quic.ConnectionID{}, err
	}
	return quic.ConnectionIDFromBytes(b), nil
}

func (markedCIDs) ConnectionIDLen() int { return connIDLen }

var errNoSteering = errors.New("the socket cannot steer its packets (not a UDP socket, or not Linux)")

// steer finds the socket's index in its group and steers the packets of
// the endpoint's connections to it, until release.
func (ep *endpoint) steer() error {
	ep.steerMu.Lock()
	defer ep.steerMu.Unlock()
	if ep.sock == nil {
		return errNoSteering
	}
	if err := ep.findOwnIndex(); err != nil {
		detachSteering(ep.sock)
		ep.steered = false
		return err
	}
	ep.steered = true
	return nil
}

// release takes the program off the group: the port's packets go by
// the kernel's hash again. The socket must not close with the program
// on, which would stay on the group for Caddy's sockets.
func (ep *endpoint) release() {
	ep.steerMu.Lock()
	defer ep.steerMu.Unlock()
	if ep.steered {
		detachSteering(ep.sock)
		ep.steered = false
	}
}

// findOwnIndex steers to each index of the group in turn and sends the
// socket a probe that the program treats as a marked packet: the first
// index at which the probe arrives is the socket's own, and the program
// stays on with it. Indexes below the socket's own are other sockets',
// so the probe cannot arrive there; past the group's end the kernel
// hashes, so a probe lost at the socket's own index would make a later
// one seem its own: each index gets probesPerIndex probes.
func (ep *endpoint) findOwnIndex() error {
	// quic-go keeps packets that are not QUIC only once they are read.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ep.tr.ReadNonQUICPacket(ctx, nil)
	for i := range maxReusePortSockets {
		if err := attachSteering(ep.sock, ep.cids.marker, uint32(i)); err != nil {
			return err
		}
		for range probesPerIndex {
			if ep.probe() {
				return nil
			}
		}
	}
	return fmt.Errorf("the socket is not among the first %d of its SO_REUSEPORT group", maxReusePortSockets)
}

// probe sends the socket a packet that looks marked to the program and
// is no QUIC to quic-go (its first byte has neither of QUIC's top bits),
// and reports whether it arrived within steerProbeWait.
func (ep *endpoint) probe() bool {
	to := *ep.sock.LocalAddr().(*net.UDPAddr)
	if to.IP.IsUnspecified() { // a dual-stack socket takes IPv4 too
		to.IP = net.IPv4(127, 0, 0, 1)
		if ep.network == "udp6" {
			to.IP = net.IPv6loopback
		}
	}
	c, err := net.DialUDP("udp", nil, &to)
	if err != nil {
		return false
	}
	defer c.Close()
	msg := make([]byte, 3+probeNonceLen)
	binary.BigEndian.PutUint16(msg[1:], ep.cids.marker)
	rand.Read(msg[3:])
	if _, err := c.Write(msg); err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), steerProbeWait)
	defer cancel()
	buf := make([]byte, len(msg)+1)
	for {
		n, _, err := ep.tr.ReadNonQUICPacket(ctx, buf)
		if err != nil {
			return false
		}
		if bytes.Equal(buf[:n], msg) {
			return true
		}
	}
}
