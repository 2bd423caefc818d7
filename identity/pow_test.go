package identity

import (
	"context"
	"strings"
	"testing"
)

// Netsody's own test vector.
func TestProofOfWorkVector(t *testing.T) {
	peer, err := ParsePeerID("9331341e09d313baa4027a2fccea4fd471b9637f2305de714009c46b9192e006")
	if err != nil {
		t.Fatal(err)
	}
	if got := ProofOfWorkBits(peer, -2130520098); got != 24 {
		t.Errorf("leading zero bits %d, want 24 (000000b0…)", got)
	}
	if err := CheckProofOfWork(peer, -2130520098, DefaultProofOfWorkBits); err != nil {
		t.Error(err)
	}
	if err := CheckProofOfWork(peer, -2130520098, 25); err == nil || !strings.Contains(err.Error(), "24 leading zero bits, 25 are required") {
		t.Errorf("at 25 bits: %v", err)
	}
	if err := CheckProofOfWork(peer, 0, DefaultProofOfWorkBits); err == nil {
		t.Error("nonce 0 passes at 24 bits")
	}
}

func TestMineProofOfWork(t *testing.T) {
	id, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	nonce, err := MineProofOfWork(context.Background(), id.PeerID(), 12, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckProofOfWork(id.PeerID(), nonce, 12); err != nil {
		t.Error(err)
	}
	if _, err := MineProofOfWork(context.Background(), id.PeerID(), 33, nil); err == nil {
		t.Error("33 bits accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var reports int
	if _, err := MineProofOfWork(ctx, id.PeerID(), 32, func(uint64) { reports++ }); err == nil || reports != 0 {
		t.Errorf("a cancelled mining: %v, %d reports", err, reports)
	}
}
