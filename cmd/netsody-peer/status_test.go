package main

import (
	"strings"
	"testing"

	"github.com/netsody/superpeer/peer"
)

// TestPrintStatusReasons: status says which transport carries a relay,
// and why it is not a better one when a measurement moved it.
func TestPrintStatusReasons(t *testing.T) {
	st := peer.Status{
		PeerID: "self",
		SuperPeers: []peer.SuperPeerStatus{
			{URL: "https://sp.example", Connected: true, RTTMillis: 12, Family: "ipv4", Transport: "h2", TransportReason: "HTTP/3 unanswered for 3s"},
		},
		Peers: []peer.PeerStatus{
			{PeerID: "a", Path: peer.PathRelay, SuperPeer: "https://sp.example", Transport: "h2", RelayTransport: peer.RelayH2, RelayReason: "HTTP/3 unanswered for 3s"},
			{PeerID: "b", Path: peer.PathRelay, SuperPeer: "https://sp.example", Transport: "h3", RelayTransport: peer.RelayH3, RelayReason: "fast path unanswered"},
			{PeerID: "c", Path: peer.PathRelay, SuperPeer: "https://sp.example", Transport: "h3", RelayTransport: peer.RelayFast},
		},
	}
	var b strings.Builder
	if err := printStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"h2 (HTTP/3 unanswered for 3s)",
		"https://sp.example (h2: HTTP/3 unanswered for 3s)",
		"https://sp.example (h3: fast path unanswered)",
		"https://sp.example (fast) ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}
