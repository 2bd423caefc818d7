package peer

import "time"

// Every number that shapes the device's behaviour, named once. The punch
// message's layout is in punchmsg.go, with the wire format.

/* Protocol values: fixed by an RFC, or relied on by the other end. */

const (
	// quicPacketSize is QUIC's minimum (RFC 9000 section 14.1): an
	// end-to-end packet may ride inside a relay's datagram, so it must fit
	// any path, and path MTU discovery stays off.
	quicPacketSize = 1200
	// quicKeepAlive keeps an idle end-to-end connection's NAT mappings and
	// relay session alive; both ends send it.
	quicKeepAlive = 10 * time.Second
	// quicIdleTimeout ends an end-to-end connection whose peer is gone:
	// three keepalives missed.
	quicIdleTimeout = 30 * time.Second
	// errCodeRevoked closes an end-to-end connection to a peer the
	// application revoked (Device.Revoke); 1 refuses a bad certificate.
	errCodeRevoked = 2
	// httpsPort is the port of a super peer URL without one (RFC 9110
	// section 4.2.2).
	httpsPort = "443"
	// directRTTGain smooths a direct path's RTT as TCP does (RFC 6298
	// section 2: alpha = 1/8).
	directRTTGain = 8
	// introduceRate and introduceBurst pace re-introductions, per super
	// peer: below rendezvous.DefaultConnectRate and DefaultConnectBurst,
	// which a super peer enforces.
	introduceRate  = 8
	introduceBurst = 10

	// DefaultPunchRate paces the pings to addresses that have never
	// answered, for the whole device, however many peers and candidates
	// (Config.PunchRate): ICE's pacing (RFC 8445 section 14.2, Ta =
	// 50 ms), so that a device is nobody's reflector.
	DefaultPunchRate = 20
	// punchBurst lets a dial's first round reach a peer's few candidates
	// at once.
	punchBurst = 10
	// DefaultPunchTries is how many pings an address that has never
	// answered gets per introduction (Config.PunchTries; STUN's
	// retransmissions, RFC 8489 section 6.2.1, are seven; two ends
	// punching at once need fewer).
	DefaultPunchTries = 5
	// maxTryShift caps the doubling of the spacing between a candidate's
	// tries (FastPunchInterval << tries), should PunchTries be raised:
	// 50 ms << 10 is about 51 s.
	maxTryShift = 10
	// consentFreshness: an address that answered is pinged at the
	// keepalive interval, outside the pacing, until it has not answered
	// for this long (RFC 7675 section 5.1).
	consentFreshness = 30 * time.Second
)

/* Config defaults: what a zero Config field means (docs/DEVICE.md, "Defaults"). */

const (
	// DefaultH3HeadStart: a super peer that answers over HTTP/3 does so
	// within a few RTTs; after this, HTTP/2 runs alongside.
	DefaultH3HeadStart = 500 * time.Millisecond
	// DefaultH3RetryInterval: a session over HTTP/2 tries HTTP/3 again this
	// often, rarely enough to cost nothing while UDP stays blocked.
	DefaultH3RetryInterval = time.Minute
	// DefaultPunchInterval is a direct path's keepalive: often enough for
	// DefaultDirectTimeout to notice a dead path within seconds, and far
	// inside any NAT's mapping timeout.
	DefaultPunchInterval = time.Second
	// DefaultFastPunchInterval and DefaultFastPunchFor: new candidates are
	// tried fast (the first two tries this far apart), so that a path
	// opens while both NATs' mappings are fresh; answered addresses are
	// pinged this fast for this long after an introduction or a lost
	// direct path.
	DefaultFastPunchInterval = 50 * time.Millisecond
	DefaultFastPunchFor      = 3 * time.Second
	// DefaultDirectTimeout: three keepalives lost and a half; then the
	// relay carries the connection.
	DefaultDirectTimeout = 3500 * time.Millisecond
	// DefaultRelayDialTimeout bounds an introduction plus a relay session's
	// setup over a slow network.
	DefaultRelayDialTimeout = 15 * time.Second
	// DefaultRelayCheckInterval: how often a relay is compared with nearer
	// super peers; RTTs change slowly.
	DefaultRelayCheckInterval = 10 * time.Second
	// DefaultPeerIdleTimeout: a peer without connections is kept this long,
	// in case the application reconnects.
	DefaultPeerIdleTimeout = time.Minute
	// DefaultMaxPeers bounds the peers a device keeps state for (a
	// punch loop, candidates, a relay): far more than one device talks
	// to, few enough that introductions from strangers cost little.
	DefaultMaxPeers = 1024
	// DefaultIntroductionRate is how many introductions of peers it has
	// no state for a device takes per second; more are dropped. Its
	// own dials are not counted.
	DefaultIntroductionRate = 20
	// DefaultAddrCheckInterval: how soon a changed network (a new DHCP
	// lease, another Wi-Fi) is noticed, for the price of listing the
	// interfaces.
	DefaultAddrCheckInterval = 5 * time.Second
	// DefaultAcceptTimeout bounds a Config.Accept call: below the super
	// peer's wait for the device's answer (rendezvous's consent timeout,
	// 10 s), with room for the answer to travel a slow network.
	DefaultAcceptTimeout = 8 * time.Second
)

/* Implementation values. */

const (
	// Bounds on per-peer state.
	maxCandidates = 32 // more than any device announces plus reflexive ones; the oldest goes
	maxPending    = 64 // packets held while a peer has no path: a handshake's worth
	maxPings      = 64 // outstanding punch pings: two rounds of maxCandidates
	tailLen       = 4  // last packets to a peer, resent over a new path (resendTailLocked)

	// introductionBurst: introductions of new peers taken at once, above
	// DefaultIntroductionRate.
	introductionBurst = 40

	// verifyRate and verifyBurst bound the punch signatures a device
	// checks per second from one source address (an IPv6 /64): well
	// above a peer's punches (its pacing, keepalives and pongs), far
	// below what a core verifies. verifySources is how many sources
	// get a bucket of their own; beyond it, new ones share one, so
	// the table stays small.
	verifyRate    = 50
	verifyBurst   = 50
	verifySources = 64
	// verifyPrefix6 groups IPv6 sources by network: one host has a /64.
	verifyPrefix6 = 64

	// fasterDirect: a pong from another address takes over the direct
	// path when its RTT is under 1/fasterDirect of the current one, so
	// that jitter does not flip between two addresses.
	fasterDirect = 2

	// maxUDPPayload is the largest UDP payload: any packet fits the
	// buffer it is read into.
	maxUDPPayload = 64 << 10
	// maxUnread bounds the events a Watcher holds for a reader that
	// falls behind: far more than a device produces in a burst (a path
	// change per peer, a status per super peer), small enough to cost
	// nothing.
	maxUnread = 256
	// maxDialedAddrs bounds the addresses the device began a QUIC
	// handshake with (its super peers, each per address family, and
	// their new addresses after DNS changes), whose handshake packets
	// may come back through the socket's stranger filter.
	maxDialedAddrs = 64
	// inQueue bounds the packets waiting for QUIC; beyond it they are
	// dropped, as a full socket buffer would.
	inQueue = 1024

	// maxAccepting bounds the Config.Accept calls running at once: a
	// person answers one request at a time, an application a few; more
	// at once are strangers.
	maxAccepting = 8
	// acceptQueue bounds the requests waiting for one of those slots
	// (within their own deadline): a peer that comes while strangers
	// hold every slot is asked when one frees, not declined; beyond it,
	// requests are declined at once.
	acceptQueue = 16
	// acceptCooldown: a peer whose Accept call gave no answer in time is
	// declined without asking for this long, so that strangers asking
	// again every second cannot keep every slot busy; a late yes still
	// counts. Long against AcceptTimeout: such a stranger holds a slot
	// for an eighth of the time at most.
	acceptCooldown = time.Minute
	// maxAnswersQueued bounds the peers whose answers wait on one super
	// peer session (deciding, or to be written): as many requests as an
	// honest super peer has waiting for one device
	// (rendezvous.maxPendingPerTarget); beyond, a hostile one's requests
	// are dropped.
	maxAnswersQueued = 64
	// maxRemembered bounds Config.Accept's answers remembered: far more
	// peers than a device meets, few enough that strangers' names cost
	// little memory; beyond it, Accept is asked each time.
	maxRemembered = 4096

	// forgetCheckMax caps how often idle peers are looked for: at most
	// this long, and PeerIdleTimeout/4 when that is shorter.
	forgetCheckMax = 5 * time.Second

	// relayRetryStep and relayRetryMax: a relay that fails is tried again
	// after one more step each time, up to the max: a super peer that
	// comes back is used soon, one that stays away costs little.
	relayRetryStep = 500 * time.Millisecond
	relayRetryMax  = 5 * time.Second
	// relayRetriesWhileDirect: once the path is direct, a relay that keeps
	// failing is retried this many times, then given up; the next lost
	// direct path asks again.
	relayRetriesWhileDirect = 4
	// relayFollowWait: when a relay in use ends (its super peer went away,
	// or a session moved between HTTP/3 and HTTP/2), the device that does
	// not move relays waits this long for the one that does to open the
	// relay again, and joins it (joinRelay), instead of opening its own:
	// two openings make two pairs of legs, and the super peer refuses one
	// leg (409 superseded). Well over what the mover takes (its reader
	// sees the end, one introduction, the super peer's word to this
	// device: a few RTTs, under a second on a loaded machine), far under
	// QUIC's idle timeout; after it, this device opens the relay itself
	// (the mover may not need it, or be gone).
	relayFollowWait = 2 * time.Second

	// Relay nodes (relaynode.go): the nodes of a cluster that its super
	// peers name as holding a peer, where the device registers for the
	// life of a relay. maxRelayNodes bounds the sessions it holds for
	// them at once: a device relays to few peers at a time, and each
	// costs a QUIC connection here and a registration there, so that a
	// super peer naming many nodes cannot make it hold many; beyond it,
	// a relay to a peer at yet another node waits for one to end.
	// relayNodeRate and relayNodeBurst pace the new ones, per device,
	// so that nodes named by a hostile super peer never make the device
	// a scanner: one new node a second after a burst of a few.
	maxRelayNodes  = 8
	relayNodeRate  = 1
	relayNodeBurst = 4

	// Hysteresis for moving a relay to a nearer super peer: the new one
	// must be this much better, relatively and absolutely, so that two
	// similar super peers do not take turns.
	relayMoveRatio  = 0.8
	relayMoveMargin = 5 * time.Millisecond

	// Good enough, then near (headroom.go). relayNeedFloor, bytes per
	// second both ways, is what a relay is taken to need at the least,
	// before it has carried anything: 1 Mbit/s, a call's audio and some
	// video. A super peer takes a relay only with its need and
	// relayHeadroomMargin of it again to spare; the one a relay runs
	// through is full for it below relayHeadroomMargin of the floor
	// spare: what a move leaves behind at the least, so that a relay that
	// moved does not find its new super peer full at once.
	relayNeedFloor      = 125_000
	relayHeadroomMargin = 0.5
	// relayRateWindow: a relay's rate is measured over at least this
	// long; a shorter look reuses the last measure, since a burst is no
	// rate.
	relayRateWindow = time.Second

	// sessionBackoffMin and sessionBackoffMax: a super peer that does not
	// answer is dialled again after a doubling wait, within these (each
	// wait spread over half to one and a half of it: jitter).
	sessionBackoffMin = 500 * time.Millisecond
	sessionBackoffMax = 10 * time.Second
	// sessionRedial: after a session ends, the next dial waits this long
	// (spread over half to one and a half of it: jitter), so that a super
	// peer that ends every session is not hammered, and the devices of a
	// node that died do not all redial at one instant.
	sessionRedial = 500 * time.Millisecond
	// introduceRetryMin and introduceRetryMax: an introduction that a
	// super peer answers with "retry later" (its rate limits, or a
	// cluster node that cannot reach its cluster yet) is asked again
	// after a wait doubling within these, while the dial's context
	// lasts: at most a few tries a second, far below the connect rate
	// limit (rendezvous.DefaultConnectRate), and soon after a NATS
	// connection comes up.
	introduceRetryMin = 250 * time.Millisecond
	introduceRetryMax = 2 * time.Second
	// sessionDialTimeout bounds one dial of a super peer, both transports.
	sessionDialTimeout = 10 * time.Second
	// fallDialTimeout bounds the HTTP/2 dial when an HTTP/3 session went
	// unanswered (transport.go): a node that still answers TCP does so
	// in well under it, and one that hangs (its kernel completes the TCP
	// handshake, nothing answers TLS) would otherwise hold the device
	// for sessionDialTimeout before it tries another node of the name.
	fallDialTimeout = 5 * time.Second
	// superPeerPingEvery: when direct paths die, super peers are pinged
	// (to follow a rebound NAT) at most this often.
	superPeerPingEvery = time.Second

	// The relay fast path (fastpath.go). fastPathTick: how often a fast
	// path's state is looked at while packets go out or a probe is
	// waited for (an idle one in use sleeps until its keepalive or the
	// next packet sent); finer than every timeout below.
	fastPathTick = 50 * time.Millisecond
	// fastPathProbeTimeout: a PROBE not answered (CHALLENGE, BOUND) within
	// this long is lost: many RTTs to a super peer, under load too.
	fastPathProbeTimeout = 250 * time.Millisecond
	// fastPathQuiet: DATA sent and nothing back for this long makes the
	// device probe; fastPathDeadProbes probes lost in a row drop the fast
	// path in use, so that the leg carries the packets within a second.
	fastPathQuiet      = 200 * time.Millisecond
	fastPathDeadProbes = 2
	// fastPathKeepalive: an idle fast path is probed this often, inside
	// the 25-30 s after which many NATs forget a UDP mapping.
	fastPathKeepalive = 20 * time.Second
	// fastPathHold: after falling back, the fast path is taken again only
	// once it has answered every probe for this long (hysteresis).
	fastPathHold = 2 * time.Second
	// fastPathRetryMin and fastPathRetryMax: unanswered probes are sent
	// again after a doubling wait within these; fastPathGiveUp unanswered
	// in a row, before the fast path was ever validated, give it up for
	// the leg (its port is blocked).
	fastPathRetryMin = 250 * time.Millisecond
	fastPathRetryMax = 4 * time.Second
	fastPathGiveUp   = 12
	// The NAT mapping check (mapping.go). mappingRecheck: a mapping
	// seldom changes without a rebinding or a new network, which check
	// at once; this catches the rest, for a few packets an hour.
	mappingRecheck = 5 * time.Minute
	// mappingSettle: after a kick, the check waits this long, so that
	// super peers whose sessions come up together are compared together.
	mappingSettle = 250 * time.Millisecond
	// stunTries and stunRetry: a Binding request is sent this many times
	// this far apart (RFC 8489 section 6.2.1's RTO, 500 ms; fewer
	// tries: a device checks again later), and waited for stunWait in all.
	stunTries = 3
	stunRetry = 500 * time.Millisecond
	stunWait  = 2 * time.Second
	// maxSTUNPending bounds the Binding requests in flight: one per super
	// peer and check, and at most the device's own check and a
	// CheckMapping run at once; beyond it, a request is not sent. A
	// response is taken only for one of them.
	maxSTUNPending = 16
	// slowPunchInterval: when both NATs map per destination, punching
	// cannot work, so a peer's addresses get one ping this far apart
	// (PunchTries per introduction) instead of a fast phase: in case a
	// verdict was wrong, at a cost of nothing.
	slowPunchInterval = 20 * time.Second
	// The transport to a super peer (transport.go). h3CheckTick: how
	// often an HTTP/3 session's measure is looked at while its relays
	// carry packets or a ping is waited for (it sleeps otherwise, until
	// the next packet relayed); finer than the others.
	h3CheckTick = 100 * time.Millisecond
	// h3CheckEvery: while its relays carry packets, a super peer is
	// pinged this often over HTTP/3: a measure a second, for one small
	// frame each way.
	h3CheckEvery = time.Second
	// h3Unanswered: an HTTP/3 session whose ping stays unanswered this
	// long no longer delivers, and its relays move to HTTP/2: many RTTs
	// to any super peer, and a loaded machine's scheduling, yet within
	// seconds rather than at QUIC's idle timeout (30 s), which would end
	// the end-to-end connections too.
	h3Unanswered = 3 * time.Second
	// h3RetryMin: after a fall to HTTP/2, HTTP/3 is tried again this
	// soon, then twice as late after each fall and each failed retry, up
	// to H3RetryInterval (the hysteresis: a path that flaps moves the
	// device at most once per H3RetryInterval after a few falls).
	h3RetryMin = 5 * time.Second
	// h3StableFor: HTTP/3 that held this long forgets the falls before.
	h3StableFor = 5 * time.Minute

	// packetBufSize is the size of the pooled packet buffers: a QUIC
	// packet of the largest size quic-go sends (1452) with the fast
	// path's header; larger ones grow their buffer.
	packetBufSize = 2048
)
