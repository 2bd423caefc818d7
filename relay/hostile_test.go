package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/netsody/superpeer/rendezvous"
)

// A refusal names what the request asked for, but a stranger's long
// path or method comes back cut short: the answer to an unauthenticated
// request is no larger than a refusal of a short one, however large the
// request (%q and the Proxy-Status string escape each control byte into
// four or more, so an echo would answer 3 bytes of %01 with 9).
func TestRefusalEchoBounded(t *testing.T) {
	ts := newTestServer(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var p http.Protocols
	p.SetHTTP2(true)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ts.Pool}, Protocols: &p}
	defer tr.CloseIdleConnections()
	base := ts.H2URL + PathPrefix
	for _, tc := range []struct {
		name, method, url string
	}{
		{"long hostname", http.MethodPost, base + strings.Repeat("%01", 8<<10) + "/443/"},
		{"long method", strings.Repeat("X", 8<<10), base + "example.com/443/"},
	} {
		req, err := http.NewRequestWithContext(ctx, tc.method, tc.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answer := len(body) + len(resp.Header.Get("Proxy-Status"))
		if resp.Header.Get("Proxy-Status") == "" {
			t.Errorf("%s: %d without Proxy-Status", tc.name, resp.StatusCode)
		}
		if resp.StatusCode < 400 || answer > 2*maxEchoed+400 {
			t.Errorf("%s: %d with %d bytes of body and Proxy-Status, for a request of %d", tc.name, resp.StatusCode, answer, len(tc.url)+len(tc.method))
		}
	}
}

// A target with a peer ID's form but no key behind it (here 0100…00,
// a point of small order, which ed25519.Verify lets anyone sign for) is
// refused as such, before any lookup.
func TestSmallOrderTargetRefused(t *testing.T) {
	ts := newTestServer(t, Config{})
	for _, tr := range []rendezvous.Transport{rendezvous.TransportH3, rendezvous.TransportH2} {
		a := ts.device(t, tr)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := dialRaw(ctx, a.s, "01"+strings.Repeat("00", 31))
		cancel()
		wantRefused(t, err, http.StatusForbidden, "http_request_denied")
		var ref *RefusedError
		if errors.As(err, &ref) && !strings.Contains(ref.Reason, "small order") {
			t.Errorf("%s: reason %q does not say why", tr, ref.Reason)
		}
	}
	if got := ts.rl.Stats().refused[refuseNotKey.index()].Load(); got != 2 {
		t.Errorf("refuseNotKey counted %d times, want 2", got)
	}
}
