package superpeer_test

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/netsody/superpeer"
	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

// A super peer tells a device its relay's headroom from the relay's
// budgets, and tells it again when a SetConfig changes them (a reload).
func TestHeadroomFollowsBudgets(t *testing.T) {
	budget := func(total float64, sessions int) superpeer.Config {
		return superpeer.Config{Relay: relay.Config{TotalRate: total, MaxSessionsPerDevice: sessions}}
	}
	sp := superpeer.New(budget(50_000_000, 4))
	defer sp.Close()
	s := sptest.Start(t, "127.0.0.1", sp, func(h3 *http3.Server) { h3.ConnContext = superpeer.ConnContext })
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	told := make(chan rendezvous.Headroom, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sess, err := rendezvous.Dial(ctx, rendezvous.ClientConfig{Identity: id, URL: s.H3URL, TLSConfig: &tls.Config{RootCAs: s.Pool},
		OnHeadroom: func(h rendezvous.Headroom) { told <- h }})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	next := func(what string) rendezvous.Headroom {
		t.Helper()
		select {
		case h := <-told:
			return h
		case <-time.After(5 * time.Second):
			t.Fatalf("no headroom %s", what)
		}
		return rendezvous.Headroom{}
	}
	if h := next("at registration"); h.Bandwidth != 50_000_000 || h.Sessions != 4 {
		t.Errorf("headroom %+v at registration, want the whole budget: 50000000 B/s, 4 sessions", h)
	}
	sp.SetConfig(budget(100_000, 4))
	if h := next("after the budget fell"); h.Bandwidth > 100_000 || h.Sessions != 4 {
		t.Errorf("headroom %+v after the budget fell, want at most 100000 B/s, 4 sessions", h)
	}
}
