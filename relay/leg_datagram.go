package relay

import (
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// datagramLeg carries a leg's packets as QUIC datagrams beside its HTTP/3
// request stream (RFC 9298), which carries nothing else the relay uses.
type datagramLeg struct {
	l        *leg
	streamer http3.HTTPStreamer
	str      *http3.Stream // once open
}

var _ legIO = (*datagramLeg)(nil)

func (d *datagramLeg) open() error {
	d.str = d.streamer.HTTPStream()
	return nil
}

// relay forwards the device's QUIC datagrams until the leg ends; a
// goroutine watches the request stream, whose end ends the session.
// Datagrams over the token buckets (its leg's and its budgets) are
// dropped: QUIC datagrams have no backpressure to apply.
func (d *datagramLeg) relay(other *leg) error {
	l := d.l
	streamDone := make(chan error, 1)
	go func() {
		err := d.readStream(other) // capsules: a fast-path request, or skipped
		l.end(reasonFor(err, "this device closed the session"))
		streamDone <- err
	}()
	defer func() { d.str.CancelRead(quic.StreamErrorCode(http3.ErrCodeNoError)); <-streamDone }()
	limit := l.cfg.MaxDatagramSize
	for {
		p, err := d.str.ReceiveDatagram(l.ctx)
		if err != nil {
			return err
		}
		if len(p) > limit {
			l.stats.drop(DropTooLarge)
			continue
		}
		if over, ok := l.account.allow(time.Now(), len(p)); !ok {
			l.stats.drop(dropFor(over))
			continue
		}
		other.deliver(p)
	}
}

// send sends queued datagrams to the device until the leg ends.
// SendDatagram blocks while the QUIC connection's own send queue is full,
// which paces this loop to what the connection can carry.
func (d *datagramLeg) send() {
	for {
		it, ok := d.l.q.wait(d.l.done)
		if !ok {
			return
		}
		err := d.str.SendDatagram(it.b) // a copy: it.b is free after it
		d.l.q.release(cap(it.b))
		freeDatagram(it.b)
		if err != nil {
			d.l.stats.drop(DropSendFailed)
		}
	}
}

// unblock has nothing to do: the leg's context ends ReceiveDatagram, and
// relay stops its stream reader itself.
func (d *datagramLeg) unblock() {}

// abort has nothing to do: SendDatagram waits for the QUIC connection's
// congestion window, never for the device to read.
func (d *datagramLeg) abort() {}

// finish closes the stream. No CLOSE capsule here: HTTP/3 clients
// (masque-go's among them) learn the end from the stream, and would only
// log the capsule.
func (d *datagramLeg) finish() {
	d.str.Close()
	d.str.CancelRead(quic.StreamErrorCode(http3.ErrCodeNoError))
}
