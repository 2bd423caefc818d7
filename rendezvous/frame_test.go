package rendezvous

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/quic-go/quic-go/quicvarint"

	"github.com/netsody/superpeer/identity"
)

func sampleMessages() []message {
	peer := identity.PeerID{1, 2, 3}
	addrs := []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:443"),
		netip.MustParseAddrPort("[2001:db8::1]:8443"),
	}
	return []message{
		&Register{Peer: peer, ProofOfWork: -5, LocalAddrs: addrs, Protocol: ours},
		&Register{Peer: peer, LocalAddrs: addrs, Protocol: protocolV1},
		&Registered{Observed: addrs[1], KeepaliveInterval: 15 * time.Second, SessionTimeout: 45 * time.Second, Protocol: ours},
		&Registered{Observed: addrs[0], Protocol: protocolV1},
		&Registered{Observed: addrs[0], Protocol: ours, STUNPort: 3478},
		&Addrs{LocalAddrs: addrs},
		&Ping{Nonce: 9, RTT: 1500 * time.Microsecond},
		&Pong{Nonce: 9},
		&Connect{Peer: peer, Relay: true},
		&Candidates{Peer: peer, Initiator: true, Relay: true, PeerRTT: time.Millisecond, Observed: addrs[0], LocalAddrs: addrs},
		&Candidates{Peer: peer, Observed: addrs[0], PeerNAT: Mapping{Mapping: MappingDependent, Filtering: FilteringAddressPortDependent}},
		&Error{Code: ErrCodePeerNotFound, Peer: peer, Message: "no"},
		&Observed{Addr: addrs[1]},
		&Request{Peer: peer, Relay: true},
		&Answer{Peer: peer, Accept: true},
		&Move{Deadline: 5 * time.Second, Reason: "caddy is stopping"},
		&Headroom{Bandwidth: 125_000_000, Sessions: 16},
		&Mapping{Mapping: MappingIndependent, Filtering: FilteringUnknown},
	}
}

func sampleFrames() [][]byte {
	var fs [][]byte
	for _, m := range sampleMessages() {
		fs = append(fs, m.frame())
	}
	// A newer sender's extensions, which this version skips.
	fs = append(fs, withExt((&Ping{Nonce: 1}).frame(), 0x3f, []byte("later")))
	return fs
}

// withExt appends an extension to a frame's payload, as a later version
// would.
func withExt(f []byte, typ uint64, v []byte) []byte {
	p := append([]byte(nil), f[frameHeaderLen:]...)
	p = quicvarint.Append(p, typ)
	p = quicvarint.Append(p, uint64(len(v)))
	return appendFrame(nil, FrameType(f[0]), append(p, v...))
}

// decodeAny decodes one frame's payload by its type and re-encodes it.
func decodeAny(f frame) ([]byte, error) {
	m, err := decodeFrame(f)
	if m == nil {
		return nil, errors.New("unknown type")
	}
	return m.frame(), err
}

func TestFrameRoundTrip(t *testing.T) {
	types := map[FrameType]bool{}
	for _, want := range sampleFrames()[:len(sampleMessages())] {
		var hdr [frameHeaderLen]byte
		f, err := readFrame(bytes.NewReader(want), &hdr)
		if err != nil {
			t.Fatal(err)
		}
		types[f.typ] = true
		got, err := decodeAny(f)
		if err != nil {
			t.Fatalf("%s: %v", f.typ, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: round trip\n got %x\nwant %x", f.typ, got, want)
		}
	}
	for typ := FrameType(1); typ <= lastFrameType; typ++ {
		if !types[typ] {
			t.Errorf("no sample of %s", typ)
		}
	}
}

// Extensions a later version adds are skipped, in every payload that has
// an extension area; known ones are taken.
func TestExtensionsSkipped(t *testing.T) {
	for _, m := range sampleMessages() {
		switch m.(type) {
		case *Error, *Mapping:
			continue // no extension area
		}
		f := withExt(m.frame(), 0x3f, []byte("later"))
		got, err := decodeFrame(frame{typ: FrameType(f[0]), payload: f[frameHeaderLen:]})
		if err != nil {
			t.Fatalf("%T with an unknown extension: %v", m, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("%T with an unknown extension:\n got %+v\nwant %+v", m, got, m)
		}
	}
	var r Register
	f := (&Register{Protocol: Protocol{Version: 7, Capabilities: 1<<40 | CapObserved}}).frame()
	if err := r.decode(f[frameHeaderLen:]); err != nil || r.Version != 7 || !r.Capabilities.Has(CapObserved) {
		t.Fatalf("a newer device's register: %+v, %v", r.Protocol, err)
	}
	if err := r.decode((&Register{}).frame()[frameHeaderLen:]); err != nil || r.Protocol != protocolV1 {
		t.Fatalf("a register without extensions is version 1: %+v, %v", r.Protocol, err)
	}
}

func TestDecodeErrors(t *testing.T) {
	reg := (&Register{}).frame()[frameHeaderLen:]
	registered := (&Registered{Observed: netip.MustParseAddrPort("192.0.2.1:1"), Protocol: ours}).frame()[frameHeaderLen:]
	cands := (&Candidates{Observed: netip.MustParseAddrPort("192.0.2.1:1")}).frame()[frameHeaderLen:]
	for _, tc := range []struct {
		name string
		m    message
		in   []byte
	}{
		{"short register", &Register{}, make([]byte, 50)},
		{"truncated extension", &Pong{}, make([]byte, 9)},
		{"extension longer than the payload", &Pong{}, append(make([]byte, 8), 0x3f, 5, 1)},
		{"repeated known extension", &Register{}, append(append(append([]byte(nil), reg...), 1, 1, 2), 1, 1, 2)},
		{"known extension too long", &Register{}, append(append([]byte(nil), reg...), 1, 2, 2, 0)},
		{"bad family", &Addrs{}, []byte{1, 5, 1, 2, 3, 4, 0, 1}},
		{"mapped v6", &Addrs{}, append([]byte{1, 6}, append(netip.MustParseAddr("::ffff:1.2.3.4").AsSlice(), 0, 1)...)},
		{"too many addrs", &Addrs{}, []byte{MaxAddrs + 1}},
		{"move reason too long", &Move{}, append([]byte{0, 0, 0, 1, MaxMoveReason + 1}, make([]byte, MaxMoveReason+1)...)},
		{"move reason not UTF-8", &Move{}, []byte{0, 0, 0, 1, 2, 0xc3, 0x28}},
		{"move reason ends early", &Move{}, []byte{0, 0, 0, 1, 5, 'a'}},
		{"headroom ends early", &Headroom{}, make([]byte, 11)},
		{"mapping ends early", &Mapping{}, []byte{1}},
		{"empty mapping", &Mapping{}, nil},
		{"mapping too long", &Mapping{}, []byte{1, 0, 0}},
		{"STUN port 0", &Registered{}, append(append([]byte(nil), registered...), extSTUNPort, 1, 0)},
		{"STUN port over 65535", &Registered{}, quicvarint.Append(append(append([]byte(nil), registered...), extSTUNPort, 4), 70000)},
		{"STUN port repeated", &Registered{}, append(append([]byte(nil), registered...), extSTUNPort, 1, 7, extSTUNPort, 1, 7)},
		{"peer mapping short", &Candidates{}, append(append([]byte(nil), cands...), extCandMapping, 1, 1)},
		{"peer mapping long", &Candidates{}, append(append([]byte(nil), cands...), extCandMapping, 3, 1, 1, 1)},
	} {
		if err := tc.m.decode(tc.in); !errors.Is(err, errMalformed) {
			t.Errorf("%s: err = %v, want malformed", tc.name, err)
		}
	}
	var hdr [frameHeaderLen]byte
	if _, err := readFrame(bytes.NewReader([]byte{1, 0xff, 0xff}), &hdr); !errors.Is(err, errFrameTooLarge) {
		t.Errorf("oversized: %v", err)
	}
}

// A mapping or filtering this version does not know is read as unknown,
// in the frame and in the candidates' extension; the STUN port goes only
// with version 2's extensions.
func TestMappingValues(t *testing.T) {
	var m Mapping
	if err := m.decode([]byte{9, 9}); err != nil || m != (Mapping{}) {
		t.Fatalf("unknown values: %+v, %v", m, err)
	}
	if err := m.decode([]byte{2, 3}); err != nil || m != (Mapping{Mapping: MappingDependent, Filtering: FilteringAddressPortDependent}) {
		t.Fatalf("known values: %+v, %v", m, err)
	}
	cands := (&Candidates{Observed: netip.MustParseAddrPort("192.0.2.1:1")}).frame()[frameHeaderLen:]
	var c Candidates
	if err := c.decode(append(append([]byte(nil), cands...), extCandMapping, 2, 7, 1)); err != nil || c.PeerNAT != (Mapping{Filtering: FilteringIndependent}) {
		t.Fatalf("candidates with an unknown mapping: %+v, %v", c.PeerNAT, err)
	}
	if with, without := (&Candidates{PeerNAT: Mapping{Mapping: MappingIndependent}}).frame(), (&Candidates{}).frame(); len(with) != len(without)+2+mappingLen {
		t.Fatalf("candidates of %d bytes with a mapping, %d without: an unknown mapping is sent, or a known one is not", len(with), len(without))
	}
	var r Registered
	if err := r.decode((&Registered{Protocol: protocolV1, STUNPort: 3478}).frame()[frameHeaderLen:]); err != nil || r.STUNPort != 0 {
		t.Fatalf("a version-1 registered carries a STUN port: %+v, %v", r, err)
	}
	for m, want := range map[NATMapping]string{MappingUnknown: "unknown", MappingIndependent: "endpoint-independent", MappingDependent: "endpoint-dependent"} {
		if m.String() != want {
			t.Errorf("%d is %q, want %q", m, m, want)
		}
	}
}

func TestMappedAddressesSentAsIPv4(t *testing.T) {
	b := appendAddr(nil, netip.MustParseAddrPort("[::ffff:192.0.2.9]:7"))
	d := decoder{b: b}
	if a := d.addr(); d.done() != nil || a != netip.MustParseAddrPort("192.0.2.9:7") {
		t.Fatalf("got %v, %v", a, d.err)
	}
}

// A long error message is cut to MaxErrorMessage at a character boundary.
func TestErrorMessageCut(t *testing.T) {
	msg := strings.Repeat("a", MaxErrorMessage-1) + "é and more" // é straddles the limit
	var got Error
	if err := got.decode((&Error{Message: msg}).frame()[frameHeaderLen:]); err != nil {
		t.Fatal(err)
	}
	if len(got.Message) > MaxErrorMessage || !utf8.ValidString(got.Message) || !strings.HasPrefix(msg, got.Message) {
		t.Fatalf("cut to %d bytes, valid UTF-8 %v", len(got.Message), utf8.ValidString(got.Message))
	}
}

// A long move reason is cut to MaxMoveReason at a character boundary,
// and its deadline goes in whole milliseconds.
func TestMoveReasonCut(t *testing.T) {
	reason := strings.Repeat("a", MaxMoveReason-1) + "é and more"
	var got Move
	if err := got.decode((&Move{Deadline: 1500*time.Millisecond + 7, Reason: reason}).frame()[frameHeaderLen:]); err != nil {
		t.Fatal(err)
	}
	if len(got.Reason) > MaxMoveReason || !utf8.ValidString(got.Reason) || !strings.HasPrefix(reason, got.Reason) || got.Deadline != 1500*time.Millisecond {
		t.Fatalf("got %d bytes of reason (valid UTF-8 %v), deadline %v", len(got.Reason), utf8.ValidString(got.Reason), got.Deadline)
	}
}

// Every error code has a name, and numErrorCodes sizes tables by code.
func TestErrorCodesNamed(t *testing.T) {
	for c := ErrorCode(1); c < numErrorCodes; c++ {
		if strings.HasPrefix(c.String(), "error ") {
			t.Errorf("code %d has no name", c)
		}
	}
	if c := ErrorCode(numErrorCodes); !strings.HasPrefix(c.String(), "error ") {
		t.Errorf("numErrorCodes is %d, but code %d is %q", numErrorCodes, c, c)
	}
}

// FuzzFrames feeds arbitrary bytes to the frame reader and every decoder:
// nothing may panic, and whatever decodes must re-encode to the same bytes
// and decode again to the same message.
func FuzzFrames(f *testing.F) {
	for _, b := range sampleFrames() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		var hdr [frameHeaderLen]byte
		for range 8 {
			fr, err := readFrame(r, &hdr)
			if err != nil {
				return
			}
			enc, err := decodeAny(fr)
			if err != nil {
				continue
			}
			again, err := readFrame(bytes.NewReader(enc), &hdr)
			if err != nil {
				t.Fatalf("%s re-encoded unreadably: %v", fr.typ, err)
			}
			enc2, err := decodeAny(again)
			if err != nil || !reflect.DeepEqual(enc, enc2) {
				t.Fatalf("%s: second round trip differs: %v", fr.typ, err)
			}
		}
	})
}
