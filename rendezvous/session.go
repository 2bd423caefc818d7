package rendezvous

import (
	"errors"
	"fmt"
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
// reader (run: on the ServeHTTP goroutine over HTTP/2, on a goroutine of
// its own once an HTTP/3 stream is taken over) handles frames from the
// device; frames to the device go through an outbox, whose writer exists
// only while it has frames to write; a timer (wakeups) pings, expires and
// follows the device. An idle session thus costs its reader and this
// struct.
//
// Lock order: s.mu before s.out.mu. Neither is held while calling into
// Server, which takes srv.mu.
type session struct {
	srv       *Server
	str       stream // set before run
	binding   Binding
	conn      remoteAddrer // the device's QUIC connection; nil over HTTP/2
	transport string       // "h2" or "h3"
	log       *zap.Logger
	out       outbox
	prefix    netip.Prefix // the source prefix, for per-prefix limits
	// holdsPrefix: the session counts among its prefix's unregistered
	// sessions. Only the reader (or ServeHTTP before it) touches it.
	holdsPrefix  bool
	onRegistered func()    // from OnRegistered, if set
	connStart    time.Time // when its connection began (ConnStarted), or its request

	// Set once by the reader in handleRegister, then read-only. Other
	// goroutines read them only after one of two edges that follow the
	// writes: srv.mu, taken by srv.register, which publishes the session
	// to lookup, Authenticate and a newer session's register; and the
	// creation of the wakeups timer, whose function (keepalive) runs after
	// it. Before registered is set, no other goroutine can reach them.
	peer       identity.PeerID
	registered bool
	reg        *Registration // ended with the session (endFromReader, Server.remove)
	proto      Protocol      // what the device announced
	// relayOnly: registered for relays only (Register.RelayOnly): in
	// Server.relayOnly, not byPeer; never introduced nor in the cluster.
	relayOnly  bool
	pow        int32         // the registration's proof of work, for Recheck
	limiter    *rate.Limiter // the device's FrameConnect
	intros     *rate.Limiter // introductions to the device, from others
	addrsLimit *rate.Limiter // the device's FrameAddrs

	lastRecv atomic.Int64 // unix nanoseconds of the last frame from the device
	welcomed atomic.Bool  // FrameRegistered was queued: a FrameMove may follow
	moved    atomic.Bool  // FrameMove was queued (drain.go)

	mu        sync.Mutex     // guards the following
	remote    netip.AddrPort // the observed address
	local     []netip.AddrPort
	rtt       rttEstimator // the super peer's pings
	deviceRTT time.Duration
	wake      wakeups
	ended     *Error        // the error that ended the session, if any
	regToEnd  *Registration // reg, once registered: the session's end ends it at once
	headroom  sentHeadroom  // the last FrameHeadroom (headroom.go)
	nat       Mapping       // the device's NAT behaviour, from its last FrameMapping
	leave     func()        // withdraws the device from the cluster (cluster.go)
	// leftCluster: the session ended, and joins no cluster again.
	leftCluster bool

	// Guarded by srv.consent.mu (consent.go).
	asks          map[identity.PeerID]*ask // this device's lookups, by target
	asked         map[identity.PeerID]*ask // requests to this device, by asker
	consentClosed bool                     // the session ended: no new asks
	waiting       int                      // asks with a timer
	silent        int                      // requests to it that timed out since it last answered
}

func newSession(s *Server, r *http.Request, b Binding, remote netip.AddrPort) *session {
	sess := &session{
		srv:       s,
		binding:   b,
		remote:    remote,
		transport: "h2",
		log:       s.config().Logger,
		prefix:    SourcePrefix(remote.Addr()),
	}
	sess.onRegistered, _ = r.Context().Value(registeredHookKey{}).(func())
	sess.connStart = connStart(r.Context())
	if r.ProtoMajor == 3 {
		sess.transport = "h3"
		sess.conn, _ = r.Context().Value(connKey{}).(remoteAddrer)
	}
	sess.out.write = func(b []byte) error { return sess.str.write(b, s.config().WriteTimeout) }
	sess.out.failed = func() {
		sess.mu.Lock()
		if sess.ended == nil {
			sess.ended = &Error{Code: ErrCodeSlowReader, Message: "the device did not take a frame within the write timeout"}
		}
		sess.mu.Unlock()
		sess.str.closeRead() // unblocks the reader
	}
	sess.lastRecv.Store(time.Now().UnixNano())
	return sess
}

// run is the reader: it handles frames until the session ends, then
// waits for the outbox to deliver what is queued (a final FrameError,
// say).
func (s *session) run() {
	// The wakeups start at registration; until then this one ends a
	// session that does not register, which would otherwise hold a
	// reader and a place under MaxSessions and its prefix's limit for as
	// long as its connection lives. It counts from the connection's start
	// (ConnStarted; else the request), not from the last frame: neither
	// an idle connection nor frames of unknown types extend it.
	deadline := time.AfterFunc(time.Until(s.connStart.Add(s.srv.config().RegisterTimeout)), s.registerDeadline)
	defer deadline.Stop()
	var hdr [frameHeaderLen]byte
	for {
		f, err := readFrame(s.str, &hdr)
		if err != nil {
			if errors.Is(err, errFrameTooLarge) {
				s.endFromReader(&Error{Code: ErrCodeFrameTooLarge, Message: errFrameTooLarge.Error()})
			}
			break
		}
		s.lastRecv.Store(time.Now().UnixNano())
		if e := s.handle(f); e != nil {
			s.endFromReader(e)
			break
		}
		s.heardFrom()
	}
	s.mu.Lock()
	s.out.close(nil)
	s.wake.stop()
	s.mu.Unlock()
	s.out.wait()
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
	m, err := decodeFrame(f)
	if err != nil {
		return &Error{Code: ErrCodeMalformedFrame, Message: err.Error()}
	}
	switch m := m.(type) {
	case nil:
		// An unknown type, from a later version: skipped.
	case *Register:
		return s.handleRegister(m)
	case *Addrs:
		if err := checkAddrs(m.LocalAddrs); err != nil {
			return &Error{Code: ErrCodeMalformedFrame, Message: err.Error()}
		}
		if !s.addrsLimit.Allow() {
			s.srv.stats.AddrsLimited.Add(1)
			s.send((&Error{Code: ErrCodeRateLimited, Message: "too many addrs announcements; these addresses are ignored, announce them again later"}).frame())
			return nil
		}
		local := s.handOut(m.LocalAddrs)
		s.mu.Lock()
		s.local = local
		s.mu.Unlock()
	case *Ping:
		s.mu.Lock()
		s.deviceRTT = m.RTT
		s.mu.Unlock()
		s.send((&Pong{Nonce: m.Nonce}).frame())
	case *Pong:
		s.mu.Lock()
		s.rtt.pong(m.Nonce, time.Now())
		s.mu.Unlock()
	case *Mapping:
		// A device learns its mapping anew when its network changes: as
		// often as it announces addresses, and under the same bucket.
		if !s.addrsLimit.Allow() {
			s.srv.stats.AddrsLimited.Add(1)
			s.send((&Error{Code: ErrCodeRateLimited, Message: "too many mapping frames; this one is ignored, send it again later"}).frame())
			return nil
		}
		s.mu.Lock()
		s.nat = *m
		s.mu.Unlock()
	case *Connect:
		s.handleConnect(m)
	case *Answer:
		s.handleAnswer(m)
	default:
		return &Error{Code: ErrCodeMalformedFrame, Message: f.typ.String() + " is sent by super peers, not devices"}
	}
	return nil
}

func (s *session) handleRegister(m *Register) *Error {
	if s.registered {
		return &Error{Code: ErrCodeAlreadyRegistered, Message: "a session registers once; open a new session for another key"}
	}
	cfg := s.srv.config()
	if lowest := cfg.minVersion(); m.Version < lowest {
		s.srv.stats.Refused[ErrCodeUpgradeRequired].Add(1)
		return &Error{Code: ErrCodeUpgradeRequired, Peer: m.Peer, Message: fmt.Sprintf(
			"this super peer serves rendezvous protocol versions %d to %d and the device speaks %d: upgrade the device", lowest, ProtocolVersion, m.Version)}
	}
	if !verifyRegistration(s.binding, m) {
		s.srv.stats.Refused[ErrCodeBadSignature].Add(1)
		return &Error{Code: ErrCodeBadSignature, Peer: m.Peer, Message: "the signature does not verify for this peer ID on this connection"}
	}
	if err := checkAddrs(m.LocalAddrs); err != nil {
		return &Error{Code: ErrCodeMalformedFrame, Message: err.Error()}
	}
	if e := s.admit(cfg, m); e != nil {
		return e
	}
	s.become(m.Peer, m.Protocol, cfg)
	s.relayOnly = m.RelayOnly
	local := s.handOut(m.LocalAddrs)
	s.mu.Lock()
	s.local = local
	s.mu.Unlock()
	s.srv.releasePrefix(s)
	if s.onRegistered != nil {
		// Nothing has been written yet, so no writer runs: the hook may
		// change what the writes go through.
		s.onRegistered()
	}
	s.srv.register(s)
	s.srv.stats.Registrations.Add(1)
	observed := s.observed()
	// Our version and capabilities go only to a device that can skip
	// extensions: a version-1 decoder refuses them.
	answer := protocolV1
	if m.Version >= extensionsVersion {
		answer = ours
	}
	var stunPort uint16
	if m.Capabilities.Has(CapMapping) {
		stunPort = cfg.STUNPort
	}
	s.send((&Registered{Observed: observed, KeepaliveInterval: cfg.KeepaliveInterval, SessionTimeout: cfg.SessionTimeout, Protocol: answer, STUNPort: stunPort}).frame())
	s.welcomed.Store(true)
	if d := s.srv.draining(); d != nil {
		// Admitted before the drain began, welcomed after Drain looked:
		// told now (tellMove tells once).
		s.tellMove(d)
	}
	s.welcomeHeadroom()
	s.mu.Lock()
	// The first keepalive goes at once, so that both ends know the RTT
	// (and candidates carry it) from the start.
	s.wake.start(time.Now(), s.keepalive)
	s.mu.Unlock()
	s.log.Debug("registered", zap.String("peer", m.Peer.Short()), zap.Stringer("observed", observed), zap.String("transport", s.transport), zap.Uint64("version", m.Version), zap.Bool("relay_only", m.RelayOnly))
	return nil
}

// become sets what a registration gives the session.
func (s *session) become(peer identity.PeerID, proto Protocol, cfg *Config) {
	s.peer, s.registered, s.proto = peer, true, proto
	s.reg = newRegistration(s)
	s.mu.Lock()
	s.regToEnd = s.reg
	s.mu.Unlock()
	s.limiter = rate.NewLimiter(rate.Limit(cfg.ConnectRate), cfg.ConnectBurst)
	s.intros = rate.NewLimiter(rate.Limit(cfg.IntroductionRate), cfg.IntroductionBurst)
	s.addrsLimit = rate.NewLimiter(rate.Limit(cfg.AddrsRate), cfg.AddrsBurst)
}

// candidates describes how to reach this session's device.
func (s *session) candidates() Candidates {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Candidates{Peer: s.peer, PeerRTT: s.rtt.srtt, Observed: s.remote, LocalAddrs: s.local, PeerNAT: s.nat}
}

// keepalive runs on the session's timer: it expires a silent device,
// follows its address, and pings it when a ping is due.
func (s *session) keepalive() {
	cfg := s.srv.config()
	silent := time.Since(time.Unix(0, s.lastRecv.Load()))
	if silent >= cfg.SessionTimeout {
		s.end(&Error{Code: ErrCodeExpired, Message: "nothing arrived from the device for " + silent.Round(time.Second).String()})
		return
	}
	s.checkAddress()
	s.mu.Lock()
	now := time.Now()
	if !s.wake.pingDue(now) { // an early wake-up, to follow the address
		s.wake.next(now)
		s.mu.Unlock()
		return
	}
	ping := s.rtt.ping(now)
	s.wake.pingAt(now.Add(min(cfg.KeepaliveInterval, cfg.SessionTimeout-silent)))
	s.wake.next(now)
	s.mu.Unlock()
	s.send(ping.frame())
}

// remoteAddrer is the part of a *quic.Conn that a session follows.
type remoteAddrer interface{ RemoteAddr() net.Addr }

// registerDeadline ends a session that has not registered within the
// register timeout; the wakeups timer, made at registration, says it has.
func (s *session) registerDeadline() {
	s.mu.Lock()
	registered := s.wake.timer != nil
	s.mu.Unlock()
	if !registered {
		s.srv.stats.RegisterTimeouts.Add(1)
		s.end(&Error{Code: ErrCodeExpired, Message: "no " + FrameRegister.String() + " within " + s.srv.config().RegisterTimeout.String() + " of the connection's start"})
	}
}

// heardFrom is called after a frame from the device, or another request
// on its connection: a packet that may have begun moving the connection
// to a new address. It looks now, and asks for one more look once that
// migration can be complete (followMin, followRTT).
func (s *session) heardFrom() {
	if s.conn == nil || !s.registered {
		return
	}
	s.mu.Lock()
	now := time.Now()
	s.wake.followAt(now, now.Add(max(followMin, followRTT*s.rtt.srtt)))
	s.mu.Unlock()
	s.checkAddress()
}

// checkAddress notices that the device's QUIC connection moved to another
// address (its NAT rebound the mapping): later candidates carry the new
// address, and a device that announced CapObserved is told with
// FrameObserved. A session over HTTP/2 has nothing to follow.
func (s *session) checkAddress() {
	if s.conn == nil || !s.registered {
		return
	}
	s.mu.Lock()
	if s.wake.stopped {
		s.mu.Unlock()
		return
	}
	// Read under the lock: two goroutines that look at once must not
	// store their addresses in the wrong order.
	now, ok := addrPortOf(s.conn.RemoteAddr())
	old := s.remote
	if !ok || now == old {
		s.mu.Unlock()
		return
	}
	s.remote = now
	s.mu.Unlock()
	s.log.Debug("device rebound", zap.String("peer", s.peer.Short()), zap.Stringer("from", old), zap.Stringer("to", now))
	if s.proto.Capabilities.Has(CapObserved) {
		s.send((&Observed{Addr: now}).frame())
	}
	// Counted once the frame is queued, so that whoever sees the count
	// can tell what the device was sent before its next frame.
	s.srv.stats.Rebindings.Add(1)
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

// send queues a frame for the device, waiting while its queue is full
// (see outbox.send). It must not be called with s.mu held.
func (s *session) send(f []byte) { s.out.send(f) }

// endFromReader ends the session with e, which is sent to the device
// first. Only the reader calls it: the reader then returns by itself.
func (s *session) endFromReader(e *Error) {
	if ce := s.log.Check(zapcore.DebugLevel, "session refused"); ce != nil {
		ce.Write(zap.Stringer("code", e.Code), zap.String("reason", e.Message), zap.Stringer("remote", s.observed()))
	}
	s.mu.Lock()
	var reg *Registration
	if s.out.close(e.frame()) {
		s.ended = e
		s.wake.stop()
		reg = s.regToEnd
	}
	s.mu.Unlock()
	// What the registration vouched for (relay sessions) ends now, not
	// once the last frame has drained to the device.
	if reg != nil {
		reg.end(endReason(e))
	}
}

// end ends the session from any goroutine with e, which is sent to the
// device first, and unblocks the reader.
func (s *session) end(e *Error) {
	s.endFromReader(e)
	s.str.closeRead()
}

// live reports whether the session has not begun to end.
func (s *session) live() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended == nil
}

// endReason says why the session ended, for the relay's devices.
func (s *session) endReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return endReason(s.ended)
}

// endReason says why a session ended with e (nil: without an error), for
// the relay's devices.
func endReason(e *Error) string {
	if e != nil {
		return "the device's rendezvous session ended: " + e.Code.String()
	}
	return "the device's rendezvous session ended"
}
