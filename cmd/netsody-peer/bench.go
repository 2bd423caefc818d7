package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/netsody/superpeer/peer"
)

// A bench runs against a peer that echoes (listen --echo), over two
// streams of one connection:
//
//   - the ping stream carries 8-byte sequence numbers back and forth, one
//     at a time, for the whole run: each round trip is an RTT sample;
//   - the bulk stream carries bytes as fast as the connection takes them,
//     after the first part of the run (1/idleShare of it, at most
//     idleMax) and once the first ping came back, so that the first RTT
//     samples are of the idle path and the later ones of the path under
//     load, and so that a peer that does not echo does not get the bulk
//     bytes on its stdout. The throughput is the rate at which bulk
//     bytes come back: they crossed the path both ways.
//
// Before it starts, a bench gives hole punching up to settleFor to find a
// direct path, so that the samples are of the path the peers keep.
const (
	idleShare   = 5 // 1/idleShare of the run
	idleMax     = 2 * time.Second
	settleFor   = 3 * time.Second
	bulkChunk   = 32 << 10
	pingSize    = 8
	progressInt = time.Second
)

func runBench(ctx context.Context, args []string) error {
	fs := newFlagSet("bench", "--identity FILE --super-peer URL [--super-peer URL]... [flags] PEERID")
	duration := fs.Duration("duration", 10*time.Second, "how long to measure")
	df, pos, err := parseDeviceFlags(fs, args, true)
	if err != nil {
		return err
	}
	if *duration <= 0 {
		return usagef("bench", "--duration must be positive")
	}
	d, c, err := df.connectTo(ctx, "bench", pos)
	if err != nil {
		return err
	}
	defer d.Close()
	defer c.CloseWithError(0, "")
	if !df.relayOnly && !settle(ctx, d.Device, c) {
		fmt.Fprintf(os.Stderr, "bench: no direct path after %v; measuring %s\n", settleFor, c.Path())
	}

	b := &bench{conn: c, duration: *duration, firstEcho: make(chan struct{}), errc: make(chan error, 3)}
	res, err := b.run(ctx)
	if err != nil {
		return streamError(ctx, c.Peer(), err)
	}
	fmt.Fprintln(os.Stdout, res)
	return nil
}

// settle waits, a bounded time, for a direct path.
func settle(ctx context.Context, d *peer.Device, c *peer.Conn) bool {
	ctx, cancel := context.WithTimeout(ctx, settleFor)
	defer cancel()
	w := d.Watch()
	defer w.Close()
	for c.Path().Kind != peer.PathDirect {
		if _, err := w.Next(ctx); err != nil {
			return false
		}
	}
	return true
}

// bench is one measurement run. It goes through two phases: idlePhase,
// the ping stream alone, until 1/idleShare of the run has passed and the
// peer echoes; then loadPhase, with the bulk stream too, until the end.
// Either ends early when the run does (--duration, a signal, an error),
// and summarize makes the result.
type bench struct {
	conn     *peer.Conn
	duration time.Duration

	echoed    atomic.Int64  // bulk bytes that came back
	loaded    atomic.Bool   // the bulk stream runs
	firstEcho chan struct{} // closed when the first ping comes back
	errc      chan error    // the streams' goroutines' errors

	// Owned by run's goroutine.
	start       time.Time
	loadStart   time.Time // zero before loadPhase
	tick        *time.Ticker
	end         *time.Timer
	lastTick    time.Time
	lastBytes   int64
	path        string // at the start
	pathChanged bool
	interrupted bool

	mu     sync.Mutex // guards the following
	idle   []time.Duration
	load   []time.Duration
	recent []time.Duration // since the last progress line
}

// benchResult is what a run measured.
type benchResult struct {
	mbits       float64 // bulk throughput, Mbit/s
	idle, load  []time.Duration
	path        string
	pathChanged bool
	elapsed     time.Duration
	interrupted bool
}

func (r benchResult) String() string {
	s := fmt.Sprintf("bench: %.1f Mbit/s up, RTT p50 %s p99 %s", r.mbits, fmtDur(percentile(r.idle, 50)), fmtDur(percentile(r.idle, 99)))
	if len(r.load) > 0 {
		s += fmt.Sprintf(", under load p50 %s", fmtDur(percentile(r.load, 50)))
	}
	s += ", path " + r.path
	if r.pathChanged {
		s += " (the path changed during the run)"
	}
	if r.interrupted {
		s += fmt.Sprintf(" (interrupted after %.1fs)", r.elapsed.Seconds())
	}
	return s
}

func (b *bench) run(ctx context.Context) (benchResult, error) {
	ping, err := b.conn.OpenStreamSync(ctx)
	if err != nil {
		return benchResult{}, err
	}
	bulk, err := b.conn.OpenStreamSync(ctx)
	if err != nil {
		ping.CancelWrite(0)
		return benchResult{}, err
	}
	var (
		stopped atomic.Bool
		wg      sync.WaitGroup
	)
	do := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !stopped.Load() {
				b.errc <- err
			}
		}()
	}
	defer func() {
		stopped.Store(true)
		for _, str := range []*quic.Stream{ping, bulk} {
			str.CancelWrite(0)
			str.CancelRead(0)
		}
		wg.Wait()
	}()

	b.start, b.lastTick, b.path = time.Now(), time.Now(), b.conn.Path().String()
	b.end = time.NewTimer(b.duration)
	defer b.end.Stop()
	b.tick = time.NewTicker(progressInt)
	defer b.tick.Stop()
	do(func() error { return b.ping(ping) })
	on, err := b.idlePhase(ctx)
	if err != nil {
		return benchResult{}, err
	}
	if on {
		if err := b.loadPhase(ctx, func() {
			do(func() error { return b.send(bulk) })
			do(func() error { return b.receive(bulk) })
		}); err != nil {
			return benchResult{}, err
		}
	}
	return b.summarize()
}

// idlePhase measures the idle path: it waits for 1/idleShare of the run
// (at most idleMax), and for the first ping to come back, so that a peer
// that does not echo does not get the bulk bytes on its stdout. It
// reports whether the run goes on.
func (b *bench) idlePhase(ctx context.Context) (bool, error) {
	idle, cancel := context.WithTimeout(context.Background(), min(b.duration/idleShare, idleMax))
	defer cancel()
	for _, c := range []<-chan struct{}{idle.Done(), b.firstEcho} {
		if on, err := b.await(ctx, c); !on || err != nil {
			return false, err
		}
	}
	return true, nil
}

// loadPhase starts the bulk stream and measures until the run ends.
func (b *bench) loadPhase(ctx context.Context, startBulk func()) error {
	b.loadStart = time.Now()
	b.loaded.Store(true)
	startBulk()
	_, err := b.await(ctx, nil)
	return err
}

// await waits for c, printing progress meanwhile. It returns false when
// the run ends first (its duration is up, or ctx is done), and the error
// of a stream that failed.
func (b *bench) await(ctx context.Context, c <-chan struct{}) (bool, error) {
	for {
		select {
		case <-c:
			return true, nil
		case now := <-b.tick.C:
			b.onTick(now)
		case err := <-b.errc:
			return false, err
		case <-b.end.C:
			return false, nil
		case <-ctx.Done():
			b.interrupted = true
			return false, nil
		}
	}
}

// onTick prints a progress line: the throughput since the last tick, or
// since the load began.
func (b *bench) onTick(now time.Time) {
	n := b.echoed.Load()
	rate := -1.0 // idle
	from := b.lastTick
	if b.loadStart.After(from) {
		from = b.loadStart
	}
	if !b.loadStart.IsZero() && now.Sub(from) > progressInt/10 {
		rate = float64(n-b.lastBytes) * 8 / now.Sub(from).Seconds() / 1e6
	}
	b.progress(now.Sub(b.start), rate)
	b.lastTick, b.lastBytes = now, n
	b.pathChanged = b.pathChanged || b.conn.Path().String() != b.path
}

// summarize makes the result of the run that just ended.
func (b *bench) summarize() (benchResult, error) {
	now := time.Now()
	res := benchResult{path: b.path, pathChanged: b.pathChanged, elapsed: now.Sub(b.start), interrupted: b.interrupted}
	select {
	case <-b.firstEcho:
	default:
		if !res.interrupted {
			return benchResult{}, fmt.Errorf("no echo in %v: is the peer running 'listen --echo'?", b.duration)
		}
	}
	if !b.loadStart.IsZero() {
		res.mbits = float64(b.echoed.Load()) * 8 / now.Sub(b.loadStart).Seconds() / 1e6
	}
	b.mu.Lock()
	res.idle, res.load = b.idle, b.load
	b.mu.Unlock()
	if p := b.conn.Path().String(); p != res.path {
		res.path, res.pathChanged = p, true
	}
	return res, nil
}

// ping takes RTT samples until the stream ends.
func (b *bench) ping(str *quic.Stream) error {
	var out, in [pingSize]byte
	for seq := uint64(0); ; seq++ {
		binary.BigEndian.PutUint64(out[:], seq)
		sent := time.Now()
		if _, err := str.Write(out[:]); err != nil {
			return err
		}
		if _, err := io.ReadFull(str, in[:]); err != nil {
			return err
		}
		if in != out {
			return errors.New("the peer does not echo: is it running 'listen --echo'?")
		}
		b.sample(time.Since(sent))
	}
}

func (b *bench) sample(rtt time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.idle)+len(b.load) == 0 {
		close(b.firstEcho)
	}
	if b.loaded.Load() {
		b.load = append(b.load, rtt)
	} else {
		b.idle = append(b.idle, rtt)
	}
	b.recent = append(b.recent, rtt)
}

// send writes bulk bytes until the stream ends.
func (b *bench) send(str *quic.Stream) error {
	buf := make([]byte, bulkChunk)
	for {
		if _, err := str.Write(buf); err != nil {
			return err
		}
	}
}

// receive counts the bulk bytes that come back until the stream ends.
func (b *bench) receive(str *quic.Stream) error {
	buf := make([]byte, 2*bulkChunk)
	for {
		n, err := str.Read(buf)
		b.echoed.Add(int64(n))
		if err != nil {
			return err
		}
	}
}

// progress prints one line on stderr: the last interval's throughput
// (negative while the bulk stream has not started) and median RTT, and
// the path.
func (b *bench) progress(at time.Duration, mbits float64) {
	b.mu.Lock()
	recent := b.recent
	b.recent = nil
	b.mu.Unlock()
	rate := "idle"
	if mbits >= 0 {
		rate = fmt.Sprintf("%.1f Mbit/s", mbits)
	}
	fmt.Fprintf(os.Stderr, "bench: %4.0fs  %14s  RTT p50 %-9s  path %s\n", at.Seconds(), rate, fmtDur(percentile(recent, 50)), b.conn.Path())
}

// percentile is the nearest-rank percentile of samples; 0 for none.
func percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func fmtDur(d time.Duration) string { return fmtMillis(float64(d.Microseconds()) / 1e3) }
