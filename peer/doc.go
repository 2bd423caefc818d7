// Package peer is the device side of Netsody's super peers: one UDP
// socket for every super peer session and every direct path, registration
// with every configured super peer, hole punching, relay fallback, and
// the switch between relay and direct paths without breaking the
// end-to-end QUIC connection.
//
// A device author makes a Device with New, dials peers by peer ID (Dial)
// or accepts them (Accept), and follows what happens with Watch (a path
// changed, a super peer's session did) and Status. docs/DEVICE.md tells
// what the device does and why.
//
// # Files
//
// device.go holds the Device and its lifetime, config.go its Config,
// connect.go Dial and Accept, localaddrs.go the device's own addresses;
// constants.go every number that shapes the device, with its reason; path.go a peer's path state and
// the only transitions that change it (under a diagram); punch.go hole
// punching, punchmsg.go its wire format; relay.go relay management;
// superpeer.go the sessions with the super peers; sock.go the shared
// sockets; events.go the events; status.go the status.
//
// # API stability
//
// Before 1.0 the API may change between minor versions. What device
// authors may rely on within a minor version: the exported names and
// their documented behaviour; a zero Config field taking the Default*
// constant it names; events delivered in order and never blocking the
// device; the JSON field names of Status. What may change at any time:
// the values of the Default* constants and of the unexported limits
// (they are tuned from measurements; docs/DEVICE.md lists them), log
// messages, and anything in internal/. Every change to the API is listed
// in docs/CHANGELOG.md with what replaces it. The wire protocol a device
// speaks is versioned on its own, and a newer device still works with an
// older super peer (docs/PROTOCOL.md, "Versions and compatibility").
package peer
