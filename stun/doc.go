// Package stun is the super peer's STUN Binding responder (RFC 8489, RFC
// 5389 and the classic RFC 3489), without Caddy: it tells a client the
// address and port its request came from, as the super peer sees them.
// caddymodule/l4stun serves it on caddy-l4's UDP listeners.
//
// What it answers. A Binding request (type 0x0001) in either form:
//
//   - with the magic cookie 0x2112A442 (RFC 5389/8489): a Binding success
//     response with one XOR-MAPPED-ADDRESS (RFC 8489 §14.2);
//   - without it (RFC 3489, whose 128-bit transaction ID fills bytes
//     4–19): a Binding response with one MAPPED-ADDRESS (RFC 3489 §11.2.1).
//
// A response is the 20-byte header and that one attribute, nothing else:
// 32 bytes for IPv4, 44 for IPv6 (MaxResponseSize). It goes to the
// request's source and nowhere else.
//
// What it ignores, on purpose. Attributes of a request are checked for
// structure (and FINGERPRINT, when present, for its CRC) and otherwise not
// acted on:
//
//   - CHANGE-REQUEST (RFC 3489 §11.2.4, RFC 5780 §7.2) asks for the answer
//     from another address or port. A super peer has one address, so the
//     answer comes from the address the request went to, as if no flag
//     were set. A client that infers NAT filtering from answers to change
//     requests (Debian's `stun` does) learns nothing true about filtering
//     from this server; the mapped address it reports is right.
//   - RESPONSE-ADDRESS (RFC 3489 §11.2.2) and RESPONSE-PORT (RFC 5780
//     §7.5) ask for the answer elsewhere: followed, they would make the
//     super peer a reflector towards any address.
//   - Authentication (USERNAME, MESSAGE-INTEGRITY): a Binding request
//     needs none, and a response never carries any.
//
// No error response is ever sent, not even the 420 (Unknown Attribute)
// RFC 8489 §6.3.1 asks for: an error response echoes attribute types and
// can be longer than the request. Whatever is not answered is dropped and
// counted by DropReason.
//
// Amplification. STUN is the super peer's one documented exception to
// "never answer with more than the request carried": the smallest request
// is 20 bytes and the largest response 44. What any one source prefix
// (an IPv4 address or an IPv6 /64; a spoofed request makes the victim
// the source) can make the super peer send is bounded by a token bucket
// per prefix (Config.SourceRate, Config.SourceBurst), in a table of at
// most maxSources prefixes.
package stun
