package stun

import (
	"net/netip"
	"testing"
)

// A request the client makes is one the responder answers, and the
// response parses back to the transaction ID and the address it named,
// for IPv4 and IPv6.
func TestClientRoundTrip(t *testing.T) {
	for _, from := range []string{"198.51.100.7:40000", "[2001:db8::7]:1"} {
		id := TransactionID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
		req, drop := Parse(BindingRequest(nil, id))
		if drop != DropNone || req.Form != FormRFC5389 {
			t.Fatalf("the client's request is dropped: %v", drop)
		}
		if IsResponse(BindingRequest(nil, id)) {
			t.Fatal("a request passes for a response")
		}
		resp := Response(nil, req, netip.MustParseAddrPort(from))
		if !IsResponse(resp) {
			t.Fatalf("%x is not a response", resp)
		}
		gotID, mapped, err := ParseBindingResponse(resp)
		if err != nil || gotID != id || mapped != netip.MustParseAddrPort(from) {
			t.Fatalf("parsed %x %v %v, want %x %s", gotID, mapped, err, id, from)
		}
	}
}

// What is not a Binding success response is refused: QUIC packets,
// truncated or lying lengths, error responses, no address.
func TestParseBindingResponseRefuses(t *testing.T) {
	id := TransactionID{9}
	good := Response(nil, Request{Form: FormRFC5389, ID: [16]byte{0x21, 0x12, 0xa4, 0x42, 9}}, netip.MustParseAddrPort("192.0.2.1:5"))
	errResp := append([]byte(nil), good[:20]...)
	errResp[0], errResp[1], errResp[2], errResp[3] = 0x01, 0x11, 0, 0 // Binding error response, no attributes
	noAddr := append([]byte(nil), good[:20]...)
	noAddr[2], noAddr[3] = 0, 0
	for name, b := range map[string][]byte{
		"quic long header":  append([]byte{0xc0}, good[1:]...),
		"quic short header": append([]byte{0x40}, good[1:]...),
		"truncated":         good[:len(good)-1],
		"length lies":       append(append([]byte(nil), good...), 0, 0, 0, 0),
		"error response":    errResp,
		"no address":        noAddr,
		"request":           BindingRequest(nil, id),
		"empty":             nil,
	} {
		if _, _, err := ParseBindingResponse(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// FuzzParseBindingResponse: nothing panics, and what parses is a
// response by IsResponse with a valid address.
func FuzzParseBindingResponse(f *testing.F) {
	f.Add(Response(nil, Request{Form: FormRFC5389, ID: [16]byte{0x21, 0x12, 0xa4, 0x42}}, netip.MustParseAddrPort("192.0.2.1:5")))
	f.Add(BindingRequest(nil, TransactionID{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, mapped, err := ParseBindingResponse(b)
		if err == nil && (!IsResponse(b) || !mapped.IsValid()) {
			t.Fatalf("%x parsed to %v", b, mapped)
		}
	})
}
