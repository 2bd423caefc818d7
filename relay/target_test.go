package relay

import (
	"net/http"
	"strings"
	"testing"

	"github.com/netsody/superpeer/identity"
)

// FuzzRelayTarget feeds a stranger's request line to the relay: the path
// to parseTarget, the method and protocol to kindOf. Whatever comes in,
// a target is a valid peer ID taken from the path, a refusal is one of
// the declared ones and echoes at most maxEchoed bytes of the request,
// and only CONNECT and POST over HTTP/2 or HTTP/3 make a leg.
func FuzzRelayTarget(f *testing.F) {
	id, _ := identity.Generate()
	peer := id.PeerID().String()
	for _, s := range []struct {
		path, method, proto, protocol string
		major                         int
	}{
		{PathPrefix + peer + "/443/", http.MethodConnect, "connect-udp", "", 3},
		{PathPrefix + strings.ToUpper(peer) + "/443", http.MethodConnect, "HTTP/2.0", "connect-udp", 2},
		{PathPrefix + peer + "/443/", http.MethodPost, "HTTP/2.0", "", 2},
		{PathPrefix + "01" + strings.Repeat("00", 31) + "/443/", http.MethodPost, "HTTP/3.0", "", 3},
		{PathPrefix + "192.0.2.1/443/", http.MethodConnect, "connect-udp", "", 3},
		{PathPrefix + "[2001:db8::1]/443/", http.MethodGet, "HTTP/1.1", "", 1},
		{PathPrefix + "example.com/443/x/", "PUT", "HTTP/2.0", "websocket", 2},
		{"/other/" + peer + "/443/", http.MethodConnect, "HTTP/2.0", "connect-ip", 2},
		{PathPrefix + strings.Repeat("%01", 40) + "/443/", strings.Repeat("X", 100), "", "", 2},
	} {
		f.Add(s.path, s.method, s.proto, s.protocol, s.major)
	}
	f.Fuzz(func(t *testing.T, path, method, proto, protocol string, major int) {
		target, ref := parseTarget(path)
		if ref == nil {
			if err := target.Validate(); err != nil {
				t.Fatalf("target %s from %q: %v", target, path, err)
			}
			rest := strings.TrimPrefix(path, PathPrefix)
			if !strings.HasPrefix(strings.ToLower(rest), target.String()+"/") {
				t.Fatalf("target %s is not the path's %q", target, path)
			}
		} else {
			checkRefusal(t, ref, path)
		}
		r := &http.Request{Method: method, Proto: proto, ProtoMajor: major, Header: http.Header{}}
		if protocol != "" {
			r.Header.Set(":protocol", protocol)
		}
		kind, ref := kindOf(r)
		if ref != nil {
			checkRefusal(t, ref, method)
			return
		}
		if major < 2 || method != http.MethodConnect && method != http.MethodPost {
			t.Fatalf("%s over HTTP/%d (%q) makes a leg", method, major, proto)
		}
		if kind == kindDatagram && (major != 3 || method != http.MethodConnect) {
			t.Fatalf("a datagram leg from %s over HTTP/%d", method, major)
		}
	})
}

// checkRefusal checks that ref is one of the declared refusals, and its
// details no longer than its format with the request echoed in bounds.
func checkRefusal(t *testing.T, ref *refusal, request string) {
	t.Helper()
	i := ref.index()
	if i < 0 {
		t.Fatalf("undeclared refusal %v for %q", ref, request)
	}
	if limit := len(refusals[i].details) + 2*maxEchoed; len(ref.details) > limit {
		t.Fatalf("refusal of %d bytes for a request of %d: %q", len(ref.details), len(request), ref.details)
	}
}
