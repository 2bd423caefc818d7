package caddymodule

import (
	"net/http"
	"strconv"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

// The admin API's read routes: GET /netsody/state, /netsody/devices and
// /netsody/relays. Their JSON field names are documented in
// docs/OPERATIONS.md; the types below are that answer.

// StateView is the answer of GET /netsody/state: counts, and the limits
// in force beside what is in use of them.
type StateView struct {
	Serving     bool   `json:"serving"`
	DrainReason string `json:"drain_reason,omitempty"`
	// Sessions: registered devices, all sessions (registered or not),
	// and max_sessions.
	Devices     int               `json:"devices"`
	Sessions    int               `json:"sessions"`
	MaxSessions int               `json:"max_sessions"`
	ByTransport []DeviceCountView `json:"devices_by_transport"`
	Relay       RelayStateView    `json:"relay"`
	Budgets     []BudgetView      `json:"budgets"`
	DenyEntries int               `json:"deny_entries"`
}

// BudgetView is one budget in force and its use now
// (superpeer.Server.Budgets): for a per-device budget, the busiest
// device's use; bandwidth in bytes a second.
type BudgetView struct {
	Name  string  `json:"name"`
	Limit float64 `json:"limit"`
	Burst int     `json:"burst,omitempty"`
	Use   float64 `json:"use"`
	Hits  uint64  `json:"hits"`
}

// DeviceCountView is how many registered devices use one IP version and
// transport.
type DeviceCountView struct {
	IPVersion int    `json:"ip_version"`
	Transport string `json:"transport"`
	Devices   int    `json:"devices"`
}

// RelayStateView is the relay's part of StateView.
type RelayStateView struct {
	SessionsBridged      int64 `json:"sessions_bridged"`
	SessionsWaiting      int64 `json:"sessions_waiting"`
	MaxWaiting           int   `json:"max_waiting"`
	MaxSessionsPerDevice int   `json:"max_sessions_per_device"`
	QueuedBytes          int64 `json:"queued_bytes"`
	MaxQueuedBytes       int64 `json:"max_queued_bytes"`
	FastPathBindings     int64 `json:"fast_path_bindings"`
	MaxFastPathBindings  int   `json:"max_fast_path_bindings"`
	// RatePerLeg is each leg's token bucket, in bytes a second.
	RatePerLeg float64 `json:"rate_per_leg"`
}

func serveState(p *pooledSuperPeer, w http.ResponseWriter, _ *http.Request) error {
	rv, rl := p.Rendezvous(), p.Relay()
	registered, all := rv.Sessions()
	rcfg, lcfg, ls := rv.Config(), rl.Config(), rl.Stats()
	v := StateView{
		Serving:     p.started() && p.ops.drainReason() == "",
		DrainReason: p.ops.drainReason(),
		Devices:     registered,
		Sessions:    all,
		MaxSessions: rcfg.MaxSessions,
		ByTransport: []DeviceCountView{},
		Relay: RelayStateView{
			SessionsBridged:      ls.Active.Load() / 2,
			SessionsWaiting:      ls.Waiting.Load(),
			MaxWaiting:           lcfg.MaxWaiting,
			MaxSessionsPerDevice: lcfg.MaxSessionsPerDevice,
			QueuedBytes:          ls.QueuedBytes.Load(),
			MaxQueuedBytes:       lcfg.MaxQueuedBytes,
			FastPathBindings:     ls.FastPath.Bindings.Load(),
			MaxFastPathBindings:  lcfg.MaxFastPathBindings,
			RatePerLeg:           lcfg.Rate,
		},
		DenyEntries: len(p.ops.deny.list()),
	}
	for _, c := range rv.DeviceCounts() {
		v.ByTransport = append(v.ByTransport, DeviceCountView(c))
	}
	for _, b := range p.Budgets() {
		v.Budgets = append(v.Budgets, BudgetView(b))
	}
	return writeJSON(w, http.StatusOK, v)
}

// page is a request's offset and limit.
type page struct{ offset, limit int }

// readPage reads ?offset=&limit=; anything else in the query, or a value
// out of range, is a 400 with the reason.
func readPage(r *http.Request) (page, error) {
	pg := page{limit: defaultAdminPageLimit}
	for name, vals := range r.URL.Query() {
		if len(vals) != 1 {
			return page{}, apiError(http.StatusBadRequest, "%s is given %d times; give it once", name, len(vals))
		}
		n, err := strconv.Atoi(vals[0])
		switch name {
		case "offset":
			if err != nil || n < 0 {
				return page{}, apiError(http.StatusBadRequest, "offset %q must be a whole number, 0 or more", vals[0])
			}
			pg.offset = n
		case "limit":
			if err != nil || n < 1 || n > maxAdminPageLimit {
				return page{}, apiError(http.StatusBadRequest, "limit %q must be a whole number from 1 to %d", vals[0], maxAdminPageLimit)
			}
			pg.limit = n
		default:
			return page{}, apiError(http.StatusBadRequest, "unknown query parameter %q; this route takes offset and limit", name)
		}
	}
	return pg, nil
}

// window returns the bounds of pg within n items.
func (pg page) window(n int) (from, to int) {
	from = min(pg.offset, n)
	return from, min(from+pg.limit, n)
}

// PageView is the frame of a paginated answer.
type PageView struct {
	// Total is how many items there are now; a page holds those from
	// Offset, at most Limit.
	Total  int `json:"total"`
	Offset int `json:"offset"`
	Limit  int `json:"limit"`
}

// DevicesView is the answer of GET /netsody/devices.
type DevicesView struct {
	PageView
	Devices []DeviceView `json:"devices"`
}

// DeviceView is one session on GET /netsody/devices.
type DeviceView struct {
	// PeerID is empty for a session that has not registered yet.
	PeerID     string `json:"peer_id,omitempty"`
	Registered bool   `json:"registered"`
	// RelayOnly marks a registration for relays only: a device's
	// session for its relays through this node, beside any ordinary one.
	RelayOnly bool `json:"relay_only,omitempty"`
	// Remote is the device's address as the super peer sees it.
	Remote    string `json:"remote"`
	IPVersion int    `json:"ip_version"`
	Transport string `json:"transport"`
	// AgeSeconds counts from the session's connection; RegisteredSeconds
	// from its registration.
	AgeSeconds        float64 `json:"age_seconds"`
	RegisteredSeconds float64 `json:"registered_seconds,omitempty"`
	// RelaySessions counts the device's relay sessions, waiting or
	// bridged.
	RelaySessions int `json:"relay_sessions"`
}

func serveDevices(p *pooledSuperPeer, w http.ResponseWriter, r *http.Request) error {
	pg, err := readPage(r)
	if err != nil {
		return err
	}
	all := p.Rendezvous().SessionList()
	relays := make(map[identity.PeerID]int)
	for _, s := range p.Relay().SessionList() {
		relays[s.A.Peer]++
		if s.Bridged {
			relays[s.B.Peer]++
		}
	}
	from, to := pg.window(len(all))
	v := DevicesView{PageView: PageView{Total: len(all), Offset: pg.offset, Limit: pg.limit}, Devices: []DeviceView{}}
	now := time.Now()
	for _, s := range all[from:to] {
		d := DeviceView{
			Registered: s.Registered,
			RelayOnly:  s.RelayOnly,
			Remote:     s.Remote.String(),
			IPVersion:  rendezvous.IPVersion(s.Remote.Addr()),
			Transport:  s.Transport,
			AgeSeconds: seconds(now.Sub(s.Connected)),
		}
		if s.Registered {
			d.PeerID = s.Peer.String()
			d.RegisteredSeconds = seconds(now.Sub(s.RegisteredAt))
			d.RelaySessions = relays[s.Peer]
		}
		v.Devices = append(v.Devices, d)
	}
	return writeJSON(w, http.StatusOK, v)
}

// seconds is d in seconds, to the millisecond.
func seconds(d time.Duration) float64 { return float64(d.Milliseconds()) / 1000 }

// RelaysView is the answer of GET /netsody/relays.
type RelaysView struct {
	PageView
	Relays []RelayView `json:"relays"`
}

// RelayView is one relay session on GET /netsody/relays.
type RelayView struct {
	// State is "bridged" or "waiting" (for B).
	State      string  `json:"state"`
	AgeSeconds float64 `json:"age_seconds"`
	A          LegView `json:"a"`
	B          LegView `json:"b"`
}

// LegView is one device's side of a relay session.
type LegView struct {
	PeerID string `json:"peer_id"`
	// Transport is how the relay delivers to this device: h3 (QUIC
	// datagrams), h3_capsule, h2 (capsules); empty while waiting.
	Transport string `json:"transport,omitempty"`
	// FastPath is set while the device takes its datagrams on the fast
	// path.
	FastPath bool `json:"fast_path,omitempty"`
	// Datagrams and Bytes (payload) the relay delivered to this device.
	Datagrams uint64 `json:"datagrams"`
	Bytes     uint64 `json:"bytes"`
}

func legView(l relay.LegInfo, bridged bool) LegView {
	v := LegView{PeerID: l.Peer.String(), FastPath: l.FastPath, Datagrams: l.Datagrams, Bytes: l.Bytes}
	if bridged {
		v.Transport = l.Transport.String()
	}
	return v
}

func serveRelays(p *pooledSuperPeer, w http.ResponseWriter, r *http.Request) error {
	pg, err := readPage(r)
	if err != nil {
		return err
	}
	all := p.Relay().SessionList()
	from, to := pg.window(len(all))
	v := RelaysView{PageView: PageView{Total: len(all), Offset: pg.offset, Limit: pg.limit}, Relays: []RelayView{}}
	now := time.Now()
	for _, s := range all[from:to] {
		rv := RelayView{State: "waiting", AgeSeconds: seconds(now.Sub(s.Started)), A: legView(s.A, true), B: legView(s.B, s.Bridged)}
		if s.Bridged {
			rv.State = "bridged"
		}
		v.Relays = append(v.Relays, rv)
	}
	return writeJSON(w, http.StatusOK, v)
}
