package abuse_test

// Attack f: a device that stops reading its HTTP/2 connection while its
// peer floods it through the relay, so that the super peer holds what it
// cannot deliver.

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

const (
	// floodWindow is how long the receiver stalls while its peer floods:
	// past the relay's stall timeout (relay.DefaultStallTimeout), after
	// which the stalled legs end.
	floodWindow = relay.DefaultStallTimeout + time.Second
	// floodDatagram fits a QUIC datagram before path MTU discovery.
	floodDatagram = 1100
	// memoryBound is what the Caddy process may grow by (VmRSS) while one
	// receiver stalls on every relay session a device may hold: the
	// queues (relay.DefaultQueueBytes, 256 KiB, per leg: 4 MiB for 16),
	// the batch being written beside them per leg (64 KiB and two
	// datagrams: about 1 MiB), twice that for the garbage the Go
	// collector lets live between cycles (GOGC=100), and 12 MiB for
	// the rest: goroutines, quic-go's and HTTP/2's buffers for the
	// flood, and the allocator's slack (measured: 15 MiB in all, here,
	// against 100 MiB in 3 s with the bounds lifted). Before queues
	// were bounded in bytes a leg held 600-750 KiB: 11 MiB of queues
	// alone, for 10 s.
	memoryBound = 2*(16*relay.DefaultQueueBytes+16*(64<<10+2*relay.DefaultMaxDatagramSize)) + 12<<20
)

// stallableConn is a device's TCP connection whose reads stop on stall:
// the super peer's writes to it fill the TCP window and block.
type stallableConn struct {
	*tls.Conn
	stalled chan struct{} // closed by stall
	resumed chan struct{} // closed by resume
	once    sync.Once
}

func (c *stallableConn) Read(b []byte) (int, error) {
	select {
	case <-c.stalled:
		<-c.resumed
	default:
	}
	return c.Conn.Read(b)
}

func (c *stallableConn) resume() { c.once.Do(func() { close(c.resumed) }) }

// vmRSS reads the resident memory of process pid, in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc to read Caddy's memory from: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/<pid>/status")
	return 0
}

// stallFlood pairs a flooding device (over HTTP/3, whose client holds
// little) with a receiver over HTTP/2 on every relay session a device may
// hold, stalls the receiver, floods for floodWindow, and returns Caddy's
// resident memory before the flood and the most it reached during it,
// which stops early once it has grown by enough.
func stallFlood(t *testing.T, c *testcaddy.Caddy, enough int64) (before, peak int64) {
	t.Helper()
	var conn *stallableConn
	b := join(t, c, "127.0.0.1", rendezvous.TransportH2, func(cfg *rendezvous.ClientConfig) {
		cfg.NewH2Conn = func(tc *tls.Conn) (rendezvous.H2Conn, error) {
			conn = &stallableConn{Conn: tc, stalled: make(chan struct{}), resumed: make(chan struct{})}
			return new(http2.Transport).NewClientConn(conn)
		}
	})
	t.Cleanup(conn.resume) // before b's session closes: cleanups run last first
	a := join(t, c, "127.0.0.1", rendezvous.TransportH3)
	var senders []net.PacketConn
	for range relay.DefaultMaxSessionsPerDevice {
		if _, err, _ := introduce(t, a, b.peer(), rendezvous.IntroduceOptions{Relay: true}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		aRes := dialAsync(ctx, a, b)
		_, err := dialRelay(ctx, b, a.peer()) // B's leg: closed with its connection
		ra := <-aRes
		cancel()
		if err != nil || ra.err != nil {
			t.Fatalf("relay pair %d: %v, %v", len(senders), ra.err, err)
		}
		t.Cleanup(func() { ra.c.Close() })
		senders = append(senders, ra.c)
	}
	time.Sleep(200 * time.Millisecond) // settle
	before = vmRSS(t, c.Pid())
	close(conn.stalled)
	var stop atomic.Bool
	var flood sync.WaitGroup
	for _, s := range senders {
		flood.Go(func() {
			p := make([]byte, floodDatagram)
			for !stop.Load() {
				if _, err := s.WriteTo(p, nil); err != nil {
					return // the relay ended the session
				}
			}
		})
	}
	peak = before
	for end := time.Now().Add(floodWindow); time.Now().Before(end) && peak-before < enough; time.Sleep(20 * time.Millisecond) {
		peak = max(peak, vmRSS(t, c.Pid()))
	}
	stop.Store(true)
	flood.Wait()
	conn.Conn.Close() // what Caddy holds for B is not read, nor delivered at last
	conn.resume()
	return before, peak
}

// Caddy's resident memory grows by at most memoryBound while a receiver
// stalls on 16 relay sessions that its peer floods; with the relay's
// queue bounds lifted in the Caddyfile, the same flood grows it past the
// bound, which shows the measurement would see it.
func TestStalledReceiverMemoryBounded(t *testing.T) {
	for _, bounded := range []bool{true, false} {
		name := "bounded"
		opts := ""
		if !bounded {
			name = "unbounded"
			opts = "relay {\n\tqueue_len 65536\n\tqueue_bytes 1GiB\n\tmax_queued_bytes 16GiB\n\tstall_timeout 1h\n}"
		}
		t.Run(name, func(t *testing.T) {
			// Legs that are never delivered hold Caddy's graceful stop
			// until they end: a short grace period cuts them.
			c := testcaddy.Start(t, strings.Replace(caddyfile(opts), "skip_install_trust", "skip_install_trust\n\tgrace_period 1s", 1))
			before, peak := stallFlood(t, c, 2*memoryBound)
			grew := peak - before
			t.Logf("Caddy's VmRSS: %d MiB before, grew by %d KiB during the flood (bound %d KiB)", before>>20, grew>>10, memoryBound>>10)
			if bounded && grew > memoryBound {
				t.Errorf("Caddy grew by %d KiB while a receiver stalled, want at most %d KiB", grew>>10, memoryBound>>10)
			}
			if !bounded && grew <= memoryBound {
				t.Errorf("without the queue bounds Caddy grew by only %d KiB: the bound would not catch the attack", grew>>10)
			}
		})
	}
}
