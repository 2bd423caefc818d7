package peer

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
)

// A super peer's name may stand for many nodes (docs/CLUSTER.md): the
// device takes the addresses from Config.LookupNetIP, and when a session
// at one fails it tries the next, so that a dead node's address does not
// keep it away from the live ones.
func TestFailoverBetweenAddressesOfAName(t *testing.T) {
	s, _ := superPeerServer(t)
	live := netip.MustParseAddrPort(s.H3URL[len("https://"):]).Addr()
	dead := netip.MustParseAddr("127.0.0.5") // nothing listens there
	var lookups atomic.Int32
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{Identity: id, SuperPeers: []string{s.H3URL}, RootCAs: s.Pool, ListenAddr: "127.0.0.1:0",
		LookupNetIP: func(_ context.Context, host string) ([]netip.Addr, error) {
			lookups.Add(1)
			return []netip.Addr{dead, live}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// The dead address costs a dial's timeout: nothing answers there.
	ctx, cancel := context.WithTimeout(context.Background(), 2*sessionDialTimeout)
	defer cancel()
	start := time.Now()
	if _, err := d.sps[0].wait(ctx); err != nil {
		t.Fatalf("no session through the live address: %v", err)
	}
	t.Logf("a session through the second address after %v", time.Since(start).Round(time.Millisecond))
	if n := lookups.Load(); n < 2 {
		t.Errorf("%d lookups, want one per try (at least two)", n)
	}
	if st := d.Status().SuperPeers; len(st) != 1 || !st[0].Connected {
		t.Fatalf("super peers: %+v", st)
	}
}
