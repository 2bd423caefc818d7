package stun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	pion "github.com/pion/stun/v3"
)

// The client's side, for a device that learns its own mapped address
// from its one socket (package peer): a Binding request in the RFC
// 5389/8489 form, and its success response.

// TransactionID is the 96-bit transaction ID of an RFC 5389/8489 message.
type TransactionID [12]byte

// BindingRequest appends to buf a Binding request with transaction ID
// id: the bare 20-byte header, as RFC 8489 §6.1 allows.
func BindingRequest(buf []byte, id TransactionID) []byte {
	buf = binary.BigEndian.AppendUint16(buf, typeBindingRequest)
	buf = binary.BigEndian.AppendUint16(buf, 0)
	buf = binary.BigEndian.AppendUint32(buf, magicCookie)
	return append(buf, id[:]...)
}

// IsResponse reports whether b looks like an RFC 5389/8489 response of
// any method or class but request: its two top bits zero, the magic
// cookie, and the length field matching. A device's socket tells STUN
// from QUIC (whose first byte has bit 0x40 or 0x80 set, RFC 9000 §17)
// and from the relay's fast path with it, before parsing.
func IsResponse(b []byte) bool {
	return len(b) >= headerSize && b[0]&0xC0 == 0 &&
		binary.BigEndian.Uint16(b[0:2])&classMask != classRequest &&
		binary.BigEndian.Uint32(b[4:8]) == magicCookie &&
		headerSize+int(binary.BigEndian.Uint16(b[2:4])) == len(b)
}

// The class bits of a message type (RFC 8489 §5: C1 is bit 8, C0 bit 4).
const (
	classMask    = 0x0110
	classRequest = 0x0000
)

// ErrNotBindingSuccess is ParseBindingResponse's error for a message
// that is not a Binding success response.
var ErrNotBindingSuccess = errors.New("stun: not a Binding success response")

// ParseBindingResponse decodes a Binding success response with pion's
// codec: its transaction ID and the mapped address it reports
// (XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS), IPv4-mapped addresses
// unmapped. A FINGERPRINT, if present, must check.
func ParseBindingResponse(b []byte) (TransactionID, netip.AddrPort, error) {
	if !IsResponse(b) || len(b) > MaxRequestSize {
		return TransactionID{}, netip.AddrPort{}, ErrNotBindingSuccess
	}
	m := &pion.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		return TransactionID{}, netip.AddrPort{}, fmt.Errorf("stun: %w", err)
	}
	if m.Type != pion.BindingSuccess {
		return TransactionID{}, netip.AddrPort{}, ErrNotBindingSuccess
	}
	if m.Contains(pion.AttrFingerprint) {
		if err := pion.Fingerprint.Check(m); err != nil {
			return TransactionID{}, netip.AddrPort{}, fmt.Errorf("stun: %w", err)
		}
	}
	id := TransactionID(m.TransactionID)
	var xor pion.XORMappedAddress
	var mapped netip.AddrPort
	var err error
	if xerr := xor.GetFrom(m); xerr == nil {
		mapped, err = addrPort(xor.IP, xor.Port)
	} else {
		var plain pion.MappedAddress
		if err := plain.GetFrom(m); err != nil {
			return TransactionID{}, netip.AddrPort{}, fmt.Errorf("stun: no mapped address: %w", err)
		}
		mapped, err = addrPort(plain.IP, plain.Port)
	}
	if err != nil {
		return TransactionID{}, netip.AddrPort{}, err
	}
	return id, mapped, nil
}

// addrPort makes an address attribute's value an AddrPort.
func addrPort(ip []byte, port int) (netip.AddrPort, error) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || port <= 0 || port > 0xffff {
		return netip.AddrPort{}, errors.New("stun: a mapped address that is not an address and port")
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
}
