package abuse_test

// Attack e: sessions that never register, to hold the server.

import (
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/rendezvous"
)

const (
	// registerTimeout is the test's register_timeout, cut short.
	registerTimeout = time.Second
	// unregisteredCap is the test's max_unregistered_per_prefix.
	unregisteredCap = 3
)

var transports = []rendezvous.Transport{rendezvous.TransportH3, rendezvous.TransportH2}

// from makes a device's sockets use src, an address of loopback, so that
// the super peer sees it come from there (127.0.0.1 and 127.0.0.2 are
// distinct /32s).
func from(t *testing.T, src string) func(*rendezvous.ClientConfig) {
	return func(cfg *rendezvous.ClientConfig) {
		ip := net.ParseIP(src)
		cfg.DialTCP = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}).DialContext
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
		if err != nil {
			t.Fatalf("cannot bind %s: %v", src, err)
		}
		tr := &quic.Transport{Conn: pc}
		t.Cleanup(func() { tr.Close() })
		cfg.QUICTransport = tr
	}
}

// openSilent opens a session request from 127.0.0.1 that never registers.
func openSilent(t *testing.T, c *testcaddy.Caddy, tr rendezvous.Transport) (*rendezvous.Session, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s, err := rendezvous.Open(ctx, rendezvous.ClientConfig{
		Identity: newID(t), URL: url(c), Transport: tr, TLSConfig: &tls.Config{RootCAs: c.Roots},
		Addr: "127.0.0.1:" + strconv.Itoa(c.Port),
	})
	if err == nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

// One host's sessions that never register stop at
// max_unregistered_per_prefix, on each transport, while devices from
// another /32 (127.0.0.2) and from ::1 still register; each such session
// ends at register_timeout, after which the host may open new ones. The
// second sub-test turns both limits off in the Caddyfile and watches the
// same attack succeed.
func TestUnregisteredSessionsBounded(t *testing.T) {
	t.Run("protected", func(t *testing.T) {
		c := start(t, "register_timeout "+registerTimeout.String()+"\nmax_unregistered_per_prefix "+strconv.Itoa(unregisteredCap))
		opened := time.Now()
		for i := range unregisteredCap { // the cap counts both transports
			if _, err := openSilent(t, c, transports[i%2]); err != nil {
				t.Fatalf("unregistered session %d refused: %v", i+1, err)
			}
		}
		for _, tr := range transports {
			if _, err := openSilent(t, c, tr); err == nil || !strings.Contains(err.Error(), "429") {
				t.Fatalf("%s: unregistered session %d from one host: %v, want 429", tr, unregisteredCap+1, err)
			}
			join(t, c, "127.0.0.2", tr, from(t, "127.0.0.2"))
			join(t, c, "::1", tr, from(t, "::1"))
		}
		held := float64(unregisteredCap)
		waitFor(t, registerTimeout+5*time.Second, "the unregistered sessions to expire", func() bool {
			return c.Metrics(t)["netsody_superpeer_register_timeouts_total"] == held
		})
		took := time.Since(opened)
		t.Logf("%v unregistered sessions expired %v after they opened (register_timeout %v)", held, took.Round(time.Millisecond), registerTimeout)
		if took < registerTimeout {
			t.Errorf("unregistered sessions expired after %v, before register_timeout %v", took, registerTimeout)
		}
		if m := c.Metrics(t); m[`netsody_superpeer_sessions_refused_total{reason="prefix_unregistered"}`] != float64(len(transports)) {
			t.Errorf("the per-prefix refusals are not counted: %v", m)
		}
		for _, tr := range transports {
			if _, err := openSilent(t, c, tr); err != nil {
				t.Errorf("%s: after the expiry, the host's next session: %v", tr, err)
			}
		}
	})
	t.Run("unprotected", func(t *testing.T) {
		c := start(t, "register_timeout 1h\nmax_unregistered_per_prefix 100000")
		for _, tr := range transports {
			for i := range unregisteredCap + 1 {
				if _, err := openSilent(t, c, tr); err != nil { // the protected cap is per host, not per transport
					t.Fatalf("%s: without the cap, unregistered session %d refused: %v", tr, i+1, err)
				}
			}
		}
		time.Sleep(registerTimeout + time.Second)
		if n := c.Metrics(t)["netsody_superpeer_register_timeouts_total"]; n != 0 {
			t.Errorf("without the deadline, %v sessions expired", n)
		}
	})
}
