package caddymodule

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

// testVector is Netsody's proof-of-work test vector: 24 bits.
const testVectorPeer = "9331341e09d313baa4027a2fccea4fd471b9637f2305de714009c46b9192e006"

const testVectorNonce = -2130520098

func newPeer(t *testing.T) identity.PeerID {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id.PeerID()
}

func provision(t *testing.T, m caddy.Provisioner) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := m.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if v, ok := m.(caddy.Validator); ok {
		if err := v.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	if c, ok := m.(caddy.CleanerUpper); ok {
		t.Cleanup(func() { c.Cleanup() })
	}
}

// recorder is an Admitter that records that it was asked.
type recorder struct {
	name  string
	asked *[]string
	err   error
}

func (r recorder) Admit(context.Context, rendezvous.AdmissionRequest) error {
	*r.asked = append(*r.asked, r.name)
	return r.err
}

// The chain asks every module, stops at the first refusal, and names
// the module that refused; one of allow_all alone admits without a call.
func TestAdmissionChain(t *testing.T) {
	var asked []string
	c := admissionChain{
		mods:  []Admitter{recorder{"a", &asked, nil}, recorder{"b", &asked, errors.New("no")}, recorder{"c", &asked, nil}},
		names: []string{"netsody.admission.a", "netsody.admission.b", "netsody.admission.c"},
	}
	err := c.admit()(context.Background(), rendezvous.AdmissionRequest{})
	if err == nil || err.Error() != "netsody.admission.b: no" || strings.Join(asked, ",") != "a,b" {
		t.Errorf("err %v after %v", err, asked)
	}
	if (&admissionChain{mods: []Admitter{new(AllowAll)}}).admit() != nil || (&admissionChain{}).admit() != nil {
		t.Error("allow_all alone makes an Admit")
	}
}

// The modules sort cheapest first, whatever the configuration's order.
func TestAdmissionOrder(t *testing.T) {
	mods := []Admitter{new(HTTPAdmission), new(ProofOfWork), new(Allowlist), new(AllowAll)}
	for i := 1; i < len(mods); i++ {
		if admissionCost(mods[i-1]) <= admissionCost(mods[i]) {
			t.Errorf("%T does not cost more than %T", mods[i-1], mods[i])
		}
	}
}

func TestProofOfWorkModule(t *testing.T) {
	vector, _ := identity.ParsePeerID(testVectorPeer)
	p := &ProofOfWork{}
	provision(t, p)
	if p.Difficulty != identity.DefaultProofOfWorkBits {
		t.Errorf("default difficulty %d", p.Difficulty)
	}
	if err := p.Admit(context.Background(), rendezvous.AdmissionRequest{Peer: vector, ProofOfWork: testVectorNonce}); err != nil {
		t.Error(err)
	}
	err := p.Admit(context.Background(), rendezvous.AdmissionRequest{Peer: vector, ProofOfWork: testVectorNonce + 1})
	if err == nil || !strings.Contains(err.Error(), "24 are required; mine one with `netsody-peer keygen --pow 24`") {
		t.Errorf("a wrong nonce: %v", err)
	}
	if err := (&ProofOfWork{Difficulty: 33}).Validate(); err == nil {
		t.Error("difficulty 33 accepted")
	}
}

// An allowlist file is read whole at provision; a missing, malformed or
// oversized one fails it, naming the file and line.
func TestAllowlistFile(t *testing.T) {
	dir := t.TempDir()
	a, b := newPeer(t), newPeer(t)
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("# devices\n\n"+a.String()+"\n  "+strings.ToUpper(b.String())+"  \n"), 0o644)
	l := &Allowlist{File: good}
	provision(t, l)
	for _, p := range []identity.PeerID{a, b} {
		if err := l.Admit(context.Background(), rendezvous.AdmissionRequest{Peer: p}); err != nil {
			t.Error(err)
		}
	}
	other := newPeer(t)
	if err := l.Admit(context.Background(), rendezvous.AdmissionRequest{Peer: other}); err == nil || !strings.Contains(err.Error(), "not on this super peer's allowlist") {
		t.Errorf("an unlisted peer: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte(a.String()+"\nnot-a-peer\n"), 0o644)
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, maxAllowlistFile+1), 0o644)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	for _, tc := range []struct {
		l    Allowlist
		want string
	}{
		{Allowlist{File: filepath.Join(dir, "missing")}, "no such file"},
		{Allowlist{File: bad}, bad + ":2: identity: peer ID must be 64 hex digits"},
		{Allowlist{File: big}, "is over 67108864 bytes"},
		{Allowlist{Peers: []string{"xyz"}}, `peer "xyz"`},
		{Allowlist{}, "no peer IDs"},
	} {
		if err := tc.l.Provision(ctx); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.l, err, tc.want)
		}
	}
}

func TestAdmissionCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"netsody {\n admission x\n}", "wrong argument count"},
		{"netsody {\n admission {\n nope\n }\n}", "netsody.admission.nope"},
		{"netsody {\n admission {\n pow 33\n }\n}", "pow must be 1 to 32 leading zero bits"},
		{"netsody {\n admission {\n pow 3 4\n }\n}", "wrong argument count"},
		{"netsody {\n admission {\n pow {\n x\n }\n }\n}", "pow takes no block"},
		{"netsody {\n admission {\n allow_all x\n }\n}", "wrong argument count"},
		{"netsody {\n admission {\n allowlist {\n bogus\n }\n }\n}", `unknown allowlist option "bogus"`},
		{"netsody {\n admission {\n allowlist {\n file\n }\n }\n}", "wrong argument count"},
		{"netsody {\n admission {\n http\n }\n}", "wrong argument count"},
		{"netsody {\n admission {\n http http://x {\n timeout soon\n }\n }\n}", "timeout must be a positive duration"},
		{"netsody {\n admission {\n http http://x {\n max_concurrent 0\n }\n }\n}", "max_concurrent must be a positive whole number"},
		{"netsody {\n admission {\n http http://x {\n fail_open yes\n }\n }\n}", "wrong argument count"},
		{"netsody {\n admission {\n http http://x {\n bogus\n }\n }\n}", `unknown http admission option "bogus"`},
		{"netsody {\n bogus 1\n}", `unknown netsody option "bogus"`},
	} {
		_, err := parseGlobalOption(caddyfile.NewTestDispenser(tc.in), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want it to contain %q", tc.in, err, tc.want)
		}
	}
	if err := (&HTTPAdmission{URL: "ftp://x"}).Validate(); err == nil || !strings.Contains(err.Error(), "absolute http or https URL") {
		t.Errorf("an ftp URL: %v", err)
	}
}

// admissionServer is an admission service for tests: it answers with
// status, after delay or once gate closes, and counts requests and the
// most at once.
type admissionServer struct {
	*httptest.Server
	status           atomic.Int32
	delay            atomic.Int64
	gate             atomic.Pointer[chan struct{}]
	requests         atomic.Int32
	inFlight, atOnce atomic.Int32
}

func newAdmissionServer(t *testing.T) *admissionServer {
	s := &admissionServer{}
	stop := make(chan struct{}) // ends the handlers at the test's end
	s.status.Store(http.StatusNoContent)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		n := s.inFlight.Add(1)
		for m := s.atOnce.Load(); n > m && !s.atOnce.CompareAndSwap(m, n); m = s.atOnce.Load() {
		}
		gate := make(chan struct{})
		close(gate)
		if g := s.gate.Load(); g != nil {
			gate = *g
		}
		select {
		case <-time.After(time.Duration(s.delay.Load())):
			select {
			case <-gate:
			case <-r.Context().Done():
			case <-stop:
			}
		case <-r.Context().Done():
		case <-stop:
		}
		// Before the answer: the client takes its next callout once it
		// has it.
		s.inFlight.Add(-1)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.WriteHeader(int(s.status.Load()))
		w.Write([]byte("not a customer\nmore\n"))
	}))
	t.Cleanup(func() { close(stop); s.Close() })
	return s
}

func TestHTTPAdmissionAnswers(t *testing.T) {
	srv := newAdmissionServer(t)
	ask := func(h *HTTPAdmission) error {
		return h.Admit(context.Background(), rendezvous.AdmissionRequest{Peer: newPeer(t)})
	}
	h := &HTTPAdmission{URL: srv.URL, Timeout: caddyDuration("200ms")}
	provision(t, h)
	if err := ask(h); err != nil {
		t.Errorf("2xx: %v", err)
	}
	srv.status.Store(http.StatusForbidden)
	if err := ask(h); err == nil || errors.Is(err, rendezvous.ErrTryLater) || !strings.Contains(err.Error(), "refused this peer ID (403 Forbidden): not a customer") {
		t.Errorf("403: %v", err)
	}
	srv.status.Store(http.StatusFound)
	if err := ask(h); err == nil || errors.Is(err, rendezvous.ErrTryLater) {
		t.Errorf("302: %v", err)
	}
	open := &HTTPAdmission{URL: srv.URL, Timeout: caddyDuration("200ms"), FailOpen: true}
	provision(t, open)
	srv.status.Store(http.StatusServiceUnavailable)
	if err := ask(h); !errors.Is(err, rendezvous.ErrTryLater) || !strings.Contains(err.Error(), "503") {
		t.Errorf("503, fail closed: %v", err)
	}
	if err := ask(open); err != nil {
		t.Errorf("503, fail open: %v", err)
	}
	srv.status.Store(http.StatusOK)
	srv.delay.Store(int64(time.Second))
	if err := ask(h); !errors.Is(err, rendezvous.ErrTryLater) || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("a timeout, fail closed: %v", err)
	}
	if err := ask(open); err != nil {
		t.Errorf("a timeout, fail open: %v", err)
	}
	srv.delay.Store(0)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	for _, failOpen := range []bool{false, true} {
		h := &HTTPAdmission{URL: down.URL, FailOpen: failOpen}
		provision(t, h)
		if err := ask(h); (err == nil) != failOpen || (err != nil && !errors.Is(err, rendezvous.ErrTryLater)) {
			t.Errorf("unreachable, fail open %v: %v", failOpen, err)
		}
	}
}

// However many registrations ask at once, at most max_concurrent
// callouts run, and the others wait for one within the timeout; those
// that find none are told to retry later, not left hanging.
func TestHTTPAdmissionConcurrency(t *testing.T) {
	srv := newAdmissionServer(t)
	gate := make(chan struct{})
	srv.gate.Store(&gate)
	h := &HTTPAdmission{URL: srv.URL, MaxConcurrent: 3, Timeout: caddyDuration("5s")}
	provision(t, h)
	askAll := func(n int) (errs chan error) {
		errs = make(chan error, n)
		for range n {
			go func() { errs <- h.Admit(context.Background(), rendezvous.AdmissionRequest{Peer: newPeer(t)}) }()
		}
		return errs
	}
	errs := askAll(20)
	for deadline := time.Now().Add(5 * time.Second); srv.inFlight.Load() < 3 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // room for a fourth to arrive, if it could
	close(gate)
	for range 20 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := srv.atOnce.Load(); n != 3 {
		t.Errorf("%d callouts at once, want 3", n)
	}

	// A service that holds its callouts: a device that finds none free
	// before its registration's deadline is told to retry later, not
	// left hanging; one whose callout takes longer than the timeout too.
	hold := make(chan struct{})
	srv.gate.Store(&hold)
	h.Timeout = caddyDuration("300ms")
	errs = askAll(3)
	for deadline := time.Now().Add(5 * time.Second); srv.inFlight.Load() < 3 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := h.Admit(ctx, rendezvous.AdmissionRequest{Peer: newPeer(t)})
	if !errors.Is(err, rendezvous.ErrTryLater) || !strings.Contains(err.Error(), "all 3 admission callouts are busy") {
		t.Errorf("no free callout: %v", err)
	}
	for range 3 {
		if err := <-errs; !errors.Is(err, rendezvous.ErrTryLater) || !strings.Contains(err.Error(), "deadline exceeded") {
			t.Errorf("a callout past the timeout: %v", err)
		}
	}
}

// Answers are cached by peer ID for cache_ttl, refusals too; failures
// are not; the cache keeps to cache_size.
func TestHTTPAdmissionCache(t *testing.T) {
	srv := newAdmissionServer(t)
	h := &HTTPAdmission{URL: srv.URL, CacheSize: 2, CacheTTL: caddyDuration("200ms")}
	provision(t, h)
	ask := func(p identity.PeerID) error {
		return h.Admit(context.Background(), rendezvous.AdmissionRequest{Peer: p})
	}
	a, b, c := newPeer(t), newPeer(t), newPeer(t)
	ask(a)
	ask(a)
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("%d callouts for one peer twice, want 1", n)
	}
	srv.status.Store(http.StatusForbidden)
	if ask(b) == nil || ask(b) == nil || srv.requests.Load() != 2 {
		t.Errorf("a refusal not cached: %d callouts", srv.requests.Load())
	}
	ask(c)
	if n := h.cache.len(); n != 2 {
		t.Errorf("%d cached, want at most 2", n)
	}
	time.Sleep(250 * time.Millisecond) // the TTL
	srv.status.Store(http.StatusBadGateway)
	before := srv.requests.Load()
	if !errors.Is(ask(c), rendezvous.ErrTryLater) || !errors.Is(ask(c), rendezvous.ErrTryLater) || srv.requests.Load() != before+2 {
		t.Errorf("an expired answer, or a failure, was kept: %d callouts", srv.requests.Load()-before)
	}
}
