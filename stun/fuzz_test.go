package stun

import (
	"bytes"
	"net/netip"
	"testing"
)

// FuzzParse feeds any datagram to the responder's codec: it never panics;
// whatever it answers is a Binding request of at most MaxRequestSize
// bytes, and the answer is at most MaxResponseSize bytes, a Binding
// response with the request's ID, and what Parse makes of it is a drop.
func FuzzParse(f *testing.F) {
	f.Add(msg(0x0001, cookieID, nil, -1))
	f.Add(msg(0x0001, classicID, changeRequest, -1))
	f.Add(msg(0x0001, cookieID, attr(0x8028, []byte{1, 2, 3, 4}), -1))
	f.Add(msg(0x0101, cookieID, nil, -1))
	f.Add([]byte{0, 1, 0, 4, 0x21, 0x12, 0xa4, 0x42})
	from := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("[2001:db8::1]:65535")}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, why := Parse(b)
		if why != DropNone {
			return
		}
		if len(b) > MaxRequestSize || len(b) < headerSize {
			t.Fatalf("answered a %d-byte datagram", len(b))
		}
		for _, a := range from {
			resp := Response(nil, req, a)
			if len(resp) > MaxResponseSize || !bytes.Equal(resp[4:20], b[4:20]) {
				t.Fatalf("response %x to %x", resp, b)
			}
			if _, why := Parse(resp); why != DropNotBindingRequest {
				t.Fatalf("own response parses as %v", why)
			}
		}
	})
}
