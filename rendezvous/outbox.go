package rendezvous

import (
	"sync"

	"github.com/netsody/superpeer/identity"
)

// outbox holds the frames a session sends its device, and writes them on a
// goroutine that exists only while there is something to write: an idle
// session then costs no writer goroutine (internal/bench measures it),
// where derp keeps a send loop per client.
//
// The queue is bounded in frames and in bytes (maxQueuedFrames,
// maxQueuedBytes). What fills it never ends the session: the device's own
// frames wait for room, frames that other devices cause are dropped or
// coalesced, and only a write that fails — times out, because the device
// stopped reading — ends it.
type outbox struct {
	// write writes a batch of frames to the device, within a deadline.
	write func(b []byte) error
	// failed is called, on the writer goroutine, once a write failed; it
	// unblocks the session's reader.
	failed func()

	mu      sync.Mutex // guards the following
	queue   [][]byte
	bytes   int                     // in queue
	offered int                     // frames in queue that others caused
	obytes  int                     // their bytes
	byAsker map[identity.PeerID]int // where in queue each asker's offered frame is
	latest  int                     // where in queue the frame update queued is, plus one; 0: none
	room    chan struct{}           // closed when the writer takes the queue, or on close
	writing bool                    // a writer goroutine runs
	closed  bool                    // nothing more is queued
	out     chan struct{}           // closed when the last writer started exits
}

// offerResult says what became of an offered frame.
type offerResult int

const (
	offerQueued    offerResult = iota
	offerCoalesced             // it replaced the asker's earlier frame, not yet written
	offerDropped               // the part of the queue others may fill is full
)

// send queues f, one of the device's own frames, waiting while the queue
// is full: the writer makes room, or fails (within the write timeout)
// and closes the outbox. It must not be called with a lock held. After
// close, f is dropped.
func (o *outbox) send(f []byte) {
	for {
		o.mu.Lock()
		if o.closed {
			o.mu.Unlock()
			return
		}
		if len(o.queue) < maxQueuedFrames && o.bytes+len(f) <= maxQueuedBytes {
			o.enqueueLocked(f)
			o.mu.Unlock()
			return
		}
		if o.room == nil {
			o.room = make(chan struct{})
		}
		room := o.room
		o.mu.Unlock()
		<-room
	}
}

// offer queues f, a frame the device asker caused, within the part of the
// queue that others may fill (maxOfferedFrames, maxOfferedBytes); so what
// others send can neither end the session nor crowd out its own frames.
// An asker has at most one frame waiting: a later one replaces it, since
// it carries the asker's newer candidates.
func (o *outbox) offer(asker identity.PeerID, f []byte) offerResult {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return offerQueued
	}
	if i, ok := o.byAsker[asker]; ok {
		o.bytes += len(f) - len(o.queue[i])
		o.obytes += len(f) - len(o.queue[i])
		o.queue[i] = f
		return offerCoalesced
	}
	if o.offered >= maxOfferedFrames || o.obytes+len(f) > maxOfferedBytes ||
		len(o.queue) >= maxQueuedFrames || o.bytes+len(f) > maxQueuedBytes {
		return offerDropped
	}
	if o.byAsker == nil {
		o.byAsker = make(map[identity.PeerID]int)
	}
	o.byAsker[asker] = len(o.queue)
	o.offered++
	o.obytes += len(f)
	o.enqueueLocked(f)
	return offerQueued
}

// push queues f at once, past the queue's bounds if need be: for a frame
// a session sends at most once (FrameMove), which must neither wait
// behind a device's full queue nor be dropped. After close, f is
// dropped.
func (o *outbox) push(f []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.closed {
		o.enqueueLocked(f)
	}
}

// update queues f, a frame that a newer one of its kind supersedes
// (FrameHeadroom): it replaces the one update queued that has not been
// written yet, or joins the queue if there is room. It never waits, and
// reports whether f is queued.
func (o *outbox) update(f []byte) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.closed:
		return false
	case o.latest > 0:
		i := o.latest - 1
		o.bytes += len(f) - len(o.queue[i])
		o.queue[i] = f
		return true
	case len(o.queue) >= maxQueuedFrames || o.bytes+len(f) > maxQueuedBytes:
		return false
	}
	o.enqueueLocked(f)
	o.latest = len(o.queue)
	return true
}

// close queues final, if any, as the last frame and drops any later one.
// It reports whether this call closed the outbox.
func (o *outbox) close(final []byte) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false
	}
	if final != nil {
		o.enqueueLocked(final)
	}
	o.closed = true
	o.makeRoomLocked()
	return true
}

// wait, after close, waits until the writer has delivered the queue or
// given up.
func (o *outbox) wait() {
	o.mu.Lock()
	out := o.out
	o.mu.Unlock()
	if out != nil {
		<-out
	}
}

// queued returns the frames and bytes waiting, for tests.
func (o *outbox) queued() (frames, bytes int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.queue), o.bytes
}

func (o *outbox) enqueueLocked(f []byte) {
	o.queue = append(o.queue, f)
	o.bytes += len(f)
	if !o.writing {
		o.writing = true
		o.out = make(chan struct{})
		go o.run(o.out)
	}
}

// takeLocked empties the queue into a batch for the writer.
func (o *outbox) takeLocked() [][]byte {
	batch := o.queue
	o.queue, o.bytes, o.offered, o.obytes, o.latest = nil, 0, 0, 0, 0
	clear(o.byAsker)
	o.makeRoomLocked()
	return batch
}

// makeRoomLocked wakes the senders waiting for room.
func (o *outbox) makeRoomLocked() {
	if o.room != nil {
		close(o.room)
		o.room = nil
	}
}

// run writes queued frames, in batches, until the queue is empty.
func (o *outbox) run(out chan struct{}) {
	defer close(out)
	var buf []byte
	for {
		o.mu.Lock()
		if len(o.queue) == 0 {
			o.writing = false
			o.queue = nil
			o.mu.Unlock()
			return
		}
		batch := o.takeLocked()
		o.mu.Unlock()
		buf = buf[:0]
		for _, f := range batch {
			buf = append(buf, f...)
		}
		if err := o.write(buf); err != nil {
			o.mu.Lock()
			o.closed, o.writing = true, false
			o.takeLocked()
			o.mu.Unlock()
			o.failed()
			return
		}
	}
}
