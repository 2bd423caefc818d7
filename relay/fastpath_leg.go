package relay

import (
	"bufio"

	"github.com/quic-go/quic-go/http3"
)

// fastPathAnswer answers a FAST_PATH_REQUEST on l, paired with other,
// with the capsule to send back: a binding, or why not. A leg is answered
// once, and nil comes back after that: a device cannot make the super
// peer write to a stream it does not read.
func (l *leg) fastPathAnswer(other *leg, valueLen int64) []byte {
	if !l.fastAsked.CompareAndSwap(false, true) {
		return nil
	}
	refuse := func(why string) []byte {
		l.stats.FastPath.Refused.Add(1)
		return appendCapsule(nil, CapsuleFastPathRefused, []byte(why))
	}
	if valueLen != 0 {
		return refuse("a fast-path request carries no value")
	}
	var fp *fastPath
	if l.fastPaths != nil {
		fp = l.fastPaths.Load()
	}
	if fp == nil {
		return refuse("this super peer serves no fast path")
	}
	b, err := fp.bind(l, other)
	if err != nil {
		return refuse(err.Error())
	}
	l.fast.Store(b)
	return FastPathBinding{ID: b.id, Token: b.token, Port: fp.port}.capsule()
}

// readStream reads an HTTP/3 leg's request stream until it ends: a
// fast-path request is answered on the stream, other capsules are
// skipped. The one answer is far below any stream's flow-control window,
// so the write does not wait for the device.
func (d *datagramLeg) readStream(other *leg) error {
	p := http3.NewCapsuleParser(bufio.NewReader(d.str))
	for {
		t, r, err := p.Next()
		if err != nil {
			return err
		}
		if t == CapsuleFastPathRequest {
			if c := d.l.fastPathAnswer(other, r.Remaining()); c != nil {
				if _, err := d.str.Write(c); err != nil {
					return err
				}
			}
		}
		if err := r.Discard(); err != nil {
			return err
		}
	}
}

// deliverFast sends d to l's device on its fast path, if validated; false
// leaves it to the leg's own transport.
func (l *leg) deliverFast(d []byte) bool {
	b := l.fast.Load()
	return b != nil && b.sendData(d)
}
