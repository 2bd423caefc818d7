package l4stun_test

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

const (
	// burstSources and burstDatagrams: each source sends a burst of
	// datagrams at once, as a client that retransmits fast or an attacker
	// does. caddy-l4 queues five per client; 30 stopped a listener whose
	// handler had returned.
	burstSources   = 100
	burstDatagrams = 30
	burstRounds    = 3
)

// Attack: bursts of datagrams from many sources, to fill caddy-l4's queue
// of a client whose handler no longer reads it, which stops the whole
// UDP listener. After every round, clients that were not part of it are
// still answered.
func TestBurstsLeaveOthersServed(t *testing.T) {
	_, port := startSTUN(t, 2*time.Second)
	server := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	req := bindingRequest(t).Raw
	junk := []byte("not STUN, but a datagram all the same")
	for round := range burstRounds {
		var wg sync.WaitGroup
		for i := range burstSources {
			// Distinct /32s of loopback: distinct clients for caddy-l4 and
			// distinct budgets for the responder.
			src := fmt.Sprintf("127.0.%d.%d:0", 1+round, 1+i)
			wg.Go(func() {
				pc, err := net.ListenPacket("udp", src)
				if err != nil {
					t.Error(err)
					return
				}
				defer pc.Close()
				for j := range burstDatagrams {
					b := req
					if j%3 == 2 {
						b = junk
					}
					pc.WriteTo(b, net.UDPAddrFromAddrPort(server))
				}
			})
		}
		wg.Wait()
		for i := range 5 {
			pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.%d.%d:0", 100+round, 1+i))
			if err != nil {
				t.Fatal(err)
			}
			got, ok := ask(t, pc, server, 5, 500*time.Millisecond)
			pc.Close()
			if !ok || got.Addr() != netip.MustParseAddr(fmt.Sprintf("127.0.%d.%d", 100+round, 1+i)) {
				t.Fatalf("round %d: client %d not served after the bursts (got %v, %v)", round, i, got, ok)
			}
		}
	}
}
