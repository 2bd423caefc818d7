package caddymodule_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/rendezvous"
)

// admin sends a request to the netsody admin API of c and returns the
// status and body; out, if set, gets the JSON.
func admin(t *testing.T, c *testcaddy.Caddy, method, path, body string, out any) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+c.Admin+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v\n%s", method, path, err, b)
		}
	}
	return resp.StatusCode, string(b)
}

// wantAdmin wants a request answered with status and a body containing
// want.
func wantAdmin(t *testing.T, c *testcaddy.Caddy, method, path, body string, status int, want string) {
	t.Helper()
	got, b := admin(t, c, method, path, body, nil)
	var e struct{ Error string }
	if json.Unmarshal([]byte(b), &e) == nil && e.Error != "" {
		b = e.Error // Caddy's {"error": "..."}, unescaped
	}
	if got != status || !strings.Contains(b, want) {
		t.Errorf("%s %s %.100s: %d %.300s\nwant %d with %q", method, path, body, got, b, status, want)
	}
}

// at is where a device registers: through which address of loopback,
// over which transport.
type at struct {
	host string
	tr   rendezvous.Transport
}

// registerAt registers a device at each place, in order.
func registerAt(t *testing.T, c *testcaddy.Caddy, where ...at) []*device {
	t.Helper()
	devs := make([]*device, len(where))
	for i, w := range where {
		devs[i] = register(t, c, w.host, w.tr)
	}
	return devs
}

type stateView struct {
	Serving     bool `json:"serving"`
	Devices     int  `json:"devices"`
	Sessions    int  `json:"sessions"`
	MaxSessions int  `json:"max_sessions"`
	ByTransport []struct {
		IPVersion int    `json:"ip_version"`
		Transport string `json:"transport"`
		Devices   int    `json:"devices"`
	} `json:"devices_by_transport"`
	Relay   map[string]float64 `json:"relay"`
	Budgets []struct {
		Name  string  `json:"name"`
		Limit float64 `json:"limit"`
		Use   float64 `json:"use"`
	} `json:"budgets"`
}

type deviceView struct {
	PeerID        string  `json:"peer_id"`
	Registered    bool    `json:"registered"`
	Remote        string  `json:"remote"`
	IPVersion     int     `json:"ip_version"`
	Transport     string  `json:"transport"`
	AgeSeconds    float64 `json:"age_seconds"`
	RelaySessions int     `json:"relay_sessions"`
}

type devicesView struct {
	Total, Offset, Limit int
	Devices              []deviceView
}

type legView struct {
	PeerID    string `json:"peer_id"`
	Transport string
	Datagrams uint64
	Bytes     uint64
}

type relaysView struct {
	Total  int
	Relays []struct {
		State      string
		AgeSeconds float64 `json:"age_seconds"`
		A, B       legView
	}
}

// The state, devices and relays routes read back what three devices over
// h3 and h2, on IPv4 and IPv6, and a relay pair between two of them do;
// pages cover every device once; bad queries get 400 with the reason; the
// metrics show the same; health answers 200.
func TestAdminStateAndPages(t *testing.T) {
	c := startSite(t, "site")
	devs := registerAt(t, c, at{"127.0.0.1", rendezvous.TransportH3}, at{"127.0.0.1", rendezvous.TransportH2}, at{"::1", rendezvous.TransportH3})
	a, b, v6 := devs[0], devs[1], devs[2]
	ca, cb := relayPair(t, a, b)
	// An HTTP datagram's payload is the context ID (one byte) and the
	// packet.
	const n, size, payload = 20, 1000, 1001
	for range n {
		if _, err := ca.WriteTo(make([]byte, size), nil); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 2000)
	cb.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range n {
		if _, _, err := cb.ReadFrom(buf); err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
	}

	var st stateView
	if s, body := admin(t, c, http.MethodGet, "/netsody/state", "", &st); s != http.StatusOK {
		t.Fatalf("state: %d %s", s, body)
	}
	if !st.Serving || st.Devices != 3 || st.Sessions != 3 || st.MaxSessions == 0 || st.Relay["sessions_bridged"] != 1 || st.Relay["max_waiting"] == 0 {
		t.Errorf("state: %+v", st)
	}
	budgets := map[string]float64{}
	for _, b := range st.Budgets {
		if b.Limit > 0 {
			budgets[b.Name] = b.Use
		}
	}
	if len(budgets) != 4 || budgets["devices"] != 3 || budgets["device_sessions"] < 1 {
		t.Errorf("state's budgets: %+v, want devices, device_sessions, device_bandwidth and total_bandwidth with their use", st.Budgets)
	}
	byTr := map[string]int{}
	for _, bt := range st.ByTransport {
		byTr[bt.Transport+"/"+string(rune('0'+bt.IPVersion))] = bt.Devices
	}
	if byTr["h3/4"] != 1 || byTr["h2/4"] != 1 || byTr["h3/6"] != 1 || byTr["h2/6"] != 0 {
		t.Errorf("devices by transport: %v", byTr)
	}

	// Two pages of two cover the three devices once.
	var seen []deviceView
	for _, off := range []string{"0", "2"} {
		var pg devicesView
		if s, body := admin(t, c, http.MethodGet, "/netsody/devices?limit=2&offset="+off, "", &pg); s != http.StatusOK {
			t.Fatalf("devices: %d %s", s, body)
		}
		if pg.Total != 3 || pg.Limit != 2 {
			t.Errorf("page at %s: %+v", off, pg)
		}
		seen = append(seen, pg.Devices...)
	}
	want := map[identity.PeerID]struct {
		tr     string
		ip     int
		relays int
	}{a.id.PeerID(): {"h3", 4, 1}, b.id.PeerID(): {"h2", 4, 1}, v6.id.PeerID(): {"h3", 6, 0}}
	if len(seen) != 3 {
		t.Fatalf("pages hold %d devices, want 3: %+v", len(seen), seen)
	}
	for _, d := range seen {
		p, _ := identity.ParsePeerID(d.PeerID)
		w, ok := want[p]
		if !ok || !d.Registered || d.Transport != w.tr || d.IPVersion != w.ip || d.RelaySessions != w.relays || d.Remote == "" || d.AgeSeconds <= 0 {
			t.Errorf("device %+v, want %+v", d, w)
		}
		delete(want, p)
	}

	var rl relaysView
	if s, body := admin(t, c, http.MethodGet, "/netsody/relays", "", &rl); s != http.StatusOK || rl.Total != 1 || len(rl.Relays) != 1 {
		t.Fatalf("relays: %d %s", s, body)
	}
	r := rl.Relays[0]
	legs := map[string]legView{r.A.PeerID: r.A, r.B.PeerID: r.B}
	la, lb := legs[a.id.PeerID().String()], legs[b.id.PeerID().String()]
	if r.State != "bridged" || la.Transport != "h3" || lb.Transport != "h2" || lb.Datagrams != n || lb.Bytes != n*payload || la.Datagrams != 0 {
		t.Errorf("relay %+v", r)
	}

	// v6 asks to relay to a, who never answers: a session waits.
	ctx, cancel := context.WithCancel(context.Background())
	waited := make(chan struct{})
	go func() { defer close(waited); dialRelay(ctx, v6, a) }()
	// Its leg ends with v6's registration, which a kick ends at once (a
	// canceled dial waits for the pair timeout).
	defer func() {
		cancel()
		if s, body := admin(t, c, http.MethodPost, "/netsody/kick", `{"peer_id":"`+v6.id.PeerID().String()+`"}`, nil); s != http.StatusOK {
			t.Errorf("kick: %d %s", s, body)
		}
		<-waited
	}()
	for deadline := time.Now().Add(5 * time.Second); rl.Total < 2 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		rl = relaysView{}
		admin(t, c, http.MethodGet, "/netsody/relays?offset=1", "", &rl)
	}
	if w := rl.Relays; rl.Total != 2 || len(w) != 1 || w[0].State != "waiting" || w[0].A.PeerID != v6.id.PeerID().String() || w[0].B.PeerID != a.id.PeerID().String() || w[0].A.Transport != "h3" || w[0].B.Transport != "" {
		t.Errorf("waiting relay: %+v", rl)
	}

	for _, q := range []struct{ query, want string }{
		{"?limit=0", "limit \"0\" must be a whole number from 1 to 1000"},
		{"?limit=1001", "from 1 to 1000"},
		{"?limit=x", "from 1 to 1000"},
		{"?offset=-1", "offset \"-1\" must be a whole number"},
		{"?page=2", "unknown query parameter \"page\""},
		{"?limit=1&limit=2", "limit is given 2 times"},
	} {
		wantAdmin(t, c, http.MethodGet, "/netsody/devices"+q.query, "", http.StatusBadRequest, q.want)
		wantAdmin(t, c, http.MethodGet, "/netsody/relays"+q.query, "", http.StatusBadRequest, q.want)
	}
	wantAdmin(t, c, http.MethodPost, "/netsody/state", "", http.StatusMethodNotAllowed, "takes GET")
	wantAdmin(t, c, http.MethodGet, "/netsody/health", "", http.StatusOK, `"status":"serving"`)
	wantAdmin(t, c, http.MethodGet, "/netsody/nothing", "", http.StatusNotFound, "")

	m := c.Metrics(t)
	for series, want := range map[string]float64{
		`netsody_superpeer_devices_by_transport{ip_version="4",transport="h3"}`:    1,
		`netsody_superpeer_devices_by_transport{ip_version="4",transport="h2"}`:    1,
		`netsody_superpeer_devices_by_transport{ip_version="6",transport="h3"}`:    1,
		`netsody_superpeer_registration_results_total{result="accepted"}`:          3,
		`netsody_superpeer_relay_sessions{state="bridged"}`:                        1,
		`netsody_superpeer_relay_transport_datagrams_total{transport="h2"}`:        n,
		`netsody_superpeer_relay_transport_bytes_total{transport="h2"}`:            n * payload,
		`netsody_superpeer_introduction_results_total{result="introduced"}`:        1,
		`netsody_superpeer_serving`:                                                1,
		`netsody_superpeer_relay_transport_datagrams_total{transport="h3"}`:        0,
		`netsody_superpeer_relay_transport_datagrams_total{transport="fast_path"}`: 0,
	} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
}

// sessionEnded waits for d's session to end and returns its error frame.
func sessionEnded(t *testing.T, d *device) *rendezvous.Error {
	t.Helper()
	select {
	case <-d.s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the session did not end")
	}
	var e *rendezvous.Error
	if !errors.As(d.s.Err(), &e) {
		t.Fatalf("session ended with %v, want an error frame", d.s.Err())
	}
	return e
}

// A kick ends the device's session with "ended by operator" and its relay
// session with it; the other devices stay. Bad bodies get 400, an
// unknown device 404.
func TestAdminKick(t *testing.T) {
	c := startSite(t, "site")
	devs := registerAt(t, c, at{"127.0.0.1", rendezvous.TransportH3}, at{"127.0.0.1", rendezvous.TransportH2}, at{"127.0.0.1", rendezvous.TransportH3})
	a, b, other := devs[0], devs[1], devs[2]
	ca, _ := relayPair(t, a, b)

	wantAdmin(t, c, http.MethodPost, "/netsody/kick", `{"peer_id":"`+a.id.PeerID().String()+`"}`, http.StatusOK, `"ended":1`)
	if e := sessionEnded(t, a); e.Code != rendezvous.ErrCodeEndedByOperator || !strings.Contains(e.Message, "operator ended this session") {
		t.Errorf("kicked device got %v", e)
	}
	ca.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := ca.ReadFrom(make([]byte, 100)); err == nil || errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "timeout") {
		t.Errorf("the kicked device's relay session: read %v, want it ended", err)
	}
	checkSessions(t, []*device{b, other})
	if m := c.Metrics(t); m["netsody_superpeer_operator_ended_total"] != 1 {
		t.Errorf("operator_ended_total = %v", m["netsody_superpeer_operator_ended_total"])
	}

	for _, tc := range []struct {
		body, want string
		status     int
	}{
		{`{"peer_id":"` + a.id.PeerID().String() + `"}`, "is registered", http.StatusNotFound},
		{`{"peer_id":"zz"}`, "peer_id \"zz\"", http.StatusBadRequest},
		{`{"prefix":"10.0.0.0/8"}`, `the body must be {"peer_id"`, http.StatusBadRequest},
		{`{"peer":"x"}`, "unknown field", http.StatusBadRequest},
		{``, "the body must be", http.StatusBadRequest},
		{`{"peer_id":"` + a.id.PeerID().String() + `"} {}`, "one JSON object", http.StatusBadRequest},
		{`{"peer_id":"` + strings.Repeat("0", 5000) + `"}`, "over 4096 bytes", http.StatusRequestEntityTooLarge},
	} {
		wantAdmin(t, c, http.MethodPost, "/netsody/kick", tc.body, tc.status, tc.want)
	}
	wantAdmin(t, c, http.MethodGet, "/netsody/kick", "", http.StatusMethodNotAllowed, "takes POST")
}

type denyList struct {
	Entries []struct{ Kind, Entry string }
	Max     int
}

// A deny of a peer ID and of a prefix ends the matching registered
// devices and refuses them at registration with the entry named; the
// list is listed, survives a `caddy reload`, and a removed entry lets
// the device back. The metrics count the decisions across the reload.
func TestAdminDeny(t *testing.T) {
	c := startSite(t, "site")
	devs := registerAt(t, c, at{"127.0.0.1", rendezvous.TransportH3}, at{"::1", rendezvous.TransportH2}, at{"127.0.0.1", rendezvous.TransportH2})
	x, y, z := devs[0], devs[1], devs[2]
	xid := x.id.PeerID().String()

	wantAdmin(t, c, http.MethodPost, "/netsody/deny", `{"peer_id":"`+xid+`"}`, http.StatusOK, `"ended":1`)
	if e := sessionEnded(t, x); e.Code != rendezvous.ErrCodeEndedByOperator || !strings.Contains(e.Message, "denied peer_id "+xid) {
		t.Errorf("denied device got %v", e)
	}
	wantRefused(t, c, x.id, rendezvous.ErrCodeRefused, "denied by the super peer's operator (peer_id "+xid+")")
	wantAdmin(t, c, http.MethodPost, "/netsody/deny", `{"prefix":"::1"}`, http.StatusOK, `"entry":"::1/128"`)
	if e := sessionEnded(t, y); e.Code != rendezvous.ErrCodeEndedByOperator {
		t.Errorf("device in the denied prefix got %v", e)
	}
	if _, err := tryRegister(t, c, "::1", rendezvous.TransportH3); err == nil || !strings.Contains(err.Error(), "(prefix ::1/128)") {
		t.Errorf("registration from a denied prefix: %v", err)
	}
	// Again: listed once, ends nobody.
	wantAdmin(t, c, http.MethodPost, "/netsody/deny", `{"prefix":"::1/128"}`, http.StatusOK, `"ended":0`)

	before := c.Metrics(t)
	c.Reload(t, strings.Replace(siteCaddyfile, "file_server", "file_server\n\theader X-Reloaded yes", 1))
	var list denyList
	admin(t, c, http.MethodGet, "/netsody/deny", "", &list)
	got := []string{}
	for _, e := range list.Entries {
		got = append(got, e.Kind+" "+e.Entry)
	}
	if !slices.Equal(got, []string{"peer_id " + xid, "prefix ::1/128"}) || list.Max != 4096 {
		t.Errorf("deny list after reload: %v (max %d)", got, list.Max)
	}
	wantRefused(t, c, x.id, rendezvous.ErrCodeRefused, "denied by the super peer's operator")
	checkSessions(t, []*device{z, register(t, c, "127.0.0.1", rendezvous.TransportH3)})
	after := c.Metrics(t)
	for _, series := range []string{
		`netsody_superpeer_admission_decisions_total{module="operator_deny",result="refused"}`,
		`netsody_superpeer_registration_results_total{result="accepted"}`,
		`netsody_superpeer_registration_results_total{result="refused"}`,
	} {
		if after[series] <= before[series] {
			t.Errorf("%s: %v before the reload, %v after; want it to go on counting", series, before[series], after[series])
		}
	}
	if n := after["netsody_superpeer_deny_entries"]; n != 2 {
		t.Errorf("netsody_superpeer_deny_entries = %v after the reload, want 2", n)
	}

	wantAdmin(t, c, http.MethodDelete, "/netsody/deny", `{"peer_id":"`+xid+`"}`, http.StatusOK, `"removed":true`)
	register(t, c, "127.0.0.1", rendezvous.TransportH3, as(x.id))
	wantAdmin(t, c, http.MethodDelete, "/netsody/deny", `{"peer_id":"`+xid+`"}`, http.StatusNotFound, "is not on the deny list")
	wantAdmin(t, c, http.MethodDelete, "/netsody/deny", `{"prefix":"::1/128"}`, http.StatusOK, `"removed":true`)
	register(t, c, "::1", rendezvous.TransportH3)

	for _, tc := range []struct{ body, want string }{
		{`{"prefix":"nonsense"}`, "neither a CIDR prefix"},
		{`{"prefix":"::ffff:10.0.0.0/104"}`, "in IPv4 notation"},
		{`{"peer_id":"` + xid + `","prefix":"::1"}`, "the body must be"},
		{`{}`, "the body must be"},
	} {
		wantAdmin(t, c, http.MethodPost, "/netsody/deny", tc.body, http.StatusBadRequest, tc.want)
	}
}
