package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The traffic of BenchmarkRelay between device A and device B, the same
// over every path. Every datagram starts with a type byte.
//
// In the throughput phase A sends data datagrams with a sliding window,
// as a transport protocol would: at most w datagrams in flight, where in
// flight is what A sent past the highest sequence number B acknowledged.
// B acknowledges through the same path, backwards. The window starts at
// initialWindow and grows by what each acknowledgment covers (slow
// start) until the first loss, then by one datagram per window (AIMD);
// a loss, seen as a gap between the highest sequence number B received
// and the number it received, cuts it by windowBeta, at most once per
// window. An
// acknowledgment that does not come within stallTimeout counts everything
// in flight as lost and starts again from minWindow. So A offers what the
// path delivers, plus a queue's worth: the rate the path sustains, not
// what it drops.
//
// In the RTT phase A sends one ping at a time and B returns it.
const (
	// msgData, A→B, datagramSize bytes: type, sequence number (uint64),
	// ack frequency (uint16: B acknowledges at least every so many data
	// datagrams), zero padding.
	msgData byte = 'D'
	// msgAck, B→A, ackSize bytes: type, one past the highest sequence
	// number received (uint64), data datagrams received (uint64).
	msgAck byte = 'A'
	// msgPing, A→B, datagramSize bytes: type, sequence number (uint64),
	// zero padding. B returns it with the type changed to msgPong.
	msgPing byte = 'P'
	msgPong byte = 'Q'

	datagramSize = 1200 // bytes of UDP payload, what a device's QUIC packet is
	ackSize      = 17
)

// The sender's window and the receiver's acknowledgments.
const (
	minWindow     = 4    // datagrams
	initialWindow = 32   // datagrams
	maxWindow     = 4096 // datagrams: about 5 MB in flight
	maxAckEvery   = 64   // data datagrams per acknowledgment, at most
	// windowBeta is what a loss leaves of the window: CUBIC's β (RFC 9438
	// section 4.6), as QUIC stacks use; Reno's 0.5 starves a path whose
	// queues are short.
	windowBeta = 0.7
	// ackInterval: B acknowledges what it received at least this often,
	// so that a window's tail is not left waiting for the next batch.
	ackInterval = 2 * time.Millisecond
	// stallTimeout: with a full window and no acknowledgment for this
	// long, A counts what is in flight as lost.
	stallTimeout = 50 * time.Millisecond
	// After A stops, B goes on receiving until nothing arrives for
	// drainQuiet, for at most drainMax.
	drainQuiet = 100 * time.Millisecond
	drainMax   = 2 * time.Second
)

// The RTT phase.
const (
	pingWarmup  = 50 // pings before the samples, not counted
	pingTimeout = 500 * time.Millisecond
	pingBudget  = 10 * time.Second // for all the pings of one path
	// watchdogGrace is how long a phase may overrun its time before the
	// link is closed under it, which unblocks every read and write.
	watchdogGrace = 15 * time.Second
)

// link is the two devices' ends of one path; A sends, B receives. Each
// end has a goroutine that reads it until it is closed.
type link struct {
	name     string
	a, b     net.PacketConn
	aTo, bTo net.Addr // where each end sends: the forwarder, or nil (a relay session's one peer)
	closeFn  func()   // closes a and b, and whatever carries them
	epoch    time.Time

	// B's side.
	received  atomic.Uint64 // data datagrams
	next      atomic.Uint64 // one past the highest sequence number received
	lastRecv  atomic.Int64  // when the last data datagram came, ns since epoch
	ackedUpTo atomic.Uint64 // received, as last acknowledged
	acks      atomic.Uint64 // acknowledgments sent

	// A's side.
	acksIn  atomic.Uint64 // acknowledgments received
	ackc    chan struct{} // signalled on every acknowledgment
	pongs   chan uint64   // sequence numbers of pongs
	ackMu   sync.Mutex    // guards the following
	ackNext uint64        // from the latest acknowledgment
	ackGot  uint64

	readers   sync.WaitGroup
	done      chan struct{} // closed when the link closes
	closeOnce sync.Once
}

func newLink(name string, a, b net.PacketConn, aTo, bTo net.Addr, closeFn func()) *link {
	l := &link{
		name: name, a: a, b: b, aTo: aTo, bTo: bTo, closeFn: closeFn,
		epoch: time.Now(),
		ackc:  make(chan struct{}, 1),
		pongs: make(chan uint64, 16),
		done:  make(chan struct{}),
	}
	l.readers.Go(l.serveA)
	l.readers.Go(l.serveB)
	l.readers.Go(l.tickAcks)
	return l
}

// close closes both ends and waits for their goroutines; it is safe to
// call more than once and from a watchdog.
func (l *link) close() {
	l.closeOnce.Do(func() {
		close(l.done)
		l.closeFn()
		l.readers.Wait()
	})
}

// watchdog closes the link if a phase overruns d by watchdogGrace.
func (l *link) watchdog(d time.Duration) *time.Timer {
	return time.AfterFunc(d+watchdogGrace, l.close)
}

// serveB is device B: it counts data datagrams, acknowledges them, and
// returns pings.
func (l *link) serveB() {
	buf := make([]byte, 2048)
	ack := make([]byte, ackSize)
	for {
		n, _, err := l.b.ReadFrom(buf)
		if err != nil {
			return
		}
		switch {
		case buf[0] == msgData && n >= 11:
			seq := binary.BigEndian.Uint64(buf[1:])
			every := uint64(max(binary.BigEndian.Uint16(buf[9:]), 1))
			got := l.received.Add(1)
			if seq >= l.next.Load() { // only this goroutine stores next
				l.next.Store(seq + 1)
			}
			l.lastRecv.Store(int64(time.Since(l.epoch)))
			if got-l.ackedUpTo.Load() >= every {
				l.sendAck(ack)
			}
		case buf[0] == msgPing && n >= 9:
			buf[0] = msgPong
			l.b.WriteTo(buf[:n], l.bTo)
		}
	}
}

// tickAcks acknowledges what B received since the last acknowledgment,
// every ackInterval.
func (l *link) tickAcks() {
	ack := make([]byte, ackSize)
	t := time.NewTicker(ackInterval)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
			if l.received.Load() != l.ackedUpTo.Load() {
				l.sendAck(ack)
			}
		}
	}
}

// sendAck sends B's counts to A; p is the caller's buffer.
func (l *link) sendAck(p []byte) {
	// next before received: a datagram that comes in between then counts
	// as received but not yet as next, which hides no loss.
	next := l.next.Load()
	got := l.received.Load()
	l.ackedUpTo.Store(got)
	p[0] = msgAck
	binary.BigEndian.PutUint64(p[1:], next)
	binary.BigEndian.PutUint64(p[9:], got)
	l.b.WriteTo(p, l.bTo)
	l.acks.Add(1)
}

// serveA is device A's reader: it takes in acknowledgments and pongs.
func (l *link) serveA() {
	buf := make([]byte, 2048)
	for {
		n, _, err := l.a.ReadFrom(buf)
		if err != nil {
			return
		}
		switch {
		case buf[0] == msgAck && n >= ackSize:
			next, got := binary.BigEndian.Uint64(buf[1:]), binary.BigEndian.Uint64(buf[9:])
			l.ackMu.Lock()
			if next >= l.ackNext {
				l.ackNext, l.ackGot = next, got
			}
			l.ackMu.Unlock()
			l.acksIn.Add(1)
			select {
			case l.ackc <- struct{}{}:
			default:
			}
		case buf[0] == msgPong && n >= 9:
			select {
			case l.pongs <- binary.BigEndian.Uint64(buf[1:]):
			default:
			}
		}
	}
}

func (l *link) ack() (next, got uint64) {
	l.ackMu.Lock()
	defer l.ackMu.Unlock()
	return l.ackNext, l.ackGot
}

// throughput is what one throughput phase measured.
type throughput struct {
	sent, received uint64
	elapsed        time.Duration // from the first datagram sent to the last received
	acks, acksIn   uint64        // acknowledgments B sent, and A received
	lossEvents     int           // window cuts on loss
	stalls         int           // acknowledgments that never came
	meanWindow     float64       // datagrams, averaged over acknowledgments
}

func (t throughput) dgramsPerSec() float64 {
	if t.elapsed <= 0 {
		return 0
	}
	return float64(t.received) / t.elapsed.Seconds()
}

func (t throughput) mbitPerSec() float64 { return t.dgramsPerSec() * datagramSize * 8 / 1e6 }

func (t throughput) loss() float64 {
	if t.sent == 0 {
		return 0
	}
	return float64(int64(t.sent)-int64(t.received)) / float64(t.sent)
}

func (t throughput) bytes() float64 { return float64(t.received) * datagramSize }

// blast runs the throughput phase: A sends for d with its window, then B
// drains what is still on the way.
func (l *link) blast(ctx context.Context, d time.Duration) (throughput, error) {
	var res throughput
	dog := l.watchdog(d + drainMax)
	defer dog.Stop()
	received0, acks0, acksIn0 := l.received.Load(), l.acks.Load(), l.acksIn.Load()
	next0, got0 := l.ack() // zero, unless the link carried data before

	pkt := make([]byte, datagramSize)
	pkt[0] = msgData
	w, ssthresh := float64(initialWindow), float64(maxWindow)
	var (
		sent    = next0 // the next sequence number
		una     = next0 // one past the highest acknowledged
		recover = next0 // no cut until una passes this
		wSum    float64
		wN      int
	)
	gaps0 := int64(next0) - int64(got0) // B's gaps, as last seen
	stall := time.NewTimer(time.Hour)
	stall.Stop()
	start := time.Now()
	deadline := start.Add(d)
	for time.Now().Before(deadline) {
		if sent-una < uint64(w) {
			binary.BigEndian.PutUint64(pkt[1:], sent)
			binary.BigEndian.PutUint16(pkt[9:], uint16(min(max(int(w)/4, 1), maxAckEvery)))
			if _, err := l.a.WriteTo(pkt, l.aTo); err != nil {
				return res, fmt.Errorf("%s: sending datagram %d: %w", l.name, sent, err)
			}
			sent++
			continue
		}
		// The window is full: wait for an acknowledgment.
		stall.Reset(stallTimeout)
		select {
		case <-l.ackc:
			stall.Stop()
		case <-stall.C:
			res.stalls++
			ssthresh = max(w*windowBeta, minWindow)
			w, una, recover = minWindow, sent, sent
			continue
		case <-ctx.Done():
			return res, ctx.Err()
		}
		next, got := l.ack()
		if next > una {
			acked := float64(next - una)
			una = next
			if w < ssthresh {
				w += acked
			} else {
				w += acked / w
			}
			w = min(w, maxWindow)
		}
		if gaps := int64(next) - int64(got); gaps > gaps0 {
			gaps0 = gaps
			if next > recover {
				res.lossEvents++
				ssthresh = max(w*windowBeta, minWindow)
				w, recover = ssthresh, sent
			}
		}
		wSum += w
		wN++
	}
	sentAt := time.Since(l.epoch)

	// Drain: wait until nothing more arrives.
	last, quietSince := l.received.Load(), time.Now()
	for drainEnd := time.Now().Add(drainMax); time.Now().Before(drainEnd) && time.Since(quietSince) < drainQuiet; {
		time.Sleep(10 * time.Millisecond)
		if r := l.received.Load(); r != last {
			last, quietSince = r, time.Now()
		}
	}
	res.sent = sent - next0
	res.received = l.received.Load() - received0
	res.acks, res.acksIn = l.acks.Load()-acks0, l.acksIn.Load()-acksIn0
	lastRecv := max(time.Duration(l.lastRecv.Load()), sentAt)
	res.elapsed = lastRecv - start.Sub(l.epoch)
	if wN > 0 {
		res.meanWindow = wSum / float64(wN)
	}
	if res.received == 0 {
		return res, fmt.Errorf("%s: none of %d datagrams arrived", l.name, res.sent)
	}
	return res, nil
}

// rtt is what one RTT phase measured.
type rtt struct {
	samples []time.Duration // sorted
	lost    int
}

// percentile returns the p-th percentile (0 < p ≤ 100), nearest rank.
func (r rtt) percentile(p float64) time.Duration {
	if len(r.samples) == 0 {
		return 0
	}
	i := int(float64(len(r.samples))*p/100+0.999999) - 1
	return r.samples[min(max(i, 0), len(r.samples)-1)]
}

// pingPong runs the RTT phase: n pings, one at a time, A→B→A, after
// pingWarmup that are not counted, within pingBudget.
func (l *link) pingPong(ctx context.Context, n int) (rtt, error) {
	var res rtt
	dog := l.watchdog(pingBudget)
	defer dog.Stop()
	pkt := make([]byte, datagramSize)
	pkt[0] = msgPing
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	deadline := time.Now().Add(pingBudget)
	for seq := uint64(0); seq < uint64(pingWarmup+n) && time.Now().Before(deadline); seq++ {
		binary.BigEndian.PutUint64(pkt[1:], seq)
		sent := time.Now()
		if _, err := l.a.WriteTo(pkt, l.aTo); err != nil {
			return res, fmt.Errorf("%s: sending ping %d: %w", l.name, seq, err)
		}
		timer.Reset(pingTimeout)
	wait:
		for {
			select {
			case s := <-l.pongs:
				if s != seq {
					continue // a late pong of an earlier ping
				}
				timer.Stop()
				if seq >= pingWarmup {
					res.samples = append(res.samples, time.Since(sent))
				}
				break wait
			case <-timer.C:
				if seq >= pingWarmup {
					res.lost++
				}
				break wait
			case <-ctx.Done():
				return res, ctx.Err()
			}
		}
	}
	slices.Sort(res.samples)
	if len(res.samples) == 0 {
		return res, errors.New(l.name + ": no ping came back")
	}
	return res, nil
}
