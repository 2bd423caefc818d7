package rendezvous

// Versions and capabilities: what each end announces at registration,
// and how the protocol evolves (docs/PROTOCOL.md, "Versions and
// compatibility").

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
// 0x0A FrameRequest and 0x0B FrameAnswer), CapMove (frame 0x0C FrameMove),
// CapHeadroom (frame 0x0D FrameHeadroom), CapMapping (frame 0x0E
// FrameMapping, Registered's STUN port, Candidates' peer mapping),
// CapRelayNode (Candidates' relay node).
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

	// CapMove: the device handles FrameMove, moving its relay sessions
	// to other super peers when this one drains; from the super peer, it
	// sends FrameMove when it drains. A device that does not announce it
	// learns of a drain only when the super peer ends its session
	// (ErrCodeShuttingDown), as before drains existed.
	CapMove Capabilities = 1 << 2

	// CapHeadroom: the device takes FrameHeadroom into its choice of
	// super peer for a relay; from the super peer, it sends FrameHeadroom
	// (only when its Config.Headroom is set: a super peer without a
	// relay has none to tell). A device that does not announce it is
	// sent none, as before headroom existed.
	CapHeadroom Capabilities = 1 << 3

	// CapMapping: the device sends FrameMapping (its NAT's mapping
	// behaviour, once it knows it) and reads the peer's in
	// FrameCandidates (extCandMapping); from the super peer, it takes
	// FrameMapping, passes it on in FrameCandidates, and names its STUN
	// port in FrameRegistered (extSTUNPort). Extensions and frames of it
	// go only to an end that announced it.
	CapMapping Capabilities = 1 << 4

	// CapRelayNode: the device reads the relay node in FrameCandidates
	// (extCandRelayNode): the public URL of the node of a cluster that
	// holds the peer, where a relay between the two can meet
	// (docs/CLUSTER.md, "Relays"); from the super peer, it names that
	// node when it introduced the peer through its cluster. A device that
	// does not announce it is sent none, and relays as before.
	CapRelayNode Capabilities = 1 << 5

	// CapRelayOnly: from the super peer, it honours a registration for
	// relays only (Register.RelayOnly, extRelayOnly): such a session
	// lives beside the device's ordinary one at this super peer, neither
	// replacing the other, and is never introduced to other devices nor
	// joined to the cluster (docs/CLUSTER.md, "Relays"). A device learns
	// from it whether its relay node honoured the flag; a super peer
	// without it registers the device as usual. Devices do not announce
	// it (they say RelayOnly in the register itself).
	CapRelayOnly Capabilities = 1 << 6

	// supportedCaps is what this package announces (a client announces
	// CapConsent only with ClientConfig.OnRequest, CapMove only with
	// ClientConfig.OnMove, CapHeadroom only with ClientConfig.OnHeadroom).
	supportedCaps = CapObserved | CapConsent | CapMove | CapHeadroom | CapMapping | CapRelayNode | CapRelayOnly
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
