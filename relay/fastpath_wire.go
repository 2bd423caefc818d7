package relay

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"

	"github.com/quic-go/quic-go/http3"
)

// The fast path's capsules, on a leg's request stream (docs/PROTOCOL.md,
// "Relay fast path"). Their types are unregistered values from RFC 9297's
// First Come First Served range, like CapsuleClose; devices that do not
// know them skip them.
const (
	// CapsuleFastPathRequest asks, on a paired leg, for a fast-path
	// binding. Its value is empty.
	CapsuleFastPathRequest http3.CapsuleType = 0x4e455446 // "NETF"
	// CapsuleFastPathBinding answers it:
	//
	//	+--------------+-------------+------------------------+
	//	| binding (8)  | token (32)  | UDP port (2, big end.) |
	//	+--------------+-------------+------------------------+
	CapsuleFastPathBinding http3.CapsuleType = 0x4e455442 // "NETB"
	// CapsuleFastPathRefused answers it with why not, UTF-8, at most
	// maxCloseReason bytes.
	CapsuleFastPathRefused http3.CapsuleType = 0x4e455452 // "NETR"
)

// Fast-path packets. Their first byte is 0x20-0x3F: QUIC version 1
// packets have the fixed bit 0x40 set (RFC 9000 section 17), punch
// messages start with 0x00 and STUN with 0x00-0x03 (RFC 7983), so one
// socket tells them apart by that byte. The binding ID is big-endian;
// MACs are HMAC-SHA-256 cut to fastPathMACLen bytes.
//
//	DATA      0x20 | binding (8) | HTTP datagram payload (context ID | UDP payload)
//	PROBE     0x21 | binding (8) | nonce (8) | MAC(token, probe label | binding | nonce) (16)
//	CHALLENGE 0x22 | binding (8) | nonce (8) | cookie (16)
//	ANSWER    0x23 | binding (8) | cookie (16) | MAC(token, answer label | binding | cookie) (16)
//	BOUND     0x24 | binding (8) | MAC(token, bound label | binding | cookie) (16)
const (
	fpData      byte = 0x20
	fpProbe     byte = 0x21
	fpChallenge byte = 0x22
	fpAnswer    byte = 0x23
	fpBound     byte = 0x24

	fpFirst, fpLast byte = 0x20, 0x3f // the fast path's range of first bytes

	fastPathHeaderLen = 1 + 8 // type and binding ID
	fastPathMACLen    = 16    // bytes of HMAC-SHA-256 kept: 128 bits
	fastPathNonceLen  = 8
	fastPathTokenLen  = 32
	fpProbeLen        = fastPathHeaderLen + fastPathNonceLen + fastPathMACLen
	fpChallengeLen    = fastPathHeaderLen + fastPathNonceLen + fastPathMACLen
	fpAnswerLen       = fastPathHeaderLen + 2*fastPathMACLen
	fpBoundLen        = fastPathHeaderLen + fastPathMACLen
	fpBindingLen      = 8 + fastPathTokenLen + 2 // CapsuleFastPathBinding's value
)

// The MACs' labels keep a MAC of one message from passing for another's.
var (
	labelProbe  = []byte("netsody fast path probe\x00")
	labelAnswer = []byte("netsody fast path answer\x00")
	labelBound  = []byte("netsody fast path bound\x00")
	labelCookie = []byte("netsody fast path cookie\x00")
)

// IsFastPath reports whether a packet on a device's socket is a fast-path
// packet, by its first byte.
func IsFastPath(p []byte) bool { return len(p) > 0 && p[0] >= fpFirst && p[0] <= fpLast }

// fpPacket is a decoded fast-path packet: its type, binding, and what
// follows the header (for DATA, the payload; for the others, their
// fields, checked to be long enough).
type fpPacket struct {
	typ  byte
	id   uint64
	body []byte
}

var errFastPathMalformed = errors.New("relay: malformed fast-path packet")

// parseFastPath decodes a fast-path packet's header. Known control
// types must be at least their length (a PROBE may be padded); unknown
// types in the range are malformed, so that a later version's message is
// dropped, not misread. body aliases p.
func parseFastPath(p []byte) (fpPacket, error) {
	if len(p) < fastPathHeaderLen || !IsFastPath(p) {
		return fpPacket{}, errFastPathMalformed
	}
	pk := fpPacket{typ: p[0], id: binary.BigEndian.Uint64(p[1:9]), body: p[fastPathHeaderLen:]}
	var need int
	switch pk.typ {
	case fpData:
		need = fastPathHeaderLen
	case fpProbe:
		need = fpProbeLen
	case fpChallenge:
		need = fpChallengeLen
	case fpAnswer:
		need = fpAnswerLen
	case fpBound:
		need = fpBoundLen
	default:
		return fpPacket{}, errFastPathMalformed
	}
	if len(p) < need {
		return fpPacket{}, errFastPathMalformed
	}
	return pk, nil
}

// appendFastPathHeader appends a packet's type and binding ID.
func appendFastPathHeader(b []byte, typ byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, typ), id)
}

// FastPathBinding is what a device is told of its binding, inside TLS.
type FastPathBinding struct {
	ID    uint64
	Token [fastPathTokenLen]byte
	Port  uint16 // on the super peer's address the device already uses
}

func (b FastPathBinding) capsule() []byte {
	v := binary.BigEndian.AppendUint64(make([]byte, 0, fpBindingLen), b.ID)
	v = append(v, b.Token[:]...)
	v = binary.BigEndian.AppendUint16(v, b.Port)
	return appendCapsule(nil, CapsuleFastPathBinding, v)
}

// ParseFastPathBinding decodes a CapsuleFastPathBinding's value.
func ParseFastPathBinding(v []byte) (FastPathBinding, error) {
	if len(v) != fpBindingLen {
		return FastPathBinding{}, errors.New("relay: a fast-path binding capsule must hold 42 bytes")
	}
	b := FastPathBinding{ID: binary.BigEndian.Uint64(v), Port: binary.BigEndian.Uint16(v[8+fastPathTokenLen:])}
	copy(b.Token[:], v[8:])
	return b, nil
}

// macer computes the fast path's MACs under one key, reusing its hash and
// buffers: no allocation per packet. Not safe for concurrent use.
type macer struct {
	h   hash.Hash
	buf []byte
	sum []byte
}

func newMacer(key []byte) *macer {
	return &macer{h: hmac.New(sha256.New, key), buf: make([]byte, 0, 64), sum: make([]byte, 0, sha256.Size)}
}

// mac returns HMAC(key, label | id | parts...) cut to fastPathMACLen; the
// result is valid until the next call.
func (m *macer) mac(label []byte, id uint64, parts ...[]byte) []byte {
	m.buf = binary.BigEndian.AppendUint64(append(m.buf[:0], label...), id)
	for _, p := range parts {
		m.buf = append(m.buf, p...)
	}
	m.h.Reset()
	m.h.Write(m.buf)
	m.sum = m.h.Sum(m.sum[:0])
	return m.sum[:fastPathMACLen]
}
