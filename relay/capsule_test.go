package relay

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/quic-go/quic-go/http3"
)

func TestCapsules(t *testing.T) {
	var stream []byte
	stream = appendCapsule(stream, 0x17, []byte("grease: skipped"))
	stream = appendCapsule(stream, CapsuleDatagram, []byte("\x00hello"))
	stream = appendCapsule(stream, CapsuleDatagram, bytes.Repeat([]byte{1}, 300)) // over the limit
	stream = appendCapsule(stream, CapsuleDatagram, []byte("\x00again"))
	stream = append(stream, closeCapsule("peer left")...)
	p := http3.NewCapsuleParser(bytes.NewReader(stream))
	d, err := readDatagram(p, nil, 200, nil)
	if err != nil || string(d) != "\x00hello" {
		t.Fatalf("first: %q %v", d, err)
	}
	if _, err := readDatagram(p, d, 200, nil); !errors.Is(err, errCapsuleTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
	if d, err = readDatagram(p, d, 200, nil); err != nil || string(d) != "\x00again" {
		t.Fatalf("after oversized: %q %v", d, err)
	}
	var closed *ClosedError
	if _, err := readDatagram(p, d, 200, nil); !errors.As(err, &closed) || closed.Reason != "peer left" {
		t.Fatalf("close: %v", err)
	}
	if _, err := readDatagram(p, d, 200, nil); !errors.Is(err, io.EOF) {
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
		p := http3.NewCapsuleParser(bytes.NewReader(closeCapsule(reason)))
		var closed *ClosedError
		if _, err := readDatagram(p, nil, 0, nil); !errors.As(err, &closed) {
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
	f.Fuzz(func(t *testing.T, data []byte) {
		p := http3.NewCapsuleParser(bytes.NewReader(data))
		var buf []byte
		for range len(data) + 1 {
			d, err := readDatagram(p, buf, 64, nil)
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
