package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/time/rate"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/h3stream"
)

// legKind is how a leg carries packets.
type legKind int

const (
	// kindDatagram: HTTP/3 extended CONNECT (RFC 9298), packets in QUIC
	// datagrams.
	kindDatagram legKind = iota
	// kindCapsule: an HTTP/2 extended CONNECT (RFC 8441) or a streamed POST
	// on HTTP/2 or HTTP/3, packets in DATAGRAM capsules.
	kindCapsule
)

// kindOf tells what kind of leg a request asks for.
func kindOf(r *http.Request) (legKind, *refusal) {
	switch {
	case r.ProtoMajor < 2:
		return 0, refuseHTTP1
	case r.Method == http.MethodConnect && r.ProtoMajor == 3 && r.Proto == "connect-udp":
		return kindDatagram, nil
	case r.Method == http.MethodConnect && r.ProtoMajor == 2 && r.Header.Get(":protocol") == "connect-udp":
		return kindCapsule, nil
	case r.Method == http.MethodConnect:
		return 0, refuseProtocol
	case r.Method == http.MethodPost:
		return kindCapsule, nil
	}
	return 0, refuseMethod.with(r.Method)
}

// writeTimeout bounds one write to a capsule leg's device.
const writeTimeout = 10 * time.Second

// leg is one device's half of a relay session. Its handler goroutine owns
// the response; end, callable from anywhere, only signals it.
type leg struct {
	kind    legKind
	peer    identity.PeerID // the device of this leg
	target  identity.PeerID // the device it wants
	unwatch func() bool     // stops ending the leg with its registration
	cfg     *Config
	stats   *Stats
	w       http.ResponseWriter
	rc      *http.ResponseController
	body    io.ReadCloser
	limiter *rate.Limiter
	paired  chan *leg       // the counterpart, once
	out     chan []byte     // capsule legs: capsules towards the device
	ctx     context.Context // ends with the leg
	cancel  context.CancelFunc

	str   *http3.Stream // datagram legs, once answered
	ready chan struct{} // closed once answered: deliver may be called

	endOnce sync.Once
	done    chan struct{}
	mu      sync.Mutex // guards why
	why     string
}

func newLeg(kind legKind, w http.ResponseWriter, r *http.Request, peer, target identity.PeerID, cfg *Config, stats *Stats) (*leg, error) {
	l := &leg{
		kind:    kind,
		stats:   stats,
		peer:    peer,
		target:  target,
		cfg:     cfg,
		w:       w,
		rc:      http.NewResponseController(w),
		body:    r.Body,
		limiter: rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Burst),
		paired:  make(chan *leg, 1),
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
	}
	l.ctx, l.cancel = context.WithCancel(r.Context())
	l.out = make(chan []byte, cfg.QueueLen)
	if kind == kindDatagram && h3stream.Of(w) == nil {
		return nil, errors.New("the HTTP/3 response writer cannot hand over its stream")
	}
	return l, nil
}

// end ends the leg with a reason for its device, once.
func (l *leg) end(reason string) {
	l.endOnce.Do(func() {
		l.mu.Lock()
		l.why = reason
		l.mu.Unlock()
		close(l.done)
		l.cancel()
		if l.kind == kindCapsule {
			l.body.Close() // unblocks the reader
		}
	})
}

func (l *leg) reason() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.why
}

// run answers the device and relays what it sends to other until either
// leg ends; then it tells its device why.
func (l *leg) run(other *leg) {
	l.stats.Active.Add(1)
	defer l.stats.Active.Add(-1)
	l.w.Header().Set(http3.CapsuleProtocolHeader, "?1")
	l.w.WriteHeader(http.StatusOK)
	var err error
	switch l.kind {
	case kindDatagram:
		l.str = h3stream.Of(l.w).HTTPStream()
		senderOut := make(chan struct{})
		go l.sendDatagrams(senderOut)
		close(l.ready)
		if l.await(other) {
			err = l.relayDatagrams(other)
		}
		l.end(reasonFor(err, "this device closed the session"))
		<-senderOut
	case kindCapsule:
		if err = l.rc.Flush(); err == nil {
			writerOut := make(chan struct{})
			go l.writeCapsules(writerOut)
			close(l.ready)
			if l.await(other) {
				err = l.relayCapsules(other)
			}
			l.end(reasonFor(err, "this device closed the session"))
			<-writerOut
		}
	}
	l.end(reasonFor(err, "this device closed the session"))
	other.end(fmt.Sprintf("peer %s ended the session: %s", l.peer.Short(), l.reason()))
	if l.kind == kindDatagram {
		// No CLOSE capsule here: HTTP/3 clients (masque-go's among them)
		// learn the end from the stream, and would only log the capsule.
		l.str.Close()
		l.str.CancelRead(quic.StreamErrorCode(http3.ErrCodeNoError))
	}
}

// await waits until other is answered, so that l may deliver to it.
func (l *leg) await(other *leg) bool {
	select {
	case <-other.ready:
		return true
	case <-other.done:
	case <-l.done:
	}
	return false
}

func reasonFor(err error, eof string) string {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) {
		return eof
	}
	return err.Error()
}

// relayDatagrams forwards the device's QUIC datagrams until the leg ends;
// a goroutine watches the request stream, whose end ends the session.
func (l *leg) relayDatagrams(other *leg) error {
	streamDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, l.str) // capsules, if any, are skipped
		l.end(reasonFor(err, "this device closed the session"))
		streamDone <- err
	}()
	defer func() { l.str.CancelRead(quic.StreamErrorCode(http3.ErrCodeNoError)); <-streamDone }()
	max := l.cfg.MaxDatagramSize
	for {
		d, err := l.str.ReceiveDatagram(l.ctx)
		if err != nil {
			return err
		}
		if len(d) > max {
			l.stats.drop(DropTooLarge)
			continue
		}
		if !l.limiter.AllowN(time.Now(), len(d)) {
			l.stats.drop(DropRateLimited)
			continue
		}
		other.deliver(d)
	}
}

// relayCapsules forwards the device's DATAGRAM capsules until the leg
// ends. Waiting for the token bucket stops reading, which throttles the
// device through TCP.
func (l *leg) relayCapsules(other *leg) error {
	p := http3.NewCapsuleParser(bufio.NewReaderSize(l.body, 16<<10))
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

// deliver queues one datagram payload for this leg's device, taking
// ownership of d; it never blocks, so that the other leg keeps draining
// its own queues (quic-go's hold only 32 datagrams a stream).
func (l *leg) deliver(d []byte) {
	select {
	case <-l.done:
		return
	default:
	}
	item := d
	if l.kind == kindCapsule {
		item = appendCapsule(nil, CapsuleDatagram, d)
	}
	select {
	case l.out <- item:
		l.stats.Datagrams.Add(1)
		l.stats.Bytes.Add(uint64(len(d)))
	default:
		l.stats.drop(DropQueueFull)
	}
}

// sendDatagrams sends queued datagrams to a datagram leg's device until
// the leg ends. SendDatagram blocks while the QUIC connection's own send
// queue is full, which paces this loop to what the connection can carry.
func (l *leg) sendDatagrams(out chan struct{}) {
	defer close(out)
	for {
		select {
		case d := <-l.out:
			if err := l.str.SendDatagram(d); err != nil {
				l.stats.drop(DropSendFailed)
			}
		case <-l.done:
			return
		}
	}
}

// writeCapsules writes queued capsules to a capsule leg's device until
// the leg ends, then the CLOSE capsule.
func (l *leg) writeCapsules(out chan struct{}) {
	defer close(out)
	var buf []byte
	for {
		select {
		case c := <-l.out:
			buf = append(buf[:0], c...)
		drain:
			for len(buf) < 64<<10 {
				select {
				case c := <-l.out:
					buf = append(buf, c...)
				default:
					break drain
				}
			}
			if err := l.write(buf); err != nil {
				l.end("writing to the device failed: " + err.Error())
				return
			}
		case <-l.done:
			l.write(closeCapsule(l.reason()))
			return
		}
	}
}

func (l *leg) write(b []byte) error {
	_ = l.rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := l.w.Write(b)
	if err == nil {
		err = l.rc.Flush()
	}
	_ = l.rc.SetWriteDeadline(time.Time{})
	return err
}
