package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/h3stream"
	"github.com/netsody/superpeer/rendezvous"
)

// legKind is how a leg carries packets; newLeg picks its legIO by it.
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
	return 0, refuseMethod.with(echoed(r.Method))
}

// legIO is how a leg's packets travel: QUIC datagrams beside an HTTP/3
// request stream (datagramLeg), or DATAGRAM capsules in the request and
// response bodies (capsuleLeg). rendezvous's stream and masque-go's
// http3Stream abstract over their transports the same way.
type legIO interface {
	// open readies the transport once the device has its 200.
	open() error
	// relay delivers what the device sends to other until the leg ends.
	relay(other *leg) error
	// send writes the queue towards the device until the leg ends.
	send()
	// unblock makes a read pending in relay return. end calls it once,
	// from any goroutine, possibly before open.
	unblock()
	// abort makes a write to the device in flight in send fail now, and
	// the writes after it: the device does not take them.
	abort()
	// finish ends the response once relay and send have returned.
	finish()
}

// leg is one device's half of a relay session. Its handler goroutine owns
// the response; end, callable from anywhere, only signals it.
type leg struct {
	io      legIO
	peer    identity.PeerID // the device of this leg
	target  identity.PeerID // the device it wants
	unwatch func() bool     // stops ending the leg with its registration
	reg     *rendezvous.Registration
	prefix  netip.Prefix // where the device's request came from
	cfg     *Config
	stats   *Stats
	w       http.ResponseWriter
	// account is charged what the device sends: its own bucket
	// (Config.Rate), and the device's and super peer's budgets once
	// accept has joined them (budget.go).
	account account
	paired  chan *leg       // the counterpart, once
	q       *queue          // towards the device: made by run, read after ready
	ctx     context.Context // ends with the leg
	cancel  context.CancelFunc
	ready   chan struct{} // closed once answered: deliver may be called

	// The fast path (fastpath_leg.go): the server's, and this leg's binding
	// once the device asked for one (once: fastAsked).
	fastPaths *atomic.Pointer[fastPath]
	fast      atomic.Pointer[binding]
	fastAsked atomic.Bool

	// The operator's view (operator.go): how, since when and how much was
	// delivered to the device. Set by newLeg, got by deliver.
	transport Transport
	started   time.Time
	got       traffic

	endOnce sync.Once
	done    chan struct{}
	mu      sync.Mutex // guards why, and q until ready
	why     string
}

func newLeg(kind legKind, w http.ResponseWriter, r *http.Request, peer, target identity.PeerID, cfg *Config, stats *Stats) (*leg, error) {
	l := &leg{
		stats:   stats,
		peer:    peer,
		target:  target,
		cfg:     cfg,
		w:       w,
		account: account{buckets: [3]*bucket{newBucket(cfg.Rate, cfg.Burst)}, stats: stats},
		paired:  make(chan *leg, 1),
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
	}
	l.ctx, l.cancel = context.WithCancel(r.Context())
	l.transport, l.started = legTransport(kind, r), time.Now()
	switch kind {
	case kindDatagram:
		hs := h3stream.Of(w)
		if hs == nil {
			return nil, errors.New("the HTTP/3 response writer cannot hand over its stream")
		}
		l.io = &datagramLeg{l: l, streamer: hs}
	case kindCapsule:
		l.io = &capsuleLeg{l: l, rc: http.NewResponseController(w), body: r.Body}
	}
	return l, nil
}

// end ends the leg with a reason for its device, once.
func (l *leg) end(reason string) {
	l.endOnce.Do(func() {
		l.mu.Lock()
		l.why = reason
		if l.q != nil {
			l.q.close() // what is queued is freed now, not when send returns
		}
		l.mu.Unlock()
		close(l.done)
		l.cancel()
		l.io.unblock()
	})
}

func (l *leg) reason() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.why
}

// run answers the device and relays what it sends to other until either
// leg ends; then it tells both devices why.
func (l *leg) run(other *leg) {
	l.stats.Active.Add(1)
	defer l.stats.Active.Add(-1)
	// The queue is made now, once paired: a waiting leg holds none.
	l.mu.Lock()
	l.q = newQueue(l.cfg, &l.stats.QueuedBytes)
	if l.why != "" {
		l.q.close()
	}
	l.mu.Unlock()
	l.w.Header().Set(http3.CapsuleProtocolHeader, "?1")
	l.w.WriteHeader(http.StatusOK)
	sent := make(chan struct{})
	err := l.io.open()
	if err == nil {
		go func() { defer close(sent); l.io.send() }() // returns once l ends
		close(l.ready)
		if l.await(other) {
			err = l.io.relay(other)
		}
	} else {
		close(sent)
	}
	l.end(reasonFor(err, "this device closed the session"))
	<-sent
	other.end(fmt.Sprintf("peer %s ended the session: %s", l.peer.Short(), l.reason()))
	l.io.finish()
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

// deliver queues one datagram payload for this leg's device, taking
// ownership of d (pooled once sent or dropped); it never blocks, so that
// the other leg keeps draining its own queues (quic-go's hold only 32
// datagrams a stream).
func (l *leg) deliver(d []byte) {
	if l.deliverFast(d) { // a copy: d is free after it
		freeDatagram(d)
		return
	}
	r := l.q.push(item{b: d})
	if r != pushed {
		freeDatagram(d)
	}
	switch r {
	case pushed:
		l.delivered(l.transport, len(d))
	case pushFull:
		l.stats.drop(DropQueueFull)
	case pushOverload:
		l.stats.drop(DropOverloaded)
	case pushStalled:
		l.stats.drop(DropQueueFull)
		l.stats.Stalled.Add(1)
		l.end(fmt.Sprintf("this device took nothing relayed to it for %v", l.cfg.StallTimeout))
		l.io.abort()
	}
}
