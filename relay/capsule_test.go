package relay

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"unicode/utf8"
)

func TestCapsules(t *testing.T) {
	var stream []byte
	stream = appendCapsule(stream, 0x17, []byte("grease: skipped"))
	stream = appendCapsule(stream, CapsuleDatagram, []byte("\x00hello"))
	stream = appendCapsule(stream, CapsuleDatagram, bytes.Repeat([]byte{1}, 300)) // over the limit
	stream = appendCapsule(stream, CapsuleDatagram, []byte("\x00again"))
	stream = append(stream, closeCapsule("peer left")...)
	p := newCapsuleReader(bytes.NewReader(stream))
	d, err := p.readDatagram(nil, 200, nil)
	if err != nil || string(d) != "\x00hello" {
		t.Fatalf("first: %q %v", d, err)
	}
	if _, err := p.readDatagram(d, 200, nil); !errors.Is(err, errCapsuleTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
	if d, err = p.readDatagram(d, 200, nil); err != nil || string(d) != "\x00again" {
		t.Fatalf("after oversized: %q %v", d, err)
	}
	var closed *ClosedError
	if _, err := p.readDatagram(d, 200, nil); !errors.As(err, &closed) || closed.Reason != "peer left" {
		t.Fatalf("close: %v", err)
	}
	if _, err := p.readDatagram(d, 200, nil); !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v", err)
	}
}

// A long reason is cut to maxCloseReason bytes without splitting a rune.
func TestCloseReasonCut(t *testing.T) {
	for _, reason := range []string{
		strings.Repeat("a", maxCloseReason-1) + "é",  // é's two bytes straddle the limit
		strings.Repeat("€", maxCloseReason),          // three bytes a rune
		strings.Repeat("a", maxCloseReason) + "tail", // ASCII: cut at the limit
	} {
		p := newCapsuleReader(bytes.NewReader(closeCapsule(reason)))
		var closed *ClosedError
		if _, err := p.readDatagram(nil, 0, nil); !errors.As(err, &closed) {
			t.Fatalf("close capsule: %v", err)
		}
		got := closed.Reason
		if !utf8.ValidString(got) || len(got) > maxCloseReason || len(got) < maxCloseReason-3 || !strings.HasPrefix(reason, got) {
			t.Errorf("reason of %d bytes cut to %d bytes %q", len(reason), len(got), got)
		}
	}
}

func TestParseTarget(t *testing.T) {
	peer := "5f" + string(bytes.Repeat([]byte("ab"), 31))
	for _, tc := range []struct {
		path   string
		status int
	}{
		{PathPrefix + peer + "/443/", 0},
		{PathPrefix + string(bytes.ToUpper([]byte(peer))) + "/1/", 0},
		{PathPrefix + "192.0.2.1/443/", 403},
		{PathPrefix + "2001%3Adb8%3A%3A1/443/", 403},
		{PathPrefix + "example.com/443/", 403},
		{PathPrefix + peer + "/", 400},
		{PathPrefix + peer + "/443/x/", 400},
		{"/elsewhere", 404},
	} {
		_, ref := parseTarget(tc.path)
		got := 0
		if ref != nil {
			got = ref.status
		}
		if got != tc.status {
			t.Errorf("%s: status %d, want %d", tc.path, got, tc.status)
		}
	}
}

// FuzzCapsules feeds arbitrary bytes to the capsule reader that HTTP/2
// legs and StreamConn use: nothing may panic, no datagram may exceed the
// limit, and the reader must always make progress or stop.
func FuzzCapsules(f *testing.F) {
	f.Add(appendCapsule(nil, CapsuleDatagram, []byte("\x00hi")))
	f.Add(closeCapsule("bye"))
	f.Add(appendCapsule(appendCapsule(nil, 0x29, nil), CapsuleDatagram, make([]byte, 100)))
	f.Add([]byte{0x40})
	f.Add([]byte{0x40, 0x00, 0x02, 0x00, 0x01}) // DATAGRAM, its type in two bytes
	f.Add([]byte{0x00, 0x80, 0x00})             // a header cut short
	f.Fuzz(func(t *testing.T, data []byte) {
		p := newCapsuleReader(bytes.NewReader(data))
		var buf []byte
		for range len(data) + 1 {
			d, err := p.readDatagram(buf, 64, nil)
			if errors.Is(err, errCapsuleTooLarge) {
				continue
			}
			if err != nil {
				return
			}
			if len(d) > 64 {
				t.Fatalf("datagram of %d bytes passed a 64-byte limit", len(d))
			}
			buf = d
		}
		t.Fatal("the reader neither made progress nor stopped")
	})
}

// repeatReader yields its bytes over and over.
type repeatReader struct {
	b   []byte
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := copy(p, r.b[r.off:])
	r.off = (r.off + n) % len(r.b)
	return n, nil
}

// A DATAGRAM capsule relayed from one HTTP/2 leg to another (read, queued,
// framed into the batch that is written) allocates nothing: it is read
// into a pooled buffer that the batch frames, and then pools again.
func TestCapsuleRelayAllocs(t *testing.T) {
	payload := append([]byte{0}, bytes.Repeat([]byte{7}, 1200)...)
	p := newCapsuleReader(&repeatReader{b: appendCapsule(nil, CapsuleDatagram, payload)})
	cfg := Config{}.withDefaults()
	var total atomic.Int64
	q := newQueue(&cfg, &total)
	var batch []byte
	relayOne := func() {
		d, err := p.readDatagram(newDatagram(0), cfg.MaxDatagramSize, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q.push(item{b: d}) != pushed {
			t.Fatal("not queued")
		}
		it, _ := q.next()
		batch = appendItem(batch[:0], it)
		q.release(cap(it.b))
	}
	relayOne() // the batch buffer grows once
	allocs := testing.AllocsPerRun(1000, relayOne)
	if allocs > 0 && !raceEnabled { // under -race sync.Pool drops on purpose
		t.Fatalf("%.2f allocations per relayed capsule", allocs)
	}
	if !bytes.Equal(batch, appendCapsule(nil, CapsuleDatagram, payload)) || total.Load() != 0 {
		t.Fatalf("batch %d bytes, %d bytes still counted", len(batch), total.Load())
	}
}

// readUDP reads a UDP payload straight into the caller's buffer, cut to
// it, and skips what is not one; what it leaves, readDatagram reads.
func TestReadUDP(t *testing.T) {
	var stream []byte
	stream = appendCapsule(stream, CapsuleDatagram, []byte("\x00hello"))
	stream = appendCapsule(stream, CapsuleDatagram, []byte("\x02other context"))
	stream = appendCapsule(stream, CapsuleDatagram, append([]byte{0}, make([]byte, 100)...)) // over the limit
	stream = appendCapsule(stream, CapsuleDatagram, []byte("\x40\x00zero in two bytes"))
	stream = appendCapsule(stream, CapsuleDatagram, []byte("\x00cut to the buffer, not longer"))
	stream = append(stream, closeCapsule("bye")...)
	p := newCapsuleReader(bytes.NewReader(stream))
	b := make([]byte, 17)
	var got []string
	for range 6 {
		n, ok, err := p.readUDP(b, 64)
		if err != nil || !ok {
			t.Fatalf("after %q: %d %v %v", got, n, ok, err)
		}
		if n >= 0 {
			got = append(got, string(b[:n]))
		}
		if len(got) == 3 {
			break
		}
	}
	if want := []string{"hello", "zero in two bytes", "cut to the buffer"}; !slices.Equal(got, want) {
		t.Fatalf("read %q, want %q", got, want)
	}
	if _, ok, _ := p.readUDP(b, 64); ok {
		t.Fatal("readUDP took a CLOSE capsule")
	}
	var closed *ClosedError
	if _, err := p.readDatagram(nil, 64, nil); !errors.As(err, &closed) {
		t.Fatalf("close: %v", err)
	}
}

// FuzzReadUDP feeds arbitrary bytes to StreamConn's read: readUDP, and
// readDatagram for what it leaves. Nothing may panic, no payload may
// overrun the buffer, and every call must consume or stop.
func FuzzReadUDP(f *testing.F) {
	f.Add(appendCapsule(nil, CapsuleDatagram, []byte("\x00hi")))
	f.Add(appendCapsule(nil, CapsuleDatagram, []byte("\x40\x00hi")))
	f.Add(appendCapsule(nil, CapsuleDatagram, []byte("\x80")))
	f.Add(append(appendCapsule(nil, CapsuleDatagram, nil), closeCapsule("bye")...))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := newCapsuleReader(bytes.NewReader(data))
		b := make([]byte, 8)
		for range len(data) + 1 {
			n, ok, err := p.readUDP(b, 64)
			if err != nil {
				return
			}
			if !ok {
				if _, err := p.readDatagram(nil, 64, nil); err != nil && !errors.Is(err, errCapsuleTooLarge) {
					return
				}
				continue
			}
			if n > len(b) {
				t.Fatalf("read %d bytes into %d", n, len(b))
			}
		}
		t.Fatalf("%d bytes not consumed in %d reads", len(data), len(data)+1)
	})
}
