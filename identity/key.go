package identity

import (
	"bytes"
	"errors"
	"fmt"

	"filippo.io/edwards25519"
)

// Why a 32-byte string is not a peer ID. ed25519.Verify checks neither
// of the last two: a small-order key verifies a forged signature on some
// messages (for 0100…00, the identity point, whatever the message when
// R is the identity and S is 0), and a non-canonical encoding is a second
// name for a key that has another, so two peer IDs would be one device.
var (
	errNotOnCurve   = errors.New("identity: peer ID is not an Ed25519 public key: not a point on the curve")
	errNonCanonical = errors.New("identity: peer ID is not an Ed25519 public key: a non-canonical encoding (RFC 8032 section 5.1.3)")
	errSmallOrder   = errors.New("identity: peer ID is not an Ed25519 public key: a point of small order, which has no secret key")
)

// Validate reports whether p is a key that a key pair can have: a point
// on the curve (RFC 8032 section 5.1.3), encoded canonically (y below
// 2^255-19, and no sign bit on a point whose x is 0), and not one of the
// 8 points of small order (order 1, 2, 4 or 8, the all-zero ID among
// them). Every peer ID that arrives from the network passes here:
// ParsePeerID and PeerIDFromBytes call it.
func (p PeerID) Validate() error {
	pt, err := new(edwards25519.Point).SetBytes(p[:])
	if err != nil {
		return errNotOnCurve
	}
	// SetBytes accepts non-canonical encodings; the point's own encoding
	// is the canonical one.
	if !bytes.Equal(pt.Bytes(), p[:]) {
		return errNonCanonical
	}
	// A point of small order becomes the identity when multiplied by the
	// cofactor 8; every point of a real key pair has order 8·ℓ or ℓ.
	if new(edwards25519.Point).MultByCofactor(pt).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return errSmallOrder
	}
	return nil
}

// PeerIDFromBytes takes a peer ID from its 32-byte binary form, as frames
// and certificates carry it, and validates it.
func PeerIDFromBytes(b []byte) (PeerID, error) {
	var p PeerID
	if len(b) != PeerIDLen {
		return p, fmt.Errorf("identity: peer ID must be %d bytes, got %d", PeerIDLen, len(b))
	}
	copy(p[:], b)
	if err := p.Validate(); err != nil {
		return PeerID{}, err
	}
	return p, nil
}
