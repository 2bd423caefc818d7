package relay

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netsody/superpeer/rendezvous"
)

// flood sends size-byte packets, numbered, on c until stop is closed or a
// write fails; gap paces them (0: as fast as c takes them). A write the
// relay holds back blocks until c closes.
func flood(c net.PacketConn, size int, gap time.Duration, stop <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		p := make([]byte, size)
		for seq := uint64(0); ; seq++ {
			select {
			case <-stop:
				return
			default:
			}
			binary.BigEndian.PutUint64(p, seq)
			if _, err := c.WriteTo(p, nil); err != nil {
				return
			}
			if gap > 0 {
				time.Sleep(gap)
			}
		}
	}()
	return done
}

// receiver counts what arrives on c until c closes, and whether packets
// came in order without a gap (flood's numbers).
type receiver struct {
	bytes   atomic.Int64
	gapless atomic.Bool
}

func receive(c net.PacketConn) *receiver {
	r := &receiver{}
	r.gapless.Store(true)
	go func() {
		buf := make([]byte, 2048)
		for next := uint64(0); ; {
			n, _, err := c.ReadFrom(buf)
			if err != nil || n < 8 {
				return
			}
			if seq := binary.BigEndian.Uint64(buf); seq != next {
				r.gapless.Store(false)
				next = seq
			}
			next++
			r.bytes.Add(int64(n))
		}
	}()
	return r
}

// measure returns the bytes rs received in all over d.
func measure(d time.Duration, rs ...*receiver) int64 {
	sum := func() (n int64) {
		for _, r := range rs {
			n += r.bytes.Load()
		}
		return n
	}
	before := sum()
	time.Sleep(d) // the measurement's window, not an assertion
	return sum() - before
}

// within fails t unless got bytes in d fit a budget of rate and burst,
// with some slack for timing.
func within(t *testing.T, what string, got int64, d time.Duration, rate float64, burst int) {
	t.Helper()
	bound := 1.2*(rate*d.Seconds()) + float64(burst)
	t.Logf("%s: %d bytes in %v (%.0f B/s), bound %.0f", what, got, d, float64(got)/d.Seconds(), bound)
	if float64(got) > bound {
		t.Errorf("%s: %d bytes in %v passed a budget of %.0f B/s with a burst of %d", what, got, d, rate, burst)
	}
}

// dialPOST opens d's relay session towards peer as a streamed POST on
// d's own connection: on HTTP/3, a leg of capsules beside its datagrams.
func dialPOST(d *device, peer *device) func(context.Context) (net.PacketConn, error) {
	return func(ctx context.Context) (net.PacketConn, error) {
		if d.s.Transport() == rendezvous.TransportH3 {
			return DialH2(ctx, d.s.HTTP3(), d.s.Authority(), peer.id.PeerID())
		}
		return d.dial(ctx, peer.id.PeerID())
	}
}

func dialer(d, peer *device) func(context.Context) (net.PacketConn, error) {
	return func(ctx context.Context) (net.PacketConn, error) { return d.dial(ctx, peer.id.PeerID()) }
}

const budgetRate, budgetBurst = 100_000, 10_000

// floodPairs starts an HTTP/2 pair and an HTTP/3 pair of new devices, A
// sending to B as fast as it may (HTTP/3: a datagram every 200µs) until
// the test ends; it returns the Bs' receivers, HTTP/2's first.
func floodPairs(t *testing.T, ts *testServer) []*receiver {
	var rs []*receiver
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	for _, tr := range []rendezvous.Transport{rendezvous.TransportH2, rendezvous.TransportH3} {
		a, b := ts.device(t, tr), ts.device(t, tr)
		ab, ba := pair(t, a, b)
		rs = append(rs, receive(ba))
		gap := time.Duration(0)
		if tr == rendezvous.TransportH3 {
			gap = 200 * time.Microsecond
		}
		flood(ab, 1000, gap, stop)
		t.Cleanup(func() { ab.Close() }) // unblocks a held write
	}
	return rs
}

// A device's bandwidth budget is one for all its legs: A sends to B in
// HTTP/3 datagrams and to C in capsules (a POST on the same connection,
// throttled as an HTTP/2 leg is), each leg far below its own rate, and
// what B and C receive together stays within A's budget. The datagrams
// over it are dropped and counted.
func TestDeviceBudgetSumsLegs(t *testing.T) {
	ts := newTestServer(t, Config{DeviceRate: budgetRate, DeviceBurst: budgetBurst})
	a, b, c := ts.device(t, rendezvous.TransportH3), ts.device(t, rendezvous.TransportH3), ts.device(t, rendezvous.TransportH2)
	ab, ba := pair(t, a, b)
	ac, ca := pairDial(t, dialPOST(a, c), dialer(c, a))
	atB, atC := receive(ba), receive(ca)
	stop := make(chan struct{})
	sent := []<-chan struct{}{flood(ab, 1000, 200*time.Microsecond, stop), flood(ac, 1000, 0, stop)}
	const window = 1500 * time.Millisecond
	got := measure(window, atB, atC)
	close(stop)
	ab.Close()
	ac.Close()
	for _, s := range sent {
		<-s
	}
	t.Logf("B (HTTP/3) got %d bytes, C (capsules) %d", atB.bytes.Load(), atC.bytes.Load())
	within(t, "A's two legs", got, window, budgetRate, budgetBurst)
	if ts.rl.Stats().Dropped(DropDeviceBudget) == 0 || ts.rl.Stats().BudgetHits(BudgetDeviceBandwidth) == 0 {
		t.Errorf("no datagram dropped or held back by the device budget")
	}
	if !atC.gapless.Load() {
		t.Errorf("capsules were lost: a leg that carries them must be throttled, not dropped")
	}
}

// The super peer's budget is one for all devices: two pairs that each
// send as fast as their legs take it share it.
func TestTotalBudgetAcrossDevices(t *testing.T) {
	ts := newTestServer(t, Config{TotalRate: budgetRate, TotalBurst: budgetBurst})
	rs := floodPairs(t, ts)
	const window = 1500 * time.Millisecond
	got := measure(window, rs...)
	t.Logf("HTTP/2 pair %d bytes, HTTP/3 pair %d", rs[0].bytes.Load(), rs[1].bytes.Load())
	within(t, "two devices", got, window, budgetRate, budgetBurst)
	if ts.rl.Stats().Dropped(DropTotalBudget) == 0 || ts.rl.Stats().BudgetHits(BudgetTotalBandwidth) == 0 {
		t.Errorf("no datagram dropped or held back by the total budget")
	}
	if !rs[0].gapless.Load() {
		t.Errorf("capsules were lost")
	}
}

// A lower budget applies to legs that run: SetConfig throttles an HTTP/2
// transfer at once, without loss, and drops HTTP/3 datagrams over it.
func TestBudgetLoweredWhileRunning(t *testing.T) {
	ts := newTestServer(t, Config{})
	rs := floodPairs(t, ts)
	before := measure(500*time.Millisecond, rs[0])
	t.Logf("HTTP/2 before: %d bytes in 500ms", before)
	if before < 4*budgetRate/2 {
		t.Fatalf("HTTP/2 relayed only %d bytes in 500ms before the budget was lowered", before)
	}
	dropped := ts.rl.Stats().Dropped(DropDeviceBudget)
	ts.rl.SetConfig(Config{Auth: ts.rv, DeviceRate: budgetRate, DeviceBurst: budgetBurst})
	// At full speed the test's receiver fell behind and its queue dropped
	// (queue_full); once that has drained, nothing is lost.
	time.Sleep(200 * time.Millisecond)
	rs[0].gapless.Store(true)
	const window = time.Second
	within(t, "HTTP/2 after", measure(window, rs[0]), window, budgetRate, budgetBurst)
	if ts.rl.Stats().Dropped(DropDeviceBudget) == dropped {
		t.Errorf("no HTTP/3 datagram dropped by the lowered budget")
	}
	if !rs[0].gapless.Load() {
		t.Errorf("capsules were lost")
	}
}

// The budget of relay sessions per device: the one over it gets 429 with
// a Retry-After, is counted, and is served once another has ended.
func TestDeviceSessionsBudget(t *testing.T) {
	ts := newTestServer(t, Config{MaxSessionsPerDevice: 1, PairTimeout: 3 * time.Second})
	a, b, c := ts.device(t, rendezvous.TransportH3), ts.device(t, rendezvous.TransportH2), ts.device(t, rendezvous.TransportH2)
	ab, _ := pair(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := a.dial(ctx, c.id.PeerID())
	var ref *RefusedError
	if !errors.As(err, &ref) || ref.Status != http.StatusTooManyRequests || ref.RetryAfter != 3*time.Second {
		t.Fatalf("a second session: %v, want 429 with Retry-After 3s", err)
	}
	if got := ts.rl.Stats().BudgetHits(BudgetDeviceSessions); got != 1 {
		t.Errorf("hits %d, want 1", got)
	}
	if u := ts.rl.Budgets()[BudgetDeviceSessions]; u.Name != "device_sessions" || u.Limit != 1 || u.Use != 1 || u.Hits != 1 {
		t.Errorf("Budgets() = %+v", u)
	}
	ab.Close()
	waitFor(t, func() bool { return ts.rl.sessions(a.id.PeerID()) == 0 })
	ac, ca := pair(t, a, c)
	exchange(t, ac, ca, 1)
}

// Fast-path DATA passes its device's budget too: what exceeds it is
// dropped and counted as the device budget's.
func TestFastPathWithinDeviceBudget(t *testing.T) {
	ts, fpAddr := newFastServer(t, Config{DeviceRate: budgetRate, DeviceBurst: budgetBurst})
	a, b := ts.device(t, rendezvous.TransportH3), ts.device(t, rendezvous.TransportH2)
	la, lb := pairRaw(t, a, b)
	fa := newFPDevice(t, la.bind(t), fpAddr)
	fa.validate(t)
	start := time.Now()
	for range 500 { // 500 kB, in about 100 ms
		fa.sendData(t, make([]byte, 1000))
		time.Sleep(200 * time.Microsecond)
	}
	time.Sleep(200 * time.Millisecond) // what passed reaches B
	var got int64
	for len(lb.data) > 0 {
		got += int64(len(<-lb.data))
	}
	within(t, "fast path", got, time.Since(start), budgetRate, budgetBurst)
	if got == 0 || ts.rl.Stats().Dropped(DropDeviceBudget) == 0 {
		t.Errorf("%d bytes passed the fast path, %d datagrams were dropped over the budget", got, ts.rl.Stats().Dropped(DropDeviceBudget))
	}
}
