package relay

import (
	"io"
	"sync"
)

// streamBody is the request body of an HTTP/2 relay session (StreamConn):
// writes append capsules to a bounded buffer, and each read by the
// HTTP/2 transport takes everything buffered at once. The transport
// sends what one read returns as one DATA frame and one flush, so a
// burst of packets leaves in one TLS record and one system call rather
// than one each (what an io.Pipe, handing over one write per read, gave).
//
// A packet that does not fit in maxStreamPending waits for the transport
// to take what is queued, as a write to the io.Pipe waited: the HTTP/2
// leg stays throttled, never lossy (the relay's budgets hold a leg back
// through TCP), and the queue ahead of the TCP connection stays short.
type streamBody struct {
	mu      sync.Mutex
	ready   sync.Cond // signalled when buf fills or the body closes
	space   sync.Cond // signalled when a read made room
	buf     []byte    // capsules not yet read by the transport
	wclosed bool      // closeWrite: reads return io.EOF once buf is empty
	rclosed bool      // Close: the transport is done; writes fail
}

func newStreamBody() *streamBody {
	b := &streamBody{buf: make([]byte, 0, maxStreamPending)}
	b.ready.L = &b.mu
	b.space.L = &b.mu
	return b
}

// writePacket appends a DATAGRAM capsule with the packet p (context ID
// 0), waiting while it does not fit in maxStreamPending.
func (b *streamBody) writePacket(p []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		if b.rclosed || b.wclosed {
			return io.ErrClosedPipe
		}
		if len(b.buf)+len(p)+capsuleOverhead <= maxStreamPending || len(b.buf) == 0 {
			break
		}
		b.space.Wait()
	}
	b.buf = appendCapsule(b.buf, CapsuleDatagram, contextIDZero, p)
	b.ready.Signal()
	return nil
}

// writeControl appends a control capsule, full or not: there is one per
// session (a fast-path request), and it must not be lost.
func (b *streamBody) writeControl(c []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rclosed || b.wclosed {
		return io.ErrClosedPipe
	}
	b.buf = append(b.buf, c...)
	b.ready.Signal()
	return nil
}

// Read waits for buffered capsules and returns as many as fit in p.
func (b *streamBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.buf) == 0 {
		if b.rclosed {
			return 0, io.ErrClosedPipe
		}
		if b.wclosed {
			return 0, io.EOF
		}
		b.ready.Wait()
	}
	n := copy(p, b.buf)
	b.buf = b.buf[:copy(b.buf, b.buf[n:])]
	b.space.Broadcast()
	return n, nil
}

// Close is the transport's: the request is over, so what is buffered is
// dropped and writes fail.
func (b *streamBody) Close() error {
	b.mu.Lock()
	b.rclosed = true
	b.buf = b.buf[:0]
	b.ready.Broadcast()
	b.space.Broadcast()
	b.mu.Unlock()
	return nil
}

// closeWrite ends the body after what is buffered.
func (b *streamBody) closeWrite() {
	b.mu.Lock()
	b.wclosed = true
	b.ready.Broadcast()
	b.space.Broadcast()
	b.mu.Unlock()
}
