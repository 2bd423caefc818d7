package peer

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"

	"github.com/netsody/superpeer/identity"
)

// Punch messages open and keep direct paths. They share the device's UDP
// socket with QUIC: every QUIC version 1 packet has the fixed bit (0x40)
// set in its first byte (RFC 9000 section 17), and a punch message starts
// with 0x00, so the two never collide.
//
//	+------+-------------+----------+-------------+---------------+-----------+----------------+
//	| 0x00 | "NSYP" (4)  | type (1) | sender (32) | receiver (32) | nonce (8) | signature (64) |
//	+------+-------------+----------+-------------+---------------+-----------+----------------+
//
// type 1 is a ping, type 2 the pong that answers it, with the ping's nonce.
// The signature is Ed25519 by the sender over
//
//	"netsody punch v1\x00" | type | sender | receiver | nonce
//
// so nobody can make a device believe that a path leads to a peer it does
// not. A device answers a ping at the address it came from — a
// peer-reflexive candidate, as in ICE (RFC 8445 section 7.3.1.3) — and a
// pong at an address proves the path both ways.
const (
	punchMagic    = "\x00NSYP"
	punchLen      = len(punchMagic) + 1 + 32 + 32 + 8 + ed25519.SignatureSize
	punchPing     = 1
	punchPong     = 2
	punchSigLabel = "netsody punch v1\x00"
)

type punch struct {
	typ              byte
	sender, receiver identity.PeerID
	nonce            uint64
}

func isPunch(b []byte) bool { return len(b) == punchLen && string(b[:len(punchMagic)]) == punchMagic }

func (p *punch) signed() []byte {
	m := make([]byte, 0, len(punchSigLabel)+1+64+8)
	m = append(m, punchSigLabel...)
	m = append(m, p.typ)
	m = append(m, p.sender[:]...)
	m = append(m, p.receiver[:]...)
	return binary.BigEndian.AppendUint64(m, p.nonce)
}

// encode signs and encodes the message with the sender's identity.
func (p *punch) encode(id *identity.Identity) []byte {
	b := make([]byte, 0, punchLen)
	b = append(b, punchMagic...)
	b = append(b, p.typ)
	b = append(b, p.sender[:]...)
	b = append(b, p.receiver[:]...)
	b = binary.BigEndian.AppendUint64(b, p.nonce)
	return append(b, id.Sign(p.signed())...)
}

var errBadPunch = errors.New("peer: bad punch message")

// parsePunch checks a punch message's form, and that it is for me. It
// checks no signature: the device first decides whether the sender is
// worth one (Device.handlePunch), then calls verify.
func parsePunch(b []byte, me identity.PeerID) (punch, error) {
	var p punch
	if !isPunch(b) {
		return p, errBadPunch
	}
	r := b[len(punchMagic):]
	p.typ = r[0]
	copy(p.sender[:], r[1:33])
	copy(p.receiver[:], r[33:65])
	p.nonce = binary.BigEndian.Uint64(r[65:73])
	if (p.typ != punchPing && p.typ != punchPong) || p.receiver != me || p.sender == me {
		return p, errBadPunch
	}
	return p, nil
}

// verify checks the signature of b, which parsePunch read into p.
func (p *punch) verify(b []byte) bool {
	if p.sender.Validate() != nil { // a small-order key verifies forgeries
		return false
	}
	return ed25519.Verify(p.sender.PublicKey(), p.signed(), b[punchLen-ed25519.SignatureSize:])
}

// decodePunch parses a punch message and checks its signature.
func decodePunch(b []byte, me identity.PeerID) (punch, error) {
	p, err := parsePunch(b, me)
	if err != nil {
		return p, err
	}
	if !p.verify(b) {
		return p, errBadPunch
	}
	return p, nil
}
