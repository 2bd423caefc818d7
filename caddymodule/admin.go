package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"

	"github.com/caddyserver/caddy/v2"

	"github.com/netsody/superpeer/identity"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI is the admin.api.netsody module: routes on Caddy's admin
// endpoint that show the super peer's state and let the operator end and
// deny devices at run time (docs/OPERATIONS.md, "Admin API"). Caddy
// loads every admin.api module with its admin endpoint, so it needs no
// configuration; the routes are as reachable, and as private, as that
// endpoint is configured to be. They find the process's super peer at
// each request, so a reload changes nothing for them.
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.netsody",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// The admin API's paths.
const (
	adminPrefix      = "/netsody/"
	adminStatePath   = adminPrefix + "state"
	adminDevicesPath = adminPrefix + "devices"
	adminRelaysPath  = adminPrefix + "relays"
	adminKickPath    = adminPrefix + "kick"
	adminDenyPath    = adminPrefix + "deny"
	adminHealthPath  = adminPrefix + "health"
)

// Provision registers the running super peer's metrics on the registry
// of the config that loads the admin endpoint. Caddy replaces its admin
// endpoint, and with it the registry that /metrics serves, before it
// loads a config's apps, and keeps the new endpoint when the config then
// fails to load (an allowlist file missing, say): without this, /metrics
// would lose the super peer's metrics until the next successful reload,
// while the super peer runs on under the old config.
func (AdminAPI) Provision(ctx caddy.Context) error {
	if p := runningSuperPeer(); p != nil {
		return registerMetrics(ctx.GetMetricsRegistry(), p)
	}
	return nil
}

// Routes returns the admin API's routes.
func (AdminAPI) Routes() []caddy.AdminRoute {
	route := func(path string, methods []string, h func(*pooledSuperPeer, http.ResponseWriter, *http.Request) error) caddy.AdminRoute {
		return caddy.AdminRoute{Pattern: path, Handler: caddy.AdminHandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			if r.URL.Path != path {
				return apiError(http.StatusNotFound, "no such netsody admin route; see docs/OPERATIONS.md")
			}
			if !allowed(r.Method, methods) {
				w.Header().Set("Allow", strings.Join(methods, ", "))
				return apiError(http.StatusMethodNotAllowed, "%s takes %s", path, strings.Join(methods, " or "))
			}
			p := runningSuperPeer()
			if p == nil {
				return apiError(http.StatusServiceUnavailable, "no super peer runs in this Caddy: no site has a netsody_superpeer handler")
			}
			return h(p, w, r)
		})}
	}
	get := []string{http.MethodGet}
	return []caddy.AdminRoute{
		route(adminStatePath, get, serveState),
		route(adminDevicesPath, get, serveDevices),
		route(adminRelaysPath, get, serveRelays),
		route(adminKickPath, []string{http.MethodPost}, serveKick),
		route(adminDenyPath, []string{http.MethodGet, http.MethodPost, http.MethodDelete}, serveDeny),
		{Pattern: adminHealthPath, Handler: caddy.AdminHandlerFunc(serveHealth)},
	}
}

func allowed(method string, methods []string) bool {
	for _, m := range methods {
		if method == m || (method == http.MethodHead && m == http.MethodGet) {
			return true
		}
	}
	return false
}

// runningSuperPeer returns the process's super peer, or nil if no config
// runs one.
func runningSuperPeer() *pooledSuperPeer {
	var p *pooledSuperPeer
	superPeers.Range(func(key, val any) bool {
		if key == superPeerKey {
			p, _ = val.(*pooledSuperPeer)
		}
		return p == nil
	})
	return p
}

// started reports whether a config applied its options to the super peer
// (App.Start) and none is withdrawing them all.
func (p *pooledSuperPeer) started() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.configs) > 0
}

// apiError is a caddy.APIError with a reason a person can act on; Caddy
// answers it as {"error": "..."}.
func apiError(status int, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return caddy.APIError{HTTPStatus: status, Err: errors.New(msg), Message: msg}
}

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// HealthView is the answer of GET /netsody/health.
type HealthView struct {
	// Status is "serving", "draining" or "not running".
	Status string `json:"status"`
	// Reason says why the super peer is not serving.
	Reason string `json:"reason,omitempty"`
}

// serveHealth answers 200 while the super peer takes devices, and 503
// while it drains or none runs: what a load balancer or monitor probes.
func serveHealth(w http.ResponseWriter, r *http.Request) error {
	if !allowed(r.Method, []string{http.MethodGet}) {
		w.Header().Set("Allow", http.MethodGet)
		return apiError(http.StatusMethodNotAllowed, "%s takes GET", adminHealthPath)
	}
	status, v := health(runningSuperPeer())
	return writeJSON(w, status, v)
}

// health is the health route's answer about p (nil: none runs).
func health(p *pooledSuperPeer) (int, HealthView) {
	switch {
	case p == nil || !p.started():
		return http.StatusServiceUnavailable, HealthView{Status: "not running", Reason: "no config runs a super peer"}
	case p.ops.drainReason() != "":
		return http.StatusServiceUnavailable, HealthView{Status: "draining", Reason: p.ops.drainReason()}
	}
	return http.StatusOK, HealthView{Status: "serving"}
}

// PeerRequest is the body of POST /netsody/kick, and of POST and DELETE
// /netsody/deny: one of its fields.
type PeerRequest struct {
	// PeerID is a device's peer ID, 64 hex digits.
	PeerID string `json:"peer_id,omitempty"`
	// Prefix is an address prefix in CIDR notation, or one address (deny
	// only).
	Prefix string `json:"prefix,omitempty"`
}

// readPeerRequest reads a write request's body: one JSON object with
// exactly one of the fields allowed, and nothing else.
func readPeerRequest(r *http.Request, prefixAllowed bool) (DenyEntry, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody+1))
	if err != nil {
		return DenyEntry{}, apiError(http.StatusBadRequest, "reading the body: %v", err)
	}
	if len(body) > maxAdminBody {
		return DenyEntry{}, apiError(http.StatusRequestEntityTooLarge, "the body is over %d bytes", maxAdminBody)
	}
	want := `{"peer_id": "<64 hex digits>"}`
	if prefixAllowed {
		want += ` or {"prefix": "<CIDR prefix or address>"}`
	}
	var req PeerRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return DenyEntry{}, apiError(http.StatusBadRequest, "the body must be %s: %v", want, err)
	}
	if dec.More() {
		return DenyEntry{}, apiError(http.StatusBadRequest, "the body must be one JSON object, %s", want)
	}
	var e DenyEntry
	switch {
	case req.PeerID != "" && req.Prefix == "":
		e, err = parseDenyEntry(kindPeerID, req.PeerID)
	case req.Prefix != "" && req.PeerID == "" && prefixAllowed:
		e, err = parseDenyEntry(kindPrefix, req.Prefix)
	default:
		return DenyEntry{}, apiError(http.StatusBadRequest, "the body must be %s", want)
	}
	if err != nil {
		return DenyEntry{}, apiError(http.StatusBadRequest, "%v", err)
	}
	return e, nil
}

// KickView is the answer of POST /netsody/kick.
type KickView struct {
	// Ended is how many sessions ended: 1.
	Ended int `json:"ended"`
}

// serveKick ends a registered device's session with
// rendezvous.ErrCodeEndedByOperator; the device may register again (deny
// keeps it out).
func serveKick(p *pooledSuperPeer, w http.ResponseWriter, r *http.Request) error {
	e, err := readPeerRequest(r, false)
	if err != nil {
		return err
	}
	n := p.endMatching(e, "the super peer's operator ended this session")
	if n == 0 {
		return apiError(http.StatusNotFound, "no device with peer ID %s is registered", e.Entry)
	}
	return writeJSON(w, http.StatusOK, KickView{Ended: n})
}

// endMatching ends the registered sessions that e matches, and counts
// them.
func (p *pooledSuperPeer) endMatching(e DenyEntry, message string) int {
	n := p.Rendezvous().EndRegistered(func(peer identity.PeerID, remote netip.AddrPort) bool {
		return e.matches(peer, remote.Addr())
	}, message)
	p.ops.kicks.Add(uint64(n))
	return n
}

// DenyView is the answer of POST and DELETE /netsody/deny.
type DenyView struct {
	Entry DenyEntry `json:"entry"`
	// Added (POST): false if it was listed already. Removed (DELETE).
	Added   bool `json:"added,omitempty"`
	Removed bool `json:"removed,omitempty"`
	// Ended (POST) is how many registered sessions it ended.
	Ended int `json:"ended"`
}

// DenyListView is the answer of GET /netsody/deny.
type DenyListView struct {
	Entries []DenyEntry `json:"entries"`
	Max     int         `json:"max"`
}

// serveDeny lists, adds and removes deny entries. An entry added ends the
// registered sessions it matches, and refuses their registrations
// (rendezvous.ErrCodeRefused, with the entry) until it is removed.
func serveDeny(p *pooledSuperPeer, w http.ResponseWriter, r *http.Request) error {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return writeJSON(w, http.StatusOK, DenyListView{Entries: append([]DenyEntry{}, p.ops.deny.list()...), Max: maxDenyEntries})
	}
	e, err := readPeerRequest(r, true)
	if err != nil {
		return err
	}
	if r.Method == http.MethodDelete {
		if !p.ops.deny.remove(e) {
			return apiError(http.StatusNotFound, "%s %s is not on the deny list", e.Kind, e.Entry)
		}
		return writeJSON(w, http.StatusOK, DenyView{Entry: e, Removed: true})
	}
	added, ok := p.ops.deny.add(e)
	if !ok {
		return apiError(http.StatusConflict, "the deny list is full (%d entries); remove some, or deny in an allowlist or a firewall", maxDenyEntries)
	}
	// Added first, then ended: a device that registers meanwhile is
	// refused by the list or ended here.
	n := p.endMatching(e, fmt.Sprintf("the super peer's operator denied %s %s", e.Kind, e.Entry))
	return writeJSON(w, http.StatusOK, DenyView{Entry: e, Added: added, Ended: n})
}

// Interface guards
var (
	_ caddy.Module      = AdminAPI{}
	_ caddy.AdminRouter = AdminAPI{}
	_ caddy.Provisioner = AdminAPI{}
)
