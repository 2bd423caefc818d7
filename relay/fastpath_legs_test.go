package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

// rawLeg is a relay leg whose capsules the test sees, as the device
// library's leg will: HTTP datagram payloads in and out, and the
// fast-path capsules.
type rawLeg struct {
	sendData     func(p []byte) error
	writeCapsule func(c []byte) error
	data         chan []byte
	answers      chan capsule // CapsuleFastPathBinding or CapsuleFastPathRefused
	closeFn      func()
	done         chan struct{} // the readers have returned
}

type capsule struct {
	t http3.CapsuleType
	v []byte
}

func newRawLeg() *rawLeg {
	return &rawLeg{data: make(chan []byte, 1024), answers: make(chan capsule, 4), done: make(chan struct{})}
}

func (l *rawLeg) close() { l.closeFn(); <-l.done }

// readCapsules reads a leg's capsules until it ends: DATAGRAMs go to data
// (on legs that carry them), fast-path answers to answers.
func (l *rawLeg) readCapsules(r io.Reader) {
	p := http3.NewCapsuleParser(bufio.NewReader(r))
	for {
		t, cr, err := p.Next()
		if err != nil {
			return
		}
		v, err := io.ReadAll(cr)
		if err != nil {
			return
		}
		switch t {
		case CapsuleDatagram:
			select {
			case l.data <- v:
			default:
			}
		case CapsuleFastPathBinding, CapsuleFastPathRefused:
			l.answers <- capsule{t, v}
		}
	}
}

// requestFastPath asks for a binding and returns the answer.
func (l *rawLeg) requestFastPath(t testing.TB) capsule {
	t.Helper()
	if err := l.writeCapsule(appendCapsule(nil, CapsuleFastPathRequest)); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-l.answers:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no answer to the fast-path request")
	}
	return capsule{}
}

func (l *rawLeg) bind(t testing.TB) FastPathBinding {
	t.Helper()
	c := l.requestFastPath(t)
	if c.t != CapsuleFastPathBinding {
		t.Fatalf("fast path refused: %s", c.v)
	}
	b, err := ParseFastPathBinding(c.v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (l *rawLeg) recv(t testing.TB) []byte {
	t.Helper()
	select {
	case p := <-l.data:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("nothing relayed to this leg")
	}
	return nil
}

// dialRaw opens d's leg towards peer over d's transport.
func (d *device) dialRaw(ctx context.Context, peer identity.PeerID) (*rawLeg, error) {
	if d.s.Transport() == rendezvous.TransportH3 {
		return dialRawH3(ctx, d.s.HTTP3(), d.s.Authority(), peer)
	}
	return dialRawH2(ctx, d.s.HTTP2(), d.s.Authority(), peer)
}

func dialRawH3(ctx context.Context, cc *http3.ClientConn, authority string, peer identity.PeerID) (*rawLeg, error) {
	str, err := cc.OpenRequestStream(ctx)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodConnect, relayURL(authority, peer), nil)
	if err != nil {
		return nil, err
	}
	req.Proto, req.Host = "connect-udp", authority
	req.Header.Set(http3.CapsuleProtocolHeader, "?1")
	if err := str.SendRequestHeader(req); err != nil {
		return nil, err
	}
	resp, err := str.ReadResponse()
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		str.CancelRead(quic.StreamErrorCode(http3.ErrCodeNoError))
		str.Close()
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	l := newRawLeg()
	dctx, cancel := context.WithCancel(context.Background())
	l.sendData = str.SendDatagram
	l.writeCapsule = func(c []byte) error { _, err := str.Write(c); return err }
	l.closeFn = func() { cancel(); str.CancelRead(quic.StreamErrorCode(http3.ErrCodeNoError)); str.Close() }
	capsulesDone := make(chan struct{})
	go func() { defer close(capsulesDone); l.readCapsules(str) }()
	go func() {
		defer close(l.done)
		defer func() { <-capsulesDone }()
		for {
			p, err := str.ReceiveDatagram(dctx)
			if err != nil {
				return
			}
			select {
			case l.data <- p:
			default:
			}
		}
	}()
	return l, nil
}

func dialRawH2(ctx context.Context, cc http.RoundTripper, authority string, peer identity.PeerID) (*rawLeg, error) {
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, relayURL(authority, peer), pr)
	if err != nil {
		return nil, err
	}
	req.Header.Set(http3.CapsuleProtocolHeader, "?1")
	req.ContentLength = -1
	type res struct {
		resp *http.Response
		err  error
	}
	ch := make(chan res, 1)
	go func() { resp, err := cc.RoundTrip(req); ch <- res{resp, err} }()
	var r res
	select {
	case r = <-ch:
	case <-ctx.Done():
		pw.Close()
		r = <-ch
		if r.err == nil {
			r.resp.Body.Close()
		}
		return nil, ctx.Err()
	}
	if r.err != nil {
		pw.Close()
		return nil, r.err
	}
	if r.resp.StatusCode != http.StatusOK {
		pw.Close()
		r.resp.Body.Close()
		return nil, fmt.Errorf("status %d", r.resp.StatusCode)
	}
	l := newRawLeg()
	l.sendData = func(p []byte) error { _, err := pw.Write(appendCapsule(nil, CapsuleDatagram, p)); return err }
	l.writeCapsule = func(c []byte) error { _, err := pw.Write(c); return err }
	l.closeFn = func() { pw.Close(); r.resp.Body.Close() }
	go func() { defer close(l.done); l.readCapsules(r.resp.Body) }()
	return l, nil
}

// pairRaw opens legs A→B and B→A at once.
func pairRaw(t testing.TB, a, b *device) (*rawLeg, *rawLeg) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	type res struct {
		l   *rawLeg
		err error
	}
	ch := make(chan res, 1)
	go func() { l, err := a.dialRaw(ctx, b.id.PeerID()); ch <- res{l, err} }()
	lb, errB := b.dialRaw(ctx, a.id.PeerID())
	ra := <-ch
	if err := errors.Join(ra.err, errB); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ra.l.close(); lb.close() })
	return ra.l, lb
}
