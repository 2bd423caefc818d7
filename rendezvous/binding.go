package rendezvous

import (
	"crypto/ed25519"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/netsody/superpeer/identity"
)

// Channel binding. A registration is signed over keying material exported
// from the very TLS connection it travels on (RFC 5705, RFC 8446 section
// 7.5), so a recorded registration is worthless on any other connection,
// and nobody can register a key they do not hold. The same value names the
// connection in the super peer's registry: a later request on a registered
// connection (a relay request) is authenticated by it without more proof.
const (
	// bindingLabel is the exporter label; RFC 5705 reserves the
	// "EXPORTER-" prefix for such uses.
	bindingLabel = "EXPORTER-netsody-superpeer-binding"
	// BindingLen is the length of the channel binding in bytes.
	BindingLen = 32
	// signatureContext starts every signed registration, so that the
	// signature can mean nothing else.
	signatureContext = "netsody-superpeer register v1\x00"
)

// Binding is a connection's exported keying material.
type Binding [BindingLen]byte

var errNoBinding = errors.New("no TLS connection to bind to")

// ConnBinding exports the channel binding of a completed TLS 1.3
// connection. It fails for TLS before 1.3 and before the handshake is
// complete (0-RTT data).
func ConnBinding(cs *tls.ConnectionState) (Binding, error) {
	var b Binding
	if cs == nil {
		return b, errNoBinding
	}
	if !cs.HandshakeComplete {
		return b, errors.New("TLS handshake not complete (0-RTT data)")
	}
	if cs.Version != tls.VersionTLS13 {
		return b, fmt.Errorf("TLS version 0x%04x; TLS 1.3 is required", cs.Version)
	}
	ekm, err := cs.ExportKeyingMaterial(bindingLabel, nil, BindingLen)
	if err != nil {
		return b, fmt.Errorf("exporting keying material: %w", err)
	}
	copy(b[:], ekm)
	return b, nil
}

// SignedRegistration returns the bytes a FrameRegister signature covers.
func SignedRegistration(b Binding, peer identity.PeerID, proofOfWork int32) []byte {
	m := make([]byte, 0, len(signatureContext)+BindingLen+identity.PeerIDLen+4)
	m = append(m, signatureContext...)
	m = append(m, b[:]...)
	m = append(m, peer[:]...)
	return binary.BigEndian.AppendUint32(m, uint32(proofOfWork))
}

// verifyRegistration checks a FrameRegister's signature for connection b,
// and that its peer ID is a key someone can hold: ed25519.Verify takes a
// forged signature for a small-order key.
func verifyRegistration(b Binding, m *Register) bool {
	return m.Peer.Validate() == nil && ed25519.Verify(m.Peer.PublicKey(), SignedRegistration(b, m.Peer, m.ProofOfWork), m.Signature[:])
}

// signRegistration builds a FrameRegister for connection b.
func signRegistration(b Binding, id *identity.Identity, local []netip.AddrPort) *Register {
	m := &Register{Peer: id.PeerID(), ProofOfWork: id.ProofOfWork, LocalAddrs: local}
	copy(m.Signature[:], id.Sign(SignedRegistration(b, m.Peer, m.ProofOfWork)))
	return m
}
