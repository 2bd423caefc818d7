package rendezvous

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
)

func sampleFrames() [][]byte {
	peer := identity.PeerID{1, 2, 3}
	addrs := []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:443"),
		netip.MustParseAddrPort("[2001:db8::1]:8443"),
	}
	return [][]byte{
		(&Register{Peer: peer, ProofOfWork: -5, LocalAddrs: addrs}).frame(),
		(&Registered{Observed: addrs[1], KeepaliveInterval: 15 * time.Second, SessionTimeout: 45 * time.Second}).frame(),
		addrsFrame(addrs),
		(&Ping{Nonce: 9, RTT: 1500 * time.Microsecond}).frame(),
		pongFrame(9),
		connectFrame(peer, true),
		(&Candidates{Peer: peer, Initiator: true, Relay: true, PeerRTT: time.Millisecond, Observed: addrs[0], LocalAddrs: addrs}).frame(),
		(&Error{Code: ErrCodePeerNotFound, Peer: peer, Message: "no"}).frame(),
		observedFrame(addrs[1]),
	}
}

// decodeAny decodes one frame's payload by its type and re-encodes it.
func decodeAny(f frame) ([]byte, error) {
	switch f.typ {
	case FrameRegister:
		m, err := decodeRegister(f.payload)
		return m.frame(), err
	case FrameRegistered:
		m, err := decodeRegistered(f.payload)
		return m.frame(), err
	case FrameAddrs:
		m, err := decodeAddrs(f.payload)
		return addrsFrame(m), err
	case FramePing:
		m, err := decodePing(f.payload)
		return m.frame(), err
	case FramePong:
		m, err := decodePong(f.payload)
		return pongFrame(m), err
	case FrameConnect:
		m, relay, err := decodeConnect(f.payload)
		return connectFrame(m, relay), err
	case FrameCandidates:
		m, err := decodeCandidates(f.payload)
		return m.frame(), err
	case FrameError:
		m, err := decodeError(f.payload)
		return m.frame(), err
	case FrameObserved:
		m, err := decodeObserved(f.payload)
		return observedFrame(m), err
	}
	return nil, errors.New("unknown type")
}

func TestFrameRoundTrip(t *testing.T) {
	for _, want := range sampleFrames() {
		var hdr [frameHeaderLen]byte
		f, err := readFrame(bytes.NewReader(want), &hdr)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeAny(f)
		if err != nil {
			t.Fatalf("%s: %v", f.typ, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: round trip\n got %x\nwant %x", f.typ, got, want)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		dec  func([]byte) error
		in   []byte
	}{
		{"short register", func(b []byte) error { _, err := decodeRegister(b); return err }, make([]byte, 50)},
		{"trailing pong", func(b []byte) error { _, err := decodePong(b); return err }, make([]byte, 9)},
		{"bad family", func(b []byte) error { _, err := decodeAddrs(b); return err }, []byte{1, 5, 1, 2, 3, 4, 0, 1}},
		{"mapped v6", func(b []byte) error { _, err := decodeAddrs(b); return err },
			append([]byte{1, 6}, append(netip.MustParseAddr("::ffff:1.2.3.4").AsSlice(), 0, 1)...)},
		{"too many addrs", func(b []byte) error { _, err := decodeAddrs(b); return err }, []byte{MaxAddrs + 1}},
	} {
		if err := tc.dec(tc.in); !errors.Is(err, errMalformed) {
			t.Errorf("%s: err = %v, want malformed", tc.name, err)
		}
	}
	var hdr [frameHeaderLen]byte
	if _, err := readFrame(bytes.NewReader([]byte{1, 0xff, 0xff}), &hdr); !errors.Is(err, errFrameTooLarge) {
		t.Errorf("oversized: %v", err)
	}
}

func TestMappedAddressesSentAsIPv4(t *testing.T) {
	b := appendAddr(nil, netip.MustParseAddrPort("[::ffff:192.0.2.9]:7"))
	d := decoder{b: b}
	if a := d.addr(); d.done() != nil || a != netip.MustParseAddrPort("192.0.2.9:7") {
		t.Fatalf("got %v, %v", a, d.err)
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
