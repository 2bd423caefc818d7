package rendezvous

import "sync"

// outbox holds the frames a session sends its device, and writes them on a
// goroutine that exists only while there is something to write: an idle
// session then costs no writer goroutine (internal/bench measures it),
// where derp keeps a send loop per client.
type outbox struct {
	// write writes a batch of frames to the device, within a deadline.
	write func(b []byte) error
	// failed is called, on the writer goroutine, once a write failed; it
	// unblocks the session's reader.
	failed func()

	mu      sync.Mutex // guards the following
	queue   [][]byte
	writing bool          // a writer goroutine runs
	closed  bool          // nothing more is queued
	out     chan struct{} // closed when the last writer started exits
}

// send queues f for the device. It reports false when the queue holds
// maxQueuedFrames already: the device does not read. After close, f is
// dropped.
func (o *outbox) send(f []byte) bool { return o.push(f, maxQueuedFrames) }

// offer queues f, a frame another device caused, if the queue holds
// fewer than maxOfferedFrames; it reports false, and drops f, if not.
// What others send thus never fills the queue and ends the session.
func (o *outbox) offer(f []byte) bool { return o.push(f, maxOfferedFrames) }

// push queues f unless the queue holds limit frames already.
func (o *outbox) push(f []byte, limit int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return true
	}
	if len(o.queue) >= limit {
		return false
	}
	o.enqueueLocked(f)
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

func (o *outbox) enqueueLocked(f []byte) {
	o.queue = append(o.queue, f)
	if !o.writing {
		o.writing = true
		o.out = make(chan struct{})
		go o.run(o.out)
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
		batch := o.queue
		o.queue = nil
		o.mu.Unlock()
		buf = buf[:0]
		for _, f := range batch {
			buf = append(buf, f...)
		}
		if err := o.write(buf); err != nil {
			o.mu.Lock()
			o.closed, o.writing, o.queue = true, false, nil
			o.mu.Unlock()
			o.failed()
			return
		}
	}
}
