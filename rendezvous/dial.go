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
	"os"
	"strconv"
	"strings"
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
	// OnRequest is called, on the session's reading goroutine, for every
	// FrameRequest: a peer asks to connect to this device, and the super
	// peer hands neither device the other's addresses until this device
	// answers (Session.Answer) that it accepts. It must not block. A
	// session announces CapConsent exactly when OnRequest is set; without
	// it the super peer introduces any peer that asks, at once.
	OnRequest func(Request)
	// OnMove is called, on the session's reading goroutine, when the
	// super peer drains (FrameMove): it ends this session within the
	// Move's deadline, and the device should move its relay sessions
	// there to other super peers first. It must not block. A session
	// announces CapMove exactly when OnMove is set; without it the
	// session just ends with ErrCodeShuttingDown when the drain does.
	OnMove func(Move)
	// OnHeadroom is called, on the session's reading goroutine, for every
	// FrameHeadroom: what the super peer's relay can still take, for the
	// device's choice of where to relay. It must not block. A session
	// announces CapHeadroom exactly when OnHeadroom is set.
	OnHeadroom func(Headroom)
	// RelayOnly registers the session for relays only (Register.RelayOnly):
	// a device's session at a relay node of a cluster, beside its
	// ordinary session at another node, or at the same node after a
	// failover, without replacing it. Such a session is never introduced
	// to other devices; it asks for relays (Session.Introduce with Relay)
	// to peers registered at its super peer, and carries the relay legs.
	// Session.RelayOnly tells whether the super peer honoured it.
	RelayOnly bool
	// KeepaliveInterval overrides the super peer's keepalive interval for
	// this device's pings; 0 follows the super peer.
	KeepaliveInterval time.Duration
	// Logger receives the session's logs; nil discards them.
	Logger *zap.Logger

	// announce, if set, replaces what the device announces in its
	// register: tests play older devices with it.
	announce *Protocol
	// writeTimeout, if set, replaces clientWriteTimeout: tests wait less.
	writeTimeout time.Duration
}

// H2Conn is one HTTP/2 client connection: requests on it share its TLS
// connection and so its registration.
type H2Conn interface {
	http.RoundTripper
	Close() error
}

// clientTransport is a device's session request to its super peer, over
// HTTP/3 or HTTP/2, as the server's stream is the other side of it.
type clientTransport interface {
	io.Reader // frames from the super peer
	// write writes frames to the super peer, giving up after timeout
	// with an error that wraps os.ErrDeadlineExceeded; Session
	// serialises writes.
	write(b []byte, timeout time.Duration) error
	// closeRead unblocks a pending Read.
	closeRead()
	// close ends the request and the connection.
	close()
}

// h3Transport is a session on a request stream of the device's QUIC
// connection.
type h3Transport struct {
	owned *quic.Transport // the session's own UDP socket, when the config gave none
	conn  *quic.Conn
	cc    *http3.ClientConn
	str   *http3.RequestStream
	body  io.ReadCloser
}

func (t *h3Transport) Read(b []byte) (int, error) { return t.body.Read(b) }
func (t *h3Transport) closeRead()                 { t.body.Close() }

func (t *h3Transport) write(b []byte, timeout time.Duration) error {
	_ = t.str.SetWriteDeadline(time.Now().Add(timeout))
	_, err := t.str.Write(b)
	_ = t.str.SetWriteDeadline(time.Time{})
	return err
}

func (t *h3Transport) close() {
	if t.str != nil {
		t.str.Close()
	}
	if t.body != nil {
		t.body.Close()
	}
	if t.conn != nil {
		t.conn.CloseWithError(0, "")
	}
	if t.owned != nil {
		t.owned.Close()
		t.owned.Conn.Close()
	}
}

// h2Transport is a session on a streamed request of the device's HTTP/2
// connection: a pipe feeds the request body.
type h2Transport struct {
	cc     H2Conn
	cancel context.CancelFunc // ends the request
	body   io.ReadCloser
	pr     *io.PipeReader // the request body
	pw     *io.PipeWriter
}

func (t *h2Transport) Read(b []byte) (int, error) { return t.body.Read(b) }
func (t *h2Transport) closeRead()                 { t.body.Close() }

// write writes to the request body's pipe, which has no deadline: a
// timer closes the pipe instead, and the session with it.
func (t *h2Transport) write(b []byte, timeout time.Duration) error {
	timer := time.AfterFunc(timeout, func() { t.pr.CloseWithError(os.ErrDeadlineExceeded) })
	defer timer.Stop()
	_, err := t.pw.Write(b)
	return err
}

func (t *h2Transport) close() {
	if t.pw != nil {
		t.pw.Close()
	}
	if t.body != nil {
		t.body.Close()
	}
	if t.cancel != nil {
		t.cancel()
	}
	if t.cc != nil {
		t.cc.Close()
	}
}

var (
	_ clientTransport = (*h3Transport)(nil)
	_ clientTransport = (*h2Transport)(nil)
)

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
		return nil, err
	}
	return s, nil
}

// openH3 opens the session over HTTP/3; on failure it leaves nothing open.
func (s *Session) openH3(ctx context.Context, hostport string, tlsConf *tls.Config, target *url.URL) (err error) {
	raddr, err := net.ResolveUDPAddr("udp", hostport)
	if err != nil {
		return fmt.Errorf("rendezvous: resolving %s: %w", hostport, err)
	}
	t := &h3Transport{}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	tr := s.cfg.QUICTransport
	if tr == nil {
		pc, err := net.ListenUDP("udp", nil)
		if err != nil {
			return fmt.Errorf("rendezvous: %w", err)
		}
		t.owned = &quic.Transport{Conn: pc}
		tr = t.owned
	}
	tlsConf.NextProtos = []string{http3.NextProtoH3}
	t.conn, err = tr.Dial(ctx, raddr, tlsConf, &quic.Config{
		EnableDatagrams: true,
		KeepAlivePeriod: quicKeepalivePeriod,
	})
	if err != nil {
		return fmt.Errorf("rendezvous: QUIC to %s: %w", hostport, err)
	}
	s.local, s.remote = t.conn.LocalAddr(), t.conn.RemoteAddr()
	t.cc = (&http3.Transport{EnableDatagrams: true}).NewClientConn(t.conn)
	t.str, err = t.cc.OpenRequestStream(ctx)
	if err != nil {
		return fmt.Errorf("rendezvous: opening request stream: %w", err)
	}
	if err := t.str.SendRequestHeader(newSessionRequest(target, http.NoBody)); err != nil {
		return fmt.Errorf("rendezvous: sending request: %w", err)
	}
	resp, err := readResponseCtx(ctx, t.str)
	if err != nil {
		return err
	}
	cs := t.conn.ConnectionState().TLS
	if err := s.accept(resp, &cs); err != nil {
		return err
	}
	t.body = resp.Body
	s.tr = t
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

// openH2 opens the session over HTTP/2; on failure it leaves nothing open.
func (s *Session) openH2(ctx context.Context, hostport string, tlsConf *tls.Config, target *url.URL) (err error) {
	dial := s.cfg.DialTCP
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	t := &h2Transport{}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	// A failed dial returns a typed nil, which t.close must not see.
	cc, err := s.dialH2(ctx, dial, hostport, tlsConf)
	if err != nil {
		return fmt.Errorf("rendezvous: HTTP/2 to %s: %w", hostport, err)
	}
	t.cc = cc
	pr, pw := io.Pipe()
	t.pr, t.pw = pr, pw
	// The request lives as long as the session, not as long as ctx.
	reqCtx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	stop := context.AfterFunc(ctx, cancel)
	resp, err := t.cc.RoundTrip(newSessionRequest(target, pr).WithContext(reqCtx))
	stopped := stop()
	if err != nil {
		if !stopped {
			err = ctx.Err()
		}
		return fmt.Errorf("rendezvous: HTTP/2 request: %w", err)
	}
	if resp.ProtoMajor != 2 {
		resp.Body.Close()
		return fmt.Errorf("rendezvous: super peer answered over HTTP/%d.%d, want HTTP/2", resp.ProtoMajor, resp.ProtoMinor)
	}
	if err := s.accept(resp, resp.TLS); err != nil {
		return err
	}
	t.body = resp.Body
	s.tr = t
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

// accept checks the response headers, takes the channel binding and the
// super peer's protocol version (1 when it names none).
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
	s.serverVersion = protocolV1.Version
	if v, err := strconv.ParseUint(resp.Header.Get(VersionHeader), 10, 64); err == nil {
		s.serverVersion = v
	}
	return nil
}
