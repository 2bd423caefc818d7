package peer

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"math/big"
	"strings"
	"testing"

	"github.com/netsody/superpeer/identity"
)

// smallOrder is peer ID 0100…00, the identity point: ed25519.Verify takes
// R = that point and S = 0 as its signature of any message.
var smallOrder = identity.PeerID{1}

func forgedSignature() []byte { return append(smallOrder[:], make([]byte, 32)...) }

// A punch "signed" by a small-order key is refused, though its signature
// verifies.
func TestPunchFromSmallOrderKey(t *testing.T) {
	me, _ := identity.Generate()
	p := punch{typ: punchPing, sender: smallOrder, receiver: me.PeerID(), nonce: 7}
	if !ed25519.Verify(p.sender.PublicKey(), p.signed(), forgedSignature()) {
		t.Fatal("the forged signature does not verify; the test proves nothing")
	}
	b := []byte(punchMagic)
	b = append(b, p.typ)
	b = append(b, p.sender[:]...)
	b = append(b, p.receiver[:]...)
	b = binary.BigEndian.AppendUint64(b, p.nonce)
	b = append(b, forgedSignature()...)
	if _, err := decodePunch(b, me.PeerID()); err == nil {
		t.Fatal("a punch from a small-order key was taken")
	}
}

// A device's TLS certificate whose key is of small order names no peer.
func TestTLSSmallOrderKey(t *testing.T) {
	_, signer, _ := ed25519.GenerateKey(rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, &x509.Certificate{SerialNumber: big.NewInt(2)}, smallOrder.PublicKey(), signer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := peerIDOf([][]byte{der}); err == nil || !strings.Contains(err.Error(), "small order") {
		t.Fatalf("peerIDOf a small-order key: %v", err)
	}
}
