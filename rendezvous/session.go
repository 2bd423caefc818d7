package rendezvous

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/time/rate"

	"github.com/netsody/superpeer/identity"
)

// session is one device's rendezvous session on the super peer. Its
// ServeHTTP goroutine reads frames; frames to the device are queued and
// written by a goroutine that exists only while the queue is not empty, so
// an idle session costs one blocked goroutine and this struct.
type session struct {
	srv       *Server
	str       stream // set before run
	binding   Binding
	conn      remoteAddrer // the device's QUIC connection; nil over HTTP/2
	transport string       // "h2" or "h3"
	log       *zap.Logger

	// Set once by the reading goroutine before register; read-only after.
	peer       identity.PeerID
	registered bool
	reg        *Registration // ended by Server.remove
	limiter    *rate.Limiter

	lastRecv atomic.Int64 // unix nanoseconds of the last frame from the device

	mu        sync.Mutex     // guards the following
	remote    netip.AddrPort // the observed address
	local     []netip.AddrPort
	queue     [][]byte
	writing   bool          // a writer goroutine is running
	closing   bool          // no more frames are queued
	writerOut chan struct{} // closed when the running writer exits
	timer     *time.Timer
	timerAt   time.Time     // when timer fires
	nextPing  time.Time     // when keepalive pings next
	followAt  time.Time     // the latest look at the device's address asked for
	rtt       time.Duration // smoothed, measured by the super peer
	deviceRTT time.Duration // as the device reports it
	pingNonce uint64
	pingSent  time.Time
	ended     *Error // the error that ended the session, if any
}

func newSession(s *Server, r *http.Request, b Binding, remote netip.AddrPort) *session {
	sess := &session{
		srv:       s,
		binding:   b,
		remote:    remote,
		transport: "h2",
		log:       s.config().Logger,
	}
	if r.ProtoMajor == 3 {
		sess.transport = "h3"
		sess.conn, _ = r.Context().Value(connKey{}).(remoteAddrer)
	}
	sess.lastRecv.Store(time.Now().UnixNano())
	return sess
}

// run reads and handles frames until the session ends, then waits for the
// writer to deliver what is queued (a final FrameError, say).
func (s *session) run() {
	var hdr [frameHeaderLen]byte
	for {
		f, err := readFrame(s.str, &hdr)
		if err != nil {
			if errors.Is(err, errFrameTooLarge) {
				s.fail(&Error{Code: ErrCodeFrameTooLarge, Message: errFrameTooLarge.Error()})
			}
			break
		}
		s.lastRecv.Store(time.Now().UnixNano())
		if e := s.handle(f); e != nil {
			s.fail(e)
			break
		}
		s.followRemote(true)
	}
	s.mu.Lock()
	s.closing = true
	if s.timer != nil {
		s.timer.Stop()
	}
	out := s.writerOut
	running := s.writing
	s.mu.Unlock()
	if running {
		<-out
	}
	s.str.finish()
}

// handle acts on one frame from the device. A non-nil result ends the
// session with that error.
func (s *session) handle(f frame) *Error {
	if ce := s.log.Check(zapcore.DebugLevel, "rendezvous frame"); ce != nil {
		ce.Write(zap.Stringer("type", f.typ), zap.Int("len", len(f.payload)), zap.Stringer("remote", s.observed()))
	}
	if !s.registered && f.typ != FrameRegister && f.typ <= lastFrameType {
		return &Error{Code: ErrCodeNotRegistered, Message: "the first frame of a session must be " + FrameRegister.String() + ", not " + f.typ.String()}
	}
	switch f.typ {
	case FrameRegister:
		m, err := decodeRegister(f.payload)
		if err != nil {
			return &Error{Code: ErrCodeMalformedFrame, Message: err.Error()}
		}
		return s.handleRegister(&m)
	case FrameAddrs:
		as, err := decodeAddrs(f.payload)
		if err == nil {
			err = checkAddrs(as)
		}
		if err != nil {
			return &Error{Code: ErrCodeMalformedFrame, Message: err.Error()}
		}
		s.mu.Lock()
		s.local = as
		s.mu.Unlock()
	case FramePing:
		m, err := decodePing(f.payload)
		if err != nil {
			return &Error{Code: ErrCodeMalformedFrame, Message: err.Error()}
		}
		s.mu.Lock()
		s.deviceRTT = m.RTT
		s.mu.Unlock()
		s.send(pongFrame(m.Nonce))
	case FramePong:
		nonce, err := decodePong(f.payload)
		if err != nil {
			return &Error{Code: ErrCodeMalformedFrame, Message: err.Error()}
		}
		s.mu.Lock()
		if nonce == s.pingNonce && !s.pingSent.IsZero() {
			s.rtt = smooth(s.rtt, time.Since(s.pingSent))
			s.pingSent = time.Time{}
		}
		s.mu.Unlock()
	case FrameConnect:
		peer, relay, err := decodeConnect(f.payload)
		if err != nil {
			return &Error{Code: ErrCodeMalformedFrame, Message: err.Error()}
		}
		s.handleConnect(peer, relay)
	case FrameRegistered, FrameCandidates, FrameError, FrameObserved:
		return &Error{Code: ErrCodeMalformedFrame, Message: f.typ.String() + " is sent by super peers, not devices"}
	default:
		// Unknown types are skipped, for later versions of the protocol.
	}
	return nil
}

func (s *session) handleRegister(m *Register) *Error {
	if s.registered {
		return &Error{Code: ErrCodeAlreadyRegistered, Message: "a session registers once; open a new session for another key"}
	}
	if !verifyRegistration(s.binding, m) {
		s.srv.stats.Refused[ErrCodeBadSignature].Add(1)
		return &Error{Code: ErrCodeBadSignature, Peer: m.Peer, Message: "the signature does not verify for this peer ID on this connection"}
	}
	if err := checkAddrs(m.LocalAddrs); err != nil {
		return &Error{Code: ErrCodeMalformedFrame, Message: err.Error()}
	}
	cfg := s.srv.config()
	if cfg.Admit != nil {
		if err := cfg.Admit(m.Peer, m.ProofOfWork); err != nil {
			s.srv.stats.Refused[ErrCodeRefused].Add(1)
			return &Error{Code: ErrCodeRefused, Peer: m.Peer, Message: err.Error()}
		}
	}
	s.peer, s.registered = m.Peer, true
	s.reg = newRegistration(m.Peer)
	s.limiter = rate.NewLimiter(rate.Limit(cfg.ConnectRate), cfg.ConnectBurst)
	s.mu.Lock()
	s.local = m.LocalAddrs
	s.mu.Unlock()
	s.srv.register(s)
	s.srv.stats.Registrations.Add(1)
	observed := s.observed()
	s.send((&Registered{Observed: observed, KeepaliveInterval: cfg.KeepaliveInterval, SessionTimeout: cfg.SessionTimeout}).frame())
	s.mu.Lock()
	if !s.closing {
		// The first keepalive goes at once, so that both ends know the RTT
		// (and candidates carry it) from the start.
		s.timerAt, s.nextPing = time.Now(), time.Now()
		s.timer = time.AfterFunc(0, s.keepalive)
	}
	s.mu.Unlock()
	s.log.Debug("registered", zap.String("peer", m.Peer.Short()), zap.Stringer("observed", observed), zap.String("transport", s.transport))
	return nil
}

// handleConnect sends both devices each other's candidates, back to back,
// so that they punch at the same moment.
func (s *session) handleConnect(peer identity.PeerID, relay bool) {
	if !s.limiter.Allow() {
		s.srv.stats.Refused[ErrCodeRateLimited].Add(1)
		s.send((&Error{Code: ErrCodeRateLimited, Peer: peer, Message: "too many connect requests; slow down"}).frame())
		return
	}
	if peer == s.peer {
		s.send((&Error{Code: ErrCodeBadRequest, Peer: peer, Message: "a device cannot connect to itself"}).frame())
		return
	}
	other := s.srv.lookup(peer)
	if other == nil {
		s.srv.stats.Refused[ErrCodePeerNotFound].Add(1)
		s.send((&Error{Code: ErrCodePeerNotFound, Peer: peer, Message: "no device with this peer ID is registered at this super peer"}).frame())
		return
	}
	mine, theirs := s.candidates(), other.candidates()
	theirs.Initiator = true
	mine.Relay, theirs.Relay = relay, relay
	s.send(theirs.frame())
	other.send(mine.frame())
	s.srv.stats.Connects.Add(1)
}

// candidates describes how to reach this session's device.
func (s *session) candidates() Candidates {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Candidates{Peer: s.peer, PeerRTT: s.rtt, Observed: s.remote, LocalAddrs: s.local}
}

// keepalive runs on the session's timer: it expires a silent device,
// follows its address, and pings it when a ping is due.
func (s *session) keepalive() {
	cfg := s.srv.config()
	silent := time.Since(time.Unix(0, s.lastRecv.Load()))
	if silent >= cfg.SessionTimeout {
		s.kill(&Error{Code: ErrCodeExpired, Message: "nothing arrived from the device for " + silent.Round(time.Second).String()})
		return
	}
	s.followRemote(false)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	now := time.Now()
	if now.Before(s.nextPing) { // an early wake-up, to follow the address
		next := s.nextPing
		if now.Before(s.followAt) && s.followAt.Before(next) {
			next = s.followAt // a later look was asked for meanwhile
		}
		s.resetTimerLocked(next.Sub(now))
		s.mu.Unlock()
		return
	}
	s.pingNonce++
	s.pingSent = now
	ping := Ping{Nonce: s.pingNonce, RTT: s.rtt}
	next := min(cfg.KeepaliveInterval, cfg.SessionTimeout-silent)
	s.nextPing = now.Add(next)
	if now.Before(s.followAt) {
		next = min(next, s.followAt.Sub(now))
	}
	s.resetTimerLocked(next)
	s.mu.Unlock()
	s.send(ping.frame())
}

func (s *session) resetTimerLocked(d time.Duration) {
	s.timer.Reset(d)
	s.timerAt = time.Now().Add(d)
}

// remoteAddrer is the part of a *quic.Conn that a session follows.
type remoteAddrer interface{ RemoteAddr() net.Addr }

// followRemote notices that the device's QUIC connection moved to another
// address (its NAT rebound the mapping) and tells the device with
// FrameObserved; later candidates carry the new address. afterFrame, from
// the reading goroutine, also schedules one more look once the migration
// that the frame's packet may have begun is complete. A session over
// HTTP/2 has nothing to follow.
func (s *session) followRemote(afterFrame bool) {
	if s.conn == nil || !s.registered {
		return
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	// Read under the lock: two goroutines that look at once must not
	// store their addresses in the wrong order.
	now, ok := addrPortOf(s.conn.RemoteAddr())
	if afterFrame && s.timer != nil {
		d := max(followMin, followRTT*s.rtt)
		at := time.Now().Add(d)
		if at.After(s.followAt) {
			s.followAt = at
		}
		if at.Before(s.timerAt) {
			s.resetTimerLocked(d)
		}
	}
	old := s.remote
	if !ok || now == old {
		s.mu.Unlock()
		return
	}
	s.remote = now
	s.mu.Unlock()
	s.srv.stats.Rebindings.Add(1)
	s.log.Debug("device rebound", zap.String("peer", s.peer.Short()), zap.Stringer("from", old), zap.Stringer("to", now))
	s.send(observedFrame(now))
}

// observed returns the device's address as the super peer sees it now.
func (s *session) observed() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remote
}

// addrPortOf returns a QUIC connection's UDP address as an AddrPort,
// IPv4-mapped IPv6 addresses unmapped.
func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := u.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.IsValid()
}

// send queues a frame for the device. A device that lets its queue fill
// is ended.
func (s *session) send(f []byte) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	if len(s.queue) >= maxQueuedFrames {
		s.mu.Unlock()
		s.kill(&Error{Code: ErrCodeSlowReader, Message: "the device does not read its frames"})
		return
	}
	s.enqueueLocked(f)
	s.mu.Unlock()
}

func (s *session) enqueueLocked(f []byte) {
	s.queue = append(s.queue, f)
	if !s.writing {
		s.writing = true
		s.writerOut = make(chan struct{})
		go s.write(s.writerOut)
	}
}

// write delivers queued frames until the queue is empty.
func (s *session) write(out chan struct{}) {
	defer close(out)
	var buf []byte
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.writing = false
			s.queue = nil
			s.mu.Unlock()
			return
		}
		batch := s.queue
		s.queue = nil
		s.mu.Unlock()
		buf = buf[:0]
		for _, f := range batch {
			buf = append(buf, f...)
		}
		if err := s.writeNow(buf); err != nil {
			s.mu.Lock()
			s.closing, s.writing, s.queue = true, false, nil
			s.mu.Unlock()
			s.str.closeRead() // unblocks the reader
			return
		}
	}
}

func (s *session) writeNow(b []byte) error {
	return s.str.write(b, s.srv.config().WriteTimeout)
}

// fail ends the session from its reading goroutine with e, which is sent
// to the device first.
func (s *session) fail(e *Error) {
	if ce := s.log.Check(zapcore.DebugLevel, "session refused"); ce != nil {
		ce.Write(zap.Stringer("code", e.Code), zap.String("reason", e.Message), zap.Stringer("remote", s.observed()))
	}
	s.mu.Lock()
	if !s.closing {
		s.enqueueLocked(e.frame())
		s.closing = true
		s.ended = e
	}
	s.mu.Unlock()
}

// endReason says why the session ended, for the relay's devices.
func (s *session) endReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended != nil {
		return "the device's rendezvous session ended: " + s.ended.Code.String()
	}
	return "the device's rendezvous session ended"
}

// kill ends the session from any goroutine with e, which is sent to the
// device first.
func (s *session) kill(e *Error) {
	s.fail(e)
	s.str.closeRead() // unblocks the reader
}

// smooth folds an RTT sample into a smoothed RTT, as TCP does (RFC 6298).
func smooth(srtt, sample time.Duration) time.Duration {
	if srtt == 0 {
		return sample
	}
	return srtt + (sample-srtt)/8
}
