//go:build netsody_pending

package abuse_test

// Attacks whose protection another change adds (issue 10's open items
// after the consent review): written against the intended behaviour, so
// they fail until it is merged. Run with -tags netsody_pending; the lead
// drops the tag once they pass.

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

// Without hide_presence, a relay request towards an offline device is
// refused at once (404): it tells a stranger who is online. Its failed
// lookups are charged to the same per-(asker, target) limit as the
// rendezvous's (rendezvous.DefaultLookupRate, DefaultLookupBurst), so a
// stranger scanning through the relay is refused with 429 after the
// burst.
func TestRelayLookupsLimited(t *testing.T) {
	c := start(t, "")
	stranger := join(t, c, "127.0.0.1", rendezvous.TransportH2)
	offline := newID(t).PeerID()
	var statuses []int
	for range rendezvous.DefaultLookupBurst + 2 {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		conn, err := dialRelay(ctx, stranger, offline)
		cancel()
		if conn != nil {
			conn.Close()
		}
		var ref *relay.RefusedError
		if !errors.As(err, &ref) {
			t.Fatalf("relay to an offline device: %v, want a refusal", err)
		}
		statuses = append(statuses, ref.Status)
	}
	t.Logf("statuses: %v", statuses)
	if last := statuses[len(statuses)-1]; last != http.StatusTooManyRequests {
		t.Errorf("after %d failed relay lookups of one device within a second: %d, want 429", len(statuses)-1, last)
	}
}

// pendingFlood sizes the attack on the super peer's table of requests
// waiting for consent (rendezvous's maxPending, 65,536): silent
// consenting targets, each holding its most pending requests
// (maxPendingPerTarget, 64), asked by askers that each keep their most
// lookups (maxLookupPeers, 64), all from one host: 1024 of each fill it,
// and a few more make up for requests refused on the way (at 1024 each,
// 63,915 were pending at the end, and the honest device got through).
const (
	pendingTargets = 1100
	pendingAskers  = 1100
	pendingPerPair = 64
)

// Strangers from one host (127.0.0.1) who ask silent consenting devices
// to fill the table of pending requests cannot keep an honest device
// from another prefix (127.0.0.2) from being introduced: pending
// requests are bounded per asker prefix. Heavy: about 2,000 sessions,
// 150 s under -race on 2 cores; a Caddy option for the table's size would
// let it shrink. The consent timeout is long so that no request expires
// before the table is full.
func TestPendingPerAskerPrefixBounded(t *testing.T) {
	c := start(t, "consent_timeout 10m")
	targets := make([]*dev, pendingTargets)
	for i := range targets {
		targets[i] = joinConsenting(t, c, "127.0.0.1", rendezvous.TransportH3, nil)
	}
	askers := make([]*dev, pendingAskers)
	for i := range askers { // all registered first: the flood slows registrations down
		askers[i] = join(t, c, "127.0.0.1", rendezvous.TransportH3)
	}
	var wg sync.WaitGroup
	for i, s := range askers {
		wg.Go(func() {
			for j := range pendingPerPair {
				// The frame goes out before Introduce waits: the request
				// stays pending at the super peer.
				ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
				s.s.Introduce(ctx, targets[(i+j)%pendingTargets].peer(), rendezvous.IntroduceOptions{})
				cancel()
				time.Sleep(time.Second / rendezvous.DefaultConnectRate)
			}
		})
	}
	wg.Wait()
	t.Logf("consent requests asked: %v", c.Metrics(t)["netsody_superpeer_consent_requests_total"])
	yes := true
	friend := joinConsenting(t, c, "127.0.0.2", rendezvous.TransportH3, &yes)
	honest := join(t, c, "127.0.0.2", rendezvous.TransportH3, from(t, "127.0.0.2"))
	if _, err, _ := introduce(t, honest, friend.peer(), rendezvous.IntroduceOptions{}); err != nil {
		t.Fatalf("an honest device from another prefix, while one host fills the pending requests: %v", err)
	}
}

// A device drops QUIC Initials from addresses not mapped to a peer it
// accepts: a stranger that knows its address gets no answer at all, so
// not its certificate, which names its peer ID.
func TestStrangerInitialDropped(t *testing.T) {
	c := start(t, "")
	d := newDevice(t, c)
	tlsConf := strangerTLS(t, newID(t))
	sawCert := false
	tlsConf.VerifyPeerCertificate = func([][]byte, [][]*x509.Certificate) error { sawCert = true; return nil }
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, d.LocalAddr().String(), tlsConf, &quic.Config{HandshakeIdleTimeout: 2 * time.Second})
	if err == nil {
		conn.CloseWithError(0, "")
	}
	var hto *quic.HandshakeTimeoutError
	var ito *quic.IdleTimeoutError
	if sawCert || !(errors.As(err, &hto) || errors.As(err, &ito) || errors.Is(err, context.DeadlineExceeded)) {
		t.Errorf("a stranger's handshake: %v, certificate seen %v; want no answer at all", err, sawCert)
	}
}
