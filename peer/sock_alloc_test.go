//go:build !race

// Under the race detector sync.Pool drops a share of what is put back,
// on purpose, so allocation counts mean nothing there.

package peer

import (
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/relay"
)

// The device's read loop allocates nothing per packet: a packet from a
// peer's direct path, from a super peer (its relay datagrams over
// HTTP/3 come this way) and from a relay fast path is copied into a
// pooled buffer, handed to QUIC under an address made once, and read by
// QUIC; and a packet sent over the fast path is framed in a pooled one.
func TestReadLoopAllocs(t *testing.T) {
	d := offlineDevice(t)
	other, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	p := d.peer(other.PeerID(), true)
	direct := netip.MustParseAddrPort("192.0.2.7:4242")
	d.sock.mapDirect(direct, p)
	sp := netip.MustParseAddrPort("198.51.100.1:443")
	d.sock.noteDialed(sp)
	fastAddr := netip.MustParseAddrPort("198.51.100.1:3479")
	cl := relay.NewFastPathClient(relay.FastPathBinding{ID: 7, Port: fastAddr.Port()})
	f := &fastLeg{p: p, cl: cl, addr: fastAddr, relayed: new(atomic.Uint64)}
	d.sock.setBinding(7, f)

	quic := make([]byte, 1200)
	quic[0] = 0x40 // a QUIC short header
	fast := cl.AppendData(nil, append([]byte{0}, quic...))
	buf := make([]byte, 1500)
	for _, c := range []struct {
		name string
		pkt  []byte
		from netip.AddrPort
	}{
		{"a peer's direct path", quic, direct},
		{"a super peer", quic, sp},
		{"a relay fast path", fast, fastAddr},
	} {
		readOne := func() {
			d.sock.demux(c.pkt, c.from)
			n, from, err := d.sock.ReadFrom(buf)
			if err != nil || n != len(quic) || from == nil {
				t.Fatalf("%s: read %d bytes from %v: %v", c.name, n, from, err)
			}
		}
		readOne()
		if allocs := testing.AllocsPerRun(1000, readOne); allocs > 0 {
			t.Errorf("%s: %.2f allocations per packet", c.name, allocs)
		}
	}
	// Sending over the fast path: no socket here, so the write fails
	// after the packet is framed.
	if allocs := testing.AllocsPerRun(1000, func() { f.send(quic) }); allocs > 0 {
		t.Errorf("fast-path send: %.2f allocations per packet", allocs)
	}
}
