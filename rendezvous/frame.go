package rendezvous

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/netsody/superpeer/identity"
)

// Every rendezvous message is one frame on the session's streams (the
// request body from device to super peer, the response body back):
//
//	+-----------+----------------------+---------------------+
//	| type (1)  | length (2, big end.) | payload (length)    |
//	+-----------+----------------------+---------------------+
//
// A payload is at most MaxPayload bytes; a longer one ends the session with
// ErrCodeFrameTooLarge before its payload is read. Frames of an unknown
// type are skipped, so that later versions can add messages. Multi-byte
// integers are big-endian. Durations are unsigned microseconds or
// milliseconds as stated; 0 means "unknown".
//
// An address is encoded as
//
//	+------------+----------------------+----------+
//	| family (1) | IP (4 or 16)         | port (2) |
//	+------------+----------------------+----------+
//
// where family is 4 or 6; IPv4-mapped IPv6 addresses are sent as IPv4.
// An address list is a count (1 byte, at most MaxAddrs) then the addresses.
//
// The limits (MaxPayload, MaxAddrs, MaxErrorMessage) are in constants.go.
const frameHeaderLen = 3

// FrameType identifies a message.
type FrameType byte

const (
	// FrameRegister (device → super peer) is the first frame of a session
	// and proves that the device holds the key it registers:
	//
	//	peerID (32) | signature (64) | proofOfWork (4, signed) | local addresses
	//
	// The signature is Ed25519 over SignedRegistration: a fixed context,
	// the connection's channel binding (see binding.go), the peer ID and
	// the proof of work. Answered by FrameRegistered, or FrameError.
	FrameRegister FrameType = 0x01

	// FrameRegistered (super peer → device) accepts a registration:
	//
	//	observed address | keepalive interval (4, ms) | session timeout (4, ms)
	//
	// The observed address is the device's address as the super peer sees
	// it (its NAT mapping). The device should send some frame at least once
	// per keepalive interval; a session silent for the timeout expires.
	FrameRegistered FrameType = 0x02

	// FrameAddrs (device → super peer) replaces the device's local
	// addresses: an address list.
	FrameAddrs FrameType = 0x03

	// FramePing (either way) asks for a FramePong and carries the sender's
	// current smoothed RTT of this session, so each side learns both views:
	//
	//	nonce (8) | sender's smoothed RTT (4, µs)
	FramePing FrameType = 0x04

	// FramePong (either way) answers a FramePing: nonce (8), echoed.
	FramePong FrameType = 0x05

	// FrameConnect (device → super peer) asks to reach a peer:
	//
	//	peerID (32) | flags (1)
	//
	// Flag 0x02 (FlagRelay) says that the asking device will open a relay
	// session towards the peer through this super peer, so the peer should
	// open its side here too. The super peer answers with FrameCandidates
	// to both devices at once, or FrameError with ErrCodePeerNotFound.
	FrameConnect FrameType = 0x06

	// FrameCandidates (super peer → device) tells a device how to reach a
	// peer, so that both punch at the same moment:
	//
	//	peerID (32) | flags (1) | peer's RTT to this super peer (4, µs) |
	//	peer's observed address | peer's local addresses
	//
	// Flag 0x01 (FlagInitiator) is set for the device that sent
	// FrameConnect and clear for the device being asked to connect; flag
	// 0x02 (FlagRelay) is FrameConnect's, passed on.
	FrameCandidates FrameType = 0x07

	// FrameError (super peer → device) reports a refusal:
	//
	//	code (2) | peerID (32, zero if none) | message (rest, UTF-8)
	//
	// Whether the session ends with it depends on the code (ErrorCode.Fatal).
	FrameError FrameType = 0x08

	// FrameObserved (super peer → device) tells the device that the super
	// peer now sees it at another address: its NAT gave it a new mapping
	// (a rebinding), which QUIC survives by connection migration. Payload:
	//
	//	observed address
	//
	// It replaces FrameRegistered's observed address; later candidates
	// carry the new one. The device should re-introduce itself to the
	// peers it is connected to, whose candidates for it are now stale.
	// Only sessions over HTTP/3 can see a rebinding: a TCP connection does
	// not survive one.
	FrameObserved FrameType = 0x09

	// lastFrameType is the highest type this version knows.
	lastFrameType = FrameObserved
)

// Flags of FrameConnect and FrameCandidates.
const (
	// FlagInitiator marks the FrameCandidates sent to the device that
	// asked.
	FlagInitiator = 0x01
	// FlagRelay: the asking device relays through this super peer.
	FlagRelay = 0x02
)

// String returns the frame type's name.
func (t FrameType) String() string {
	switch t {
	case FrameRegister:
		return "register"
	case FrameRegistered:
		return "registered"
	case FrameAddrs:
		return "addrs"
	case FramePing:
		return "ping"
	case FramePong:
		return "pong"
	case FrameConnect:
		return "connect"
	case FrameCandidates:
		return "candidates"
	case FrameError:
		return "error"
	case FrameObserved:
		return "observed"
	}
	return fmt.Sprintf("unknown(0x%02x)", byte(t))
}

// Register is FrameRegister's payload.
type Register struct {
	Peer        identity.PeerID
	Signature   [64]byte
	ProofOfWork int32
	LocalAddrs  []netip.AddrPort
}

// Registered is FrameRegistered's payload.
type Registered struct {
	Observed          netip.AddrPort
	KeepaliveInterval time.Duration
	SessionTimeout    time.Duration
}

// Ping is FramePing's payload; FramePong carries only the nonce.
type Ping struct {
	Nonce uint64
	RTT   time.Duration
}

// Candidates is FrameCandidates's payload: how to reach Peer.
type Candidates struct {
	Peer       identity.PeerID
	Initiator  bool          // this device asked to connect
	Relay      bool          // the asking device relays through this super peer
	PeerRTT    time.Duration // the peer's RTT to the super peer, 0 if unknown
	Observed   netip.AddrPort
	LocalAddrs []netip.AddrPort
}

// All returns the candidate addresses in the order to try them: local
// addresses first, so that two devices on one LAN never hairpin, then the
// observed address.
func (c Candidates) All() []netip.AddrPort {
	all := make([]netip.AddrPort, 0, len(c.LocalAddrs)+1)
	all = append(all, c.LocalAddrs...)
	if c.Observed.IsValid() {
		all = append(all, c.Observed)
	}
	return all
}

// Error is FrameError's payload. It is also the error the client returns
// for a refusal.
type Error struct {
	Code    ErrorCode
	Peer    identity.PeerID // the peer the error is about, if any
	Message string
}

func (e *Error) Error() string {
	if e.Peer.IsZero() {
		return fmt.Sprintf("rendezvous: %s: %s", e.Code, e.Message)
	}
	return fmt.Sprintf("rendezvous: %s (peer %s): %s", e.Code, e.Peer.Short(), e.Message)
}

// errMalformed is wrapped by every decoding error.
var errMalformed = errors.New("malformed frame")

func malformed(t FrameType, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", errMalformed, t, fmt.Sprintf(format, args...))
}

// frame is one decoded frame: its type and raw payload.
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

// appendFrame appends a frame with the given type and payload to b.
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

func (d *decoder) peer() (p identity.PeerID) {
	copy(p[:], d.take(len(p)))
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

// done reports the first error, or trailing bytes.
func (d *decoder) done() error {
	if d.err == nil && len(d.b) > 0 {
		d.err = malformed(d.t, "%d unexpected trailing bytes", len(d.b))
	}
	return d.err
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

func micros(d time.Duration) uint32 {
	us := d.Microseconds()
	if us < 0 {
		return 0
	}
	if us > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(us)
}

func millis(d time.Duration) uint32 {
	ms := d.Milliseconds()
	if ms < 0 {
		return 0
	}
	if ms > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(ms)
}

// Encoders. Each returns a whole frame, header included.

func (m *Register) frame() []byte {
	p := make([]byte, 0, 32+64+4+1+len(m.LocalAddrs)*19)
	p = append(p, m.Peer[:]...)
	p = append(p, m.Signature[:]...)
	p = binary.BigEndian.AppendUint32(p, uint32(m.ProofOfWork))
	p = appendAddrs(p, m.LocalAddrs)
	return appendFrame(nil, FrameRegister, p)
}

func (m *Registered) frame() []byte {
	p := appendAddr(nil, m.Observed)
	p = binary.BigEndian.AppendUint32(p, millis(m.KeepaliveInterval))
	p = binary.BigEndian.AppendUint32(p, millis(m.SessionTimeout))
	return appendFrame(nil, FrameRegistered, p)
}

func addrsFrame(as []netip.AddrPort) []byte {
	return appendFrame(nil, FrameAddrs, appendAddrs(nil, as))
}

func (m *Ping) frame() []byte {
	p := binary.BigEndian.AppendUint64(nil, m.Nonce)
	p = binary.BigEndian.AppendUint32(p, micros(m.RTT))
	return appendFrame(nil, FramePing, p)
}

func pongFrame(nonce uint64) []byte {
	return appendFrame(nil, FramePong, binary.BigEndian.AppendUint64(nil, nonce))
}

func connectFrame(peer identity.PeerID, relay bool) []byte {
	p := append(make([]byte, 0, 33), peer[:]...)
	var flags byte
	if relay {
		flags |= FlagRelay
	}
	return appendFrame(nil, FrameConnect, append(p, flags))
}

func (m *Candidates) frame() []byte {
	p := make([]byte, 0, 32+1+4+19+1+len(m.LocalAddrs)*19)
	p = append(p, m.Peer[:]...)
	var flags byte
	if m.Initiator {
		flags |= FlagInitiator
	}
	if m.Relay {
		flags |= FlagRelay
	}
	p = append(p, flags)
	p = binary.BigEndian.AppendUint32(p, micros(m.PeerRTT))
	p = appendAddr(p, m.Observed)
	p = appendAddrs(p, m.LocalAddrs)
	return appendFrame(nil, FrameCandidates, p)
}

func observedFrame(a netip.AddrPort) []byte {
	return appendFrame(nil, FrameObserved, appendAddr(nil, a))
}

func (m *Error) frame() []byte {
	msg := m.Message
	if len(msg) > MaxErrorMessage {
		msg = msg[:MaxErrorMessage]
	}
	p := binary.BigEndian.AppendUint16(nil, uint16(m.Code))
	p = append(p, m.Peer[:]...)
	p = append(p, msg...)
	return appendFrame(nil, FrameError, p)
}

// Decoders. Each takes a payload and rejects trailing bytes.

func decodeRegister(b []byte) (m Register, err error) {
	d := decoder{t: FrameRegister, b: b}
	m.Peer = d.peer()
	copy(m.Signature[:], d.take(64))
	m.ProofOfWork = int32(d.u32())
	m.LocalAddrs = d.addrs()
	return m, d.done()
}

func decodeRegistered(b []byte) (m Registered, err error) {
	d := decoder{t: FrameRegistered, b: b}
	m.Observed = d.addr()
	m.KeepaliveInterval = time.Duration(d.u32()) * time.Millisecond
	m.SessionTimeout = time.Duration(d.u32()) * time.Millisecond
	return m, d.done()
}

func decodeAddrs(b []byte) ([]netip.AddrPort, error) {
	d := decoder{t: FrameAddrs, b: b}
	as := d.addrs()
	return as, d.done()
}

func decodePing(b []byte) (m Ping, err error) {
	d := decoder{t: FramePing, b: b}
	m.Nonce = d.u64()
	m.RTT = time.Duration(d.u32()) * time.Microsecond
	return m, d.done()
}

func decodePong(b []byte) (uint64, error) {
	d := decoder{t: FramePong, b: b}
	n := d.u64()
	return n, d.done()
}

func decodeConnect(b []byte) (peer identity.PeerID, relay bool, err error) {
	d := decoder{t: FrameConnect, b: b}
	peer = d.peer()
	flags := d.u8()
	return peer, flags&FlagRelay != 0, d.done()
}

func decodeCandidates(b []byte) (m Candidates, err error) {
	d := decoder{t: FrameCandidates, b: b}
	m.Peer = d.peer()
	flags := d.u8()
	m.Initiator = flags&FlagInitiator != 0
	m.Relay = flags&FlagRelay != 0
	m.PeerRTT = time.Duration(d.u32()) * time.Microsecond
	m.Observed = d.addr()
	m.LocalAddrs = d.addrs()
	return m, d.done()
}

func decodeObserved(b []byte) (netip.AddrPort, error) {
	d := decoder{t: FrameObserved, b: b}
	a := d.addr()
	return a, d.done()
}

func decodeError(b []byte) (m Error, err error) {
	d := decoder{t: FrameError, b: b}
	m.Code = ErrorCode(d.u16())
	m.Peer = d.peer()
	if d.err == nil {
		m.Message = string(d.b)
		d.b = nil
	}
	return m, d.done()
}
