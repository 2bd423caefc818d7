// Package rendezvous is the super peer's discovery and hole-punching
// service, and the device's client for it. It knows nothing of Caddy: the
// server is an http.Handler that any Go HTTP/2 or HTTP/3 server can mount.
//
// # Session
//
// A device keeps one long-lived session with each super peer: a POST to
// Path, over HTTP/3 (UDP) or, when UDP fails, HTTP/2 (TCP), whose request
// body carries frames from the device and whose response body carries
// frames back (see frame.go and payload.go for every message, its layout
// and limits).
//
//	device                                   super peer
//	POST /.well-known/netsody/v1/rendezvous  ──▶
//	                                         ◀── 200 (headers flushed, VersionHeader)
//	FrameRegister (key, signature over the
//	connection's channel binding, version
//	and capabilities)                        ──▶
//	                                         ◀── FrameRegistered (observed address,
//	                                             version and capabilities)
//	FramePing / FramePong, both ways, every keepalive interval
//	FrameConnect (peer ID)                   ──▶
//	                    FrameCandidates to both devices at once ◀──▶
//
// Refusals before the session starts are HTTP statuses (405, 505, 403, 425,
// 503), each with a plain-text reason; refusals after it has started are
// FrameError with an ErrorCode. A registration cannot be replayed on
// another connection and is refused in 0-RTT data (see binding.go). A
// device's registration authenticates its connection, so that later
// requests on it (relay sessions) need no further proof: see
// Server.Authenticate.
//
// # Versions
//
// Register and Registered carry each end's ProtocolVersion and
// Capabilities; a frame or extension added later goes only to an end that
// announced it, and extensions older decoders do not know are skipped (see
// version.go and docs/PROTOCOL.md, "Versions and compatibility").
//
// # Files
//
// frame.go is the catalogue of frames, payload.go their payloads, wire.go
// their encoding, version.go the versions and capabilities; constants.go
// every limit and default; session.go, outbox.go and wakeups.go the
// server's side of a session; server.go the registry; consent.go the
// introductions it makes and the target's consent; lookup.go the relay's
// lookups; client.go the device's side, dial.go its transports,
// introduce.go its introductions; rtt.go the RTT estimate both sides keep.
//
// # API stability
//
// Before 1.0 the API may change between minor versions; every change is
// listed in docs/CHANGELOG.md with what replaces it. Within a minor
// version, the exported names and their documented behaviour hold, and a
// zero Config field takes the Default* constant it names; the values of
// those constants and of the unexported limits may be tuned at any time
// (docs/PROTOCOL.md lists them). The wire protocol is versioned apart
// from the Go API (see Versions).
package rendezvous
