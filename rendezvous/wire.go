package rendezvous

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/quic-go/quic-go/quicvarint"

	"github.com/netsody/superpeer/identity"
)

// The encoding shared by every payload: the frame header, integers,
// addresses and the extension area. frame.go says what each frame holds.

const frameHeaderLen = 3

// errMalformed is wrapped by every decoding error.
var errMalformed = errors.New("malformed frame")

func malformed(t FrameType, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", errMalformed, t, fmt.Sprintf(format, args...))
}

// frame is one frame as read: its type and raw payload.
type frame struct {
	typ     FrameType
	payload []byte
}

// errFrameTooLarge is returned by readFrame for a length over MaxPayload.
var errFrameTooLarge = fmt.Errorf("frame payload over %d bytes", MaxPayload)

// readFrame reads one frame. hdr is scratch space for the header, so that
// an idle session holds no payload buffer.
func readFrame(r io.Reader, hdr *[frameHeaderLen]byte) (frame, error) {
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return frame{}, err
	}
	n := int(binary.BigEndian.Uint16(hdr[1:]))
	if n > MaxPayload {
		return frame{typ: FrameType(hdr[0])}, errFrameTooLarge
	}
	f := frame{typ: FrameType(hdr[0]), payload: make([]byte, n)}
	if _, err := io.ReadFull(r, f.payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return frame{}, err
	}
	return f, nil
}

// appendFrame writes a frame's header before its payload: encoders build
// the payload whole first, so that its length is known.
func appendFrame(b []byte, t FrameType, payload []byte) []byte {
	b = append(b, byte(t))
	b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	return append(b, payload...)
}

// decoder reads a payload field by field; the first failure sticks.
type decoder struct {
	t   FrameType
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.err = malformed(d.t, "payload ends early")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8() byte {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if v := d.take(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if v := d.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if v := d.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (d *decoder) varint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n, err := quicvarint.Parse(d.b)
	if err != nil {
		d.fail("a varint ends early")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// peer takes a peer ID, refusing a key no key pair has (small order,
// non-canonical); the zero ID passes, as error frames' "none".
func (d *decoder) peer() (p identity.PeerID) {
	copy(p[:], d.take(len(p)))
	if err := p.Validate(); err != nil && !p.IsZero() {
		d.fail("%v", err)
	}
	return p
}

func (d *decoder) addr() netip.AddrPort {
	var ip netip.Addr
	switch fam := d.u8(); fam {
	case 4:
		if b := d.take(4); b != nil {
			ip = netip.AddrFrom4([4]byte(b))
		}
	case 6:
		if b := d.take(16); b != nil {
			ip = netip.AddrFrom16([16]byte(b))
		}
		if ip.Is4In6() {
			d.fail("IPv4-mapped address sent as family 6")
		}
	default:
		d.fail("unknown address family %d", fam)
	}
	port := d.u16()
	if d.err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ip, port)
}

func (d *decoder) addrs() []netip.AddrPort {
	n := int(d.u8())
	if n > MaxAddrs {
		d.fail("%d addresses, at most %d allowed", n, MaxAddrs)
	}
	if d.err != nil || n == 0 {
		return nil
	}
	as := make([]netip.AddrPort, 0, n)
	for range n {
		as = append(as, d.addr())
	}
	if d.err != nil {
		return nil
	}
	return as
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = malformed(d.t, format, args...)
	}
}

// The extension area. What follows a payload's known fields is a list of
// extensions, each
//
//	type (varint) | length (varint) | value (length)
//
// with QUIC's variable-length integers (RFC 9000 §16). A decoder takes the
// types it knows and skips the others, so a newer sender can add a field
// that an older receiver ignores; a sender adds one only for a receiver
// that announced it understands it (see Capabilities). Every extension
// takes at least two bytes and its value lies inside the payload, so
// walking the area costs at most MaxPayload/2 steps and allocates nothing.
// A truncated extension, or a known one that is repeated or does not
// parse, makes the frame malformed.
//
// FrameError has no extension area: its message runs to the end.

// extension types; each is known to the payloads listed.
const (
	extVersion       = 0x01 // Register, Registered: ProtocolVersion (varint)
	extCapabilities  = 0x02 // Register, Registered: Capabilities (varint)
	extSTUNPort      = 0x03 // Registered: the super peer's STUN port (varint, 1 to 65535)
	extRelayOnly     = 0x03 // Register: the registration is for relays only (no value)
	extCandMapping   = 0x03 // Candidates: the peer's Mapping (2 bytes, FrameMapping's payload)
	extCandRelayNode = 0x04 // Candidates: the node holding the peer, an https URL (1 to MaxRelayNodeURL bytes, CheckRelayNode)
)

// extensions walks the extension area, calling known for each extension.
// known returns false for a type it does not know, which is skipped.
func (d *decoder) extensions(known func(typ uint64, v *decoder) bool) {
	var seen uint64 // known types below 64 already taken, to refuse repeats
	// One decoder for every value, made when known needs it: a decoder
	// handed to a func value escapes, and one per extension would make
	// every skipped extension an allocation.
	var v *decoder
	for d.err == nil && len(d.b) > 0 {
		typ := d.varint()
		n := d.varint()
		if d.err == nil && n > uint64(len(d.b)) {
			d.fail("extension 0x%x of %d bytes, %d left", typ, n, len(d.b))
		}
		if d.err != nil {
			return
		}
		value := d.take(int(n))
		if known == nil {
			continue
		}
		if v == nil {
			v = new(decoder)
		}
		*v = decoder{t: d.t, b: value}
		if !known(typ, v) {
			continue
		}
		if typ < 64 {
			if seen&(1<<typ) != 0 {
				d.fail("extension 0x%x repeated", typ)
			}
			seen |= 1 << typ
		}
		if v.err == nil && len(v.b) > 0 {
			v.fail("extension 0x%x has %d bytes too many", typ, len(v.b))
		}
		if d.err == nil {
			d.err = v.err
		}
	}
}

// done reports the first error. Bytes left after the known fields are the
// extension area (see extensions); a decoder that takes none skips it.
func (d *decoder) done() error {
	d.extensions(nil)
	return d.err
}

// append appends p's extensions, which only version 2 and later can read.
func (p Protocol) append(b []byte) []byte {
	if p.Version < extensionsVersion {
		return b
	}
	b = appendExtVarint(b, extVersion, p.Version)
	if p.Capabilities != 0 {
		b = appendExtVarint(b, extCapabilities, uint64(p.Capabilities))
	}
	return b
}

// decodeExtension takes one of p's extensions, and reports whether typ
// is one.
func (p *Protocol) decodeExtension(typ uint64, v *decoder) bool {
	switch typ {
	case extVersion:
		p.Version = v.varint()
	case extCapabilities:
		p.Capabilities = Capabilities(v.varint())
	default:
		return false
	}
	return true
}

// appendExtVarint appends an extension whose value is one varint.
func appendExtVarint(b []byte, typ, v uint64) []byte {
	v = min(v, quicvarint.Max)
	b = quicvarint.Append(b, typ)
	b = quicvarint.Append(b, uint64(quicvarint.Len(v)))
	return quicvarint.Append(b, v)
}

func appendAddr(b []byte, a netip.AddrPort) []byte {
	ip := a.Addr().Unmap()
	if ip.Is4() {
		b = append(b, 4)
		b = append(b, ip.AsSlice()...)
	} else {
		b = append(b, 6)
		s := ip.As16()
		b = append(b, s[:]...)
	}
	return binary.BigEndian.AppendUint16(b, a.Port())
}

func appendAddrs(b []byte, as []netip.AddrPort) []byte {
	b = append(b, byte(len(as)))
	for _, a := range as {
		b = appendAddr(b, a)
	}
	return b
}

// checkAddrs validates addresses a device reports before they are encoded.
func checkAddrs(as []netip.AddrPort) error {
	if len(as) > MaxAddrs {
		return fmt.Errorf("rendezvous: %d local addresses, at most %d allowed", len(as), MaxAddrs)
	}
	for _, a := range as {
		if !a.IsValid() || a.Port() == 0 || a.Addr().IsUnspecified() {
			return fmt.Errorf("rendezvous: local address %v is not a usable address and port", a)
		}
	}
	return nil
}

func micros(d time.Duration) uint32 { return clampU32(d.Microseconds()) }
func millis(d time.Duration) uint32 { return clampU32(d.Milliseconds()) }

func clampU32(v int64) uint32 {
	return uint32(min(max(v, 0), 1<<32-1))
}
