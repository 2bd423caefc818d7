package rendezvous

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/sptest"
)

// fromAddr makes a device's session leave from the loopback address
// src, another source prefix than 127.0.0.1 (sptest.FromLoopback).
func fromAddr(t testing.TB, src string) func(*ClientConfig) {
	return func(c *ClientConfig) { c.DialTCP, c.QUICTransport = sptest.FromLoopback(t, src) }
}

// tryOpen opens a session request without registering; the session is
// closed when the test ends.
func (ts *testServer) tryOpen(t testing.TB, tr Transport, mod ...func(*ClientConfig)) (*Session, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cfg := ClientConfig{Identity: newIdentity(t), URL: ts.url(tr), Transport: tr, TLSConfig: &tls.Config{RootCAs: ts.Pool}}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := open(ctx, cfg)
	if err == nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

// One host cannot hold more than MaxUnregisteredPerPrefix sessions that
// do not register, nor open them faster than its bucket, while a device
// from another prefix still registers; a registration frees a place.
func TestPerPrefixLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		held int // sessions the prefix gets before a refusal
		why  SessionRefusal
	}{
		{"unregistered", Config{MaxUnregisteredPerPrefix: 3}, 3, RefusedPrefixUnregistered},
		{"rate", Config{PrefixSessionRate: 0.001, PrefixSessionBurst: 4}, 4, RefusedPrefixRate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, tr := range transports {
				ts := newTestServer(t, "127.0.0.1", tc.cfg)
				var held []*Session
				for range tc.held {
					s, err := ts.tryOpen(t, tr)
					if err != nil {
						t.Fatalf("%s: session %d refused: %v", tr, len(held)+1, err)
					}
					held = append(held, s)
				}
				if _, err := ts.tryOpen(t, tr); err == nil || !strings.Contains(err.Error(), "429") {
					t.Fatalf("%s: session %d from one host: %v, want 429", tr, tc.held+1, err)
				}
				if n := ts.rv.Stats().SessionsRefused[tc.why].Load(); n != 1 {
					t.Errorf("%s: %d refusals counted as %s, want 1", tr, n, tc.why)
				}
				ts.dial(t, tr, newIdentity(t), fromAddr(t, "127.0.0.2"))
				if tc.why != RefusedPrefixUnregistered {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := held[0].register(ctx)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := ts.tryOpen(t, tr); err != nil {
					t.Fatalf("%s: after one registered, the host's next session: %v", tr, err)
				}
			}
		})
	}
}

// A connection carries one rendezvous session: a second session request
// on it is refused with 409, and the first goes on.
func TestOneSessionPerConnection(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{})
	for _, tr := range transports {
		s := ts.dial(t, tr, newIdentity(t))
		var rt http.RoundTripper = s.HTTP2()
		if tr == TransportH3 {
			rt = s.HTTP3()
		}
		u, _ := url.Parse(ts.url(tr) + Path)
		resp, err := rt.RoundTrip(newSessionRequest(u, http.NoBody))
		if err != nil {
			t.Fatalf("%s: %v", tr, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusConflict {
			t.Errorf("%s: a second session on a connection: %s, want 409", tr, resp.Status)
		}
		// The first session still answers.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = s.Introduce(ctx, newIdentity(t).PeerID(), IntroduceOptions{})
		cancel()
		if e, ok := err.(*Error); !ok || e.Code != ErrCodePeerNotFound {
			t.Errorf("%s: the first session after the refusal: %v", tr, err)
		}
	}
	if n := ts.rv.Stats().SessionsRefused[RefusedConnectionBusy].Load(); n != 2 {
		t.Errorf("%d refusals counted, want 2", n)
	}
}

// The per-prefix table forgets a prefix once its sessions registered or
// ended and its bucket is full again, and keeps to maxPrefixes under a
// flood of prefixes.
func TestPrefixTableBounded(t *testing.T) {
	cfg := Config{}.withDefaults()
	var pt prefixTable
	now := time.Now()
	a := SourcePrefix(netip.MustParseAddr("2001:db8::1"))
	if b := SourcePrefix(netip.MustParseAddr("2001:db8::ffff:1")); a != b {
		t.Fatalf("one /64 is two prefixes: %v, %v", a, b)
	}
	if pt.take(a, now, &cfg) != nil {
		t.Fatal("refused")
	}
	pt.release(a, now.Add(time.Second), &cfg)
	if pt.len() != 0 {
		t.Fatal("an idle prefix with a full bucket is kept")
	}
	for i := range maxPrefixes {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		if pt.take(p, now, &cfg) != nil {
			t.Fatalf("prefix %d refused", i)
		}
	}
	if ref := pt.take(a, now, &cfg); ref == nil || ref.why != RefusedPrefixTableFull {
		t.Fatalf("a full table of held prefixes: %v, want %s", ref, RefusedPrefixTableFull)
	}
	// They end; the next new prefix sweeps them.
	for i := range maxPrefixes {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		pt.release(p, now, &cfg) // buckets not full yet: kept
	}
	if pt.take(a, now.Add(prefixSweepEvery), &cfg) != nil || pt.len() != 1 {
		t.Fatalf("after a sweep: %d entries, want 1", pt.len())
	}
}
