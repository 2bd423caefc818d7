package rendezvous

import (
	"testing"
	"time"

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

// A session that never registers expires like a silent one, even if it
// sends frames of unknown types: otherwise a stranger holds a place under
// MaxSessions, and a reader, for as long as its connection lives.
func TestUnregisteredSessionExpires(t *testing.T) {
	ts := newTestServer(t, "127.0.0.1", Config{KeepaliveInterval: 50 * time.Millisecond, SessionTimeout: 200 * time.Millisecond})
	for _, tr := range transports {
		s := ts.openRaw(t, tr, newIdentity(t))
		stop := make(chan struct{})
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			for {
				if s.writeFrame(appendFrame(nil, 0x7f, nil)) != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		wantError(t, s, ErrCodeExpired)
		close(stop)
		<-sent
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, all := ts.rv.Sessions(); all == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the expired sessions are still counted after 5s")
		}
	}
}
