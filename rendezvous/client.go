package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/quic-go/quic-go/http3"
	"go.uber.org/zap"

	"github.com/netsody/superpeer/identity"
)

// Session is a device's registered session with one super peer.
type Session struct {
	// Set by Dial before the session starts; read-only after.
	cfg           ClientConfig
	transport     Transport
	tr            clientTransport
	binding       Binding
	authority     string
	serverVersion uint64     // from VersionHeader
	registered    Registered // with the super peer's Protocol
	log           *zap.Logger
	local         net.Addr
	remote        net.Addr

	wmu sync.Mutex // serialises writes to tr

	mu        sync.Mutex // guards the following
	pending   map[identity.PeerID][]chan lookupResult
	rtt       rttEstimator // this device's pings
	serverRTT time.Duration
	observed  netip.AddrPort
	headroom  *Headroom // the last FrameHeadroom; nil if none yet
	timer     *time.Timer
	nextPing  time.Time // when timer fires: the next keepalive
	err       error

	done    chan struct{} // closed when the session has ended
	started bool          // the reading goroutine was started
	readOut chan struct{} // closed when the reading goroutine exits
}

// ErrSessionClosed is returned for operations on an ended session that
// ended without another reason.
var ErrSessionClosed = errors.New("rendezvous: session closed")

// Dial opens and registers a session with a super peer. The context bounds
// only the dial and registration.
func Dial(ctx context.Context, cfg ClientConfig) (*Session, error) {
	s, err := Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := s.Register(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Open opens a session's transport without registering. A device that
// races transports (HTTP/3 against HTTP/2) opens both and registers only
// on the one that wins: a registration on the loser would replace the
// winner's at the super peer. An opened session is for Register or Close
// only. The context bounds only the dial.
func Open(ctx context.Context, cfg ClientConfig) (*Session, error) {
	return open(ctx, cfg)
}

// Register registers an opened session and starts it; on failure the
// session is closed. The context bounds only the registration.
func (s *Session) Register(ctx context.Context) error {
	if s.started {
		return errors.New("rendezvous: the session is registered already")
	}
	if err := s.register(ctx); err != nil {
		s.Close()
		return err
	}
	s.start()
	return nil
}

// RelayOnly reports whether the session is registered for relays only:
// ClientConfig.RelayOnly asked for it, and the super peer honours it
// (CapRelayOnly). False with a super peer that registered it as an
// ordinary session.
func (s *Session) RelayOnly() bool {
	return s.cfg.RelayOnly && s.registered.Capabilities.Has(CapRelayOnly)
}

// register sends FrameRegister and waits for FrameRegistered.
func (s *Session) register(ctx context.Context) error {
	m := signRegistration(s.binding, s.cfg.Identity, s.cfg.LocalAddrs)
	// An older super peer refuses the extensions our version and
	// capabilities travel in.
	if s.serverVersion >= extensionsVersion {
		m.Protocol = ours
		if s.cfg.OnRequest == nil {
			// Nothing would answer a FrameRequest.
			m.Protocol.Capabilities &^= CapConsent
		}
		if s.cfg.OnMove == nil {
			m.Protocol.Capabilities &^= CapMove
		}
		if s.cfg.OnHeadroom == nil {
			m.Protocol.Capabilities &^= CapHeadroom
		}
		m.Protocol.Capabilities &^= CapRelayOnly // a super peer's
		m.RelayOnly = s.cfg.RelayOnly
	}
	if s.cfg.announce != nil {
		m.Protocol = *s.cfg.announce
	}
	sent := time.Now()
	if err := s.writeFrame(m.frame()); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, s.tr.closeRead)
	defer stop()
	var hdr [frameHeaderLen]byte
	for {
		f, err := readFrame(s.tr, &hdr)
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return fmt.Errorf("rendezvous: waiting for registration: %w", err)
		}
		if f.typ != FrameRegistered && f.typ != FrameError {
			continue
		}
		m, err := decodeFrame(f)
		if err != nil {
			return fmt.Errorf("rendezvous: %w", err)
		}
		if e, ok := m.(*Error); ok {
			return e
		}
		s.registered = *m.(*Registered)
		s.observed = s.registered.Observed
		// A first RTT sample: the registration's round trip (it includes
		// one signature check at the super peer).
		s.rtt.add(time.Since(sent))
		s.rtt.answered = time.Now()
		return nil
	}
}

// start runs the session's reading goroutine and keepalive timer.
func (s *Session) start() {
	s.started = true
	s.mu.Lock()
	s.timer = time.AfterFunc(s.keepaliveInterval(), s.Ping)
	s.nextPing = time.Now().Add(s.keepaliveInterval())
	s.mu.Unlock()
	go s.read()
}

// NextKeepalive is when the session pings its super peer next unless
// something pings it sooner (Ping): a device that looks at Unanswered
// then, and h3Unanswered-like seconds later, needs no look before.
func (s *Session) NextKeepalive() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nextPing
}

func (s *Session) keepaliveInterval() time.Duration {
	if s.cfg.KeepaliveInterval > 0 {
		return s.cfg.KeepaliveInterval
	}
	if s.registered.KeepaliveInterval > 0 {
		return s.registered.KeepaliveInterval
	}
	return DefaultKeepaliveInterval
}

// Ping pings the super peer now, which is also the next keepalive: an RTT
// sample, and a packet from this device's current address. A device sends
// one when it suspects its network changed (a direct path died, say): if
// its NAT rebound, the super peer follows it at once and tells it
// (OnObserved), and what the super peer relays to it finds the new
// address.
func (s *Session) Ping() {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	now := time.Now()
	ping := s.rtt.ping(now)
	s.timer.Reset(s.keepaliveInterval())
	s.nextPing = now.Add(s.keepaliveInterval())
	s.mu.Unlock()
	// A failed write ends nothing here: the reading goroutine sees the
	// stream end too, after any error frame that says why.
	if err := s.writeFrame(ping.frame()); err != nil {
		s.log.Debug("keepalive", zap.Error(err))
	}
}

// read handles frames from the super peer until the session ends.
func (s *Session) read() {
	defer close(s.readOut)
	var hdr [frameHeaderLen]byte
	for {
		f, err := readFrame(s.tr, &hdr)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w: %s ended the stream", ErrSessionClosed, s.cfg.URL)
			} else {
				err = fmt.Errorf("rendezvous: session with %s: %w", s.cfg.URL, err)
			}
			s.end(err)
			return
		}
		if err := s.handle(f); err != nil {
			s.end(err)
			return
		}
	}
}

// handle acts on one frame from the super peer; an error ends the
// session.
func (s *Session) handle(f frame) error {
	m, err := decodeFrame(f)
	if err != nil {
		return fmt.Errorf("rendezvous: %w", err)
	}
	switch m := m.(type) {
	case nil:
		// An unknown type, from a later version: skipped.
	case *Ping:
		s.mu.Lock()
		s.serverRTT = m.RTT
		s.mu.Unlock()
		// As in Ping: the reader, not a failed write, says how the
		// session ended.
		if err := s.writeFrame((&Pong{Nonce: m.Nonce}).frame()); err != nil {
			s.log.Debug("pong", zap.Error(err))
		}
	case *Pong:
		s.mu.Lock()
		s.rtt.pong(m.Nonce, time.Now())
		s.mu.Unlock()
	case *Candidates:
		s.resolve(m.Peer, lookupResult{c: *m})
		if s.cfg.OnCandidates != nil {
			s.cfg.OnCandidates(*m)
		}
	case *Request:
		// Sent only to a session that announced CapConsent, which it did
		// only with OnRequest set.
		if s.cfg.OnRequest != nil {
			s.cfg.OnRequest(*m)
		}
	case *Move:
		// Sent only to a session that announced CapMove, which it did
		// only with OnMove set.
		s.log.Debug("super peer drains", zap.String("url", s.cfg.URL), zap.Duration("deadline", m.Deadline), zap.String("reason", m.Reason))
		if s.cfg.OnMove != nil {
			s.cfg.OnMove(*m)
		}
	case *Headroom:
		// Sent only to a session that announced CapHeadroom, which it
		// did only with OnHeadroom set.
		s.mu.Lock()
		s.headroom = m
		s.mu.Unlock()
		if s.cfg.OnHeadroom != nil {
			s.cfg.OnHeadroom(*m)
		}
	case *Observed:
		s.mu.Lock()
		s.observed = m.Addr
		s.mu.Unlock()
		s.log.Debug("super peer observes a new address", zap.String("url", s.cfg.URL), zap.Stringer("observed", m.Addr))
		if s.cfg.OnObserved != nil {
			s.cfg.OnObserved(m.Addr)
		}
	case *Error:
		if m.Code.Fatal() {
			return m
		}
		if !m.Peer.IsZero() {
			s.resolve(m.Peer, lookupResult{err: m})
		}
		s.log.Debug("super peer refused a request", zap.Error(m))
	default:
		return fmt.Errorf("rendezvous: %w: %s is not sent to devices in a session", errMalformed, f.typ)
	}
	return nil
}

// end records why the session ended, once, and tears it down.
func (s *Session) end(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	if s.timer != nil {
		s.timer.Stop()
	}
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	for _, waiters := range pending {
		for _, ch := range waiters {
			ch <- lookupResult{err: err}
		}
	}
	close(s.done)
	s.tr.close()
}

// writeFrame writes one frame. A write that times out
// (clientWriteTimeout: the super peer takes nothing) ends the session,
// so that its writers, which wait for each other, are not held.
func (s *Session) writeFrame(f []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.tr.write(f, s.writeTimeout()); err != nil {
		err = fmt.Errorf("rendezvous: writing to %s: %w", s.cfg.URL, err)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.end(err)
		}
		return err
	}
	return nil
}

func (s *Session) writeTimeout() time.Duration {
	if s.cfg.writeTimeout > 0 {
		return s.cfg.writeTimeout
	}
	return clientWriteTimeout
}

// ErrNoConsent is Answer's error with a super peer that did not announce
// CapConsent: it asks nothing, and introduces peers at once.
var ErrNoConsent = errors.New("rendezvous: the super peer does not ask for consent")

// Answer answers a Request from peer (OnRequest): accept lets the super
// peer send both devices each other's candidates; a decline, like no
// answer, leaves the asker told only that this device is unavailable.
func (s *Session) Answer(peer identity.PeerID, accept bool) error {
	if !s.registered.Capabilities.Has(CapConsent) {
		return ErrNoConsent
	}
	return s.writeFrame((&Answer{Peer: peer, Accept: accept}).frame())
}

// SetLocalAddrs replaces the local addresses the super peer hands out.
func (s *Session) SetLocalAddrs(as []netip.AddrPort) error {
	if err := checkAddrs(as); err != nil {
		return err
	}
	return s.writeFrame((&Addrs{LocalAddrs: as}).frame())
}

// ErrNoMapping is SetMapping's error with a super peer that did not
// announce CapMapping: it would not understand FrameMapping.
var ErrNoMapping = errors.New("rendezvous: the super peer does not take a device's NAT mapping")

// SetMapping tells the super peer how this device's NAT maps and
// filters (FrameMapping), for it to pass on to the peers introduced to
// this device. A device sends it once it knows its mapping, and when
// that changes: the super peer counts it against its addrs rate.
func (s *Session) SetMapping(m Mapping) error {
	if !s.registered.Capabilities.Has(CapMapping) {
		return ErrNoMapping
	}
	return s.writeFrame(m.frame())
}

// STUNPort is the UDP port on which the super peer answers STUN Binding
// requests, at the address this session reached it on (its
// RemoteAddr's); 0 if it named none.
func (s *Session) STUNPort() uint16 { return s.registered.STUNPort }

// HTTP3 is the session's HTTP/3 connection, nil over HTTP/2. Other
// requests on it, relay sessions among them, are authenticated by this
// session's registration.
func (s *Session) HTTP3() *http3.ClientConn {
	if t, ok := s.tr.(*h3Transport); ok {
		return t.cc
	}
	return nil
}

// HTTP2 is the session's HTTP/2 connection, nil over HTTP/3; see HTTP3.
func (s *Session) HTTP2() H2Conn {
	if t, ok := s.tr.(*h2Transport); ok {
		return t.cc
	}
	return nil
}

// Protocol is what the super peer announced in FrameRegistered: its
// version (1 if it named none) and capabilities. A device sends a frame
// or extension added after version 1 only if its capability is here.
func (s *Session) Protocol() Protocol { return s.registered.Protocol }

// Authority is the super peer's host[:port] from its URL, as requests on
// the session's connection name it.
func (s *Session) Authority() string { return s.authority }

// Observed is this device's address as the super peer sees it: from the
// registration, then from every FrameObserved.
func (s *Session) Observed() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.observed
}

// Headroom returns what the super peer last said its relay can still
// take (FrameHeadroom), and false if it said nothing yet: it says it
// only to a session with ClientConfig.OnHeadroom, right after
// registering.
func (s *Session) Headroom() (Headroom, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.headroom == nil {
		return Headroom{}, false
	}
	return *s.headroom, true
}

// Transport is how the session reaches its super peer.
func (s *Session) Transport() Transport { return s.transport }

// LocalAddr and RemoteAddr are the session's connection's addresses.
func (s *Session) LocalAddr() net.Addr  { return s.local }
func (s *Session) RemoteAddr() net.Addr { return s.remote }

// RTT is the smoothed round-trip time this device measured, from the
// registration's round trip on.
func (s *Session) RTT() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rtt.srtt
}

// Answered is when the super peer last answered this device: its
// registration, then the last pong to any of the device's pings (Ping).
// A device that pinged at t and finds Answered still before t has not
// been heard since: its measure of whether the session's path delivers.
func (s *Session) Answered() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rtt.answered
}

// Unanswered is when the oldest of this device's pings that no answer
// has followed went (Ping, and the keepalives), and zero while every ping
// has been answered. A session unanswered for seconds no longer
// delivers, whatever QUIC or TCP may still believe: its super peer is
// gone, or the path to it is.
func (s *Session) Unanswered() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rtt.waiting
}

// ServerRTT is the smoothed round-trip time as the super peer measured it.
func (s *Session) ServerRTT() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serverRTT
}

// Done is closed when the session has ended; Err then says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is nil while the session lives, then why it ended: an *Error when
// the super peer ended it (ErrCodeReplaced, say).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the session and waits for its goroutine.
func (s *Session) Close() error {
	s.end(ErrSessionClosed)
	if s.started {
		<-s.readOut
	}
	return nil
}
