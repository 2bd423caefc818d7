package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/h3stream"
)

// Path is where a device opens its rendezvous session.
const Path = "/.well-known/netsody/v1/rendezvous"

// ContentType marks the frame streams of a session.
const ContentType = "application/x-netsody-rendezvous"

// Server is the super peer's side of the rendezvous protocol. Mount it at
// Path on an HTTP/2 and an HTTP/3 server; it serves nothing else.
type Server struct {
	cfg atomic.Pointer[Config]

	mu        sync.Mutex // guards the following
	sessions  map[*session]struct{}
	byPeer    map[identity.PeerID]*session
	relayOnly map[identity.PeerID]*session // sessions for relays only, at most one a peer ID
	byBinding map[Binding]*session         // registered sessions
	onConn    map[Binding]*session         // every session, from admission
	drain     *draining                    // set once by Drain (drain.go)
	closed    bool

	prefixes  prefixTable
	consent   consent
	admission admission
	headroom  headroomState // FrameHeadroom's ticker (headroom.go)
	cluster   clusterState  // the other nodes, if any (cluster.go)

	handlers sync.WaitGroup // running ServeHTTP calls
	stats    Stats
}

// Stats counts what the server did. Read it with Server.Stats.
type Stats struct {
	Registrations atomic.Uint64                // accepted FrameRegister
	Connects      atomic.Uint64                // FrameConnect answered with candidates
	Rebindings    atomic.Uint64                // devices seen at a new address
	Refused       [numErrorCodes]atomic.Uint64 // by ErrorCode

	// Introductions a device did not get: over its IntroductionRate, or
	// with the part of its queue that others may fill full. The asker
	// gets ErrCodeRateLimited.
	IntroductionsLimited atomic.Uint64
	IntroductionsDropped atomic.Uint64
	// IntroductionsCoalesced counts introductions that replaced the same
	// asker's earlier one, still queued.
	IntroductionsCoalesced atomic.Uint64

	SessionsRefused  [numSessionRefusals]atomic.Uint64 // by SessionRefusal
	RegisterTimeouts atomic.Uint64                     // sessions ended for not registering in time
	AddrsLimited     atomic.Uint64                     // FrameAddrs and FrameMapping over AddrsRate, ignored
	AddrsDropped     atomic.Uint64                     // announced addresses of a class never handed out

	// Consent (consent.go): requests sent to devices that ask for it,
	// and what became of them; answers with no request waiting, ignored;
	// requests refused over maxPendingPerTarget or maxPending; lookups
	// over the per-(asker, target) LookupRate, or over maxLookupPeers.
	ConsentRequests atomic.Uint64
	ConsentAccepted atomic.Uint64
	ConsentDeclined atomic.Uint64
	ConsentTimeouts atomic.Uint64
	ConsentIgnored  atomic.Uint64
	ConsentBusy     atomic.Uint64
	LookupsLimited  atomic.Uint64

	// Recheck (admission.go): registered devices checked again, and
	// those the new rules refused.
	Rechecked      atomic.Uint64
	RecheckRefused atomic.Uint64

	// MovesSent counts FrameMove sent during a drain (drain.go).
	MovesSent atomic.Uint64
	// HeadroomSent counts FrameHeadroom sent (headroom.go).
	HeadroomSent atomic.Uint64

	// Cluster (cluster.go): introductions asked of other nodes; of
	// those, the ones the cluster could not be asked for, that no node
	// answered in time, and that were refused over maxClusterRequests;
	// and introductions other nodes asked of this one.
	ClusterAsked       atomic.Uint64
	ClusterUnavailable atomic.Uint64
	ClusterTimeouts    atomic.Uint64
	ClusterBusy        atomic.Uint64
	ClusterServed      atomic.Uint64
}

// NewServer returns a Server with the given configuration.
func NewServer(cfg Config) *Server {
	s := &Server{
		sessions:  make(map[*session]struct{}),
		byPeer:    make(map[identity.PeerID]*session),
		relayOnly: make(map[identity.PeerID]*session),
		byBinding: make(map[Binding]*session),
		onConn:    make(map[Binding]*session),
	}
	s.admission.init()
	s.SetConfig(cfg)
	return s
}

// SetConfig replaces the configuration; new values apply to new sessions
// and to the next keepalive of running ones. It is how a config reload
// keeps sessions.
func (s *Server) SetConfig(cfg Config) {
	cfg = cfg.withDefaults()
	s.cfg.Store(&cfg)
}

func (s *Server) config() *Config { return s.cfg.Load() }

// Stats returns the server's counters.
func (s *Server) Stats() *Stats { return &s.stats }

// Sessions returns the number of registered sessions (a device's session
// for relays only counts apart from its ordinary one) and of all
// sessions.
func (s *Server) Sessions() (registered, all int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byPeer) + len(s.relayOnly), len(s.sessions)
}

// MaxSessions returns the budget of sessions in force
// (Config.MaxSessions): registered devices, and those about to register.
func (s *Server) MaxSessions() int { return s.config().MaxSessions }

// Authenticate returns the registration on the connection that carried
// r, so that a request on a registered connection needs no further proof;
// false if the connection has none. Like a frame on the session, it makes
// the session look for a new address of the device's (see FrameObserved).
func (s *Server) Authenticate(r *http.Request) (*Registration, bool) {
	b, err := ConnBinding(r.TLS)
	if err != nil {
		return nil, false
	}
	sess := s.registered(b)
	if sess == nil {
		return nil, false
	}
	// A request (a relay session being opened, say) is a packet from the
	// device too: the connection may be moving to a new address.
	sess.heardFrom()
	return sess.reg, true
}

// registered returns the session registered on the connection with
// binding b, unless it is ending: a session that was replaced or expired
// vouches for nothing while its last frame drains.
func (s *Server) registered(b Binding) *session {
	s.mu.Lock()
	sess := s.byBinding[b]
	s.mu.Unlock()
	if sess == nil || !sess.live() {
		return nil
	}
	return sess
}

// connKey is the request context key of the device's QUIC connection.
type connKey struct{}

// registeredHookKey is the request context key of OnRegistered's func.
type registeredHookKey struct{}

// OnRegistered returns a copy of ctx with which the Server calls f when
// the session on a request with that context registers: on the session's
// reader, before it answers, while nothing is written to the device. A
// front end whose idle timeouts the session outlives (Caddy's) keeps them
// until then, so that they bound a session that never registers, and
// lifts them in f.
func OnRegistered(ctx context.Context, f func()) context.Context {
	return context.WithValue(ctx, registeredHookKey{}, f)
}

// ConnContext is an http3.Server.ConnContext for a server that carries
// rendezvous sessions: it lets a session follow its device's QUIC
// connection to a new address when the device's NAT rebinds, and tell the
// device (FrameObserved). Without it, a session keeps the address it saw
// at registration. It records the connection's start too (ConnStarted).
func ConnContext(ctx context.Context, c *quic.Conn) context.Context {
	return context.WithValue(ConnStarted(ctx, nil), connKey{}, c)
}

// connStartKey is the context key of when a session's connection began.
type connStartKey struct{}

// ConnStarted is an http.Server.ConnContext (called as a connection is
// accepted, before its TLS handshake) that records the connection's
// start: a session on it must register within RegisterTimeout of that
// moment, not of its request, so that a stranger cannot hold a
// connection idle and then a session for RegisterTimeout more. Without
// it, the deadline counts from the request. ConnContext calls it for
// HTTP/3.
func ConnStarted(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connStartKey{}, time.Now())
}

// connStart returns when the connection that carried ctx's request
// began, or now if no ConnStarted recorded it.
func connStart(ctx context.Context) time.Time {
	if t, ok := ctx.Value(connStartKey{}).(time.Time); ok {
		return t
	}
	return time.Now()
}

// Registered reports whether a device with this peer ID is registered.
func (s *Server) Registered(peer identity.PeerID) bool {
	return s.lookup(peer) != nil
}

// refuse writes an HTTP error with a reason a person can act on.
func refuse(w http.ResponseWriter, status int, reason string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintf(w, "netsody rendezvous: %s\n", reason)
}

// ServeHTTP runs one device's session until it ends.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		refuse(w, http.StatusMethodNotAllowed, "a session is opened with POST "+Path)
		return
	}
	if r.ProtoMajor < 2 {
		refuse(w, http.StatusHTTPVersionNotSupported, "a session needs HTTP/2 or HTTP/3")
		return
	}
	if r.TLS == nil {
		refuse(w, http.StatusForbidden, "a session needs HTTPS")
		return
	}
	if !r.TLS.HandshakeComplete {
		// 0-RTT data can be replayed; a registration must not be.
		refuse(w, http.StatusTooEarly, "a session cannot start in 0-RTT data; retry after the handshake")
		return
	}
	binding, err := ConnBinding(r.TLS)
	if err != nil {
		refuse(w, http.StatusForbidden, "cannot bind to this connection: "+err.Error())
		return
	}
	remote, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		refuse(w, http.StatusInternalServerError, "cannot parse the remote address "+strconv.Quote(r.RemoteAddr))
		return
	}
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	sess := newSession(s, r, binding, remote)
	if ref := s.admit(sess); ref != nil {
		s.stats.SessionsRefused[ref.why].Add(1)
		if ref.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(ref.retryAfter.Seconds())))
		}
		refuse(w, ref.why.status(), ref.msg)
		return
	}
	admitted := false
	defer func() {
		if !admitted {
			s.unadmit(sess)
		}
	}()
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set(VersionHeader, strconv.Itoa(ProtocolVersion))
	w.WriteHeader(http.StatusOK)
	st := h3stream.Of(w)
	takeover := st != nil && r.ProtoMajor == 3
	if takeover {
		// Take the stream over and let the handler chain return: an idle
		// HTTP/3 device then holds no server goroutine or request state.
		sess.str = &h3Stream{st.HTTPStream()}
	} else {
		hs := &httpStream{body: r.Body, w: w, rc: http.NewResponseController(w)}
		if err := hs.rc.Flush(); err != nil {
			return
		}
		sess.str = hs
	}
	if !s.add(sess) {
		sess.str.finish() // closed meanwhile
		return
	}
	admitted = true // remove undoes admit from here
	if takeover {
		go func() {
			defer s.remove(sess)
			sess.run()
		}()
		return
	}
	defer s.remove(sess)
	sess.run()
}

var errClosed = errors.New("rendezvous: server closed")

// admit refuses a new session when the server is closed or full, its
// connection carries a session, or its source prefix is at its limits;
// otherwise it holds the session's places on the connection and in its
// prefix until unadmit or remove. MaxSessions is checked before the
// session is answered and so may be passed by the few sessions answered
// at the same moment.
func (s *Server) admit(sess *session) *refusal {
	cfg := s.config()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return &refusal{why: RefusedFull, msg: errClosed.Error()}
	}
	if s.drain != nil {
		return &refusal{why: RefusedDraining, retryAfter: retryAfterDraining, msg: "the super peer is draining (" + s.drain.reason +
			"); use another super peer, or retry later"}
	}
	if len(s.sessions) >= cfg.MaxSessions {
		return &refusal{why: RefusedFull, retryAfter: retryAfterFull, msg: fmt.Sprintf(
			"the super peer is at its limit of %d sessions; retry later or use another super peer", cfg.MaxSessions)}
	}
	if s.onConn[sess.binding] != nil {
		return &refusal{why: RefusedConnectionBusy, msg: "this connection carries a rendezvous session already; " +
			"a registration is bound to its connection, so open a new connection for another session"}
	}
	if ref := s.prefixes.take(sess.prefix, time.Now(), cfg); ref != nil {
		return ref
	}
	sess.holdsPrefix = true
	s.onConn[sess.binding] = sess
	return nil
}

// unadmit gives back what admit held for a session that did not start.
func (s *Server) unadmit(sess *session) {
	s.mu.Lock()
	if s.onConn[sess.binding] == sess {
		delete(s.onConn, sess.binding)
	}
	s.mu.Unlock()
	s.releasePrefix(sess)
}

// releasePrefix gives back the session's place among its prefix's
// unregistered sessions, once: at registration, or when it ends. Only the
// session's reader calls it (or ServeHTTP before the reader starts).
func (s *Server) releasePrefix(sess *session) {
	if sess.holdsPrefix {
		sess.holdsPrefix = false
		s.prefixes.release(sess.prefix, time.Now(), s.config())
	}
}

// add makes a session known (to Close, among others); false if the
// server closed meanwhile.
func (s *Server) add(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.sessions[sess] = struct{}{}
	s.handlers.Add(1)
	return true
}

func (s *Server) remove(sess *session) {
	s.unadmit(sess)
	s.mu.Lock()
	delete(s.sessions, sess)
	if s.byPeer[sess.peer] == sess {
		delete(s.byPeer, sess.peer)
	}
	if s.relayOnly[sess.peer] == sess {
		delete(s.relayOnly, sess.peer)
	}
	if s.byBinding[sess.binding] == sess {
		delete(s.byBinding, sess.binding)
	}
	s.mu.Unlock()
	if sess.registered {
		sess.reg.end(sess.endReason())
		sess.leaveCluster()
		s.closeConsent(sess)
	}
	s.handlers.Done()
}

// register makes sess the device's current session, ending an older one
// of its kind: an ordinary session replaces the ordinary one and joins
// the cluster; a session for relays only replaces the one for relays
// only, and joins nothing. Neither kind replaces the other, so a device
// whose relay node is also where its own session lands (a failover
// through the cluster's name) holds both, one of each.
func (s *Server) register(sess *session) {
	s.mu.Lock()
	byPeer := s.byPeer
	if sess.relayOnly {
		byPeer = s.relayOnly
	}
	old := byPeer[sess.peer]
	byPeer[sess.peer] = sess
	s.byBinding[sess.binding] = sess
	s.mu.Unlock()
	if old != nil && old != sess {
		old.end(&Error{Code: ErrCodeReplaced, Message: "a newer session registered this peer ID"})
	}
	if !sess.relayOnly {
		sess.joinCluster()
	}
}

// lookup returns the registered session of peer that others may be
// introduced to, or nil: never one for relays only.
func (s *Server) lookup(peer identity.PeerID) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byPeer[peer]
}

// lookupForRelay returns a registered session of peer that a relay leg
// towards it may pair with: its ordinary one, else the one for relays
// only, whose legs meet the peer's here; nil if none.
func (s *Server) lookupForRelay(peer identity.PeerID) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess := s.byPeer[peer]; sess != nil {
		return sess
	}
	return s.relayOnly[peer]
}

// registeredLocked appends every registered session, of both kinds.
func (s *Server) registeredLocked(dst []*session) []*session {
	for _, byPeer := range [...]map[identity.PeerID]*session{s.byPeer, s.relayOnly} {
		for _, sess := range byPeer {
			dst = append(dst, sess)
		}
	}
	return dst
}

// Close ends every session with ErrCodeShuttingDown, refuses new ones,
// and waits for the sessions' handlers to return.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	all := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		all = append(all, sess)
	}
	s.mu.Unlock()
	s.admission.close()
	s.stopHeadroom()
	for _, sess := range all {
		sess.end(&Error{Code: ErrCodeShuttingDown, Message: "the super peer is shutting down"})
	}
	s.handlers.Wait()
	s.cluster.outbound.Wait() // the sessions' ends ended their requests
	return nil
}
