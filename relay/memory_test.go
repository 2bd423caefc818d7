package relay

import (
	"crypto/tls"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/netsody/superpeer/rendezvous"
)

// pausedConn is a device's TCP connection whose reads stop on pause, so
// that the super peer's writes to it fill the TCP window and block: a
// receiver that stops reading its HTTP/2 leg.
type pausedConn struct {
	net.Conn
	once    sync.Once
	paused  chan struct{} // closed by pause
	resumed chan struct{} // closed by resume
}

func (c *pausedConn) Read(b []byte) (int, error) {
	select {
	case <-c.paused:
		<-c.resumed
	default:
	}
	return c.Conn.Read(b)
}

// ConnectionState lets the HTTP/2 client see the TLS state, to which the
// rendezvous session binds its registration.
func (c *pausedConn) ConnectionState() tls.ConnectionState {
	return c.Conn.(*tls.Conn).ConnectionState()
}

func (c *pausedConn) resume() { c.once.Do(func() { close(c.resumed) }) }

// A receiver that stops reading while its peer floods holds at most its
// queue bound on the super peer, and not for long: with one pair of
// identities at the most sessions a device may hold (about 10 MiB before
// queues were bounded in bytes, until the 10 s write timeout), the relay's
// queued bytes stay within QueueBytes per leg, the process's heap grows by
// at most that plus the HTTP/2 buffers the stated bound allows for, and
// every stalled leg ends within StallTimeout of filling up.
func TestStalledReceiverMemoryBounded(t *testing.T) {
	cfg := Config{}.withDefaults()
	ts := newTestServer(t, Config{})
	legs := cfg.MaxSessionsPerDevice
	var conn *pausedConn
	b := ts.deviceWith(t, func(c *rendezvous.ClientConfig) {
		c.URL, c.Transport = ts.H2URL, rendezvous.TransportH2
		c.NewH2Conn = func(tc *tls.Conn) (rendezvous.H2Conn, error) {
			conn = &pausedConn{Conn: tc, paused: make(chan struct{}), resumed: make(chan struct{})}
			return new(http2.Transport).NewClientConn(conn)
		}
	})
	t.Cleanup(conn.resume) // before b's session closes: cleanups run last first
	// A floods over HTTP/3, whose client holds little: an HTTP/2 client
	// holds a 512 KiB scratch buffer per streamed request body, which this
	// process's heap would count against the super peer.
	a := ts.device(t, rendezvous.TransportH3)
	senders := make([]net.PacketConn, legs)
	for i := range senders {
		senders[i], _ = pair(t, a, b)
	}

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	close(conn.paused)
	start := time.Now()
	var held atomic.Bool // senders wait while the heap is measured
	var flood sync.WaitGroup
	for _, c := range senders {
		flood.Go(func() {
			// Small enough for a QUIC datagram before path MTU discovery
			// has raised the packet size: a larger one fails to send.
			p := make([]byte, 1100)
			for {
				if held.Load() {
					time.Sleep(time.Millisecond)
					continue
				}
				if _, err := c.WriteTo(p, nil); err != nil {
					return // the relay ended the session
				}
			}
		})
	}
	defer flood.Wait()

	// Each leg's bytes count from its queue until its write returns, so
	// the gauge bounds what the relay holds for B.
	maxQueued := int64(legs * cfg.QueueBytes)
	// Live heap: the queues, each leg's batch being written beside the
	// items it was copied from, and 1 MiB for the rest of both ends'
	// buffers. Heap in use also holds the spans that the queued datagrams
	// share with the flood's garbage: twice that.
	inFlight := legs * (maxCapsuleBatch + 2*cfg.MaxDatagramSize)
	maxLive := uint64(maxQueued) + uint64(inFlight) + 1<<20

	// Once B's queues are full, the senders pause while the heap is
	// measured, so that their garbage does not count.
	// On a loaded machine the queues fill slowly, and the first full ones
	// may end (StallTimeout) before the last fill: the first stall is as
	// full as it gets.
	for st := ts.rl.Stats(); st.QueuedBytes.Load() < maxQueued*9/10 && st.Stalled.Load() == 0; {
		if time.Since(start) > 30*time.Second {
			var drops []uint64
			for r := range numDropReasons {
				drops = append(drops, st.Dropped(r))
			}
			t.Fatalf("B's queues hold %d KiB after %v, none stalled; active %d, delivered %d, dropped %v, refused %v", st.QueuedBytes.Load()>>10, time.Since(start), st.Active.Load(), st.Datagrams.Load(), drops, st.Refused())
		}
		time.Sleep(5 * time.Millisecond)
	}
	held.Store(true)
	time.Sleep(20 * time.Millisecond) // let datagrams on their way land
	runtime.GC()
	var now runtime.MemStats
	runtime.ReadMemStats(&now)
	held.Store(false)
	growth := func(after, before uint64) uint64 { return max(after, before) - before }
	live, inUse := growth(now.HeapAlloc, before.HeapAlloc), growth(now.HeapInuse, before.HeapInuse)
	queued := ts.rl.Stats().QueuedBytes.Load()
	t.Logf("%d legs after %v: %d KiB queued (bound %d KiB); heap grew by %d KiB live (bound %d KiB), %d KiB in use (bound %d KiB)",
		legs, time.Since(start).Round(time.Millisecond), queued>>10, maxQueued>>10, live>>10, maxLive>>10, inUse>>10, 2*maxLive>>10)
	if queued > maxQueued {
		t.Errorf("%d KiB queued, want at most %d KiB", queued>>10, maxQueued>>10)
	}
	if live > maxLive || inUse > 2*maxLive {
		t.Errorf("heap grew by %d KiB live and %d KiB in use while the receiver stalled, want at most %d and %d KiB", live>>10, inUse>>10, maxLive>>10, 2*maxLive>>10)
	}

	for ts.rl.Stats().Stalled.Load() < uint64(legs) {
		if time.Since(start) > cfg.StallTimeout+30*time.Second { // generous: a loaded machine fills slowly
			conn.resume()
			t.Fatalf("after %v, %d of %d stalled legs ended; %d bytes queued", time.Since(start), ts.rl.Stats().Stalled.Load(), legs, ts.rl.Stats().QueuedBytes.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("all %d stalled legs ended after %v", legs, time.Since(start).Round(time.Millisecond))
	// The queues are freed as each leg ends. B stopped reading its whole
	// TCP connection, so the write in flight on each leg waits for the
	// connection (its RST_STREAM cannot go out either): those batches are
	// all that is left until B reads again or its connection ends.
	if q := ts.rl.Stats().QueuedBytes.Load(); q > int64(inFlight) {
		t.Errorf("%d bytes still counted after every stalled leg ended, want at most the writes in flight, %d", q, inFlight)
	}
	conn.resume()
	waitFor(t, func() bool { return ts.rl.Stats().QueuedBytes.Load() == 0 })
}
