package relay

import "time"

// Defaults for Config's zero values. docs/PROTOCOL.md's relay limits
// table names each.
const (
	// DefaultPairTimeout: time for the target's device to hear of the
	// request through the rendezvous and open its side over a slow path;
	// a device that never consents frees the waiting slot soon after.
	DefaultPairTimeout = 10 * time.Second
	// DefaultWriteTimeout: a device that takes nothing for this long (its
	// HTTP/2 leg's TCP window full) is gone or stuck; ending its leg frees
	// the queue and the counterpart. The same as the rendezvous's.
	DefaultWriteTimeout = 10 * time.Second
	// DefaultMaxSessionsPerDevice: a device relays to a handful of peers
	// at once; more means a loop or abuse.
	DefaultMaxSessionsPerDevice = 16
	// DefaultRate, bytes per second and leg: 400 Mbit/s, as a device's
	// budget (a leg cannot use more than its device may anyway); a cap of
	// its own only when an operator raises the device budget.
	DefaultRate = DefaultDeviceRate
	// DefaultBurst, bytes: a full QUIC congestion window's flight passes at
	// once.
	DefaultBurst = 1 << 20
	// DefaultTotalRate, bytes per second the super peer relays in all
	// (its budget): 1 Gbit/s, a VPS's usual port, which the relayed bytes
	// cross twice (in and out), so that relaying alone cannot fill it.
	// CPU is the tighter bound on small machines: HTTP/3 legs, the
	// costliest, took 32 CPU-seconds per GB relayed (internal/bench,
	// BenchmarkRelay), so one core saturates near 30 MB/s over HTTP/3
	// (the fast path costs about what a plain UDP forwarder does); lower
	// it there to keep the rendezvous responsive under relaying.
	DefaultTotalRate = 125_000_000
	// DefaultTotalBurst, bytes: four devices' bursts at once.
	DefaultTotalBurst = 4 * DefaultDeviceBurst
	// DefaultDeviceRate, bytes per second one device sends through the
	// relay over all its legs and paths (its budget): 400 Mbit/s, about
	// what a direct path between two devices carries on the machines we
	// measure (internal/bench), so that relaying is not made slower than
	// the path it stands in for; under half of DefaultTotalRate, so that
	// no single device takes the whole super peer.
	DefaultDeviceRate = 50_000_000
	// DefaultDeviceBurst, bytes: as a leg's, a QUIC flight at once.
	DefaultDeviceBurst = DefaultBurst
	// DefaultMaxDatagramSize, bytes of HTTP datagram payload: an Ethernet
	// MTU, above any QUIC packet a device sends (1200-1452 bytes plus the
	// context ID).
	DefaultMaxDatagramSize = 1500
	// DefaultQueueLen, datagrams queued towards a leg: about 30 ms at the
	// default rate, enough for a burst without a standing queue.
	DefaultQueueLen = 512
	// DefaultQueueBytes, bytes queued towards a leg (and in the write in
	// flight): 10 ms at the default rate, 175 full-size datagrams; what a
	// receiver does not take beyond it is dropped, as a full router queue
	// would, and end-to-end congestion control slows the sender.
	DefaultQueueBytes = 256 << 10
	// DefaultMaxQueuedBytes, bytes queued across all legs: 256 full leg
	// queues, memory a small VM spares; honest legs hold a few datagrams
	// each, so only receivers that stop draining come near it.
	DefaultMaxQueuedBytes = 64 << 20
	// DefaultStallTimeout: a leg whose queue is full and whose device has
	// not taken the write in flight for this long is ended, rather than
	// held until WriteTimeout; longer than a TCP retransmission or two on
	// a lossy path (RFC 6298's initial RTO is 1 s).
	DefaultStallTimeout = 2 * time.Second
	// DefaultMaxWaiting, legs waiting for their counterpart across the
	// server: a waiting leg costs a handler, a request stream and a timer
	// (about 10 KiB) for at most PairTimeout; honest devices set up far
	// fewer than this within one pair timeout.
	DefaultMaxWaiting = 4096
	// DefaultMaxWaitingPerDevice, a device's legs waiting at once: a device
	// asks for a relay to a few peers at a time; its other sessions
	// (MaxSessionsPerDevice in all) are bridged.
	DefaultMaxWaitingPerDevice = 4
	// DefaultMaxWaitingPerPrefix, legs waiting at once from one source
	// prefix (an IPv4 address, an IPv6 /64; rendezvous.SourcePrefix): a
	// 16th of DefaultMaxWaiting, so that strangers with many identities on
	// one host cannot fill the pool (with hide_presence, requests towards
	// offline peers wait too) and filling it takes 16 prefixes. A leg
	// waits a round trip or two, so 256 at once keep up with more relay
	// setups than the devices behind one NAT make.
	DefaultMaxWaitingPerPrefix = DefaultMaxWaiting / 16
)

// Implementation constants.
const (
	// capsuleReadBuffer, bytes, buffers a capsule stream's reads: several
	// full-size DATAGRAM capsules per read from the HTTP body.
	capsuleReadBuffer = 16 << 10
	// maxCapsuleBatch, bytes: capsules queued together towards an HTTP/2
	// leg go out in one write and flush up to this size, a few TLS records,
	// so a busy leg does not flush per packet.
	maxCapsuleBatch = 64 << 10
	// pooledDatagram, bytes per pooled datagram buffer (queue.go): room for
	// DefaultMaxDatagramSize, rounded up to the Go allocator's size class,
	// so that the capacity the queues count is what the buffer holds.
	pooledDatagram = 1536
	// maxStreamPending, bytes of capsules a device's HTTP/2 relay session
	// (StreamConn) queues for its stream, which one DATA frame takes; a
	// write beyond it waits. A QUIC sender's burst (quic-go paces in
	// bursts of ten packets) several times over, so that a burst leaves
	// in one write, while the queue ahead of TCP stays under a
	// millisecond at the rates a leg carries.
	maxStreamPending = 64 << 10
	// capsuleOverhead, bytes, bounds a DATAGRAM capsule's header (type,
	// length) and context ID around a packet.
	capsuleOverhead = 1 + 8 + 1
	// maxStreamDatagram, bytes, bounds the DATAGRAM capsules a StreamConn
	// reads: no UDP payload is larger.
	maxStreamDatagram = 1 << 16
	// maxRefusalBody, bytes, bounds how much of a refusal's body the client
	// reads for its reason when there is no Proxy-Status details.
	maxRefusalBody = 1 << 10
	// meterWindow is how long the bandwidth budgets measure their use
	// over (Server.Budgets): long enough to smooth bursts, short enough
	// to show a change at once.
	meterWindow = time.Second
	// maxEchoed, bytes, is how much of a request's own text (its target,
	// its method) a refusal quotes back: enough to recognise it, never
	// more than a stranger sent.
	maxEchoed = 64
	// retryAfterDraining is the Retry-After of a 503 while the super peer
	// drains (Drain): past the drain's end (rendezvous.DefaultDrainTimeout),
	// when a super peer that restarts is back.
	retryAfterDraining = 10 * time.Second
)

// The fast path (fastpath.go; docs/PROTOCOL.md, "Relay fast path").
const (
	// DefaultFastPathPort is the UDP port embedders open for the fast path
	// (Server.ServeFastPath): STUN's 3478 plus one, to be opened in the
	// firewall beside it.
	DefaultFastPathPort = 3479
	// DefaultMaxFastPathBindings, bindings across the super peer: one per
	// bridged leg, about 300 bytes each; far above the legs a super peer
	// relays at once.
	DefaultMaxFastPathBindings = 16384
	// fastPathChallengeInterval: a binding is sent a CHALLENGE it did not
	// ask for (DATA from a new source) at most this often, so a forger of
	// source addresses gets ten small packets a second per binding
	// reflected, never more; a rebinding device is answered at once.
	fastPathChallengeInterval = 100 * time.Millisecond
	// fastPathCookieSlot: a CHALLENGE's cookie is good in its time slot
	// and the next, far longer than a round trip, short enough that an
	// old cookie is of no use.
	fastPathCookieSlot = 5 * time.Second
	// fastPathActive: a device's packets go to its fast path only while it
	// sent DATA there within this long (a busy device sends an ACK every
	// few packets); else to its HTTP leg, which it fell back to.
	fastPathActive = 500 * time.Millisecond
	// fastPathBatch, datagrams read (recvmmsg) and written (sendmmsg) per
	// system call: a burst of a congestion window at loopback speeds.
	fastPathBatch = 64
	// fastPathSocketBuffer, bytes: the fast-path socket's kernel receive
	// and send buffers, quic-go's choice for its own sockets (7 MiB). The
	// default (net.core.rmem_default, 208 KiB on Linux) holds about 90
	// datagrams, a few milliseconds of a busy relay: the reader missing a
	// CPU for that long lost datagrams in the kernel (UDP RcvbufErrors).
	fastPathSocketBuffer = 7 << 20
	// fastPathBuffer, bytes per read buffer: the header and the default
	// DefaultMaxDatagramSize with room; a longer datagram fills it and is
	// dropped as too_large.
	fastPathBuffer = 2048
)
