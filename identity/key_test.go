package identity

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// Every point of small order (RFC 8032's curve has 8) and every kind of
// non-canonical encoding is refused, by text and by bytes; so is a string
// that is no point at all. A real key passes.
func TestValidate(t *testing.T) {
	id, _ := Generate()
	ff := strings.Repeat("ff", 30)
	for _, tc := range []struct {
		name, hex string
		want      error
	}{
		{"a generated key", id.PeerID().String(), nil},
		{"y=0x030201, a point of large order", "010203" + strings.Repeat("00", 29), nil},

		// The 8 points of small order, canonically encoded.
		{"order 1: the identity (0, 1)", "01" + strings.Repeat("00", 31), errSmallOrder},
		{"order 2: (0, -1)", "ec" + ff + "7f", errSmallOrder},
		{"order 4: (+x, 0), the all-zero ID", strings.Repeat("00", 32), errSmallOrder},
		{"order 4: (-x, 0)", strings.Repeat("00", 31) + "80", errSmallOrder},
		{"order 8", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", errSmallOrder},
		{"order 8, x negated", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", errSmallOrder},
		{"order 8, y negated", "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", errSmallOrder},
		{"order 8, both negated", "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85", errSmallOrder},

		// Non-canonical: y >= p = 2^255-19, or the sign bit set where x is 0.
		{"y = p+1, the identity again", "ee" + ff + "7f", errNonCanonical},
		{"y = p+3, a point of large order", "f0" + ff + "7f", errNonCanonical},
		{"y = 2^255-1", "ff" + ff + "7f", errNonCanonical},
		{"the identity with the sign bit", "01" + strings.Repeat("00", 30) + "80", errNonCanonical},
		{"(0, -1) with the sign bit", "ec" + ff + "ff", errNonCanonical},

		{"no point: y = p+2", "ef" + ff + "7f", errNotOnCurve},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := hex.DecodeString(tc.hex)
			if err != nil || len(b) != PeerIDLen {
				t.Fatalf("bad test vector %q", tc.hex)
			}
			if err := PeerID(b).Validate(); !errors.Is(err, tc.want) {
				t.Errorf("Validate() = %v, want %v", err, tc.want)
			}
			if _, err := ParsePeerID(tc.hex); !errors.Is(err, tc.want) {
				t.Errorf("ParsePeerID = %v, want %v", err, tc.want)
			}
			if _, err := PeerIDFromBytes(b); !errors.Is(err, tc.want) {
				t.Errorf("PeerIDFromBytes = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := PeerIDFromBytes(make([]byte, 31)); err == nil {
		t.Error("PeerIDFromBytes took 31 bytes")
	}
}

// Why it matters: a small-order key "signs" every message with a
// signature anyone can write, and ed25519.Verify accepts it.
func TestSmallOrderKeyForges(t *testing.T) {
	key, _ := hex.DecodeString("01" + strings.Repeat("00", 31))
	forged := append(append([]byte{}, key...), make([]byte, 32)...) // R = identity, S = 0
	if !ed25519.Verify(ed25519.PublicKey(key), []byte("any message"), forged) {
		t.Skip("this Go's ed25519.Verify refuses small-order keys itself")
	}
	if PeerID(key).Validate() == nil {
		t.Fatal("a key that verifies a forged signature passes Validate")
	}
}
