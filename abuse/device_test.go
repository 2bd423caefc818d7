package abuse_test

// Devices of the peer package against the real Caddy, and what a
// stranger can do to them.

import (
	"context"
	"io"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/peer"
)

// newDevice starts a peer.Device on 127.0.0.1 with c as its super peer
// and waits for its session.
func newDevice(t *testing.T, c *testcaddy.Caddy, mods ...func(*peer.Config)) *peer.Device {
	t.Helper()
	cfg := peer.Config{Identity: newID(t), SuperPeers: []string{url(c)}, RootCAs: c.Roots, ListenAddr: "127.0.0.1:0"}
	for _, m := range mods {
		m(&cfg)
	}
	d, err := peer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	waitFor(t, 10*time.Second, "the device's session with Caddy", func() bool {
		st := d.Status().SuperPeers
		return len(st) > 0 && st[0].Connected
	})
	return d
}

// echo accepts one connection on d and echoes its streams until the test
// ends.
func echo(t *testing.T, d *peer.Device) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		c, err := d.Accept(ctx)
		if err != nil {
			return
		}
		defer c.CloseWithError(0, "")
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			str, err := c.AcceptStream(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				io.Copy(str, str)
				str.Close()
			})
		}
	}()
}

// roundTrip dials to from within 10 s and checks an echo of msg.
func roundTrip(t *testing.T, from, to *peer.Device, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := from.Dial(ctx, to.PeerID())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseWithError(0, "")
	sptest.RoundTrip(t, c, msg)
}

// newSinks binds n sinks on 127.0.0.x: loopback, which a device punches
// only when its super peer is on loopback too.
func newSinks(t *testing.T, n int) *sptest.Sinks { return sptest.NewSinks(t, sptest.Loopback4(n), nil) }

// newSinksOn binds n sinks on ip.
func newSinksOn(t *testing.T, ip netip.Addr, n int) *sptest.Sinks {
	ips := make([]netip.Addr, n)
	for i := range ips {
		ips[i] = ip
	}
	return sptest.NewSinks(t, ips, nil)
}
