package rendezvous

import (
	"testing"

	"github.com/quic-go/quic-go/quicvarint"
)

// A payload full of empty unknown extensions, the most a frame can hold,
// is skipped without an allocation per extension: the extension area
// costs a hostile device's frames no garbage on the super peer.
func TestExtensionAreaAllocatesNothing(t *testing.T) {
	ping := (&Ping{Nonce: 1}).frame()[frameHeaderLen:]
	reg := (&Register{Protocol: ours}).frame()[frameHeaderLen:]
	fill := func(p []byte) []byte {
		p = append([]byte(nil), p...)
		for len(p)+2 <= MaxPayload {
			p = quicvarint.Append(p, 0x3f)
			p = append(p, 0)
		}
		return p
	}
	ping, reg = fill(ping), fill(reg)
	var pm Ping
	if err := pm.decode(ping); err != nil {
		t.Fatal(err)
	}
	var rm Register
	if err := rm.decode(reg); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = pm.decode(ping) }); n > 0 {
		t.Errorf("skipping %d extensions of a ping: %.0f allocations", (len(ping)-12)/2, n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = rm.decode(reg) }); n > 1 {
		t.Errorf("skipping the unknown extensions of a register: %.0f allocations", n)
	}
}
