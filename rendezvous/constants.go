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
	// MaxMoveReason is the longest reason in FrameMove, in bytes: a
	// sentence for a log, and it fits the frame's one-byte length.
	MaxMoveReason = 200
	// MaxRelayNodeURL is the longest relay node URL in FrameCandidates,
	// in bytes: a host name (at most 253) with scheme and port fits, and
	// the frame with MaxAddrs IPv6 addresses stays well under MaxPayload.
	MaxRelayNodeURL = 256
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
	// DefaultMaxSessions, the budget of registered devices (with the few
	// sessions about to register): sized so that a 1 GiB VPS stays up.
	// An idle device costs the super peer 76 KiB over HTTP/2 and 113 KiB
	// over HTTP/3 (heap and stacks, internal/bench BenchmarkIdleDevices);
	// 4,096 of them take 453 MiB at most, and the relay's bounds (64 MiB
	// of queues, 40 MiB of waiting legs), the pending lookups (20 MiB),
	// the prefix table (20 MiB), Caddy and the runtime fit in the rest.
	// Raise it by about 9,000 per GiB.
	DefaultMaxSessions = 4096
	// DefaultConnectRate is FrameConnect per second and session: a device
	// introduces itself to a few peers at a time, not a scan.
	DefaultConnectRate = 10
	// DefaultConnectBurst lets a device that starts connect to its peers at
	// once.
	DefaultConnectBurst = 20
	// DefaultIntroductionRate is introductions per second for one target
	// device, from all askers together: more than the peers of an honest
	// device ask for, few enough that strangers cannot flood it.
	DefaultIntroductionRate = 20
	// DefaultIntroductionBurst lets that many peers reach a device at
	// once: the part of its queue that others may fill (maxOfferedFrames).
	DefaultIntroductionBurst = maxOfferedFrames
	// DefaultLookupRate and DefaultLookupBurst are failed lookups
	// (FrameConnect answered with a refusal) per second and (asker,
	// target) pair: an honest device retries a peer that is offline or
	// has not accepted it now and then, and its re-introductions to a
	// peer that accepted it cost nothing; a stranger probing whether a
	// peer is online, or pestering one that declines, gets one answer a
	// second.
	DefaultLookupRate  = 1
	DefaultLookupBurst = 3
	// DefaultConsentTimeout is how long a device has to answer a request
	// (FrameRequest): a round trip and a local policy take milliseconds,
	// and a device asking a person gives up sooner (peer's
	// DefaultAcceptTimeout). With HidePresence, every failed lookup
	// takes this long.
	DefaultConsentTimeout = 10 * time.Second
	// DefaultAddrsRate is FrameAddrs per second and session: a device
	// announces its addresses when its interfaces change, not more.
	DefaultAddrsRate = 1
	// DefaultAddrsBurst lets a device whose interfaces flap announce each
	// change.
	DefaultAddrsBurst = 5
	// DefaultRegisterTimeout ends a session that has not registered this
	// long after its connection began: an honest device connects and
	// registers within a few round trips, and a stranger must not hold a
	// connection and a session longer.
	DefaultRegisterTimeout = 10 * time.Second
	// DefaultMaxUnregisteredPerPrefix caps the sessions from one source
	// prefix (maxPrefixBits) that have not registered yet: devices behind
	// one NAT register within a round trip each, so 64 at once keeps up
	// with DefaultPrefixSessionRate, while one host cannot fill
	// MaxSessions.
	DefaultMaxUnregisteredPerPrefix = 64
	// DefaultPrefixSessionRate and DefaultPrefixSessionBurst are the token
	// bucket of new sessions per source prefix. After a restart, 10,000
	// devices behind one carrier-grade NAT re-register within a minute:
	// 4,000 at once (the burst) + 60 s × 100/s = 10,000. A full bucket
	// refills in 40 s.
	DefaultPrefixSessionRate  = 100
	DefaultPrefixSessionBurst = 4000
	// DefaultDrainTimeout bounds a drain: moving a relay takes a device
	// an introduction and a relay dial through another super peer, a few
	// round trips (under a second even at 300 ms), so 5 s leaves room for
	// a slow device and a retry, while a `caddy stop` or a reload that
	// removes the super peer waits no longer than this.
	DefaultDrainTimeout = 5 * time.Second
)

// Implementation values.
const (
	// maxQueuedFrames and maxQueuedBytes bound a session's outbound queue
	// (the batch being written holds as much again): 64 of the largest
	// frames a device asks for (candidates with 16 IPv6 addresses, 364
	// bytes) would take 23 KiB, so bytes bind first with long frames.
	// When it is full, the device's own frames wait; only a write that
	// times out ends the session.
	maxQueuedFrames = 64
	maxQueuedBytes  = 16 << 10
	// maxOfferedFrames and maxOfferedBytes are the part of that queue that
	// frames other devices cause (their introductions) may fill: the rest
	// is the device's own, so that strangers who know its peer ID cannot
	// crowd it out. Beyond it, introductions are dropped.
	maxOfferedFrames = maxQueuedFrames / 2
	maxOfferedBytes  = maxQueuedBytes / 2
	// maxLookupPeers is how many targets one session's lookups are kept
	// for at once (their per-pair buckets, their requests in flight):
	// DefaultConnectBurst plus DefaultConnectRate × the 3 s a pair's
	// bucket takes to refill is 50. A device over it gets
	// ErrCodeRateLimited until an entry is idle again.
	maxLookupPeers = 64
	// maxPendingPerTarget bounds the requests waiting for one device's
	// answer: an honest device answers in milliseconds unless it asks a
	// person, and strangers must not hold its answers' worth of state.
	// Beyond it, askers are refused as when its queue is full.
	maxPendingPerTarget = 64
	// maxPending bounds the requests waiting in all, a few hundred bytes
	// each (about 20 MiB at most).
	maxPending = 1 << 16
	// maxWaitingPerAsker bounds one session's lookups that wait (a
	// request for an answer, a hidden refusal for its time): more than
	// DefaultConnectBurst, so a device that starts may ask all its peers
	// at once. (The relay bounds its waiting legs itself.)
	maxWaitingPerAsker = 32
	// maxWaitingPerPrefix bounds them per asker's source prefix: a 64th
	// of maxPending, so that filling it takes 64 prefixes; at 10 ms an
	// answer, 100,000 lookups/s from behind one NAT fit, and with
	// HidePresence 100/s.
	maxWaitingPerPrefix = maxPending / 64
	// prefixBits4 and prefixBits6 are the source prefix that per-prefix
	// limits count: one IPv4 address (a host, or a NAT), one IPv6 /64 (a
	// subnet, which one host may hold whole).
	prefixBits4 = 32
	prefixBits6 = 64
	// maxPrefixes caps the per-prefix table, about 150 bytes an entry (20
	// MiB at most): more than DefaultMaxSessions, so that a restart storm
	// of that many devices from distinct addresses fits. At the cap,
	// entries with no unregistered session are dropped; new prefixes are
	// refused only if none is.
	maxPrefixes = 1 << 17
	// prefixSweepEvery is how often a full per-prefix table may be swept:
	// a sweep reads every entry.
	prefixSweepEvery = time.Second
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
	// retryAfterPrefix is the Retry-After of a 429 for a source prefix at
	// its limits: its unregistered sessions register or end within
	// DefaultRegisterTimeout.
	retryAfterPrefix = 10 * time.Second
	// retryAfterDraining is the Retry-After of a 503 while the super peer
	// drains: past the drain's end (DefaultDrainTimeout), when a super
	// peer that restarts is back.
	retryAfterDraining = 10 * time.Second
	// clientWriteTimeout bounds a device's write of one frame to its
	// super peer: as DefaultWriteTimeout does the other way, a super peer
	// that takes no frame for this long is gone or hostile, and the
	// session ends (the device dials again) rather than holding the
	// device's writers.
	clientWriteTimeout = 10 * time.Second
	// quicKeepalivePeriod keeps the client's QUIC connection, and so its
	// NAT mapping, alive between rendezvous keepalives.
	quicKeepalivePeriod = 10 * time.Second
	// maxRefusalReason is how much of an HTTP refusal's body the client
	// quotes in its error: the one-line reason the super peer writes.
	maxRefusalReason = 512
	// defaultHTTPSPort is where a super peer URL without a port listens.
	defaultHTTPSPort = "443"
	// recheckRate is how many registered devices a Recheck checks a
	// second, one at a time: an admission service behind the http module
	// sees at most one callout from a re-check at once and this many a
	// second, not one per device at the moment of a reload. 100,000
	// devices take 17 minutes.
	recheckRate = 100
	// headroomLook is how often the super peer looks at its relay's
	// headroom, once for all devices: the relay's meter window, so each
	// look sees a fresh measurement.
	headroomLook = time.Second
	// headroomInterval is the least time between two FrameHeadroom to one
	// device: a change reaches it within headroomInterval+headroomLook,
	// and 10,000 devices get at most 5,000 small frames a second.
	headroomInterval = 2 * time.Second
	// headroomChangeRatio and headroomChangeMin: a device is told its
	// headroom again only when the bandwidth moved by a quarter of what
	// it was last told, and by at least 1 Mbit/s (what a device takes a
	// relay to need at the least), or its spare sessions reached or left
	// zero; smaller moves are the meter's noise and change no choice.
	headroomChangeRatio = 0.25
	headroomChangeMin   = 125_000
)

// A cluster's values (cluster.go, docs/CLUSTER.md).
const (
	// maxClusterRequests bounds the introductions this node waits for
	// other nodes to answer, one goroutine each (a few KiB): as many as
	// maxPendingPerTarget targets' worth of requests, each bounded per
	// asker and per source prefix too (maxWaitingPerAsker,
	// maxWaitingPerPrefix). Beyond it, askers get ErrCodeRateLimited.
	maxClusterRequests = 4096
	// clusterReplyMargin is how much longer than ConsentTimeout the
	// asker's node waits for the target's node to answer: the target's
	// own timeout, plus the round trips through NATS, with room for a
	// loaded node.
	clusterReplyMargin = 2 * time.Second
)
