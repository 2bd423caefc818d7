package identity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"math/bits"
	"strconv"
)

// Netsody's proof of work makes a peer ID cost something: SHA-256 over the
// ASCII string of the peer ID in lowercase hex followed by the nonce as a
// signed 32-bit decimal must start with at least a given number of zero
// bits. A super peer may demand it (the pow admission module); the nonce
// is the identity file's ProofOfWork.

// DefaultProofOfWorkBits is Netsody's default difficulty: about 16.8
// million hashes to find a nonce, seconds on one core, while making
// identities in bulk costs that much each.
const DefaultProofOfWorkBits = 24

// MaxProofOfWorkBits is the most a check may demand: a 32-bit nonce gives
// about 2^32 tries, so more than 32 bits would find no nonce for most keys.
const MaxProofOfWorkBits = 32

// minePrintEvery is how many hashes Mine tries between progress reports:
// a few reports a second on one core.
const minePrintEvery = 1 << 20

// ProofOfWorkBits returns how many leading zero bits the proof-of-work
// hash of peer with nonce has.
func ProofOfWorkBits(peer PeerID, nonce int32) int {
	var buf [2*PeerIDLen + 11]byte // hex ID and "-2147483648"
	hex.Encode(buf[:], peer[:])
	b := strconv.AppendInt(buf[:2*PeerIDLen], int64(nonce), 10)
	return leadingZeroBits(sha256.Sum256(b))
}

func leadingZeroBits(h [sha256.Size]byte) int {
	n := 0
	for _, c := range h {
		if c != 0 {
			return n + bits.LeadingZeros8(c)
		}
		n += 8
	}
	return n
}

// CheckProofOfWork reports, in words a device's operator can act on,
// whether peer's nonce has at least want leading zero bits.
func CheckProofOfWork(peer PeerID, nonce int32, want int) error {
	if got := ProofOfWorkBits(peer, nonce); got < want {
		return fmt.Errorf("identity: proof of work %d has %d leading zero bits, %d are required; mine one with `netsody-peer keygen --pow %d`",
			nonce, got, want, want)
	}
	return nil
}

// MineProofOfWork searches nonces from math.MinInt32 upwards for one with
// at least want leading zero bits, calling progress (if set) every
// minePrintEvery hashes with the number tried. It stops when ctx ends,
// and fails if no 32-bit nonce has them.
func MineProofOfWork(ctx context.Context, peer PeerID, want int, progress func(tried uint64)) (int32, error) {
	if want < 0 || want > MaxProofOfWorkBits {
		return 0, fmt.Errorf("identity: proof-of-work difficulty %d is out of range 0 to %d bits", want, MaxProofOfWorkBits)
	}
	var tried uint64
	for n := int64(math.MinInt32); n <= math.MaxInt32; n++ {
		if ProofOfWorkBits(peer, int32(n)) >= want {
			return int32(n), nil
		}
		tried++
		if tried%minePrintEvery == 0 {
			if err := ctx.Err(); err != nil {
				return 0, fmt.Errorf("identity: mining proof of work: %w after %d hashes", err, tried)
			}
			if progress != nil {
				progress(tried)
			}
		}
	}
	return 0, fmt.Errorf("identity: no 32-bit nonce gives this key %d leading zero bits; make a new key", want)
}
