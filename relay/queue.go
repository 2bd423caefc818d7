package relay

import (
	"sync"
	"sync/atomic"
	"time"
)

// queue holds what is relayed towards one leg's device: made when the leg
// is paired, bounded in datagrams and in bytes, its bytes counted in the
// server's total (Config.MaxQueuedBytes) from the moment they are queued
// until the write that takes them to the device returns.
type queue struct {
	wake chan struct{} // a push since the sender last looked; 1 slot

	mu       sync.Mutex // guards the following
	ring     []item     // FIFO of len(ring) slots: Config.QueueLen
	head, n  int
	queued   int       // bytes in ring
	inFlight int       // bytes taken by next, not yet released
	since    time.Time // when the write in flight began, if inFlight > 0
	closed   bool

	maxBytes int           // Config.QueueBytes
	stall    time.Duration // Config.StallTimeout
	total    *atomic.Int64 // bytes queued across all legs: Stats.QueuedBytes
	maxTotal int64         // Config.MaxQueuedBytes
}

func newQueue(cfg *Config, total *atomic.Int64) *queue {
	return &queue{
		wake:     make(chan struct{}, 1),
		ring:     make([]item, cfg.QueueLen),
		maxBytes: cfg.QueueBytes,
		stall:    cfg.StallTimeout,
		total:    total,
		maxTotal: cfg.MaxQueuedBytes,
	}
}

// pushResult is what became of a pushed item.
type pushResult int

const (
	pushed pushResult = iota
	pushClosed
	pushFull     // this leg's queue is full: DropQueueFull
	pushOverload // the server's total is reached: DropOverloaded
	// pushStalled: full, and the device has not taken the write in flight
	// for Config.StallTimeout. It no longer drains; its leg ends rather than
	// hold its queue until Config.WriteTimeout.
	pushStalled
)

// item is what a queue holds: a datagram payload, or a capsule that a
// capsule leg writes as it is (a fast-path answer).
type item struct {
	b       []byte
	capsule bool
}

// push queues it, taking ownership of its bytes; it never blocks. Bytes
// count at the buffer's capacity, which is what it holds of the heap.
func (q *queue) push(it item) pushResult {
	size := cap(it.b)
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.closed:
		return pushClosed
	case q.n == len(q.ring) || q.queued+q.inFlight+size > q.maxBytes:
		if q.inFlight > 0 && time.Since(q.since) > q.stall {
			return pushStalled
		}
		return pushFull
	case q.total.Add(int64(size)) > q.maxTotal:
		q.total.Add(-int64(size))
		return pushOverload
	}
	q.ring[(q.head+q.n)%len(q.ring)] = it
	q.n++
	q.queued += size
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return pushed
}

// next takes the oldest queued item; ok is false if there is none. Its
// bytes stay counted until release.
func (q *queue) next() (it item, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n == 0 {
		return item{}, false
	}
	it = q.ring[q.head]
	q.ring[q.head] = item{}
	q.head = (q.head + 1) % len(q.ring)
	q.n--
	q.queued -= cap(it.b)
	if q.inFlight == 0 {
		q.since = time.Now()
	}
	q.inFlight += cap(it.b)
	return it, true
}

// wait returns the oldest item, waiting for one; ok is false once done is
// closed.
func (q *queue) wait(done <-chan struct{}) (it item, ok bool) {
	for {
		if it, ok := q.next(); ok {
			return it, true
		}
		select {
		case <-q.wake:
		case <-done:
			return item{}, false
		}
	}
}

// release uncounts size bytes taken by next, once written (or not).
func (q *queue) release(size int) {
	q.mu.Lock()
	q.inFlight -= size
	q.mu.Unlock()
	q.total.Add(-int64(size))
}

// close drops what is queued, at once, and refuses what comes after.
func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	clear(q.ring)
	q.n = 0
	q.total.Add(-int64(q.queued))
	q.queued = 0
}

// datagramBufs pools the buffers that carry a datagram from the leg that
// read it to the write towards the other leg's device, so that relaying
// allocates nothing per datagram.
var datagramBufs = sync.Pool{New: func() any { return new([pooledDatagram]byte) }}

// newDatagram returns a buffer of n bytes: pooled if n fits, which it does
// up to DefaultMaxDatagramSize.
func newDatagram(n int) []byte {
	if n > pooledDatagram {
		return make([]byte, n)
	}
	return datagramBufs.Get().(*[pooledDatagram]byte)[:n]
}

// freeDatagram pools b once nothing refers to it. A buffer of another
// size is left to the garbage collector; one of the pooled size from
// elsewhere (quic-go hands over what it received) may join the pool.
func freeDatagram(b []byte) {
	if cap(b) == pooledDatagram {
		datagramBufs.Put((*[pooledDatagram]byte)(b[:pooledDatagram]))
	}
}
