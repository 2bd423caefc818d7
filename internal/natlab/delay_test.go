package natlab

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestDelay checks that WithDelay delays UDP and TCP, IPv4 and IPv6, in both
// directions, for a public host and for a NAT with its LAN, and that the far
// side still sees real addresses. Only lower bounds and generous ratios are
// asserted: the machine is shared.
func TestDelay(t *testing.T) {
	t.Parallel()
	const d = 40 * time.Millisecond
	lab := NewForTest(t, Options{})
	fast := mustPublic(t, lab, "fast")
	slow := mustPublic(t, lab, "slow", WithDelay(d))
	pub := mustPublic(t, lab, "pub")
	nat := mustNAT(t, lab, "nat", PortDependentFiltering)
	dev := mustDevice(t, nat, "dev")
	slowNAT := mustNAT(t, lab, "slownat", PortDependentFiltering, WithDelay(d))
	slowDev := mustDevice(t, slowNAT, "slowdev")

	for _, v6 := range families(t, lab) {
		t.Run(familyName(v6), func(t *testing.T) {
			t.Parallel() // IPv6 sockets are v6-only: the ports do not clash
			fastS, slowS := serverOn(t, fast, v6, 3478), serverOn(t, slow, v6, 3478)
			for _, s := range []endpoint{fastS, slowS} {
				// The kernel completes handshakes without Accept.
				ln, err := listenTCP(fast, s.addr)
				if s == slowS {
					ln, err = listenTCP(slow, s.addr)
				}
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
			}
			for _, c := range []struct {
				from    *Host
				public  netip.Addr // the source the servers must see
				slowUp  bool       // the client's own uplink is delayed
				samples int
			}{
				{pub, ip(pub, v6), false, 5},
				{dev, ip(nat.Router(), v6), false, 5},
				{slowDev, ip(slowNAT.Router(), v6), true, 2},
			} {
				client := udpOn(t, c.from, v6, 0)
				toFast := minRTT(t, c.samples, func() (time.Duration, error) {
					rtt, src, err := udpRTT(client, fastS)
					if err == nil && src.Addr() != c.public {
						t.Errorf("fast host saw %v, want %v", src, c.public)
					}
					return rtt, err
				})
				toSlow := minRTT(t, 2, func() (time.Duration, error) {
					rtt, src, err := udpRTT(client, slowS)
					if err == nil && src.Addr() != c.public {
						t.Errorf("delayed host saw %v, want the real source %v", src, c.public)
					}
					return rtt, err
				})
				tcpFast := minRTT(t, c.samples, func() (time.Duration, error) {
					return tcpConnect(c.from, fastS.addr, 3*time.Second)
				})
				tcpSlow := minRTT(t, 2, func() (time.Duration, error) {
					return tcpConnect(c.from, slowS.addr, 3*time.Second)
				})
				t.Logf("%s %s: UDP RTT fast %v slow %v; TCP connect fast %v slow %v",
					familyName(v6), c.from.Name(), toFast, toSlow, tcpFast, tcpSlow)

				wantSlow := 2 * d
				if c.slowUp {
					wantSlow = 4 * d // both uplinks are delayed
					if toFast < 2*d || tcpFast < 2*d {
						t.Errorf("%s behind a delayed NAT: RTT to the fast host %v/%v, want ≥ %v", c.from.Name(), toFast, tcpFast, 2*d)
					}
				} else if toFast >= d || tcpFast >= d {
					t.Errorf("%s: RTT to the undelayed host %v/%v, want well below %v", c.from.Name(), toFast, tcpFast, d)
				}
				if toSlow < wantSlow || tcpSlow < wantSlow {
					t.Errorf("%s: RTT to the delayed host %v/%v, want ≥ %v", c.from.Name(), toSlow, tcpSlow, wantSlow)
				}
			}
			tcpBulk(t, pub, slow, v6)
		})
	}

	t.Cleanup(func() {
		if n := slow.DelayDropped() + slowNAT.Router().DelayDropped(); n != 0 {
			t.Errorf("delay routers dropped %d packets", n)
		}
	})
}

// TestSetDelay checks that SetDelay changes a delay router's delay.
func TestSetDelay(t *testing.T) {
	t.Parallel()
	const d = 40 * time.Millisecond
	lab := NewForTest(t, Options{})
	slow := mustPublic(t, lab, "slow", WithDelay(0))
	pub := mustPublic(t, lab, "pub")
	client := udpOn(t, pub, false, 0)
	s := serverOn(t, slow, false, 3478)
	rtt := func() time.Duration {
		return minRTT(t, 3, func() (time.Duration, error) {
			rtt, _, err := udpRTT(client, s)
			return rtt, err
		})
	}
	if got := rtt(); got >= d {
		t.Errorf("RTT with WithDelay(0) is %v, want well below %v", got, d)
	}
	if err := slow.SetDelay(d); err != nil {
		t.Fatal(err)
	}
	if got := rtt(); got < 2*d {
		t.Errorf("RTT after SetDelay(%v) is %v, want ≥ %v", d, got, 2*d)
	}
	if slow.Delay() != d {
		t.Errorf("Delay() = %v, want %v", slow.Delay(), d)
	}
	if err := slow.SetDelay(0); err != nil {
		t.Fatal(err)
	}
	if got := rtt(); got >= d {
		t.Errorf("RTT after SetDelay(0) is %v, want well below %v", got, d)
	}
}

// minRTT runs measure n times and returns the smallest result.
func minRTT(t *testing.T, n int, measure func() (time.Duration, error)) time.Duration {
	t.Helper()
	best := time.Duration(1<<63 - 1)
	for range n {
		rtt, err := measure()
		if err != nil {
			t.Fatal(err)
		}
		best = min(best, rtt)
	}
	return best
}

// tcpBulk sends 1 MiB over TCP through the delay router, which must carry
// full-size segments (GSO packets are split before they reach the TUN).
func tcpBulk(t *testing.T, from, to *Host, v6 bool) {
	t.Helper()
	network := "tcp4"
	if v6 {
		network = "tcp6"
	}
	ln, err := to.Listen(network, net.JoinHostPort(ip(to, v6).String(), "9000"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	payload := bytes.Repeat([]byte("natlab"), 1<<20/6)

	var wg sync.WaitGroup
	var got []byte
	var serverErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
		c, err := ln.Accept()
		if err != nil {
			serverErr = err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		got, serverErr = io.ReadAll(c)
	}()
	start := time.Now()
	elapsed, err := func() (time.Duration, error) {
		c, err := tcpDial(from, netip.AddrPortFrom(ip(to, v6), 9000))
		if err != nil {
			return 0, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(payload); err != nil {
			return 0, err
		}
		return time.Since(start), c.(*net.TCPConn).CloseWrite()
	}()
	wg.Wait()
	if err != nil || serverErr != nil {
		t.Fatalf("bulk TCP through the delay router: client %v, server %v", err, serverErr)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("bulk TCP: received %d bytes, sent %d", len(got), len(payload))
	}
	t.Logf("%s: 1 MiB over TCP to the delayed host written in %v", familyName(v6), elapsed)
}
