package rendezvous

import "time"

// Every number that shapes the rendezvous protocol or this implementation
// of it, each with its reason. docs/PROTOCOL.md's table of limits and
// defaults names these constants; keep the two in step.

// Protocol values: both ends enforce them, so changing one changes what the
// other end may send.
const (
	// MaxPayload is the largest frame payload, in bytes: a register with
	// MaxAddrs IPv6 addresses takes 405, which leaves room for extensions,
	// and a reader never buffers more than this per frame.
	MaxPayload = 1024
	// MaxAddrs is the most local addresses a device may report: more than
	// a multi-homed device has, few enough that punching them all is cheap.
	MaxAddrs = 16
	// MaxErrorMessage is the longest error text, in bytes: a sentence a
	// person can act on, not a log.
	MaxErrorMessage = 256
)

// Defaults for Config's zero values, and for the device.
const (
	// DefaultKeepaliveInterval: well under the 30 s that many NATs keep an
	// idle UDP mapping.
	DefaultKeepaliveInterval = 15 * time.Second
	// DefaultSessionTimeout: three missed keepalives.
	DefaultSessionTimeout = 45 * time.Second
	// DefaultWriteTimeout: a device that takes no frame for this long is
	// gone or stalled, and its queue would only grow.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultMaxSessions: what one super peer serves comfortably (an idle
	// session costs one goroutine and a few KB, see internal/bench).
	DefaultMaxSessions = 100_000
	// DefaultConnectRate is FrameConnect per second and session: a device
	// introduces itself to a few peers at a time, not a scan.
	DefaultConnectRate = 10
	// DefaultConnectBurst lets a device that starts connect to its peers at
	// once.
	DefaultConnectBurst = 20
)

// Implementation values.
const (
	// maxQueuedFrames bounds a session's outbound queue; a device that lets
	// it fill is ended with ErrCodeSlowReader rather than held in memory.
	maxQueuedFrames = 64
	// maxOfferedFrames is the part of that queue that frames other devices
	// cause (their introductions) may fill: the rest is the device's own,
	// so that strangers who know its peer ID cannot end its session.
	maxOfferedFrames = maxQueuedFrames / 2
	// followMin and followRTT bound when a session looks at its
	// connection's address again after a frame from the device: QUIC moves
	// a connection to a new address one round trip after the first packet
	// from there (path validation, RFC 9000 §9), and that packet may have
	// carried the frame.
	followMin = 250 * time.Millisecond
	followRTT = 3 // round trips
	// retryAfterFull is the Retry-After of a 503 for a full super peer:
	// long enough for sessions to end, short enough for a device to
	// return soon.
	retryAfterFull = 30 * time.Second
	// quicKeepalivePeriod keeps the client's QUIC connection, and so its
	// NAT mapping, alive between rendezvous keepalives.
	quicKeepalivePeriod = 10 * time.Second
	// maxRefusalReason is how much of an HTTP refusal's body the client
	// quotes in its error: the one-line reason the super peer writes.
	maxRefusalReason = 512
	// defaultHTTPSPort is where a super peer URL without a port listens.
	defaultHTTPSPort = "443"
)
