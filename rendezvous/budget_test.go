package rendezvous

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// The budget of registered devices (MaxSessions): the device over it is
// refused with 503 and a Retry-After before its session begins, counted,
// and registers once another device has left.
func TestDevicesBudget(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{MaxSessions: 2})
	first := ts.dial(t, TransportH3, newIdentity(t))
	ts.dial(t, TransportH2, newIdentity(t))
	if got := ts.rv.MaxSessions(); got != 2 {
		t.Fatalf("MaxSessions() = %d, want 2", got)
	}

	resp, err := ts.H2.Client().Post(ts.H2URL+Path, ContentType, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "30" ||
		!strings.Contains(string(body), "limit of 2 sessions") {
		t.Fatalf("the third device: %d, Retry-After %q, %q; want 503, 30 and the limit", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if got := ts.rv.Stats().SessionsRefused[RefusedFull].Load(); got != 1 {
		t.Errorf("refusals counted: %d, want 1", got)
	}

	first.Close()
	waitFor(t, "the first device to leave", func() bool { _, all := ts.rv.Sessions(); return all == 1 })
	ts.dial(t, TransportH2, newIdentity(t)) // fails the test if refused
}
