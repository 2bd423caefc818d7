package relay

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/dunglas/httpsfv"
)

// proxyStatusName names this relay in Proxy-Status headers (RFC 9209).
const proxyStatusName = "netsody-superpeer"

// The RFC 9209 section 2.3 proxy error types the relay answers with.
const (
	errRequest     = "http_request_error"    // the request is wrong
	errDenied      = "http_request_denied"   // the request is refused by policy
	errNotFound    = "destination_not_found" // no such device here
	errInternal    = "proxy_internal_error"  // the super peer cannot serve it
	errPairTimeout = "connection_timeout"    // the counterpart never came
)

// refusal is a relay request the super peer will not serve: an HTTP
// status with an RFC 9209 Proxy-Status error type and details a person can
// act on. Each is declared once below; a refusal with variable details is
// a copy made by with.
type refusal struct {
	status  int
	errType string   // RFC 9209 section 2.3 proxy error type
	details string   // fixed, or the format that with fills in
	of      *refusal // the declared refusal a copy was made from
	// retryAfter, if set (after), goes out as Retry-After.
	retryAfter time.Duration
}

// Every refusal. docs/PROTOCOL.md's refusal table has one row for each,
// by name; TestRefusalTable keeps the two in step.
var (
	// Before the request is looked at.
	refuseHTTP1    = &refusal{status: http.StatusHTTPVersionNotSupported, errType: errRequest, details: "the relay needs HTTP/2 or HTTP/3"}
	refuseProtocol = &refusal{status: http.StatusNotImplemented, errType: errRequest, details: "only the connect-udp protocol is relayed"}
	refuseMethod   = &refusal{status: http.StatusMethodNotAllowed, errType: errRequest,
		details: "open a relay session with an extended CONNECT (connect-udp) or a streamed POST, not %s"} // %s: echoed
	refuseNotHTTPS = &refusal{status: http.StatusForbidden, errType: errDenied, details: "the relay needs HTTPS"}
	// RFC 8470: a request in 0-RTT data may be a replay.
	refuseTooEarly = &refusal{status: http.StatusTooEarly, errType: errDenied,
		details: "a relay session cannot start in 0-RTT data; retry after the handshake"}

	// The path (target.go).
	refuseNotRelayPath = &refusal{status: http.StatusNotFound, errType: errRequest, details: "not a relay path"}
	refuseBadPath      = &refusal{status: http.StatusBadRequest, errType: errRequest,
		details: "the path must be " + PathPrefix + "{peer ID}/{port}/"}
	// Not an open proxy: the target is an address or a hostname.
	refuseNotPeerID = &refusal{status: http.StatusForbidden, errType: errDenied,
		details: "this relay forwards only to registered peer IDs (64 hex digits), not to the %s %s"} // the last %s: echoed
	// 64 hex digits that are no Ed25519 public key (identity.PeerID.Validate).
	refuseNotKey = &refusal{status: http.StatusForbidden, errType: errDenied, details: "the target is no peer ID: %v"}

	// Who asks, for whom.
	refuseNoRegistration = &refusal{status: http.StatusForbidden, errType: errDenied,
		details: "this connection has no registered device: register on the rendezvous session first, then relay on the same connection"}
	refuseSelf     = &refusal{status: http.StatusBadRequest, errType: errRequest, details: "a device cannot relay to itself"}
	refuseNotFound = &refusal{status: http.StatusNotFound, errType: errNotFound,
		details: "no device with peer ID %s is registered at this super peer"}

	// The super peer's state and limits.
	refuseInternal     = &refusal{status: http.StatusInternalServerError, errType: errInternal, details: "%v"}
	refuseShuttingDown = &refusal{status: http.StatusServiceUnavailable, errType: errInternal, details: "the super peer is shutting down"}
	refuseDraining     = &refusal{status: http.StatusServiceUnavailable, errType: errInternal,
		details: "the super peer is draining and opens no new relay session; relay through another super peer"}
	refuseTooMany = &refusal{status: http.StatusTooManyRequests, errType: errDenied,
		details: "this device already has %d relay sessions, the most allowed"}
	refuseTooManyWaiting = &refusal{status: http.StatusTooManyRequests, errType: errDenied,
		details: "this device already has %d relay sessions waiting for their counterparts, the most allowed"}
	refuseBusy = &refusal{status: http.StatusServiceUnavailable, errType: errInternal,
		details: "the super peer already holds %d relay sessions waiting for their counterparts; retry later"}
	refuseTooManyWaitingPrefix = &refusal{status: http.StatusTooManyRequests, errType: errDenied,
		details: "%d relay sessions from %s wait for their counterparts already, the most one network may hold; retry later"}
	// The per-(asker, target) lookup limit of the rendezvous, shared with
	// its connects (rendezvous.Server.LookUp); the details are its reason.
	refuseLookupLimited     = &refusal{status: http.StatusTooManyRequests, errType: errDenied, details: "%s"}
	refuseRegistrationEnded = &refusal{status: http.StatusForbidden, errType: errDenied,
		details: "the registration on this connection ended: %s"}

	// Waiting for the counterpart (consent).
	// refuseSuperseded: the waiting leg was ended before it was paired; the
	// details are why (a newer session towards the same peer, the end of
	// its registration, shutdown).
	refuseSuperseded  = &refusal{status: http.StatusConflict, errType: errDenied, details: "%s"}
	refuseCanceled    = &refusal{status: http.StatusBadRequest, errType: errRequest, details: "the request ended while waiting"}
	refusePairTimeout = &refusal{status: http.StatusGatewayTimeout, errType: errPairTimeout,
		details: "peer %s did not open its side of the relay within %v; it must ask for this device too"}
)

// refusals lists every refusal; a refusal's place here indexes
// Stats.refused.
var refusals = [...]*refusal{
	refuseHTTP1, refuseProtocol, refuseMethod, refuseNotHTTPS, refuseTooEarly,
	refuseNotRelayPath, refuseBadPath, refuseNotPeerID, refuseNotKey,
	refuseNoRegistration, refuseSelf, refuseNotFound,
	refuseInternal, refuseShuttingDown, refuseDraining, refuseTooMany, refuseTooManyWaiting, refuseBusy, refuseRegistrationEnded,
	refuseTooManyWaitingPrefix, refuseLookupLimited,
	refuseSuperseded, refuseCanceled, refusePairTimeout,
}

// with returns a copy of r whose details are r's format filled in.
func (r *refusal) with(args ...any) *refusal {
	return &refusal{status: r.status, errType: r.errType, details: fmt.Sprintf(r.details, args...), of: r}
}

// after returns r, a copy made by with, with a Retry-After of d, in
// whole seconds.
func (r *refusal) after(d time.Duration) *refusal {
	r.retryAfter = d
	return r
}

// echoed quotes a request's own text (its target, its method) for a
// refusal's details, cut to maxEchoed bytes: the details go out twice
// (Proxy-Status and body), and quoted whole a stranger's long path would
// come back several times larger. Quoted as ASCII, since a Structured
// Field string holds no other, and Proxy-Status would be left out.
func echoed(s string) string {
	q := strconv.QuoteToASCII(s)
	if len(q) <= maxEchoed {
		return q
	}
	return q[:maxEchoed-len(`..."`)] + `..."`
}

// is tells whether r is decl or a copy of it.
func (r *refusal) is(decl *refusal) bool { return r == decl || r.of == decl }

// index is r's place in refusals.
func (r *refusal) index() int {
	if r.of != nil {
		r = r.of
	}
	return slices.Index(refusals[:], r)
}

func (r *refusal) Error() string { return fmt.Sprintf("%d %s: %s", r.status, r.errType, r.details) }

// write answers the request with the refusal: the status, a Proxy-Status
// header that standard clients parse, and the details again as the body
// for people with curl.
func (r *refusal) write(w http.ResponseWriter) {
	item := httpsfv.NewItem(proxyStatusName)
	item.Params.Add("error", httpsfv.Token(r.errType))
	item.Params.Add("details", r.details)
	if v, err := httpsfv.Marshal(item); err == nil {
		w.Header().Set("Proxy-Status", v)
	}
	if r.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((r.retryAfter+time.Second-1)/time.Second)))
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(r.status)
	fmt.Fprintf(w, "netsody relay: %s\n", r.details)
}
