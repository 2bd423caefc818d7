package relay

import (
	"bufio"
	"errors"
	"io"
	"net/http"

	"github.com/quic-go/quic-go/http3"

	"github.com/netsody/superpeer/internal/flushwrite"
)

// capsuleLeg carries a leg's packets as DATAGRAM capsules (RFC 9297) in
// the request and response bodies: an HTTP/2 extended CONNECT (RFC 8441)
// or a streamed POST on HTTP/2 or HTTP/3.
type capsuleLeg struct {
	l    *leg
	rc   *http.ResponseController
	body io.ReadCloser
}

var _ legIO = (*capsuleLeg)(nil)

// open sends the 200 that run wrote: the device waits for it before it
// sends.
func (c *capsuleLeg) open() error { return c.rc.Flush() }

// relay forwards the device's DATAGRAM capsules until the leg ends.
// Waiting for the token bucket stops reading, which throttles the device
// through TCP.
func (c *capsuleLeg) relay(other *leg) error {
	l := c.l
	p := http3.NewCapsuleParser(bufio.NewReaderSize(c.body, capsuleReadBuffer))
	for {
		d, err := readDatagram(p, nil, l.cfg.MaxDatagramSize)
		if errors.Is(err, errCapsuleTooLarge) {
			l.stats.drop(DropTooLarge)
			continue
		}
		var closed *ClosedError
		if errors.As(err, &closed) {
			return errors.New("this device closed the session: " + closed.Reason)
		}
		if err != nil {
			return err
		}
		if err := l.limiter.WaitN(l.ctx, len(d)); err != nil {
			return err
		}
		other.deliver(d) // d is the other leg's now: the next read gets a new buffer
	}
}

// send writes queued capsules to the device until the leg ends, then the
// CLOSE capsule. Capsules queued together go out in one write.
func (c *capsuleLeg) send() {
	l := c.l
	var buf []byte
	for {
		select {
		case b := <-l.out:
			buf = append(buf[:0], b...)
		drain:
			for len(buf) < maxCapsuleBatch {
				select {
				case b := <-l.out:
					buf = append(buf, b...)
				default:
					break drain
				}
			}
			if err := c.write(buf); err != nil {
				l.end("writing to the device failed: " + err.Error())
				return
			}
		case <-l.done:
			c.write(closeCapsule(l.reason()))
			return
		}
	}
}

func (c *capsuleLeg) write(b []byte) error {
	return flushwrite.Write(c.l.w, c.rc, b, c.l.cfg.WriteTimeout)
}

func (c *capsuleLeg) frame(d []byte) []byte { return appendCapsule(nil, CapsuleDatagram, d) }

// unblock closes the request body under a pending read.
func (c *capsuleLeg) unblock() { c.body.Close() }

// finish has nothing to do: the response ends when the handler returns,
// after the CLOSE capsule that send wrote.
func (c *capsuleLeg) finish() {}
