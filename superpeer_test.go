package superpeer_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"
	"go.uber.org/goleak"

	"github.com/netsody/superpeer"
	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A super peer embedded as the package doc shows: a plain net/http server
// and an http3.Server on one port, both serving the super peer. Devices
// register over either; other paths are not the super peer's.
func TestEmbedded(t *testing.T) {
	sp := superpeer.New(superpeer.Config{})
	defer sp.Close()
	s := sptest.Start(t, "127.0.0.1", sp, func(h3 *http3.Server) { h3.ConnContext = superpeer.ConnContext })

	for _, tr := range []rendezvous.Transport{rendezvous.TransportH3, rendezvous.TransportH2} {
		url := s.H3URL
		if tr == rendezvous.TransportH2 {
			url = s.H2URL
		}
		id, err := identity.Generate()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		sess, err := rendezvous.Dial(ctx, rendezvous.ClientConfig{Identity: id, URL: url, Transport: tr, TLSConfig: &tls.Config{RootCAs: s.Pool}})
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", tr, err)
		}
		sess.Close()
	}

	// Paths that are not the super peer's are not served.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.Pool}}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(s.H2URL + "/index.html")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /index.html: %s, want 404", resp.Status)
	}
	for path, want := range map[string]bool{rendezvous.Path: true, relay.PathPrefix + "x/443/": true, "/": false, "/.well-known/other": false} {
		if superpeer.Handles(path) != want {
			t.Errorf("Handles(%q) = %v, want %v", path, !want, want)
		}
	}
}

// Validate names the part of the configuration that is wrong.
func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  superpeer.Config
		want string
	}{
		{superpeer.Config{}, ""},
		{superpeer.Config{Rendezvous: rendezvous.Config{MaxSessions: -1}}, "rendezvous: "},
		{superpeer.Config{Rendezvous: rendezvous.Config{KeepaliveInterval: time.Minute}}, "rendezvous: session timeout"},
		{superpeer.Config{Relay: relay.Config{QueueLen: -1}}, "relay: "},
		{superpeer.Config{Relay: relay.Config{Burst: 100, MaxDatagramSize: 1500}}, "relay: relay burst"},
	} {
		err := tc.cfg.Validate()
		if (err == nil) != (tc.want == "") || err != nil && !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%+v: Validate() = %v, want prefix %q", tc.cfg, err, tc.want)
		}
	}
}

// An embedder demands proof of work without Caddy: Admit is a function
// of the request, and a Recheck after a stricter SetConfig sends away a
// device the new rules refuse.
func TestEmbeddedAdmission(t *testing.T) {
	demand := func(bits int) superpeer.Config {
		return superpeer.Config{Rendezvous: rendezvous.Config{Admit: func(_ context.Context, req rendezvous.AdmissionRequest) error {
			return identity.CheckProofOfWork(req.Peer, req.ProofOfWork, bits)
		}}}
	}
	sp := superpeer.New(demand(4))
	defer sp.Close()
	s := sptest.Start(t, "127.0.0.1", sp, func(h3 *http3.Server) { h3.ConnContext = superpeer.ConnContext })
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if id.ProofOfWork, err = identity.MineProofOfWork(context.Background(), id.PeerID(), 4, nil); err != nil {
		t.Fatal(err)
	}
	if identity.ProofOfWorkBits(id.PeerID(), id.ProofOfWork) >= 20 {
		t.Skip("a nonce with 20 bits by chance")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sess, err := rendezvous.Dial(ctx, rendezvous.ClientConfig{Identity: id, URL: s.H3URL, TLSConfig: &tls.Config{RootCAs: s.Pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	sp.SetConfig(demand(20))
	sp.Rendezvous().Recheck()
	select {
	case <-sess.Done():
	case <-ctx.Done():
		t.Fatal("the device the new rules refuse was not sent away")
	}
	var e *rendezvous.Error
	if !errors.As(sess.Err(), &e) || e.Code != rendezvous.ErrCodeRefused || !strings.Contains(e.Message, "20 are required") {
		t.Errorf("ended with %v", sess.Err())
	}
}
