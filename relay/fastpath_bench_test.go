package relay

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkFastPathCPU prints the CPU the super peer spends per relayed
// datagram on the fast path (fast path to fast path, 1209-byte DATA), and
// a plain UDP forwarder's in the same run (the loop of
// internal/bench/udpforward: one read, one write per datagram), each
// forwarding loop on a thread of its own whose CPU time (getrusage
// RUSAGE_THREAD) is what is measured. Issue 12's target: at most 1.5×
// the forwarder's. Run with -benchtime=1x; b.N is ignored.
func BenchmarkFastPathCPU(b *testing.B) {
	const n, rounds = 200_000, 2
	for r := range rounds {
		fwd := measureForwarderLoop(b, n)
		fast := measureFastPathLoop(b, n)
		fmt.Printf("round %d: forwarder %.0f ns CPU/datagram (%d delivered), fast path %.0f ns CPU/datagram (%d delivered): %.2f×\n",
			r+1, fwd.perDatagram(), fwd.delivered, fast.perDatagram(), fast.delivered, fast.perDatagram()/fwd.perDatagram())
		b.ReportMetric(fwd.perDatagram(), "fwd-ns/dgram")
		b.ReportMetric(fast.perDatagram(), "fast-ns/dgram")
	}
	b.ReportMetric(0, "ns/op")
}

type loopCPU struct {
	cpu       time.Duration
	delivered uint64
}

func (l loopCPU) perDatagram() float64 { return float64(l.cpu.Nanoseconds()) / float64(l.delivered) }

// onThread runs loop locked to a thread and returns that thread's CPU.
func onThread(loop func()) <-chan time.Duration {
	ch := make(chan time.Duration, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		t0 := threadCPU()
		loop()
		ch <- threadCPU() - t0
	}()
	return ch
}

func threadCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loopbackUDP(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadBuffer(4 << 20)
	c.SetWriteBuffer(4 << 20)
	return c
}

// blast sends n copies of p from a to dst, at most window ahead of what
// B counted, and returns what B received.
func blast(a *net.UDPConn, dst netip.AddrPort, p []byte, n int, received *atomic.Uint64) uint64 {
	const window = 256
	var lost uint64
	last, progress := uint64(0), time.Now()
	for sent := uint64(0); sent < uint64(n); {
		got := received.Load()
		if got != last {
			last, progress = got, time.Now()
		}
		if sent-got-lost < window {
			a.WriteToUDPAddrPort(p, dst)
			sent++
			continue
		}
		if time.Since(progress) > 20*time.Millisecond {
			lost = sent - got // given up for lost
			continue
		}
		runtime.Gosched()
	}
	time.Sleep(50 * time.Millisecond) // the last in flight
	return received.Load()
}

func count(c *net.UDPConn, received *atomic.Uint64) {
	buf := make([]byte, 2048)
	for {
		if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
			return
		}
		received.Add(1)
	}
}

func measureForwarderLoop(b *testing.B, n int) loopCPU {
	fwd, a, bb := loopbackUDP(b), loopbackUDP(b), loopbackUDP(b)
	defer a.Close()
	defer bb.Close()
	pa, pb := a.LocalAddr().(*net.UDPAddr).AddrPort(), bb.LocalAddr().(*net.UDPAddr).AddrPort()
	cpu := onThread(func() {
		buf := make([]byte, 64<<10)
		for {
			k, src, err := fwd.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			dst := pa
			if src == pa {
				dst = pb
			}
			fwd.WriteToUDPAddrPort(buf[:k], dst)
		}
	})
	var received atomic.Uint64
	go count(bb, &received)
	got := blast(a, fwd.LocalAddr().(*net.UDPAddr).AddrPort(), make([]byte, 1209), n, &received)
	fwd.Close()
	return loopCPU{cpu: <-cpu, delivered: got}
}

func measureFastPathLoop(b *testing.B, n int) loopCPU {
	conn, a, bb := loopbackUDP(b), loopbackUDP(b), loopbackUDP(b)
	defer a.Close()
	defer bb.Close()
	fp, ba, _, _ := fastPathPair(b, conn, bb.LocalAddr().(*net.UDPAddr).AddrPort())
	pa := a.LocalAddr().(*net.UDPAddr).AddrPort()
	ba.addr.Store(&boundAddr{ap: pa, ua: net.UDPAddrFromAddrPort(pa)})
	cpu := onThread(func() { fp.serve() })
	var received atomic.Uint64
	go count(bb, &received)
	p := appendFastPathHeader(nil, fpData, ba.id)
	p = append(p, make([]byte, 1200)...)
	got := blast(a, conn.LocalAddr().(*net.UDPAddr).AddrPort(), p, n, &received)
	conn.Close()
	if d := fp.stats.FastPath.Dropped(FastPathWrongSource) + fp.stats.FastPath.Dropped(FastPathRateLimited); d != 0 {
		b.Fatalf("the fast path dropped %d", d)
	}
	return loopCPU{cpu: <-cpu, delivered: got}
}
