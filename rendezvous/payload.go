package rendezvous

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
	"unicode/utf8"

	"github.com/quic-go/quic-go/quicvarint"

	"github.com/netsody/superpeer/identity"
)

// The payload of each frame type (frame.go has the frame layout and the
// types), with its encoding and decoding.

// Register is FrameRegister's payload.
type Register struct {
	Peer        identity.PeerID
	Signature   [64]byte
	ProofOfWork int32
	LocalAddrs  []netip.AddrPort
	Protocol    // the device's
	// RelayOnly says that the registration is for relays only
	// (extRelayOnly; docs/CLUSTER.md, "Relays"): it lives beside the
	// device's ordinary session, is never introduced to other devices
	// nor joined to the cluster, and serves the device's own relays. A
	// super peer that does not know it registers the device as usual.
	RelayOnly bool
}

func (m *Register) frame() []byte {
	p := make([]byte, 0, 32+64+4+1+len(m.LocalAddrs)*19)
	p = append(p, m.Peer[:]...)
	p = append(p, m.Signature[:]...)
	p = binary.BigEndian.AppendUint32(p, uint32(m.ProofOfWork))
	p = appendAddrs(p, m.LocalAddrs)
	p = m.Protocol.append(p)
	if m.RelayOnly && m.Version >= extensionsVersion {
		p = quicvarint.Append(p, extRelayOnly)
		p = quicvarint.Append(p, 0)
	}
	return appendFrame(nil, FrameRegister, p)
}

func (m *Register) decode(b []byte) error {
	d := decoder{t: FrameRegister, b: b}
	m.Peer = d.peer()
	copy(m.Signature[:], d.take(64))
	m.ProofOfWork = int32(d.u32())
	m.LocalAddrs = d.addrs()
	m.Protocol, m.RelayOnly = protocolV1, false
	d.extensions(func(typ uint64, v *decoder) bool {
		if typ != extRelayOnly {
			return m.Protocol.decodeExtension(typ, v)
		}
		m.RelayOnly = true // no value: extensions refuses one
		return true
	})
	return d.err
}

// Registered is FrameRegistered's payload.
type Registered struct {
	Observed          netip.AddrPort
	KeepaliveInterval time.Duration
	SessionTimeout    time.Duration
	Protocol          // the super peer's
	// STUNPort is the UDP port on which the super peer answers STUN
	// Binding requests, at the address the session reached it on; 0:
	// none (extSTUNPort, sent only to a device that announced
	// CapMapping, and only with Protocol's extensions).
	STUNPort uint16
}

func (m *Registered) frame() []byte {
	p := appendAddr(nil, m.Observed)
	p = binary.BigEndian.AppendUint32(p, millis(m.KeepaliveInterval))
	p = binary.BigEndian.AppendUint32(p, millis(m.SessionTimeout))
	p = m.Protocol.append(p)
	if m.STUNPort != 0 && m.Version >= extensionsVersion {
		p = appendExtVarint(p, extSTUNPort, uint64(m.STUNPort))
	}
	return appendFrame(nil, FrameRegistered, p)
}

func (m *Registered) decode(b []byte) error {
	d := decoder{t: FrameRegistered, b: b}
	m.Observed = d.addr()
	m.KeepaliveInterval = time.Duration(d.u32()) * time.Millisecond
	m.SessionTimeout = time.Duration(d.u32()) * time.Millisecond
	m.Protocol, m.STUNPort = protocolV1, 0
	d.extensions(func(typ uint64, v *decoder) bool {
		if typ != extSTUNPort {
			return m.Protocol.decodeExtension(typ, v)
		}
		port := v.varint()
		if v.err == nil && (port == 0 || port > 0xffff) {
			v.fail("STUN port %d is not a port", port)
		}
		m.STUNPort = uint16(port)
		return true
	})
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

func (m *Connect) decode(b []byte) (err error) {
	m.Peer, m.Relay, err = decodePeerFlag(FrameConnect, b, FlagRelay)
	return err
}

// Candidates is FrameCandidates's payload: how to reach Peer.
type Candidates struct {
	Peer       identity.PeerID
	Initiator  bool          // this device asked to connect
	Relay      bool          // the asking device relays through this super peer
	PeerRTT    time.Duration // the peer's RTT to the super peer, 0 if unknown
	Observed   netip.AddrPort
	LocalAddrs []netip.AddrPort
	// PeerNAT is the peer's NAT behaviour as it told the super peer
	// (FrameMapping); zero: unknown, or not sent (extCandMapping goes
	// only to a device that announced CapMapping, when the peer sent a
	// known one).
	PeerNAT Mapping
	// RelayNode is the public URL of the node of the super peer's cluster
	// that holds the peer, when the super peer introduced it through its
	// cluster: a relay between the two meets there, not here. Empty:
	// the peer is registered at this super peer (or it did not say:
	// extCandRelayNode goes only to a device that announced
	// CapRelayNode).
	RelayNode string
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
	if m.PeerNAT != (Mapping{}) {
		p = quicvarint.Append(p, extCandMapping)
		p = quicvarint.Append(p, mappingLen)
		p = m.PeerNAT.append(p)
	}
	if m.RelayNode != "" {
		p = quicvarint.Append(p, extCandRelayNode)
		p = quicvarint.Append(p, uint64(len(m.RelayNode)))
		p = append(p, m.RelayNode...)
	}
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
	m.PeerNAT, m.RelayNode = Mapping{}, ""
	d.extensions(func(typ uint64, v *decoder) bool {
		switch typ {
		case extCandMapping:
			m.PeerNAT.take(v)
		case extCandRelayNode:
			m.RelayNode = string(v.take(len(v.b)))
			if err := CheckRelayNode(m.RelayNode); err != nil {
				v.fail("%v", err)
			}
		default:
			return false
		}
		return true
	})
	return d.err
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

func (m *Request) decode(b []byte) (err error) {
	m.Peer, m.Relay, err = decodePeerFlag(FrameRequest, b, FlagRelay)
	return err
}

// Answer is FrameAnswer's payload: whether Peer may connect.
type Answer struct {
	Peer   identity.PeerID
	Accept bool
}

func (m *Answer) frame() []byte {
	return appendFrame(nil, FrameAnswer, appendPeerFlags(m.Peer, flagIf(m.Accept, FlagAccept)))
}

func (m *Answer) decode(b []byte) (err error) {
	m.Peer, m.Accept, err = decodePeerFlag(FrameAnswer, b, FlagAccept)
	return err
}

// Move is FrameMove's payload: the super peer drains, and ends the
// session within Deadline of sending it, for Reason.
type Move struct {
	Deadline time.Duration // whole milliseconds on the wire
	Reason   string        // at most MaxMoveReason bytes of UTF-8
}

func (m *Move) frame() []byte {
	reason := cutUTF8(m.Reason, MaxMoveReason)
	p := binary.BigEndian.AppendUint32(nil, millis(m.Deadline))
	p = append(p, byte(len(reason)))
	return appendFrame(nil, FrameMove, append(p, reason...))
}

func (m *Move) decode(b []byte) error {
	d := decoder{t: FrameMove, b: b}
	m.Deadline = time.Duration(d.u32()) * time.Millisecond
	n := int(d.u8())
	if d.err == nil && n > MaxMoveReason {
		d.fail("a reason of %d bytes, more than %d", n, MaxMoveReason)
	}
	reason := d.take(n)
	if d.err == nil && !utf8.Valid(reason) {
		d.fail("the reason is not UTF-8")
	}
	m.Reason = string(reason)
	return d.done()
}

// Headroom is FrameHeadroom's payload: what the super peer's relay can
// still take.
type Headroom struct {
	Bandwidth uint64 // bytes per second: the relay's total budget less its use
	Sessions  uint32 // relay sessions this device may still open
}

func (m *Headroom) frame() []byte {
	p := binary.BigEndian.AppendUint64(nil, m.Bandwidth)
	p = binary.BigEndian.AppendUint32(p, m.Sessions)
	return appendFrame(nil, FrameHeadroom, p)
}

func (m *Headroom) decode(b []byte) error {
	d := decoder{t: FrameHeadroom, b: b}
	m.Bandwidth = d.u64()
	m.Sessions = d.u32()
	return d.done()
}

// NATMapping is how a device's NAT maps its one socket to public
// addresses (RFC 4787 section 4.1), as the device learned it.
type NATMapping uint8

const (
	// MappingUnknown: not learned (UDP blocked, no STUN answer, one
	// super peer without STUN), or not told.
	MappingUnknown NATMapping = 0
	// MappingIndependent: every destination sees the socket at one
	// address and port (endpoint-independent mapping; no NAT at all).
	MappingIndependent NATMapping = 1
	// MappingDependent: destinations see the socket at different
	// addresses or ports (address- or address-and-port-dependent
	// mapping: a "symmetric" NAT; tailscale netcheck's
	// MappingVariesByDestIP). A peer behind another such NAT cannot
	// reach it by punching.
	MappingDependent NATMapping = 2

	lastMapping = MappingDependent
)

// String is the mapping's name in status, metrics and docs.
func (m NATMapping) String() string {
	switch m {
	case MappingIndependent:
		return "endpoint-independent"
	case MappingDependent:
		return "endpoint-dependent"
	}
	return "unknown"
}

// NATFiltering is which packets a device's NAT lets in to a mapping
// (RFC 4787 section 5), as the device learned it: only from punching
// outcomes, so mostly unknown.
type NATFiltering uint8

const (
	FilteringUnknown              NATFiltering = 0
	FilteringIndependent          NATFiltering = 1 // from anyone
	FilteringAddressDependent     NATFiltering = 2 // from addresses the device sent to
	FilteringAddressPortDependent NATFiltering = 3 // from addresses and ports the device sent to

	lastFiltering = FilteringAddressPortDependent
)

// String is the filtering's name in status and docs.
func (f NATFiltering) String() string {
	switch f {
	case FilteringIndependent:
		return "endpoint-independent"
	case FilteringAddressDependent:
		return "address-dependent"
	case FilteringAddressPortDependent:
		return "address-and-port-dependent"
	}
	return "unknown"
}

// Mapping is FrameMapping's payload, and the peer's NAT behaviour in
// Candidates (extCandMapping): what a device learned of its NAT.
type Mapping struct {
	Mapping   NATMapping
	Filtering NATFiltering
}

// Known returns m with each value this version does not know as
// unknown (0): what a receiver takes from a later sender.
func (m Mapping) Known() Mapping {
	if m.Mapping > lastMapping {
		m.Mapping = MappingUnknown
	}
	if m.Filtering > lastFiltering {
		m.Filtering = FilteringUnknown
	}
	return m
}

// mappingLen is the length of a Mapping on the wire.
const mappingLen = 2

func (m Mapping) append(b []byte) []byte { return append(b, byte(m.Mapping), byte(m.Filtering)) }

// take decodes a Mapping from d; a value this version does not know is
// unknown (0).
func (m *Mapping) take(d *decoder) {
	got := Mapping{Mapping: NATMapping(d.u8()), Filtering: NATFiltering(d.u8())}.Known()
	if d.err == nil {
		*m = got
	}
}

func (m *Mapping) frame() []byte {
	return appendFrame(nil, FrameMapping, m.append(make([]byte, 0, mappingLen)))
}

// decode refuses a payload that is not exactly two bytes: FrameMapping
// has no extension area (a mapping is all it will ever say).
func (m *Mapping) decode(b []byte) error {
	d := decoder{t: FrameMapping, b: b}
	m.take(&d)
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d bytes after the mapping", len(d.b))
	}
	return d.err
}

// decodePeerFlag decodes the payload of Connect, Request and Answer: a
// peer ID and flags, of which it takes flag.
func decodePeerFlag(t FrameType, b []byte, flag byte) (identity.PeerID, bool, error) {
	d := decoder{t: t, b: b}
	p := d.peer()
	on := d.u8()&flag != 0
	return p, on, d.done()
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
	msg := cutUTF8(m.Message, MaxErrorMessage)
	p := binary.BigEndian.AppendUint16(nil, uint16(m.Code))
	p = append(p, m.Peer[:]...)
	p = append(p, msg...)
	return appendFrame(nil, FrameError, p)
}

// cutUTF8 cuts s to at most max bytes at a character boundary: back over
// at most the continuation bytes of one UTF-8 sequence.
func cutUTF8(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for i := 1; i < utf8.UTFMax && cut > 0 && !utf8.RuneStart(s[cut]); i++ {
		cut--
	}
	return s[:cut]
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
