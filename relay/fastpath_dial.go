package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/netsody/superpeer/identity"
)

// A device's side of asking for a fast-path binding (docs/PROTOCOL.md,
// "Relay fast path"): on an HTTP/2 leg (StreamConn) the answer comes
// among the DATAGRAM capsules that ReadFrom reads; on an HTTP/3 leg
// (DatagramConn, below) on the request stream, which masque-go's client
// keeps to itself: hence a CONNECT-UDP client of the project's own.

// fastPathAsk is a leg's one fast-path request and its answer.
type fastPathAsk struct {
	asked  sync.Once
	answer chan fastPathAnswer // one answer, buffered
	closed chan struct{}       // the leg ended
}

type fastPathAnswer struct {
	b   FastPathBinding
	err error
}

func newFastPathAsk() fastPathAsk {
	return fastPathAsk{answer: make(chan fastPathAnswer, 1), closed: make(chan struct{})}
}

// take is an onCapsule for readDatagram: it reads a binding or a refusal
// into the answer; other capsules are left to be skipped.
func (a *fastPathAsk) take(t http3.CapsuleType, r http3.CapsuleReader) error {
	var ans fastPathAnswer
	switch t {
	case CapsuleFastPathBinding:
		v, err := io.ReadAll(io.LimitReader(r, fpBindingLen+1))
		if err != nil {
			return err
		}
		ans.b, ans.err = ParseFastPathBinding(v)
	case CapsuleFastPathRefused:
		v, err := io.ReadAll(io.LimitReader(r, maxCloseReason))
		if err != nil {
			return err
		}
		ans.err = &FastPathRefusedError{Reason: string(v)}
	default:
		return nil
	}
	select {
	case a.answer <- ans:
	default: // a second answer: the super peer answers once
	}
	return nil
}

// request writes the request once with write, then waits for the answer
// while the leg lasts.
func (a *fastPathAsk) request(ctx context.Context, write func([]byte) error) (FastPathBinding, error) {
	err := errors.New("relay: a fast path was already asked for on this session")
	a.asked.Do(func() { err = write(appendCapsule(nil, CapsuleFastPathRequest)) })
	if err != nil {
		return FastPathBinding{}, err
	}
	select {
	case ans := <-a.answer:
		return ans.b, ans.err
	case <-a.closed:
		return FastPathBinding{}, net.ErrClosed
	case <-ctx.Done():
		return FastPathBinding{}, fmt.Errorf("relay: no answer to the fast-path request: %w", ctx.Err())
	}
}

// FastPathRefusedError is the super peer's refusal of a binding: the
// leg goes on over its own transport.
type FastPathRefusedError struct{ Reason string }

func (e *FastPathRefusedError) Error() string { return "relay: fast path refused: " + e.Reason }

// RequestFastPath asks the super peer for a fast-path binding on this
// session and waits for the answer, which arrives while ReadFrom reads:
// keep reading. A session asks once.
func (c *StreamConn) RequestFastPath(ctx context.Context) (FastPathBinding, error) {
	return c.fast.request(ctx, c.out.writeControl)
}

// DatagramConn is a relay session over HTTP/3 datagrams, on a CONNECT-UDP
// request stream of its own (DialH3Stream), as a net.PacketConn whose
// every packet goes to and comes from the one peer. Unlike masque-go's
// conn it reads the stream's capsules, so it can ask for a fast path.
// Deadlines are not supported: Close ends a pending read.
type DatagramConn struct {
	str    *http3.RequestStream
	ctx    context.Context // ends reads
	cancel context.CancelFunc
	sessionEnds
	fast fastPathAsk
	read chan struct{} // the stream reader returned

	wmu  sync.Mutex // guards wbuf
	wbuf []byte

	closeOnce sync.Once
}

// DialH3Stream opens a relay session towards peer over an HTTP/3
// connection on which this device registered, as DialH3 does, but with a
// CONNECT-UDP request (RFC 9298) of its own rather than masque-go's: the
// session can ask for a fast path (RequestFastPath).
func DialH3Stream(ctx context.Context, cc *http3.ClientConn, authority string, peer identity.PeerID) (*DatagramConn, error) {
	str, err := cc.OpenRequestStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodConnect, relayURL(authority, peer), nil)
	if err != nil {
		str.Close()
		return nil, fmt.Errorf("relay: %w", err)
	}
	req.Proto, req.Host = "connect-udp", authority // :protocol (RFC 9298 section 3.4)
	req.Header.Set(http3.CapsuleProtocolHeader, "?1")
	abort := func() {
		str.CancelRead(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
		str.CancelWrite(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
	}
	stop := context.AfterFunc(ctx, abort) // ReadResponse waits for the pairing
	resp, err := func() (*http.Response, error) {
		if err := str.SendRequestHeader(req); err != nil {
			return nil, err
		}
		return str.ReadResponse()
	}()
	if !stop() {
		err = errors.Join(ctx.Err(), err)
	}
	if err != nil {
		abort()
		return nil, fmt.Errorf("relay: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		abort()
		return nil, refusedError(resp)
	}
	c := &DatagramConn{str: str, sessionEnds: sessionEnds{relayAddr(peer.String())}, fast: newFastPathAsk(), read: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.readStream() // ends with the stream: Close, or the super peer's end
	return c, nil
}

// readStream reads the request stream's capsules until it ends, then ends
// the session's reads.
func (c *DatagramConn) readStream() {
	defer close(c.read)
	defer c.cancel()
	p := http3.NewCapsuleParser(bufio.NewReader(c.str))
	for {
		t, r, err := p.Next()
		if err != nil {
			return
		}
		if err := c.fast.take(t, r); err != nil {
			return
		}
		if err := r.Discard(); err != nil {
			return
		}
	}
}

// RequestFastPath asks the super peer for a fast-path binding on this
// session and waits for the answer. A session asks once.
func (c *DatagramConn) RequestFastPath(ctx context.Context) (FastPathBinding, error) {
	return c.fast.request(ctx, func(b []byte) error {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		_, err := c.str.Write(b)
		return err
	})
}

// ReadFrom reads the next packet from the peer.
func (c *DatagramConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		d, err := c.str.ReceiveDatagram(c.ctx)
		if err != nil {
			return 0, nil, fmt.Errorf("relay: %w", err)
		}
		id, n, err := quicvarint.Parse(d)
		if err != nil || id != 0 {
			continue // not a UDP payload (RFC 9298 section 4): skip
		}
		return copy(b, d[n:]), c.remote, nil
	}
}

// WriteTo sends a packet to the peer; addr is ignored.
func (c *DatagramConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = append(append(c.wbuf[:0], contextIDZero...), p...)
	if err := c.str.SendDatagram(c.wbuf); err != nil {
		return 0, fmt.Errorf("relay: %w", err)
	}
	return len(p), nil
}

// Close ends the session and waits for its stream reader.
func (c *DatagramConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.fast.closed)
		c.cancel()
		c.str.CancelRead(quic.StreamErrorCode(http3.ErrCodeNoError))
		c.str.Close()
	})
	<-c.read
	return nil
}

var _ net.PacketConn = (*DatagramConn)(nil)
