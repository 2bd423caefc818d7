package caddymodule_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/rendezvous"
)

// admissionCaddyfile is siteCaddyfile with the netsody app's admission
// block set to ADMISSION.
const admissionCaddyfile = `{
	admin {ADMIN}
	https_port {PORT}
	http_port {HTTP_PORT}
	skip_install_trust
	storage file_system {DIR}/data
	netsody {
		admission {
			ADMISSION
		}
	}
}

localhost {
	netsody_superpeer
	root * {DIR}/site
	file_server
}
`

func withAdmission(admission string) string {
	return strings.Replace(admissionCaddyfile, "ADMISSION", admission, 1)
}

func as(id *identity.Identity) func(*rendezvous.ClientConfig) {
	return func(c *rendezvous.ClientConfig) { c.Identity = id }
}

// refusal returns the error frame that refused a registration.
func refusal(t *testing.T, err error) *rendezvous.Error {
	t.Helper()
	var e *rendezvous.Error
	if !errors.As(err, &e) {
		t.Fatalf("registration: %v, want an error frame", err)
	}
	return e
}

// wantRefused registers id and wants it refused with code and a message
// containing want.
func wantRefused(t *testing.T, c *testcaddy.Caddy, id *identity.Identity, code rendezvous.ErrorCode, want string) {
	t.Helper()
	_, err := tryRegister(t, c, "127.0.0.1", rendezvous.TransportH3, as(id))
	if e := refusal(t, err); e.Code != code || !strings.Contains(e.Message, want) {
		t.Errorf("refused with %v, want %s with %q", e, code, want)
	}
}

func writeList(t *testing.T, path string, ids ...*identity.Identity) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# test devices\n")
	for _, id := range ids {
		b.WriteString(id.PeerID().String() + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// An allowlist, inline and from a file: listed devices register, others
// are refused with a reason. A reload re-reads the file: a device taken
// off it is told why and its session ends, one put on it may register,
// and the others keep their sessions. A missing or malformed file fails
// the reload with a reason, and the running config goes on, its metrics
// on /metrics with it (Caddy's admin endpoint is the failed config's).
func TestAllowlistAdmission(t *testing.T) {
	a, b, c, inline := newIdentity(t), newIdentity(t), newIdentity(t), newIdentity(t)
	list := filepath.Join(t.TempDir(), "allowlist")
	writeList(t, list, a, b)
	caddyfile := withAdmission("allowlist " + inline.PeerID().String() + " {\n\t\t\t\tfile " + list + "\n\t\t\t}")
	srv := testcaddy.Start(t, caddyfile)
	writeSite(t, srv, "x")
	devA := register(t, srv, "127.0.0.1", rendezvous.TransportH3, as(a))
	devB := register(t, srv, "127.0.0.1", rendezvous.TransportH2, as(b))
	register(t, srv, "127.0.0.1", rendezvous.TransportH3, as(inline))
	wantRefused(t, srv, c, rendezvous.ErrCodeRefused, "netsody.admission.allowlist: peer ID "+c.PeerID().String()+" is not on this super peer's allowlist")

	writeList(t, list, a, c)
	srv.Reload(t, caddyfile)
	select {
	case <-devB.s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the device taken off the list was not told")
	}
	if e := refusal(t, devB.s.Err()); e.Code != rendezvous.ErrCodeRefused || !strings.Contains(e.Message, "admission rules changed") {
		t.Errorf("the device taken off the list: %v", e)
	}
	register(t, srv, "127.0.0.1", rendezvous.TransportH2, as(c))
	if err := devA.s.Err(); err != nil {
		t.Errorf("a listed device lost its session: %v", err)
	}

	os.WriteFile(list, []byte(a.PeerID().String()+"\nnonsense\n"), 0o644)
	if err := srv.TryReload(t, caddyfile); err == nil || !strings.Contains(err.Error(), list+":2: identity: peer ID must be 64 hex digits") {
		t.Errorf("a malformed allowlist: %v", err)
	}
	os.Remove(list)
	if err := srv.TryReload(t, caddyfile); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("a missing allowlist: %v", err)
	}
	// The running config's list still applies.
	register(t, srv, "127.0.0.1", rendezvous.TransportH3, as(c))
	wantRefused(t, srv, b, rendezvous.ErrCodeRefused, "not on this super peer's allowlist")
	if err := devA.s.Err(); err != nil {
		t.Errorf("a failed reload ended a session: %v", err)
	}
	m := relayMetrics(t, srv)
	for _, result := range []string{"admitted", "refused"} {
		if series := `netsody_superpeer_admission_decisions_total{module="netsody.admission.allowlist",result="` + result + `"}`; m[series] == 0 {
			t.Errorf("%s not counted", series)
		}
	}
}

// pow admits a device whose identity carries enough proof of work and
// refuses one without, saying how to mine one; a reload that drops the
// module keeps every session.
func TestProofOfWorkAdmission(t *testing.T) {
	const bits = 10
	good, weak := newIdentity(t), newIdentity(t)
	var err error
	if good.ProofOfWork, err = identity.MineProofOfWork(context.Background(), good.PeerID(), bits, nil); err != nil {
		t.Fatal(err)
	}
	for identity.ProofOfWorkBits(weak.PeerID(), weak.ProofOfWork) >= bits {
		weak.ProofOfWork++
	}
	srv := testcaddy.Start(t, withAdmission("pow 10"))
	writeSite(t, srv, "x")
	dev := register(t, srv, "127.0.0.1", rendezvous.TransportH3, as(good))
	wantRefused(t, srv, weak, rendezvous.ErrCodeRefused, "netsody.admission.pow: identity: proof of work")
	wantRefused(t, srv, weak, rendezvous.ErrCodeRefused, "netsody-peer keygen --pow 10")

	srv.Reload(t, withAdmission("allow_all"))
	register(t, srv, "127.0.0.1", rendezvous.TransportH2, as(weak))
	if err := dev.s.Err(); err != nil {
		t.Errorf("a reload that admits more ended a session: %v", err)
	}
}

// http asks a service: a device it admits registers, one it refuses is
// told the service's reason, and while it is down the device is told to
// retry later (fail closed).
func TestHTTPAdmissionThroughCaddy(t *testing.T) {
	yes, no := newIdentity(t), newIdentity(t)
	var mu sync.Mutex
	asked := map[string]int{}
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body strings.Builder
		buf := make([]byte, 512)
		n, _ := r.Body.Read(buf)
		body.Write(buf[:n])
		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(body.String(), `"peer_id":"`+yes.PeerID().String()+`"`) {
			asked["yes"]++
			w.WriteHeader(http.StatusNoContent)
			return
		}
		asked["no"]++
		http.Error(w, "unknown device", http.StatusForbidden)
	}))
	defer svc.Close()
	caddyfile := withAdmission("http " + svc.URL + " {\n\t\t\t\ttimeout 1s\n\t\t\t}")
	srv := testcaddy.Start(t, caddyfile)
	writeSite(t, srv, "x")
	register(t, srv, "127.0.0.1", rendezvous.TransportH3, as(yes))
	wantRefused(t, srv, no, rendezvous.ErrCodeRefused, "netsody.admission.http: the admission service refused this peer ID (403 Forbidden): unknown device")
	timesAsked := func() int {
		mu.Lock()
		defer mu.Unlock()
		return asked["yes"]
	}
	// A reload that keeps admission as it was checks no one again (a
	// recheck would ask: the reloaded module's cache is empty); one that
	// changes it does.
	srv.Reload(t, caddyfile)
	time.Sleep(300 * time.Millisecond) // a recheck asks within 10 ms (rendezvous.recheckRate)
	if n := timesAsked(); n != 1 {
		t.Errorf("a reload without changes asked the service %d times about a registered device, want once in all", n)
	}
	srv.Reload(t, strings.Replace(caddyfile, "timeout 1s", "timeout 2s", 1))
	const kept = `netsody_superpeer_admission_rechecks_total{outcome="kept"}`
	for deadline := time.Now().Add(10 * time.Second); relayMetrics(t, srv)[kept] < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a reload that changed admission checked no one again")
		}
	}
	if n := timesAsked(); n != 2 {
		t.Errorf("after the recheck, the service was asked %d times about the device, want 2", n)
	}
	svc.Close()
	other := newIdentity(t)
	wantRefused(t, srv, other, rendezvous.ErrCodeTryLater, "retry later")
	// Answers are cached: the admitted device's next session asks no one.
	register(t, srv, "127.0.0.1", rendezvous.TransportH2, as(yes))
	if n := timesAsked(); n != 2 {
		t.Errorf("the service was asked %d times about the admitted device, want 2", n)
	}
}

// http with max_concurrent and fail_open, through Caddy: however many
// devices register at once, the service sees at most max_concurrent
// callouts, and every device is admitted once it answers; while the
// service is down, a device is admitted (fail open) with a warning in
// Caddy's log. The decisions are counted by module.
func TestHTTPAdmissionFailOpenAndConcurrencyThroughCaddy(t *testing.T) {
	const maxConcurrent, devices = 2, 6
	var mu sync.Mutex
	var inFlight, atOnce int
	gate := make(chan struct{})
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		atOnce = max(atOnce, inFlight)
		mu.Unlock()
		defer func() {
			mu.Lock()
			inFlight--
			mu.Unlock()
		}()
		select {
		case <-gate:
			w.WriteHeader(http.StatusNoContent)
		case <-r.Context().Done():
		}
	}))
	defer svc.Close()
	srv := testcaddy.Start(t, withAdmission("http "+svc.URL+" {\n\t\t\t\ttimeout 8s\n\t\t\t\tmax_concurrent 2\n\t\t\t\tfail_open\n\t\t\t}"))
	writeSite(t, srv, "x")

	errs := make(chan error, devices)
	for range devices {
		go func() {
			_, err := tryRegister(t, srv, "127.0.0.1", rendezvous.TransportH3)
			errs <- err
		}()
	}
	held := func() int {
		mu.Lock()
		defer mu.Unlock()
		return inFlight
	}
	for deadline := time.Now().Add(5 * time.Second); held() < maxConcurrent; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d callouts held, want %d", held(), maxConcurrent)
		}
	}
	time.Sleep(200 * time.Millisecond) // room for a third callout to arrive, if it could
	close(gate)
	for range devices {
		if err := <-errs; err != nil {
			t.Errorf("a device waiting for a free callout: %v", err)
		}
	}
	mu.Lock()
	if atOnce != maxConcurrent {
		t.Errorf("%d callouts at once, want max_concurrent %d", atOnce, maxConcurrent)
	}
	mu.Unlock()

	svc.Close()
	register(t, srv, "127.0.0.1", rendezvous.TransportH2) // fails the test if refused
	// Caddy's output reaches the test through a pipe, a moment after the
	// registration's answer.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := srv.WaitLog(ctx, "admission service failed; admitting (fail_open)"); err != nil {
		t.Errorf("no warning for a fail-open admission: %v; logs:\n%s", err, srv.Logs())
	}
	const admitted = `netsody_superpeer_admission_decisions_total{module="netsody.admission.http",result="admitted"}`
	if got := relayMetrics(t, srv)[admitted]; got != devices+1 {
		t.Errorf("%s = %v, want %d", admitted, got, devices+1)
	}
}
