package stun

import "time"

// Specification constants (RFC 8489 §5, RFC 3489 §11.1).
const (
	// headerSize is a message's fixed header: type, length, then the
	// magic cookie and a 96-bit transaction ID (RFC 8489) or a 128-bit
	// transaction ID (RFC 3489).
	headerSize = 20
	// attrHeaderSize is an attribute's type and length.
	attrHeaderSize = 4
	// magicCookie marks an RFC 5389/8489 message.
	magicCookie = 0x2112A442
	// typeBindingRequest and typeBindingResponse are the message types
	// (method Binding, class request or success response).
	typeBindingRequest  = 0x0001
	typeBindingResponse = 0x0101
	// attrMappedAddress is RFC 3489's MAPPED-ADDRESS.
	attrMappedAddress = 0x0001
	// familyIPv4 and familyIPv6 are the address families of an address
	// attribute.
	familyIPv4 = 0x01
	familyIPv6 = 0x02
)

// Implementation constants.
const (
	// MaxResponseSize is the largest response: the header and one address
	// attribute of an IPv6 address (20 + 4 + 20 bytes).
	MaxResponseSize = headerSize + attrHeaderSize + 20
	// MaxRequestSize is the largest request answered: RFC 8489 §6.1 keeps
	// messages over UDP under 548 bytes when the path MTU is unknown, and
	// a Binding request needs a few dozen.
	MaxRequestSize = 548
	// DefaultSourceRate is the responses per second one source prefix
	// gets: a client retransmits at most every 500 ms (RFC 8489 §6.2.1),
	// so this serves a hundred devices behind one NAT at once while a
	// spoofed victim receives at most 50 × 44 bytes/s (17.6 kbit/s).
	DefaultSourceRate = 50
	// DefaultSourceBurst is the responses one source prefix gets at once:
	// a NAT type test sends a dozen, a few dozen devices may start
	// together after a network comes back.
	DefaultSourceBurst = 200
	// maxSources caps the table of source prefixes, about 100 bytes an
	// entry (7 MiB at most). At the cap, entries whose bucket is full again
	// are dropped (they lose nothing: a new entry starts full); if none
	// is, requests from new prefixes are dropped (DropSourcesFull).
	maxSources = 1 << 16
	// sourceSweepEvery is how often a full table may be swept: a sweep
	// walks every entry, so a flood of new prefixes costs one walk per
	// second, not one per request.
	sourceSweepEvery = time.Second
)
