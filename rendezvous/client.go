package rendezvous

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"go.uber.org/zap"

	"github.com/netsody/superpeer/identity"
)

// Transport names how a session reaches its super peer.
type Transport string

const (
	TransportH3 Transport = "h3" // HTTP/3 over QUIC (UDP)
	TransportH2 Transport = "h2" // HTTP/2 over TLS (TCP)
)

// ClientConfig configures a device's session with one super peer.
type ClientConfig struct {
	// Identity is the device's key pair. Required.
	Identity *identity.Identity
	// URL is the super peer, "https://host[:port]". Required.
	URL string
	// Addr, if set, is the host:port to dial instead of URL's; URL still
	// names the super peer for TLS and HTTP. A device uses it to reach a
	// super peer over a chosen address family.
	Addr string
	// Transport chooses HTTP/3 or HTTP/2; the default is HTTP/3.
	Transport Transport
	// QUICTransport, for HTTP/3, is the device's QUIC endpoint, so that
	// the super peer observes the device's own socket. If nil, the session
	// opens and owns a UDP socket of its own.
	QUICTransport *quic.Transport
	// DialTCP, for HTTP/2, dials the super peer; nil uses net.Dialer.
	DialTCP func(ctx context.Context, network, addr string) (net.Conn, error)
	// NewH2Conn, for HTTP/2, makes the session's connection from a TLS
	// connection that negotiated "h2"; nil uses net/http's HTTP/2 client.
	// Another client (golang.org/x/net/http2's, which can send RFC 8441
	// extended CONNECT) can be plugged in here.
	NewH2Conn func(*tls.Conn) (H2Conn, error)
	// TLSConfig is a base TLS configuration (RootCAs, say); ServerName and
	// NextProtos are set from URL and Transport.
	TLSConfig *tls.Config
	// LocalAddrs are the device's local addresses, sent at registration.
	LocalAddrs []netip.AddrPort
	// OnCandidates is called, on the session's reading goroutine, for every
	// FrameCandidates: when this device asked to connect, and when another
	// device asks to connect to it. It must not block.
	OnCandidates func(Candidates)
	// OnObserved is called, on the session's reading goroutine, when the
	// super peer sees this device at a new address (FrameObserved: its
	// NAT rebound). It must not block.
	OnObserved func(netip.AddrPort)
	// KeepaliveInterval overrides the super peer's keepalive interval for
	// this device's pings; 0 follows the super peer.
	KeepaliveInterval time.Duration
	// Logger receives the session's logs; nil discards them.
	Logger *zap.Logger
}

// H2Conn is one HTTP/2 client connection: requests on it share its TLS
// connection and so its registration.
type H2Conn interface {
	http.RoundTripper
	Close() error
}

// Session is a device's registered session with one super peer.
type Session struct {
	cfg        ClientConfig
	transport  Transport
	binding    Binding
	authority  string
	registered Registered
	log        *zap.Logger
	local      net.Addr
	remote     net.Addr

	// HTTP/3
	qtr   *quic.Transport // owned, when the config gave none
	qconn *quic.Conn
	h3    *http3.ClientConn
	h3str *http3.RequestStream
	// HTTP/2
	h2 H2Conn

	body   io.ReadCloser  // frames from the super peer
	wmu    sync.Mutex     // serialises writes to w
	w      io.WriteCloser // frames to the super peer
	cancel context.CancelFunc

	mu        sync.Mutex // guards the following
	pending   map[identity.PeerID][]chan lookupResult
	rtt       time.Duration
	serverRTT time.Duration
	observed  netip.AddrPort
	pingNonce uint64
	pingSent  time.Time
	timer     *time.Timer
	err       error

	done    chan struct{} // closed when the session has ended
	started bool          // the reading goroutine was started
	readOut chan struct{} // closed when the reading goroutine exits
}

type lookupResult struct {
	c   Candidates
	err error
}

// ErrSessionClosed is returned for operations on an ended session that
// ended without another reason.
var ErrSessionClosed = errors.New("rendezvous: session closed")

// Dial opens and registers a session with a super peer. The context bounds
// only the dial and registration.
func Dial(ctx context.Context, cfg ClientConfig) (*Session, error) {
	s, err := open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := s.register(ctx); err != nil {
		s.Close()
		return nil, err
	}
	s.start()
	return s, nil
}

// open establishes the session's HTTP request, unregistered.
func open(ctx context.Context, cfg ClientConfig) (*Session, error) {
	if cfg.Identity == nil {
		return nil, errors.New("rendezvous: no identity")
	}
	if err := checkAddrs(cfg.LocalAddrs); err != nil {
		return nil, err
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("rendezvous: super peer URL %q must look like https://host[:port]", cfg.URL)
	}
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), defaultHTTPSPort)
	}
	if cfg.Addr != "" {
		hostport = cfg.Addr
	}
	if cfg.Transport == "" {
		cfg.Transport = TransportH3
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	s := &Session{
		cfg:       cfg,
		authority: u.Host,
		transport: cfg.Transport,
		log:       log,
		pending:   make(map[identity.PeerID][]chan lookupResult),
		done:      make(chan struct{}),
		readOut:   make(chan struct{}),
	}
	tlsConf := &tls.Config{}
	if cfg.TLSConfig != nil {
		tlsConf = cfg.TLSConfig.Clone()
	}
	tlsConf.ServerName = u.Hostname()
	tlsConf.MinVersion = tls.VersionTLS13
	target := &url.URL{Scheme: "https", Host: u.Host, Path: Path}
	switch cfg.Transport {
	case TransportH3:
		err = s.openH3(ctx, hostport, tlsConf, target)
	case TransportH2:
		err = s.openH2(ctx, hostport, tlsConf, target)
	default:
		err = fmt.Errorf("rendezvous: unknown transport %q", cfg.Transport)
	}
	if err != nil {
		s.closeTransport()
		return nil, err
	}
	return s, nil
}

func (s *Session) openH3(ctx context.Context, hostport string, tlsConf *tls.Config, target *url.URL) error {
	raddr, err := net.ResolveUDPAddr("udp", hostport)
	if err != nil {
		return fmt.Errorf("rendezvous: resolving %s: %w", hostport, err)
	}
	tr := s.cfg.QUICTransport
	if tr == nil {
		pc, err := net.ListenUDP("udp", nil)
		if err != nil {
			return fmt.Errorf("rendezvous: %w", err)
		}
		s.qtr = &quic.Transport{Conn: pc}
		tr = s.qtr
	}
	tlsConf.NextProtos = []string{http3.NextProtoH3}
	conn, err := tr.Dial(ctx, raddr, tlsConf, &quic.Config{
		EnableDatagrams: true,
		KeepAlivePeriod: quicKeepalivePeriod,
	})
	if err != nil {
		return fmt.Errorf("rendezvous: QUIC to %s: %w", hostport, err)
	}
	s.qconn = conn
	s.local, s.remote = conn.LocalAddr(), conn.RemoteAddr()
	s.h3 = (&http3.Transport{EnableDatagrams: true}).NewClientConn(conn)
	str, err := s.h3.OpenRequestStream(ctx)
	if err != nil {
		return fmt.Errorf("rendezvous: opening request stream: %w", err)
	}
	s.h3str = str
	req := newSessionRequest(target, http.NoBody)
	if err := str.SendRequestHeader(req); err != nil {
		return fmt.Errorf("rendezvous: sending request: %w", err)
	}
	resp, err := readResponseCtx(ctx, str)
	if err != nil {
		return err
	}
	cs := conn.ConnectionState().TLS
	if err := s.accept(resp, &cs); err != nil {
		return err
	}
	s.body, s.w = resp.Body, str
	return nil
}

// readResponseCtx reads the response headers, giving up when ctx ends.
func readResponseCtx(ctx context.Context, str *http3.RequestStream) (*http.Response, error) {
	stop := context.AfterFunc(ctx, func() { str.CancelRead(quic.StreamErrorCode(http3.ErrCodeRequestCanceled)) })
	defer stop()
	resp, err := str.ReadResponse()
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("rendezvous: reading response: %w", err)
	}
	return resp, nil
}

func (s *Session) openH2(ctx context.Context, hostport string, tlsConf *tls.Config, target *url.URL) error {
	dial := s.cfg.DialTCP
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	cc, err := s.dialH2(ctx, dial, hostport, tlsConf)
	if err != nil {
		return fmt.Errorf("rendezvous: HTTP/2 to %s: %w", hostport, err)
	}
	s.h2 = cc
	pr, pw := io.Pipe()
	// The request lives as long as the session, not as long as ctx.
	reqCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	stop := context.AfterFunc(ctx, cancel)
	req := newSessionRequest(target, pr).WithContext(reqCtx)
	resp, err := cc.RoundTrip(req)
	stopped := stop()
	if err != nil {
		pw.Close()
		if !stopped {
			err = ctx.Err()
		}
		return fmt.Errorf("rendezvous: HTTP/2 request: %w", err)
	}
	if resp.ProtoMajor != 2 {
		resp.Body.Close()
		pw.Close()
		return fmt.Errorf("rendezvous: super peer answered over HTTP/%d.%d, want HTTP/2", resp.ProtoMajor, resp.ProtoMinor)
	}
	if err := s.accept(resp, resp.TLS); err != nil {
		pw.Close()
		return err
	}
	s.body, s.w = resp.Body, pw
	return nil
}

// dialH2 makes the session's HTTP/2 connection.
func (s *Session) dialH2(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), hostport string, tlsConf *tls.Config) (H2Conn, error) {
	if s.cfg.NewH2Conn != nil {
		c, err := dial(ctx, "tcp", hostport)
		if err != nil {
			return nil, err
		}
		tlsConf.NextProtos = []string{"h2"}
		tc := tls.Client(c, tlsConf)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			tc.Close()
			return nil, fmt.Errorf("the super peer does not speak HTTP/2 (ALPN %q)", p)
		}
		s.local, s.remote = c.LocalAddr(), c.RemoteAddr()
		cc, err := s.cfg.NewH2Conn(tc)
		if err != nil {
			tc.Close()
		}
		return cc, err
	}
	var protos http.Protocols
	protos.SetHTTP2(true)
	tr := &http.Transport{
		TLSClientConfig: tlsConf,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err == nil {
				s.local, s.remote = c.LocalAddr(), c.RemoteAddr()
			}
			return c, err
		},
		Protocols:         &protos,
		ForceAttemptHTTP2: true,
	}
	return tr.NewClientConn(ctx, "https", hostport)
}

func newSessionRequest(target *url.URL, body io.ReadCloser) *http.Request {
	return &http.Request{
		Method:        http.MethodPost,
		URL:           target,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        http.Header{"Content-Type": {ContentType}},
		Host:          target.Host,
		Body:          body,
		ContentLength: -1,
	}
}

// accept checks the response headers and takes the channel binding.
func (s *Session) accept(resp *http.Response, cs *tls.ConnectionState) error {
	if resp.StatusCode != http.StatusOK {
		reason, _ := io.ReadAll(io.LimitReader(resp.Body, maxRefusalReason))
		resp.Body.Close()
		return fmt.Errorf("rendezvous: super peer refused the session: %s: %s", resp.Status, strings.TrimSpace(string(reason)))
	}
	b, err := ConnBinding(cs)
	if err != nil {
		resp.Body.Close()
		return fmt.Errorf("rendezvous: %w", err)
	}
	s.binding = b
	return nil
}

// register sends FrameRegister and waits for FrameRegistered.
func (s *Session) register(ctx context.Context) error {
	sent := time.Now()
	if err := s.writeFrame(signRegistration(s.binding, s.cfg.Identity, s.cfg.LocalAddrs).frame()); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { s.body.Close() })
	defer stop()
	var hdr [frameHeaderLen]byte
	for {
		f, err := readFrame(s.body, &hdr)
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return fmt.Errorf("rendezvous: waiting for registration: %w", err)
		}
		switch f.typ {
		case FrameRegistered:
			m, err := decodeRegistered(f.payload)
			if err != nil {
				return fmt.Errorf("rendezvous: %w", err)
			}
			s.registered, s.observed = m, m.Observed
			// A first RTT sample: the registration's round trip (it
			// includes one signature check at the super peer).
			s.rtt = time.Since(sent)
			return nil
		case FrameError:
			m, err := decodeError(f.payload)
			if err != nil {
				return fmt.Errorf("rendezvous: %w", err)
			}
			return &m
		}
	}
}

// start runs the session's reading goroutine and keepalive timer.
func (s *Session) start() {
	s.started = true
	s.mu.Lock()
	s.timer = time.AfterFunc(s.keepaliveInterval(), s.keepalive)
	s.mu.Unlock()
	go s.read()
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

func (s *Session) keepalive() { s.Ping() }

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
	s.pingNonce++
	s.pingSent = time.Now()
	ping := Ping{Nonce: s.pingNonce, RTT: s.rtt}
	s.timer.Reset(s.keepaliveInterval())
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
		f, err := readFrame(s.body, &hdr)
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

func (s *Session) handle(f frame) error {
	switch f.typ {
	case FramePing:
		m, err := decodePing(f.payload)
		if err != nil {
			return fmt.Errorf("rendezvous: %w", err)
		}
		s.mu.Lock()
		s.serverRTT = m.RTT
		s.mu.Unlock()
		// As in keepalive: the reader, not a failed write, says how the
		// session ended.
		if err := s.writeFrame(pongFrame(m.Nonce)); err != nil {
			s.log.Debug("pong", zap.Error(err))
		}
	case FramePong:
		nonce, err := decodePong(f.payload)
		if err != nil {
			return fmt.Errorf("rendezvous: %w", err)
		}
		s.mu.Lock()
		if nonce == s.pingNonce && !s.pingSent.IsZero() {
			s.rtt = smooth(s.rtt, time.Since(s.pingSent))
			s.pingSent = time.Time{}
		}
		s.mu.Unlock()
	case FrameCandidates:
		m, err := decodeCandidates(f.payload)
		if err != nil {
			return fmt.Errorf("rendezvous: %w", err)
		}
		s.resolve(m.Peer, lookupResult{c: m})
		if s.cfg.OnCandidates != nil {
			s.cfg.OnCandidates(m)
		}
	case FrameObserved:
		a, err := decodeObserved(f.payload)
		if err != nil {
			return fmt.Errorf("rendezvous: %w", err)
		}
		s.mu.Lock()
		s.observed = a
		s.mu.Unlock()
		s.log.Debug("super peer observes a new address", zap.String("url", s.cfg.URL), zap.Stringer("observed", a))
		if s.cfg.OnObserved != nil {
			s.cfg.OnObserved(a)
		}
	case FrameError:
		m, err := decodeError(f.payload)
		if err != nil {
			return fmt.Errorf("rendezvous: %w", err)
		}
		if m.Code.Fatal() {
			return &m
		}
		if !m.Peer.IsZero() {
			s.resolve(m.Peer, lookupResult{err: &m})
		}
		s.log.Debug("super peer refused a request", zap.Error(&m))
	}
	return nil
}

func (s *Session) resolve(peer identity.PeerID, r lookupResult) {
	s.mu.Lock()
	waiters := s.pending[peer]
	delete(s.pending, peer)
	s.mu.Unlock()
	for _, ch := range waiters {
		ch <- r // buffered
	}
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
	s.closeTransport()
}

func (s *Session) closeTransport() {
	if s.w != nil {
		s.w.Close()
	}
	if s.body != nil {
		s.body.Close()
	}
	if s.cancel != nil {
		s.cancel()
	}
	if s.h2 != nil {
		s.h2.Close()
	}
	if s.qconn != nil {
		s.qconn.CloseWithError(0, "")
	}
	if s.qtr != nil {
		s.qtr.Close()
		s.qtr.Conn.Close()
	}
}

func (s *Session) writeFrame(f []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.w.Write(f); err != nil {
		return fmt.Errorf("rendezvous: writing to %s: %w", s.cfg.URL, err)
	}
	return nil
}

// Connect asks the super peer to introduce this device to peer. The
// candidates arrive through OnCandidates; a refusal (peer not found) is
// only logged. Use Lookup to wait for the answer.
func (s *Session) Connect(peer identity.PeerID) error {
	if err := s.Err(); err != nil {
		return err
	}
	return s.writeFrame(connectFrame(peer, false))
}

// Lookup asks the super peer to introduce this device to peer, and waits
// for peer's candidates or the refusal (an *Error with
// ErrCodePeerNotFound, say). The peer receives this device's candidates
// at the same moment.
func (s *Session) Lookup(ctx context.Context, peer identity.PeerID) (Candidates, error) {
	return s.Introduce(ctx, peer, false)
}

// Introduce is Lookup that also says whether this device will relay
// through this super peer (FlagRelay), so that the peer opens its side of
// the relay here.
func (s *Session) Introduce(ctx context.Context, peer identity.PeerID, relay bool) (Candidates, error) {
	ch := make(chan lookupResult, 1)
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return Candidates{}, err
	}
	s.pending[peer] = append(s.pending[peer], ch)
	s.mu.Unlock()
	if err := s.writeFrame(connectFrame(peer, relay)); err != nil {
		return Candidates{}, err
	}
	select {
	case r := <-ch:
		return r.c, r.err
	case <-ctx.Done():
		s.mu.Lock()
		ws := s.pending[peer]
		for i, c := range ws {
			if c == ch {
				s.pending[peer] = append(ws[:i:i], ws[i+1:]...)
				break
			}
		}
		if len(s.pending[peer]) == 0 {
			delete(s.pending, peer)
		}
		s.mu.Unlock()
		return Candidates{}, ctx.Err()
	}
}

// SetLocalAddrs replaces the local addresses the super peer hands out.
func (s *Session) SetLocalAddrs(as []netip.AddrPort) error {
	if err := checkAddrs(as); err != nil {
		return err
	}
	return s.writeFrame(addrsFrame(as))
}

// HTTP3 is the session's HTTP/3 connection, nil over HTTP/2. Other
// requests on it, relay sessions among them, are authenticated by this
// session's registration.
func (s *Session) HTTP3() *http3.ClientConn { return s.h3 }

// HTTP2 is the session's HTTP/2 connection, nil over HTTP/3; see HTTP3.
func (s *Session) HTTP2() H2Conn { return s.h2 }

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

// Transport is how the session reaches its super peer.
func (s *Session) Transport() Transport { return s.transport }

// LocalAddr and RemoteAddr are the session's connection's addresses.
func (s *Session) LocalAddr() net.Addr  { return s.local }
func (s *Session) RemoteAddr() net.Addr { return s.remote }

// RTT is the smoothed round-trip time this device measured, 0 before the
// first keepalive answer.
func (s *Session) RTT() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rtt
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
