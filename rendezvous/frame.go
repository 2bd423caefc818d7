package rendezvous

import "fmt"

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
// FrameError and FrameMapping may carry extensions, which a receiver that
// does not know them skips (see wire.go).
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
// The limits (MaxPayload, MaxAddrs, MaxErrorMessage, MaxMoveReason) are in
// constants.go.

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
	//	extensions: version, capabilities (to a device of version 2 or later),
	//	            STUN port (to a device that announced CapMapping)
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
	//	peer's observed address | peer's local addresses |
	//	extensions: peer's mapping (to a device that announced CapMapping,
	//	            when the peer sent one); peer's relay node (to a
	//	            device that announced CapRelayNode, when the
	//	            introduction crossed the nodes of a cluster)
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

	// FrameMove (super peer → device) says that the super peer is
	// draining (being stopped, or removed by a reload) and will end the
	// session within the deadline:
	//
	//	deadline (4, ms) | reason length (1) | reason (UTF-8, at most MaxMoveReason)
	//
	// The device moves the relay sessions it holds here to its other
	// super peers before then, opens none here, and registers here again
	// only once this session has ended (a draining super peer refuses new
	// sessions and relay legs with 503 and Retry-After). Its direct paths
	// are not affected. A reason longer than MaxMoveReason, or not
	// UTF-8, makes the frame malformed. Sent at most once per session,
	// only to a device that announced CapMove; other devices get the
	// ErrCodeShuttingDown they always got when the super peer closes.
	FrameMove FrameType = 0x0C

	// FrameHeadroom (super peer → device) says how much more the super
	// peer's relay can take, so that a device relays through one that is
	// good enough for its traffic before one that is nearer but full
	// (docs/DEVICE.md, "Which super peer relays"):
	//
	//	spare bandwidth (8, bytes/s) | spare sessions (4)
	//
	// Spare bandwidth is the relay's total budget less what it relayed
	// over the last second; spare sessions are the relay sessions this
	// device may still open here (its per-device budget less those it
	// holds). Sent right after FrameRegistered, then when either changes
	// materially (headroom.go), at most once per headroomInterval. Only
	// to a device that announced CapHeadroom; a device treats a super
	// peer that sent none as good enough, as before headroom existed.
	FrameHeadroom FrameType = 0x0D

	// FrameMapping (device → super peer) tells the super peer how the
	// device's NAT maps and filters (docs/PROTOCOL.md, "A device's NAT
	// mapping behaviour"):
	//
	//	mapping (1) | filtering (1)
	//
	// Mapping is a NATMapping, filtering a NATFiltering; a value this
	// version does not know is read as unknown (0). The device sends it
	// once it knows its mapping and when that changes; the super peer
	// keeps the latest in the session, passes it on in FrameCandidates
	// (extCandMapping) and counts it against the addrs token bucket
	// (Config.AddrsRate): a frame over it is ignored, as an addrs is.
	// Sent only to a super peer that announced CapMapping.
	FrameMapping FrameType = 0x0E

	// lastFrameType is the highest type this version knows.
	lastFrameType = FrameMapping
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
	case FrameMove:
		return "move"
	case FrameHeadroom:
		return "headroom"
	case FrameMapping:
		return "mapping"
	}
	return fmt.Sprintf("unknown(0x%02x)", byte(t))
}

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
	case FrameMove:
		m = new(Move)
	case FrameHeadroom:
		m = new(Headroom)
	case FrameMapping:
		m = new(Mapping)
	default:
		return nil, nil
	}
	return m, m.decode(f.payload)
}
