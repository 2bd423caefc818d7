package rendezvous

import (
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/netsody/superpeer/identity"
)

// smallOrder is peer ID 0100…00, the identity point, and forged a
// signature that ed25519.Verify accepts for it on any message (R is the
// identity, S is 0).
var smallOrder, forged = func() (identity.PeerID, [64]byte) {
	var p identity.PeerID
	var sig [64]byte
	p[0], sig[0] = 1, 1
	return p, sig
}()

// A key that is no key registers nobody: without the check, peer ID
// 0100…00 registers with a signature anyone can write, and every stranger
// can be that device.
func TestSmallOrderKeyRefused(t *testing.T) {
	var b Binding
	m := &Register{Peer: smallOrder, Signature: forged}
	if !ed25519.Verify(m.Peer.PublicKey(), SignedRegistration(b, m.Peer, 0), m.Signature[:]) {
		t.Fatal("the forged signature does not verify; the test proves nothing")
	}
	if verifyRegistration(b, m) {
		t.Error("verifyRegistration accepted a small-order key's forged signature")
	}

	ts := newTestServer(t, "127.0.0.1", Config{})
	for _, tr := range transports {
		t.Run(string(tr), func(t *testing.T) {
			s := ts.openRaw(t, tr, newIdentity(t))
			if err := s.writeFrame((&Register{Peer: smallOrder, Signature: forged, Protocol: ours}).frame()); err != nil {
				t.Fatal(err)
			}
			wantError(t, s, ErrCodeMalformedFrame)

			// A registered device cannot ask for such a key either.
			s = ts.openRaw(t, tr, newIdentity(t))
			if err := s.register(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := s.writeFrame((&Connect{Peer: smallOrder}).frame()); err != nil {
				t.Fatal(err)
			}
			wantError(t, s, ErrCodeMalformedFrame)
		})
	}
}

// The decoder refuses every peer ID that identity refuses, except the
// zero ID, which error frames send as "none".
func TestDecodePeerValidates(t *testing.T) {
	nonCanonical := identity.PeerID{0xee} // y = p+1, the identity again
	for i := 1; i < 31; i++ {
		nonCanonical[i] = 0xff
	}
	nonCanonical[31] = 0x7f
	for _, p := range []identity.PeerID{smallOrder, nonCanonical} {
		var m Connect
		err := m.decode((&Connect{Peer: p}).frame()[frameHeaderLen:])
		if err == nil || !strings.Contains(err.Error(), "not an Ed25519 public key") {
			t.Errorf("connect to %s: %v", p.Short(), err)
		}
	}
	var e Error
	if err := e.decode((&Error{Code: ErrCodePeerNotFound}).frame()[frameHeaderLen:]); err != nil {
		t.Errorf("error frame without a peer: %v", err)
	}
}
