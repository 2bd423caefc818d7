package relay

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/dunglas/httpsfv"

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

// proxyStatusName names this relay in Proxy-Status headers (RFC 9209).
const proxyStatusName = "netsody-superpeer"

// refusal is a relay request the super peer will not serve: an HTTP
// status with an RFC 9209 Proxy-Status error type and details a person can
// act on.
type refusal struct {
	status  int
	errType string // RFC 9209 section 2.3 proxy error type
	details string
}

func (r *refusal) Error() string { return fmt.Sprintf("%d %s: %s", r.status, r.errType, r.details) }

// write sends the refusal.
func (r *refusal) write(w http.ResponseWriter) {
	item := httpsfv.NewItem(proxyStatusName)
	item.Params.Add("error", httpsfv.Token(r.errType))
	item.Params.Add("details", r.details)
	if v, err := httpsfv.Marshal(item); err == nil {
		w.Header().Set("Proxy-Status", v)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(r.status)
	fmt.Fprintf(w, "netsody relay: %s\n", r.details)
}

// parseTarget takes the peer ID out of a relay request's path. Anything
// that is not a peer ID — an IP address, a hostname — is refused: the
// relay is not an open proxy.
func parseTarget(path string) (identity.PeerID, *refusal) {
	rest, ok := strings.CutPrefix(path, PathPrefix)
	if !ok {
		return identity.PeerID{}, &refusal{http.StatusNotFound, "http_request_error", "not a relay path"}
	}
	host, port, ok := strings.Cut(strings.TrimSuffix(rest, "/"), "/")
	if !ok || host == "" || port == "" || strings.Contains(port, "/") {
		return identity.PeerID{}, &refusal{http.StatusBadRequest, "http_request_error",
			"the path must be " + PathPrefix + "{peer ID}/{port}/"}
	}
	peer, err := identity.ParsePeerID(host)
	if err != nil {
		what := "hostname"
		if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil || strings.Contains(host, "%3A") || strings.Contains(host, ":") {
			what = "IP address"
		}
		return identity.PeerID{}, &refusal{http.StatusForbidden, "http_request_denied",
			fmt.Sprintf("this relay forwards only to registered peer IDs (64 hex digits), not to the %s %q", what, host)}
	}
	return peer, nil
}
