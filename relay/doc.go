// Package relay is the super peer's fallback path: it forwards the
// end-to-end encrypted QUIC packets of two devices that cannot reach each
// other directly, as MASQUE (RFC 9298 CONNECT-UDP with RFC 9297 HTTP
// datagrams) over HTTP/3, and as RFC 9297 DATAGRAM capsules over HTTP/2
// when UDP is blocked. It knows nothing of Caddy.
//
// # Not an open proxy
//
// The target of a relay request is a peer ID, never an address: the super
// peer opens no socket for a relay. A request is served only on a
// connection whose rendezvous session registered a device (Config.Auth;
// the relay session ends with that registration), towards a registered
// device, and only with consent: a session from A towards B waits, for at
// most Config.PairTimeout, for B's session towards A, which B's device
// opens when the rendezvous tells it that A wants to connect. Then the two
// are bridged in memory. A device never receives relayed packets from a peer
// it did not ask for.
//
// # Opaque bytes
//
// The relay moves HTTP datagram payloads (context ID and UDP payload)
// verbatim between the two legs; it never parses or decrypts them. A leg
// is an HTTP/3 request stream with QUIC datagrams, or an HTTP/2 stream
// carrying DATAGRAM capsules: an extended CONNECT (RFC 8441, when the Go
// process enables it with GODEBUG=http2xconnect=1) or a streamed POST,
// which works through Caddy as shipped. Legs of either kind pair freely.
//
// # Bounded
//
// Each device may hold Config.MaxSessionsPerDevice relay sessions, of
// which Config.MaxWaitingPerDevice wait for their counterpart; the server
// holds at most Config.MaxWaiting waiting. Each leg's inbound traffic
// passes a token bucket (Config.Rate, Config.Burst), and then its
// device's bandwidth budget, shared by all its legs and their fast paths
// (Config.DeviceRate), and the super peer's (Config.TotalRate): an HTTP/2
// leg is throttled by backpressure (the relay stops reading, TCP does the
// rest), excess HTTP/3 datagrams and fast-path DATA are dropped and
// counted (budget.go; Server.Budgets). Datagrams over
// Config.MaxDatagramSize are dropped and counted. The queue towards each
// leg is made when it is paired, bounded in datagrams and bytes
// (Config.QueueLen, Config.QueueBytes) and, across all legs, in bytes
// (Config.MaxQueuedBytes); it drops, counted, when full. A leg whose
// queue is full while its device has not taken the write in flight for
// Config.StallTimeout ends, its queue freed at once; one whose device does
// not take a write within Config.WriteTimeout ends too. Stats has every
// counter; constants.go has every default and limit.
//
// # API stability
//
// Before 1.0 the API may change between minor versions; every change is
// listed in docs/CHANGELOG.md with what replaces it. Within a minor
// version, the exported names and their documented behaviour hold, and a
// zero Config field takes the Default* constant it names; the values of
// those constants and of the unexported limits may be tuned at any time
// (docs/PROTOCOL.md lists them). The wire protocol is versioned apart
// from the Go API (rendezvous, Versions).
package relay
