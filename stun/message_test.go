package stun

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"testing"

	pion "github.com/pion/stun/v3"
)

// msg builds a STUN message: type, the 16 bytes after the length (cookie
// and ID, or RFC 3489's ID), attributes; the length field is right unless
// length is not -1.
func msg(typ uint16, id []byte, attrs []byte, length int) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	if length < 0 {
		length = len(attrs)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(length))
	return append(append(b, id...), attrs...)
}

func attr(typ uint16, v []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

var (
	cookieID  = append([]byte{0x21, 0x12, 0xa4, 0x42}, bytes.Repeat([]byte{7}, 12)...)
	classicID = bytes.Repeat([]byte{9}, 16)
	// changeRequest is RFC 3489's CHANGE-REQUEST asking for another IP
	// and port, as Debian's stun sends it.
	changeRequest = attr(0x0003, []byte{0, 0, 0, 6})
)

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every kind of datagram: what Parse makes of it.
func TestParse(t *testing.T) {
	withFingerprint := func(bad bool) []byte {
		m := &pion.Message{}
		copy(m.TransactionID[:], cookieID[4:])
		m.Type = pion.BindingRequest
		m.WriteHeader()
		if err := pion.Fingerprint.AddTo(m); err != nil {
			t.Fatal(err)
		}
		if bad {
			m.Raw[len(m.Raw)-1] ^= 1
		}
		return m.Raw
	}
	for _, tc := range []struct {
		name string
		b    []byte
		form Form
		why  DropReason
	}{
		{"rfc5389 minimal (turnutils_stunclient)", msg(0x0001, cookieID, nil, -1), FormRFC5389, DropNone},
		{"rfc5389 with SOFTWARE", msg(0x0001, cookieID, attr(0x8022, []byte("netsody")), -1), FormRFC5389, DropNone},
		{"rfc5389 with FINGERPRINT", withFingerprint(false), FormRFC5389, DropNone},
		{"rfc5389 with a wrong FINGERPRINT", withFingerprint(true), 0, DropFingerprint},
		{"rfc5389 with CHANGE-REQUEST", msg(0x0001, cookieID, changeRequest, -1), FormRFC5389, DropNone},
		{"rfc5389 attribute past the end", msg(0x0001, cookieID, []byte{0x80, 0x22, 0, 8, 1, 2, 3, 4}, -1), 0, DropAttributes},
		{"rfc3489 as Debian's stun sends it", mustHex(t, "0001000801f4324aa34858382ca4bd539bf9660c0003000400000000"), FormRFC3489, DropNone},
		{"rfc3489 change IP and port", msg(0x0001, classicID, changeRequest, -1), FormRFC3489, DropNone},
		{"rfc3489 RESPONSE-ADDRESS (ignored)", msg(0x0001, classicID, attr(0x0002, []byte{0, 1, 0, 80, 10, 0, 0, 1}), -1), FormRFC3489, DropNone},
		{"rfc3489 no attributes", msg(0x0001, classicID, nil, -1), FormRFC3489, DropNone},
		{"rfc3489 attribute past the end", msg(0x0001, classicID, []byte{0, 3, 0, 8, 0, 0, 0, 6}, -1), 0, DropAttributes},
		{"empty", nil, 0, DropShort},
		{"19 bytes", make([]byte, 19), 0, DropShort},
		{"too large", msg(0x0001, cookieID, attr(0x8022, make([]byte, MaxRequestSize)), -1), 0, DropTooLarge},
		{"first bits set (QUIC long header)", append([]byte{0xc0}, make([]byte, 39)...), 0, DropNotSTUN},
		{"length not a multiple of 4", msg(0x0001, cookieID, []byte{0, 0}, -1), 0, DropLength},
		{"length longer than the datagram", msg(0x0001, cookieID, nil, 8), 0, DropLength},
		{"length shorter than the datagram", msg(0x0001, cookieID, attr(0x8022, []byte("x")), 0), 0, DropLength},
		{"binding success response", msg(0x0101, cookieID, nil, -1), 0, DropNotBindingRequest},
		{"binding error response", msg(0x0111, cookieID, nil, -1), 0, DropNotBindingRequest},
		{"binding indication", msg(0x0011, cookieID, nil, -1), 0, DropNotBindingRequest},
		{"TURN allocate request", msg(0x0003, cookieID, nil, -1), 0, DropNotBindingRequest},
		{"rfc3489 shared secret request", msg(0x0002, classicID, nil, -1), 0, DropNotBindingRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, why := Parse(tc.b)
			if why != tc.why || (why == DropNone && req.Form != tc.form) {
				t.Fatalf("Parse = %v, %v; want %v, %v", req.Form, why, tc.form, tc.why)
			}
		})
	}
}

// The response to each form, from IPv4, IPv6 and IPv4-mapped IPv6 (a
// dual-stack socket's view of an IPv4 client): pion decodes it, it holds
// the source's address and the request's ID, one attribute, and no more
// than MaxResponseSize bytes.
func TestResponse(t *testing.T) {
	for _, src := range []string{"192.0.2.7:40000", "[2001:db8::1]:3478", "[::ffff:192.0.2.7]:1"} {
		from := netip.MustParseAddrPort(src)
		want := net.UDPAddr{IP: from.Addr().Unmap().AsSlice(), Port: int(from.Port())}
		for _, id := range [][]byte{cookieID, classicID} {
			req, why := Parse(msg(0x0001, id, nil, -1))
			if why != DropNone {
				t.Fatal(why)
			}
			resp := Response(make([]byte, 0, MaxResponseSize), req, from)
			size := headerSize + attrHeaderSize + 8
			if from.Addr().Unmap().Is6() {
				size = MaxResponseSize
			}
			if len(resp) != size || !bytes.Equal(resp[4:20], id) || binary.BigEndian.Uint16(resp[:2]) != typeBindingResponse {
				t.Fatalf("%s %v: response %x", src, req.Form, resp)
			}
			var got net.UDPAddr
			if req.Form == FormRFC5389 {
				m := &pion.Message{Raw: resp}
				var xa pion.XORMappedAddress
				if err := m.Decode(); err != nil || len(m.Attributes) != 1 {
					t.Fatalf("%s: %v, %d attributes", src, err, len(m.Attributes))
				}
				if err := xa.GetFrom(m); err != nil {
					t.Fatal(err)
				}
				got = net.UDPAddr{IP: xa.IP, Port: xa.Port}
			} else {
				// RFC 3489's MAPPED-ADDRESS has RFC 5389's layout; pion
				// reads it from a message it is told has the cookie.
				m := &pion.Message{Raw: append(append(append([]byte{}, resp[:4]...), cookieID...), resp[20:]...)}
				var ma pion.MappedAddress
				if err := m.Decode(); err != nil || len(m.Attributes) != 1 {
					t.Fatalf("%s: %v", src, err)
				}
				if err := ma.GetFrom(m); err != nil {
					t.Fatal(err)
				}
				got = net.UDPAddr{IP: ma.IP, Port: ma.Port}
			}
			if got.String() != want.String() {
				t.Errorf("%s %v: mapped %v, want %v", src, req.Form, &got, &want)
			}
		}
	}
}

// The matcher's header test agrees with Parse on what is a Binding
// request, and says when the datagram holds all of it.
func TestIsBindingRequest(t *testing.T) {
	whole := msg(0x0001, classicID, changeRequest, -1)
	for _, tc := range []struct {
		name         string
		b            []byte
		ok, complete bool
	}{
		{"whole", whole, true, true},
		{"header only", whole[:headerSize], true, false},
		{"short", whole[:10], false, false},
		{"response", msg(0x0101, cookieID, nil, -1), false, false},
		{"odd length", msg(0x0001, cookieID, nil, 2), false, false},
		{"length over the limit", msg(0x0001, cookieID, nil, MaxRequestSize), false, false},
	} {
		ok, complete := IsBindingRequest(tc.b)
		if ok != tc.ok || complete != tc.complete {
			t.Errorf("%s: %v %v, want %v %v", tc.name, ok, complete, tc.ok, tc.complete)
		}
	}
}
