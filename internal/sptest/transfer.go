package sptest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// Paced transfers (PacedTransfer): chunks of this many bytes, one every
// transferEvery, so that a transfer lasts long enough for something to
// happen under it (a drain, a reload).
const (
	transferChunk = 32 << 10
	transferEvery = 10 * time.Millisecond
)

// StreamAccepter is the receiving end of a QUIC connection (a peer.Conn).
type StreamAccepter interface {
	AcceptStream(context.Context) (*quic.Stream, error)
}

// PacedTransfer sends chunks random chunks, one every 10 ms, over a new
// stream of c, calling at(i) after chunk i; the receiver takes the
// connection from accept (a peer.Device's Accept) and its first stream,
// hashes what arrives and measures the longest gap between two reads
// that delivered bytes. It fails t unless the stream arrives whole with
// the same SHA-256 within a minute, and returns that gap.
func PacedTransfer[C StreamAccepter](t testing.TB, c interface {
	OpenStreamSync(context.Context) (*quic.Stream, error)
}, accept func(context.Context) (C, error), chunks int, at func(i int)) (maxGap time.Duration) {
	t.Helper()
	data := make([]byte, chunks*transferChunk)
	rand.Read(data)
	want := sha256.Sum256(data)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type result struct {
		sum [32]byte
		gap time.Duration
		err error
	}
	got := make(chan result, 1)
	go func() {
		var r result
		defer func() { got <- r }()
		conn, err := accept(ctx)
		if err != nil {
			r.err = err
			return
		}
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			r.err = err
			return
		}
		h := sha256.New()
		buf := make([]byte, 64<<10)
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
				return
			}
		}
		copy(r.sum[:], h.Sum(nil))
	}()
	str, err := c.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(transferEvery)
	defer tick.Stop()
	for i := range chunks {
		if _, err := str.Write(data[i*transferChunk : (i+1)*transferChunk]); err != nil {
			t.Fatalf("sending chunk %d: %v", i, err)
		}
		at(i)
		<-tick.C
	}
	str.Close()
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("receiving: %v", r.err)
		}
		if r.sum != want {
			t.Fatal("the received bytes' SHA-256 differs from the sent bytes'")
		}
		return r.gap
	case <-ctx.Done():
		t.Fatal("the transfer did not finish within a minute")
		return 0
	}
}
