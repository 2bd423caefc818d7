package relay

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/quic-go/quic-go/http3"
)

// capsuleLeg carries a leg's packets as DATAGRAM capsules (RFC 9297) in
// the request and response bodies: an HTTP/2 extended CONNECT (RFC 8441)
// or a streamed POST on HTTP/2 or HTTP/3.
type capsuleLeg struct {
	l    *leg
	rc   *http.ResponseController
	body io.ReadCloser

	mu      sync.Mutex // guards the following, and the write deadline
	writing bool       // a write is in flight
	aborted bool       // abort was called
}

var _ legIO = (*capsuleLeg)(nil)

// open sends the 200 that run wrote: the device waits for it before it
// sends.
func (c *capsuleLeg) open() error { return c.rc.Flush() }

// relay forwards the device's DATAGRAM capsules until the leg ends.
// Waiting for the token buckets (its leg's and its budgets) stops
// reading, which throttles the device through TCP (or QUIC flow control).
func (c *capsuleLeg) relay(other *leg) error {
	l := c.l
	cr := newCapsuleReader(c.body)
	fastPath := func(t http3.CapsuleType, r http3.CapsuleReader) error {
		if t != CapsuleFastPathRequest {
			return nil
		}
		if c := l.fastPathAnswer(other, r.Remaining()); c != nil {
			l.q.push(item{b: c, capsule: true}) // if full, lost: the device asks on a new leg
		}
		return nil
	}
	var buf []byte // pooled, for the next datagram
	defer func() { freeDatagram(buf) }()
	for {
		if buf == nil {
			buf = newDatagram(0)
		}
		d, err := cr.readDatagram(buf, l.cfg.MaxDatagramSize, fastPath)
		if errors.Is(err, errCapsuleTooLarge) {
			l.stats.drop(DropTooLarge)
			continue
		}
		if err != nil {
			return deviceClosed(err)
		}
		if err := l.account.wait(l.ctx, len(d)); err != nil {
			return err
		}
		// d is the other leg's now; buf, if d is not it, is left to the GC.
		buf = nil
		other.deliver(d)
	}
}

// deviceClosed says why a device's capsule stream ended: a CLOSE capsule's
// reason, or err.
func deviceClosed(err error) error {
	var closed *ClosedError
	if errors.As(err, &closed) {
		return errors.New("this device closed the session: " + closed.Reason)
	}
	return err
}

// send writes queued datagrams to the device, each framed as a DATAGRAM
// capsule, until the leg ends, then the CLOSE capsule. What is queued
// together goes out in one write: framing it into the reused buf is the
// one copy on this side, and the queued buffers go back to their pool.
func (c *capsuleLeg) send() {
	l := c.l
	var buf []byte
	for {
		it, ok := l.q.wait(l.done)
		if !ok {
			c.write(closeCapsule(l.reason()))
			return
		}
		size := cap(it.b)
		buf = appendItem(buf[:0], it)
		for len(buf) < maxCapsuleBatch {
			if it, ok = l.q.next(); !ok {
				break
			}
			buf = appendItem(buf, it)
			size += cap(it.b)
		}
		err := c.write(buf)
		l.q.release(size)
		if err != nil {
			l.end("writing to the device failed: " + err.Error())
			return
		}
	}
}

// appendItem appends a queued item as a capsule to b and pools the item's
// buffer.
func appendItem(b []byte, it item) []byte {
	if it.capsule {
		return append(b, it.b...)
	}
	b = appendCapsule(b, CapsuleDatagram, it.b)
	freeDatagram(it.b)
	return b
}

// write writes b and flushes it, giving up after Config.WriteTimeout, or
// at once when abort is called. The deadline is set around this write
// only (on HTTP/2 a deadline left set resets the stream even when no
// write is in flight), and under mu, so that abort's cannot be lost.
func (c *capsuleLeg) write(b []byte) error {
	c.mu.Lock()
	if c.aborted {
		c.mu.Unlock()
		return errAborted
	}
	c.writing = true
	_ = c.rc.SetWriteDeadline(time.Now().Add(c.l.cfg.WriteTimeout))
	c.mu.Unlock()
	_, err := c.l.w.Write(b)
	if err == nil {
		err = c.rc.Flush()
	}
	c.mu.Lock()
	c.writing = false
	_ = c.rc.SetWriteDeadline(time.Time{})
	c.mu.Unlock()
	return err
}

var errAborted = errors.New("the device does not take what is relayed to it")

// abort cuts the write in flight with a deadline in the past, which
// resets an HTTP/2 stream at once; no write starts after it.
func (c *capsuleLeg) abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.aborted = true
	if c.writing {
		_ = c.rc.SetWriteDeadline(time.Now().Add(-time.Second))
	}
}

// unblock closes the request body under a pending read.
func (c *capsuleLeg) unblock() { c.body.Close() }

// finish has nothing to do: the response ends when the handler returns,
// after the CLOSE capsule that send wrote.
func (c *capsuleLeg) finish() {}
