package relay

import (
	"net/netip"
	"strings"

	"github.com/netsody/superpeer/identity"
)

// PathPrefix starts every relay request's path. The full URI template
// (RFC 9298 section 3) is
//
//	https://{authority}/.well-known/masque/udp/{target_host}/{target_port}/
//
// where target_host is the peer ID of the device to reach (64 hex digits)
// and target_port is any port number (devices send 443); the relay ignores
// it. This is masque-go's default template path, so standard clients
// work unchanged.
const PathPrefix = "/.well-known/masque/udp/"

// Template returns the relay's URI template for a super peer authority
// ("host" or "host:port").
func Template(authority string) string {
	return "https://" + authority + PathPrefix + "{target_host}/{target_port}/"
}

// TargetPort is the target_port devices send.
const TargetPort = "443"

// parseTarget takes the peer ID out of a relay request's path. Anything
// that is not a peer ID — an IP address, a hostname — is refused: the
// relay is not an open proxy.
func parseTarget(path string) (identity.PeerID, *refusal) {
	rest, ok := strings.CutPrefix(path, PathPrefix)
	if !ok {
		return identity.PeerID{}, refuseNotRelayPath
	}
	host, port, ok := strings.Cut(strings.TrimSuffix(rest, "/"), "/")
	if !ok || host == "" || port == "" || strings.Contains(port, "/") {
		return identity.PeerID{}, refuseBadPath
	}
	peer, err := identity.ParsePeerID(host)
	if err != nil && isHex(host, 2*identity.PeerIDLen) {
		// A peer ID's form, but a key no key pair has (small order, or
		// another encoding of a key): nobody can register it.
		return identity.PeerID{}, refuseNotKey.with(err)
	}
	if err != nil {
		what := "hostname"
		if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil || strings.Contains(host, "%3A") || strings.Contains(host, ":") {
			what = "IP address"
		}
		return identity.PeerID{}, refuseNotPeerID.with(what, echoed(host))
	}
	return peer, nil
}

// isHex reports whether s is n hex digits.
func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
