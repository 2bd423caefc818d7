package rendezvous

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
	"unicode/utf8"

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
// ErrCodeFrameTooLarge before its payload is read. Multi-byte integers are
// big-endian. Durations are unsigned microseconds or milliseconds as
// stated; 0 means "unknown". After its known fields, every payload but
// FrameError may carry extensions, which a receiver that does not know them
// skips (see wire.go).
//
// What a receiver does with a frame it cannot use:
//
//   - an unknown type is skipped, so that later versions can add frames
//     (which they send only to a peer that announced them, see
//     Capabilities);
//   - a known type whose known fields do not decode, or that comes from
//     the wrong end, is malformed: the super peer ends the session with
//     ErrCodeMalformedFrame, and the device ends it too, since either
//     end then no longer knows what the other meant;
//   - unknown flag bits and unknown extensions are ignored.
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

// FrameType identifies a message.
type FrameType byte

const (
	// FrameRegister (device → super peer) is the first frame of a session
	// and proves that the device holds the key it registers:
	//
	//	peerID (32) | signature (64) | proofOfWork (4, signed) | local addresses |
	//	extensions: version, capabilities (from version 2)
	//
	// The signature is Ed25519 over SignedRegistration: a fixed context,
	// the connection's channel binding (see binding.go), the peer ID and
	// the proof of work. Answered by FrameRegistered, or FrameError.
	FrameRegister FrameType = 0x01

	// FrameRegistered (super peer → device) accepts a registration:
	//
	//	observed address | keepalive interval (4, ms) | session timeout (4, ms) |
	//	extensions: version, capabilities (to a device of version 2 or later)
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
	// not survive one. Sent only to a device that announced CapObserved.
	FrameObserved FrameType = 0x09

	// FrameRequest (super peer → device) asks the device whether a peer
	// may connect to it, before the super peer tells either where the
	// other is:
	//
	//	peerID (32) | flags (1)
	//
	// Flag 0x02 (FlagRelay) is FrameConnect's, passed on. The device
	// answers with FrameAnswer. Sent only to a device that announced
	// CapConsent.
	FrameRequest FrameType = 0x0A

	// FrameAnswer (device → super peer) answers a FrameRequest:
	//
	//	peerID (32) | flags (1)
	//
	// Flag 0x01 (FlagAccept) accepts: the super peer then sends both
	// devices each other's candidates. Without it the device declines.
	// Sent only to a super peer that announced CapConsent.
	FrameAnswer FrameType = 0x0B

	// lastFrameType is the highest type this version knows.
	lastFrameType = FrameAnswer
)

// Flags of FrameConnect and FrameCandidates.
const (
	// FlagInitiator marks the FrameCandidates sent to the device that
	// asked.
	FlagInitiator = 0x01
	// FlagRelay: the asking device relays through this super peer.
	FlagRelay = 0x02
)

// FlagAccept, in FrameAnswer, accepts the asking peer.
const FlagAccept = 0x01

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
	case FrameRequest:
		return "request"
	case FrameAnswer:
		return "answer"
	}
	return fmt.Sprintf("unknown(0x%02x)", byte(t))
}

// ProtocolVersion is the version of the rendezvous protocol this package
// speaks. It is bumped when what one end may send changes in a way the
// other end must know before it decodes; an addition that an older end can
// ignore is a capability instead. The path (/v1/) and the signature
// context ("register v1") name the first version and stay. History:
//
//   - 1: frames 0x01 to 0x09. Nothing names the version on the wire: a
//     register without extensions is version 1. Its decoders refuse bytes
//     after a payload's known fields, so a version-1 end never gets an
//     extension.
//   - 2: every payload but FrameError may end in extensions that decoders
//     skip; Register and Registered carry the version and Capabilities
//     there; the super peer names its version in the VersionHeader of its
//     200, so that a device registers as version 1 with an older one;
//     FrameObserved goes only to devices with CapObserved.
//
// Capabilities added since, which need no new version: CapConsent (frames
// 0x0A FrameRequest and 0x0B FrameAnswer).
const ProtocolVersion = 2

// extensionsVersion is the first version whose decoders skip extensions:
// an end of an older version is sent none.
const extensionsVersion = 2

// MinProtocolVersion is the oldest device a super peer of this version
// serves; an older one gets ErrCodeUpgradeRequired, which names both.
const MinProtocolVersion = 1

// VersionHeader, on the super peer's 200 to a session request, names its
// ProtocolVersion. A device registers with extensions only when it is
// there and 2 or more: an older super peer would refuse them.
const VersionHeader = "Netsody-Rendezvous-Version"

// Capabilities is a set of optional features that an end announces at
// registration (Register, Registered); the other end uses one only if it
// was announced. On the wire it is a varint: at most 62 bits. Unknown bits
// are ignored.
type Capabilities uint64

const (
	// CapObserved: the device handles FrameObserved; from the super
	// peer, it sends FrameObserved.
	CapObserved Capabilities = 1 << 0

	// CapConsent: the device answers FrameRequest with FrameAnswer, and
	// wants to be asked before anyone learns its addresses; from the
	// super peer, it asks such a device (FrameRequest) and takes its
	// FrameAnswer. A device that does not announce it is introduced at
	// once, as before consent existed.
	CapConsent Capabilities = 1 << 1

	// supportedCaps is what this package announces (a client announces
	// CapConsent only with ClientConfig.OnRequest).
	supportedCaps = CapObserved | CapConsent
)

// Has reports whether c holds every capability in x.
func (c Capabilities) Has(x Capabilities) bool { return c&x == x }

// Protocol is what an end announces of itself at registration.
type Protocol struct {
	Version      uint64 // ProtocolVersion; 1 when not sent
	Capabilities Capabilities
}

// protocolV1 is what a register or registered without extensions says.
var protocolV1 = Protocol{Version: 1}

// ours is what this package announces.
var ours = Protocol{Version: ProtocolVersion, Capabilities: supportedCaps}

// Payloads. Each has frame, which encodes the whole frame, header
// included, and decode, which decodes a payload.

// message is a frame's payload.
type message interface {
	frame() []byte
	decode(payload []byte) error
}

// decodeFrame decodes f's payload by its type: nil and no error for an
// unknown type, which the receiver skips.
func decodeFrame(f frame) (message, error) {
	var m message
	switch f.typ {
	case FrameRegister:
		m = new(Register)
	case FrameRegistered:
		m = new(Registered)
	case FrameAddrs:
		m = new(Addrs)
	case FramePing:
		m = new(Ping)
	case FramePong:
		m = new(Pong)
	case FrameConnect:
		m = new(Connect)
	case FrameCandidates:
		m = new(Candidates)
	case FrameError:
		m = new(Error)
	case FrameObserved:
		m = new(Observed)
	case FrameRequest:
		m = new(Request)
	case FrameAnswer:
		m = new(Answer)
	default:
		return nil, nil
	}
	return m, m.decode(f.payload)
}

// Register is FrameRegister's payload.
type Register struct {
	Peer        identity.PeerID
	Signature   [64]byte
	ProofOfWork int32
	LocalAddrs  []netip.AddrPort
	Protocol    // the device's
}

func (m *Register) frame() []byte {
	p := make([]byte, 0, 32+64+4+1+len(m.LocalAddrs)*19)
	p = append(p, m.Peer[:]...)
	p = append(p, m.Signature[:]...)
	p = binary.BigEndian.AppendUint32(p, uint32(m.ProofOfWork))
	p = appendAddrs(p, m.LocalAddrs)
	return appendFrame(nil, FrameRegister, m.Protocol.append(p))
}

func (m *Register) decode(b []byte) error {
	d := decoder{t: FrameRegister, b: b}
	m.Peer = d.peer()
	copy(m.Signature[:], d.take(64))
	m.ProofOfWork = int32(d.u32())
	m.LocalAddrs = d.addrs()
	m.Protocol.decodeExtensions(&d)
	return d.err
}

// Registered is FrameRegistered's payload.
type Registered struct {
	Observed          netip.AddrPort
	KeepaliveInterval time.Duration
	SessionTimeout    time.Duration
	Protocol          // the super peer's
}

func (m *Registered) frame() []byte {
	p := appendAddr(nil, m.Observed)
	p = binary.BigEndian.AppendUint32(p, millis(m.KeepaliveInterval))
	p = binary.BigEndian.AppendUint32(p, millis(m.SessionTimeout))
	return appendFrame(nil, FrameRegistered, m.Protocol.append(p))
}

func (m *Registered) decode(b []byte) error {
	d := decoder{t: FrameRegistered, b: b}
	m.Observed = d.addr()
	m.KeepaliveInterval = time.Duration(d.u32()) * time.Millisecond
	m.SessionTimeout = time.Duration(d.u32()) * time.Millisecond
	m.Protocol.decodeExtensions(&d)
	return d.err
}

// Addrs is FrameAddrs's payload.
type Addrs struct {
	LocalAddrs []netip.AddrPort
}

func (m *Addrs) frame() []byte {
	return appendFrame(nil, FrameAddrs, appendAddrs(nil, m.LocalAddrs))
}

func (m *Addrs) decode(b []byte) error {
	d := decoder{t: FrameAddrs, b: b}
	m.LocalAddrs = d.addrs()
	return d.done()
}

// Ping is FramePing's payload.
type Ping struct {
	Nonce uint64
	RTT   time.Duration
}

func (m *Ping) frame() []byte {
	p := binary.BigEndian.AppendUint64(nil, m.Nonce)
	p = binary.BigEndian.AppendUint32(p, micros(m.RTT))
	return appendFrame(nil, FramePing, p)
}

func (m *Ping) decode(b []byte) error {
	d := decoder{t: FramePing, b: b}
	m.Nonce = d.u64()
	m.RTT = time.Duration(d.u32()) * time.Microsecond
	return d.done()
}

// Pong is FramePong's payload: the ping's nonce, echoed.
type Pong struct {
	Nonce uint64
}

func (m *Pong) frame() []byte {
	return appendFrame(nil, FramePong, binary.BigEndian.AppendUint64(nil, m.Nonce))
}

func (m *Pong) decode(b []byte) error {
	d := decoder{t: FramePong, b: b}
	m.Nonce = d.u64()
	return d.done()
}

// Connect is FrameConnect's payload.
type Connect struct {
	Peer  identity.PeerID
	Relay bool // the asking device relays through this super peer
}

func (m *Connect) frame() []byte {
	return appendFrame(nil, FrameConnect, appendPeerFlags(m.Peer, flagIf(m.Relay, FlagRelay)))
}

func (m *Connect) decode(b []byte) error {
	d := decoder{t: FrameConnect, b: b}
	m.Peer = d.peer()
	m.Relay = d.u8()&FlagRelay != 0
	return d.done()
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

func (m *Candidates) decode(b []byte) error {
	d := decoder{t: FrameCandidates, b: b}
	m.Peer = d.peer()
	flags := d.u8()
	m.Initiator = flags&FlagInitiator != 0
	m.Relay = flags&FlagRelay != 0
	m.PeerRTT = time.Duration(d.u32()) * time.Microsecond
	m.Observed = d.addr()
	m.LocalAddrs = d.addrs()
	return d.done()
}

// Observed is FrameObserved's payload.
type Observed struct {
	Addr netip.AddrPort
}

func (m *Observed) frame() []byte {
	return appendFrame(nil, FrameObserved, appendAddr(nil, m.Addr))
}

func (m *Observed) decode(b []byte) error {
	d := decoder{t: FrameObserved, b: b}
	m.Addr = d.addr()
	return d.done()
}

// Request is FrameRequest's payload: Peer asks to connect to this device.
type Request struct {
	Peer  identity.PeerID
	Relay bool // the asking device relays through this super peer
}

func (m *Request) frame() []byte {
	return appendFrame(nil, FrameRequest, appendPeerFlags(m.Peer, flagIf(m.Relay, FlagRelay)))
}

func (m *Request) decode(b []byte) error {
	d := decoder{t: FrameRequest, b: b}
	m.Peer = d.peer()
	m.Relay = d.u8()&FlagRelay != 0
	return d.done()
}

// Answer is FrameAnswer's payload: whether Peer may connect.
type Answer struct {
	Peer   identity.PeerID
	Accept bool
}

func (m *Answer) frame() []byte {
	return appendFrame(nil, FrameAnswer, appendPeerFlags(m.Peer, flagIf(m.Accept, FlagAccept)))
}

func (m *Answer) decode(b []byte) error {
	d := decoder{t: FrameAnswer, b: b}
	m.Peer = d.peer()
	m.Accept = d.u8()&FlagAccept != 0
	return d.done()
}

// appendPeerFlags is the payload of Connect, Request and Answer.
func appendPeerFlags(p identity.PeerID, flags byte) []byte {
	return append(append(make([]byte, 0, len(p)+1), p[:]...), flags)
}

// flagIf is flag if on, else 0.
func flagIf(on bool, flag byte) byte {
	if on {
		return flag
	}
	return 0
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

func (m *Error) frame() []byte {
	msg := m.Message
	if len(msg) > MaxErrorMessage {
		// Cut at a character boundary: back over at most the
		// continuation bytes of one UTF-8 sequence.
		cut := MaxErrorMessage
		for i := 1; i < utf8.UTFMax && cut > 0 && !utf8.RuneStart(msg[cut]); i++ {
			cut--
		}
		msg = msg[:cut]
	}
	p := binary.BigEndian.AppendUint16(nil, uint16(m.Code))
	p = append(p, m.Peer[:]...)
	p = append(p, msg...)
	return appendFrame(nil, FrameError, p)
}

// decode takes the message as the rest of the payload: FrameError has no
// extension area.
func (m *Error) decode(b []byte) error {
	d := decoder{t: FrameError, b: b}
	m.Code = ErrorCode(d.u16())
	m.Peer = d.peer()
	if d.err == nil {
		m.Message = string(d.b)
	}
	return d.err
}
