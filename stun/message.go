package stun

import (
	"encoding/binary"
	"errors"
	"net/netip"

	pion "github.com/pion/stun/v3"
)

// Form is the version of STUN a request was sent in; the response uses
// the same.
type Form uint8

const (
	// FormRFC5389 carries the magic cookie (RFC 5389, RFC 8489); it is
	// answered with XOR-MAPPED-ADDRESS.
	FormRFC5389 Form = iota + 1
	// FormRFC3489 is the classic form, without the cookie; it is answered
	// with MAPPED-ADDRESS.
	FormRFC3489
)

// String is the form's metric label.
func (f Form) String() string {
	switch f {
	case FormRFC5389:
		return "rfc5389"
	case FormRFC3489:
		return "rfc3489"
	}
	return "unknown"
}

// Forms lists every Form, for metrics.
func Forms() []Form { return []Form{FormRFC5389, FormRFC3489} }

// Request is a Binding request that will be answered.
type Request struct {
	Form Form
	// ID is bytes 4–19 of the header: the magic cookie and the 96-bit
	// transaction ID (RFC 5389/8489), or RFC 3489's 128-bit transaction ID.
	ID [16]byte
}

// IsBindingRequest reports whether b starts with the header of a Binding
// request, in either form, whose length field is possible for a request
// that would be answered; complete reports whether b holds the whole
// message. It reads only the header: the layer4 matcher's test.
func IsBindingRequest(b []byte) (ok, complete bool) {
	if len(b) < headerSize || binary.BigEndian.Uint16(b[0:2]) != typeBindingRequest {
		return false, false
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if n%4 != 0 || headerSize+n > MaxRequestSize {
		return false, false
	}
	return true, len(b) >= headerSize+n
}

// Parse decodes one datagram: a Binding request to answer, or the reason
// it is dropped.
func Parse(b []byte) (Request, DropReason) {
	if len(b) < headerSize {
		return Request{}, DropShort
	}
	if len(b) > MaxRequestSize {
		return Request{}, DropTooLarge
	}
	// RFC 8489 §5: the two most significant bits of every STUN message
	// are zero; this is what tells STUN from other protocols on a port.
	if b[0]&0xC0 != 0 {
		return Request{}, DropNotSTUN
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if n%4 != 0 || headerSize+n != len(b) {
		return Request{}, DropLength
	}
	if binary.BigEndian.Uint16(b[0:2]) != typeBindingRequest {
		return Request{}, DropNotBindingRequest
	}
	req := Request{Form: FormRFC3489}
	copy(req.ID[:], b[4:headerSize])
	if binary.BigEndian.Uint32(b[4:8]) == magicCookie {
		req.Form = FormRFC5389
		return req, checkRFC5389(b)
	}
	if err := walkAttributes(b[headerSize:]); err != nil {
		return Request{}, DropAttributes
	}
	return req, DropNone
}

// checkRFC5389 decodes an RFC 5389/8489 message's attributes with pion's
// codec and checks its FINGERPRINT, if it has one.
func checkRFC5389(b []byte) DropReason {
	m := &pion.Message{Raw: b}
	if err := m.Decode(); err != nil {
		return DropAttributes
	}
	if m.Contains(pion.AttrFingerprint) {
		if err := pion.Fingerprint.Check(m); err != nil {
			return DropFingerprint
		}
	}
	return DropNone
}

var errAttribute = errors.New("stun: attribute runs past the message")

// walkAttributes checks that b, the attributes of an RFC 3489 message, is
// a whole number of type-length-value attributes, each value padded to
// four bytes (RFC 3489 §11.2 lengths are multiples of four already; RFC
// 8489 §14 pads the others).
func walkAttributes(b []byte) error {
	for len(b) > 0 {
		if len(b) < attrHeaderSize {
			return errAttribute
		}
		n := int(binary.BigEndian.Uint16(b[2:4]))
		padded := attrHeaderSize + (n+3)&^3
		if padded > len(b) {
			return errAttribute
		}
		b = b[padded:]
	}
	return nil
}

// Response writes the Binding success response to req, telling from
// where it came, into buf (reusing its capacity) and returns it: the
// header and one address attribute, MaxResponseSize bytes at most.
func Response(buf []byte, req Request, from netip.AddrPort) []byte {
	ip := from.Addr().Unmap()
	dst := buf[:0]
	if req.Form == FormRFC5389 {
		m := &pion.Message{Raw: dst}
		copy(m.TransactionID[:], req.ID[4:])
		m.Type = pion.BindingSuccess
		m.WriteHeader()
		// pion's XOR-MAPPED-ADDRESS AddTo fails only for an address that
		// is neither IPv4 nor IPv6, which a netip.Addr from a socket is not.
		_ = (&pion.XORMappedAddress{IP: ip.AsSlice(), Port: int(from.Port())}).AddTo(m)
		return m.Raw
	}
	family, addr := byte(familyIPv4), ip.AsSlice()
	if ip.Is6() {
		family = familyIPv6
	}
	dst = binary.BigEndian.AppendUint16(dst, typeBindingResponse)
	dst = binary.BigEndian.AppendUint16(dst, uint16(attrHeaderSize+4+len(addr)))
	dst = append(dst, req.ID[:]...)
	// MAPPED-ADDRESS: type, length, then a zero byte, the family, the
	// port and the address (RFC 3489 §11.2.1; RFC 5389 §15.1 for IPv6).
	dst = binary.BigEndian.AppendUint16(dst, attrMappedAddress)
	dst = binary.BigEndian.AppendUint16(dst, uint16(4+len(addr)))
	dst = append(dst, 0, family)
	dst = binary.BigEndian.AppendUint16(dst, from.Port())
	return append(dst, addr...)
}
