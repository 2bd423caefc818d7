// Package identity holds a Netsody device's or super peer's identity: an
// Ed25519 key pair whose public key, written as lowercase hex, is the peer
// ID. Identity files use Netsody's own format, so an identity made by a
// Netsody agent works here unchanged:
//
//	[Identity]
//	SecretKey = <128 lowercase hex: 32-byte seed followed by 32-byte public key>
//	ProofOfWork = <signed 32-bit decimal nonce>
//
// Files are written with mode 0600 and refused when group or others may
// access them, as OpenSSH does with private keys.
package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
)

// PeerIDLen is the length of a peer ID in bytes: an Ed25519 public key.
const PeerIDLen = ed25519.PublicKeySize

// PeerID is a device's Ed25519 public key. Its text form is 64 lowercase hex
// digits; uppercase is accepted on input.
type PeerID [PeerIDLen]byte

// ParsePeerID parses the 64-hex-digit text form of a peer ID, in either
// case, and validates it (Validate).
func ParsePeerID(s string) (PeerID, error) {
	var id PeerID
	if len(s) != 2*PeerIDLen {
		return id, fmt.Errorf("identity: peer ID must be %d hex digits, got %d characters", 2*PeerIDLen, len(s))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return PeerID{}, fmt.Errorf("identity: peer ID is not hex: %w", err)
	}
	if err := id.Validate(); err != nil {
		return PeerID{}, err
	}
	return id, nil
}

// String returns the peer ID as 64 lowercase hex digits.
func (p PeerID) String() string { return hex.EncodeToString(p[:]) }

// Short returns the first 8 hex digits, for logs and tables.
func (p PeerID) Short() string { return hex.EncodeToString(p[:4]) }

// IsZero reports whether p is the all-zero ID, which no key pair has
// (Validate refuses it: it is a point of small order).
func (p PeerID) IsZero() bool { return p == PeerID{} }

// PublicKey returns p as an Ed25519 public key.
func (p PeerID) PublicKey() ed25519.PublicKey { return ed25519.PublicKey(p[:]) }

// MarshalText implements encoding.TextMarshaler.
func (p PeerID) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *PeerID) UnmarshalText(b []byte) error {
	id, err := ParsePeerID(string(b))
	if err != nil {
		return err
	}
	*p = id
	return nil
}

// Identity is an Ed25519 key pair with Netsody's proof-of-work nonce.
type Identity struct {
	// PrivateKey is the 64-byte Ed25519 private key (seed then public key).
	PrivateKey ed25519.PrivateKey
	// ProofOfWork is the nonce that Netsody's admission check hashes with
	// the public key. A new identity carries 0.
	ProofOfWork int32
}

// Generate makes a new identity from crypto/rand, with proof of work 0.
func Generate() (*Identity, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: generating key: %w", err)
	}
	return &Identity{PrivateKey: priv}, nil
}

// PeerID returns the identity's public key as a peer ID.
func (id *Identity) PeerID() PeerID {
	var p PeerID
	copy(p[:], id.PrivateKey[ed25519.SeedSize:])
	return p
}

// Sign signs msg with the identity's private key.
func (id *Identity) Sign(msg []byte) []byte { return ed25519.Sign(id.PrivateKey, msg) }

// check reports whether the private key is well formed: the right length,
// and a public half that is the one its seed derives.
func (id *Identity) check() error {
	if len(id.PrivateKey) != ed25519.PrivateKeySize {
		return fmt.Errorf("identity: secret key must be %d bytes, got %d", ed25519.PrivateKeySize, len(id.PrivateKey))
	}
	derived := ed25519.NewKeyFromSeed(id.PrivateKey[:ed25519.SeedSize])
	if !bytes.Equal(derived[ed25519.SeedSize:], id.PrivateKey[ed25519.SeedSize:]) {
		return errors.New("identity: secret key is inconsistent: its public half does not match its seed")
	}
	return nil
}
