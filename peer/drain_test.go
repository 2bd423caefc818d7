package peer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"github.com/netsody/superpeer"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/rendezvous"
)

// drainTransfer is a paced one-way transfer from a to b over c: chunks
// of chunkSize bytes every chunkEvery, calling at(i) after chunk i. The
// receiver hashes what it gets and measures the longest gap between two
// reads that delivered bytes; the transfer must arrive whole.
func drainTransfer(t *testing.T, b *Device, c *Conn, chunks int, at func(i int)) (maxGap time.Duration) {
	t.Helper()
	const chunkSize, chunkEvery = 32 << 10, 10 * time.Millisecond
	data := make([]byte, chunks*chunkSize)
	rand.Read(data)
	want := sha256.Sum256(data)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type result struct {
		sum [32]byte
		gap time.Duration
		err error
	}
	got := make(chan result, 1)
	go func() {
		bc, err := b.Accept(ctx)
		if err != nil {
			got <- result{err: err}
			return
		}
		str, err := bc.AcceptStream(ctx)
		if err != nil {
			got <- result{err: err}
			return
		}
		h := sha256.New()
		buf := make([]byte, 64<<10)
		var r result
		var last time.Time
		for {
			n, err := str.Read(buf)
			if n > 0 {
				now := time.Now()
				if !last.IsZero() {
					r.gap = max(r.gap, now.Sub(last))
				}
				last = now
				h.Write(buf[:n])
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				r.err = err
				break
			}
		}
		copy(r.sum[:], h.Sum(nil))
		got <- r
	}()
	str, err := c.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(chunkEvery)
	defer tick.Stop()
	for i := range chunks {
		if _, err := str.Write(data[i*chunkSize : (i+1)*chunkSize]); err != nil {
			t.Fatalf("chunk %d: %v (path %s)", i, err, c.Path())
		}
		at(i)
		<-tick.C
	}
	str.Close()
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("receiving: %v (path %s)", r.err, c.Path())
		}
		if r.sum != want {
			t.Fatal("the received bytes' SHA-256 differs from the sent bytes'")
		}
		return r.gap
	case <-ctx.Done():
		t.Fatalf("the transfer did not finish; path %s", c.Path())
		return 0
	}
}

// A transfer relayed through super peer A while A drains: both devices
// are told to move, the relay moves to B before A closes, the transfer
// arrives whole, and the receiver never waits a second for bytes. A
// closes as soon as the relay has moved, long before its drain timeout.
func TestDrainMovesRelayedTransfer(t *testing.T) {
	const drainTimeout = 10 * time.Second
	sA, spA := newSuperPeer(t, superpeer.Config{Rendezvous: rendezvous.Config{DrainTimeout: drainTimeout}})
	sB, _ := superPeerServer(t)
	// B a little further, so that the relay starts through A.
	uB := "https://" + sptest.UDPDelay(t, addrOf(sB.H3URL), 20*time.Millisecond).String()
	cfg := func(c *Config) { c.SuperPeers = []string{sA.H3URL, uB}; c.RelayOnly = true }
	a, b := newDevice(t, sA, cfg), newDevice(t, sA, cfg)
	c := dial(t, a, b)
	if p := c.Path(); p.Kind != PathRelay || p.SuperPeer != sA.H3URL {
		t.Fatalf("path %s, want relay via %s", p, sA.H3URL)
	}
	drained := make(chan time.Duration, 1)
	gap := drainTransfer(t, b, c, 200, func(i int) {
		if i == 50 {
			go func() {
				start := time.Now()
				spA.Drain(context.Background(), "test drain")
				drained <- time.Since(start)
			}()
		}
	})
	t.Logf("longest gap between delivered bytes: %v", gap)
	if gap >= time.Second {
		t.Errorf("the receiver waited %v for bytes, want under 1s", gap)
	}
	if p := c.Path(); p.Kind != PathRelay || p.SuperPeer != uB {
		t.Errorf("path %s after the drain, want relay via %s", p, uB)
	}
	select {
	case took := <-drained:
		t.Logf("A drained in %v", took)
		if took >= drainTimeout/2 {
			t.Errorf("A took %v to drain: the relay did not move, it timed out", took)
		}
	case <-time.After(drainTimeout + 5*time.Second):
		t.Fatal("A did not finish draining")
	}
}
