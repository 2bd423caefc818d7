package relay

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

// Packets written while the transport is busy reach it in one read, in
// order, as DATAGRAM capsules; a control capsule joins them.
func TestStreamBodyCoalesces(t *testing.T) {
	b := newStreamBody()
	var want []byte
	for i := range 5 {
		p := bytes.Repeat([]byte{byte(i)}, 1200)
		if err := b.writePacket(p); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		want = appendCapsule(want, CapsuleDatagram, contextIDZero, p)
	}
	ctl := appendCapsule(nil, CapsuleFastPathRequest)
	if err := b.writeControl(ctl); err != nil {
		t.Fatal(err)
	}
	want = append(want, ctl...)
	got := make([]byte, 64<<10)
	n, err := b.Read(got)
	if err != nil || !bytes.Equal(got[:n], want) {
		t.Fatalf("one read: %d bytes (%v), want the %d written", n, err, len(want))
	}
	// A short read leaves the rest for the next.
	b.writePacket([]byte{1, 2, 3})
	var two [2]byte
	if n, _ := b.Read(two[:]); n != 2 {
		t.Fatalf("short read: %d", n)
	}
	rest, _ := b.Read(got)
	if rest != len(appendCapsule(nil, CapsuleDatagram, contextIDZero, []byte{1, 2, 3}))-2 {
		t.Fatalf("rest %d bytes", rest)
	}
}

// The queue ahead of the stream is bounded: a packet that does not fit
// waits for the transport to read (the leg is throttled, not lossy), and
// a waiting write fails when the transport gives up.
func TestStreamBodyWaitsWhenFull(t *testing.T) {
	b := newStreamBody()
	p := make([]byte, 1200)
	full := maxStreamPending / (len(p) + 4)
	for range full {
		if err := b.writePacket(p); err != nil {
			t.Fatal(err)
		}
	}
	wrote := make(chan error, 1)
	go func() { wrote <- b.writePacket(p) }()
	select {
	case err := <-wrote:
		t.Fatalf("a write past %d bytes did not wait (%v): %d bytes queued", maxStreamPending, err, len(b.buf))
	case <-time.After(20 * time.Millisecond): // waiting, as it should
	}
	n, _ := b.Read(make([]byte, maxStreamPending))
	if err := <-wrote; err != nil || n != full*(len(p)+4) {
		t.Fatalf("read %d bytes, then the write: %v", n, err)
	}
	for b.writePacket(p) == nil && len(b.buf) < maxStreamPending-len(p)-4 {
	}
	go func() { wrote <- b.writePacket(p) }()
	time.Sleep(10 * time.Millisecond)
	b.Close()
	if err := <-wrote; !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("a write waiting when the transport closed: %v", err)
	}
	// A control capsule is never lost.
	if err := newStreamBody().writeControl([]byte{1, 0}); err != nil {
		t.Fatal(err)
	}
}

// closeWrite ends the body after what is queued; the transport's Close
// wakes a waiting read and fails later writes.
func TestStreamBodyClose(t *testing.T) {
	b := newStreamBody()
	b.writePacket([]byte{9})
	b.closeWrite()
	buf := make([]byte, 100)
	if n, err := b.Read(buf); n == 0 || err != nil {
		t.Fatalf("read after closeWrite: %d %v, want the queued capsule", n, err)
	}
	if _, err := b.Read(buf); err != io.EOF {
		t.Fatalf("then %v, want EOF", err)
	}
	if err := b.writePacket([]byte{1}); err == nil {
		t.Fatal("write after closeWrite succeeded")
	}

	b = newStreamBody()
	done := make(chan error, 1)
	go func() { _, err := b.Read(buf); done <- err }()
	time.Sleep(10 * time.Millisecond)
	b.Close()
	if err := <-done; !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("waiting read ended with %v", err)
	}
	if err := b.writePacket([]byte{1}); err == nil {
		t.Fatal("write after Close succeeded")
	}
}

// Queuing a packet allocates nothing.
func TestStreamBodyWriteAllocs(t *testing.T) {
	b := newStreamBody()
	p := make([]byte, 1200)
	buf := make([]byte, maxStreamPending)
	allocs := testing.AllocsPerRun(1000, func() {
		b.writePacket(p)
		b.Read(buf)
	})
	if allocs > 0 {
		t.Fatalf("%.2f allocations per packet", allocs)
	}
}
