package peer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/defaults"
	"github.com/netsody/superpeer/rendezvous"
)

// Config configures a Device. Zero durations take the Default* constants
// (constants.go).
type Config struct {
	// Identity is the device's key pair. Required.
	Identity *identity.Identity
	// SuperPeers are the super peers' URLs, "https://host[:port]".
	SuperPeers []string
	// RootCAs verifies the super peers' certificates; nil uses the
	// system's.
	RootCAs *x509.CertPool
	// ListenAddr is the UDP address of the device's socket; default
	// "0.0.0.0:0". With neither ListenAddr nor ListenAddr6 set, the device
	// also opens "[::]:0" when the host has IPv6: one socket per address
	// family.
	ListenAddr string
	// ListenAddr6 is the address of a second socket, of the other family
	// than ListenAddr's.
	ListenAddr6 string
	// ListenAddr6Optional lets New go on with ListenAddr's socket alone
	// when ListenAddr6 cannot be opened (a host without IPv6). The
	// default, with neither address set, is "0.0.0.0:0" and, optionally,
	// "[::]:0".
	ListenAddr6Optional bool
	// DialTCP dials super peers for the HTTP/2 fallback; nil uses
	// net.Dialer. (A test lab passes one that dials from the device's
	// network namespace.)
	DialTCP func(ctx context.Context, network, addr string) (net.Conn, error)
	// LocalAddrs returns the addresses to announce as local candidates;
	// nil announces the socket's port on every interface address of its
	// family.
	LocalAddrs func(port uint16) []netip.AddrPort
	// Allow lists the peers the device accepts from the start: it answers
	// their super peers' requests yes, punches their candidates, and takes
	// their handshakes. A peer the application dials is allowed too,
	// while the dial runs, and for good once it connects.
	// Nobody else learns the device's addresses or connects to it, unless
	// AllowAny or Accept says so (docs/DEVICE.md, "Accept policy").
	Allow []identity.PeerID
	// AllowAny accepts every peer: anyone who knows the device's peer ID
	// learns its addresses and may connect.
	AllowAny bool
	// Accept, if set, decides about a peer that is neither allowed nor
	// revoked (Allow, Revoke), when a super peer asks whether it may
	// introduce it (relay says whether it asks for a relay). It runs on a
	// goroutine of its own, with a context that ends after AcceptTimeout:
	// no answer by then declines this request, and the peer is declined
	// without asking for a while (acceptCooldown; a late yes still
	// counts). A yes, and a no given in time, are remembered for the
	// device's lifetime. At most a few calls run at once, one per peer
	// (maxAccepting, counting calls that ignore their context); beyond,
	// requests wait for a slot within their deadline, in a short queue
	// (acceptQueue), and beyond that are declined. A panic declines.
	Accept func(ctx context.Context, peer identity.PeerID, relay bool) bool
	// AcceptTimeout bounds an Accept call; default 8s, below the super
	// peer's wait for the answer (rendezvous.DefaultConsentTimeout).
	AcceptTimeout time.Duration
	// RelayOnly never punches: every peer is reached through a relay.
	RelayOnly bool
	// H3HeadStart is how long a super peer gets to answer over HTTP/3
	// before the device tries HTTP/2 alongside; default 500ms.
	H3HeadStart time.Duration
	// H3RetryInterval is how often a session over HTTP/2 tries HTTP/3
	// again; default 1m.
	H3RetryInterval time.Duration
	// PunchInterval is the keepalive of a direct path; default 1s.
	PunchInterval time.Duration
	// FastPunchInterval spaces a candidate's first two tries (later ones
	// twice as far each time); with FastPunchFor, addresses that answered
	// are pinged this often for this long after an introduction or a lost
	// direct path; defaults 50ms and 3s.
	FastPunchInterval time.Duration
	FastPunchFor      time.Duration
	// DirectTimeout drops a direct path that has not answered for this
	// long; default 3.5s.
	DirectTimeout time.Duration
	// RelayDialTimeout bounds opening a relay session; default 15s.
	RelayDialTimeout time.Duration
	// RelayCheckInterval is how often a relay is checked against nearer
	// super peers; default 10s.
	RelayCheckInterval time.Duration
	// PeerIdleTimeout forgets a peer this long after its last connection
	// ended (or after an introduction that led to none): its punching
	// stops and its relay closes; default 1m.
	PeerIdleTimeout time.Duration
	// MaxPeers bounds the peers the device keeps state for; default
	// 1024. When an introduction names a new peer and the table is full,
	// the peer idle longest (no connection) is forgotten; with none idle,
	// the introduction is dropped. Dial and Accept are not refused.
	MaxPeers int
	// IntroductionRate is how many introductions of new peers (peers the
	// device has no state for) it takes per second; more are dropped;
	// default 20.
	IntroductionRate int
	// AddrCheckInterval is how often the device looks for changed local
	// addresses (another network, a new DHCP lease) and, when they
	// changed, announces them to its super peers and connected peers;
	// default 5s.
	AddrCheckInterval time.Duration
	// OnPathChange, if set, is called when the path to a peer changes.
	// Calls come on one goroutine of the device's, in the order of the
	// changes, as a Watcher's events do (Device.Watch): a slow consumer
	// loses intermediate paths rather than holding the device.
	OnPathChange func(identity.PeerID, Path)
	// OnSuperPeer, if set, is called when a session with a super peer
	// comes up, ends or changes transport, when the super peer sees this
	// device at a new address (its NAT rebound), and when an attempt to
	// reach it fails, with the super peer's status then; on the same
	// goroutine as OnPathChange, in order with its calls.
	OnSuperPeer func(SuperPeerStatus)
	// Logger receives the device's logs; nil discards them.
	Logger *zap.Logger

	// cutDirect, if set and true, drops all punch traffic: the package's
	// tests' way to cut direct paths.
	cutDirect func() bool
}

func (c *Config) blockDirect() bool { return c.cutDirect != nil && c.cutDirect() }

func (c Config) withDefaults() Config {
	defaults.Set(&c.H3HeadStart, DefaultH3HeadStart)
	defaults.Set(&c.H3RetryInterval, DefaultH3RetryInterval)
	defaults.Set(&c.PunchInterval, DefaultPunchInterval)
	defaults.Set(&c.FastPunchInterval, DefaultFastPunchInterval)
	defaults.Set(&c.FastPunchFor, DefaultFastPunchFor)
	defaults.Set(&c.DirectTimeout, DefaultDirectTimeout)
	defaults.Set(&c.RelayDialTimeout, DefaultRelayDialTimeout)
	defaults.Set(&c.RelayCheckInterval, DefaultRelayCheckInterval)
	defaults.Set(&c.PeerIdleTimeout, DefaultPeerIdleTimeout)
	defaults.Set(&c.AddrCheckInterval, DefaultAddrCheckInterval)
	defaults.Set(&c.AcceptTimeout, DefaultAcceptTimeout)
	defaults.Set(&c.MaxPeers, DefaultMaxPeers)
	defaults.Set(&c.IntroductionRate, DefaultIntroductionRate)
	if c.ListenAddr == "" && c.ListenAddr6 == "" {
		c.ListenAddr, c.ListenAddr6, c.ListenAddr6Optional = "0.0.0.0:0", "[::]:0", true
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}

// Device is a Netsody device: reachable by its peer ID through its super
// peers, and able to reach other devices, directly when it can.
type Device struct {
	cfg  Config
	id   identity.PeerID
	cert tls.Certificate
	log  *zap.Logger

	sock *sock
	tr   *quic.Transport
	ln   *quic.Listener
	sps  []*superPeer

	ctx       context.Context
	cancel    context.CancelFunc
	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup // every goroutine of the device's (goRun)

	// Lock order: mu before peerState.mu before sock.mu.
	mu         sync.Mutex // guards peers and lastPinged
	peers      map[identity.PeerID]*peerState
	lastPinged time.Time // pingSuperPeers

	guard // what strangers may cost (guard.go)

	policy policy // which peers the device accepts (policy.go)

	events hub // the Watchers of the device's events (events.go)

	// raceHook, if set, is called at the points named by the hook*
	// constants: the package's tests force races with it. Set before
	// the device is used.
	raceHook func(at string, peer identity.PeerID)
}

// The points where raceHook is called.
const (
	hookAccepted = "onCandidates: the policy accepts the peer"
	hookCreated  = "onCandidates: the peer's state is made"
	hookJoining  = "joinRelay: before the relay is dialled"
	hookDialling = "dialRelay: a relay leg is dialled"
)

func (d *Device) hook(at string, peer identity.PeerID) {
	if d.raceHook != nil {
		d.raceHook(at, peer)
	}
}

// New opens the device's socket and starts its sessions with every super
// peer; it does not wait for them.
func New(cfg Config) (*Device, error) {
	if cfg.Identity == nil {
		return nil, errors.New("peer: no identity")
	}
	cfg = cfg.withDefaults()
	for _, u := range cfg.SuperPeers {
		if p, err := url.Parse(u); err != nil || p.Scheme != "https" || p.Host == "" {
			return nil, fmt.Errorf("peer: super peer %q must look like https://host[:port]", u)
		}
	}
	cert, err := certificate(cfg.Identity)
	if err != nil {
		return nil, err
	}
	udps, err := listen(cfg)
	if err != nil {
		return nil, err
	}
	d := &Device{
		cfg:    cfg,
		id:     cfg.Identity.PeerID(),
		cert:   cert,
		log:    cfg.Logger,
		closed: make(chan struct{}),
		peers:  make(map[identity.PeerID]*peerState),
	}
	d.guard.init(cfg)
	d.policy.init(cfg)
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.sock = newSock(udps, d)
	d.tr = &quic.Transport{Conn: d.sock}
	d.ln, err = d.tr.Listen(listenTLSConfig(cert, d.policy.admit), quicConfig())
	if err != nil {
		d.sock.Close()
		return nil, fmt.Errorf("peer: %w", err)
	}
	for _, u := range udps {
		d.goRun(func() { d.sock.readLoop(u) })
	}
	// d.sps is complete before anything that reads it runs.
	for _, u := range cfg.SuperPeers {
		d.sps = append(d.sps, &superPeer{dev: d, url: u, ready: make(chan struct{}), pace: rate.NewLimiter(introduceRate, introduceBurst)})
	}
	d.startCallbacks()
	d.goRun(d.forgetIdlePeers)
	d.goRun(d.watchLocalAddrs)
	for _, sp := range d.sps {
		d.goRun(sp.run)
	}
	return d, nil
}

// listen opens the device's sockets, one per address family.
func listen(cfg Config) ([]*net.UDPConn, error) {
	var udps []*net.UDPConn
	closeAll := func() {
		for _, u := range udps {
			u.Close()
		}
	}
	for i, addr := range []string{cfg.ListenAddr, cfg.ListenAddr6} {
		optional := i == 1 && cfg.ListenAddr6Optional
		if addr == "" {
			continue
		}
		laddr, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("peer: listen address %q: %w", addr, err)
		}
		network := "udp4"
		if laddr.IP != nil && laddr.IP.To4() == nil {
			network = "udp6"
		}
		u, err := net.ListenUDP(network, laddr)
		if err != nil {
			if optional {
				continue
			}
			closeAll()
			return nil, fmt.Errorf("peer: %w", err)
		}
		for _, other := range udps {
			if other.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap().Is4() == (network == "udp4") {
				u.Close()
				closeAll()
				return nil, fmt.Errorf("peer: two listen addresses of one family (%s, %s): give one IPv4 and one IPv6", other.LocalAddr(), addr)
			}
		}
		udps = append(udps, u)
	}
	return udps, nil
}

// quicConfig is the end-to-end QUIC configuration. Packets may travel
// through a relay, inside another QUIC connection's datagrams, so they stay
// at QUIC's minimum size and path MTU discovery is off.
func quicConfig() *quic.Config {
	return &quic.Config{
		InitialPacketSize:       quicPacketSize,
		DisablePathMTUDiscovery: true,
		KeepAlivePeriod:         quicKeepAlive,
		MaxIdleTimeout:          quicIdleTimeout,
	}
}

// every calls f every interval until the device closes or f returns
// false.
func (d *Device) every(interval time.Duration, f func() bool) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-d.closed:
			return
		case <-t.C:
		}
		if !f() {
			return
		}
	}
}

func (d *Device) goRun(f func()) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		f()
	}()
}

// PeerID is the device's own peer ID.
func (d *Device) PeerID() identity.PeerID { return d.id }

// LocalAddr is the address of the device's first UDP socket.
func (d *Device) LocalAddr() netip.AddrPort { return d.LocalAddrs()[0] }

// LocalAddrs are the addresses of the device's UDP sockets, one per
// address family.
func (d *Device) LocalAddrs() []netip.AddrPort {
	as := make([]netip.AddrPort, 0, len(d.sock.udps))
	for _, u := range d.sock.udps {
		ap := u.LocalAddr().(*net.UDPAddr).AddrPort()
		as = append(as, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	return as
}

// localAddrs are the device's local candidates: for each socket, its
// address, or every interface address of its family when it listens on
// all of them.
func (d *Device) localAddrs() []netip.AddrPort {
	if d.cfg.LocalAddrs != nil {
		return d.cfg.LocalAddrs(d.LocalAddr().Port())
	}
	ifaddrs, _ := net.InterfaceAddrs()
	var as []netip.AddrPort
	for _, sockAddr := range d.LocalAddrs() {
		bound, port := sockAddr.Addr(), sockAddr.Port()
		if !bound.IsUnspecified() {
			as = append(as, sockAddr)
			continue
		}
		for _, ia := range ifaddrs {
			pfx, err := netip.ParsePrefix(ia.String())
			if err != nil {
				continue
			}
			a := pfx.Addr().Unmap()
			if a.Is4() != bound.Is4() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() {
				continue
			}
			as = append(as, netip.AddrPortFrom(a, port))
		}
	}
	if len(as) > rendezvous.MaxAddrs {
		as = as[:rendezvous.MaxAddrs]
	}
	return as
}

// watchLocalAddrs announces changed local addresses: to every super peer
// (FrameAddrs, for later candidates), and to every connected peer by an
// introduction through every super peer, so that a peer that is now on
// the same LAN, or was, punches the right addresses.
func (d *Device) watchLocalAddrs() {
	last := d.localAddrs()
	d.every(d.cfg.AddrCheckInterval, func() bool {
		ps := localPrefixes()
		d.prefixes.Store(&ps)
		now := d.localAddrs()
		for _, sp := range d.sps {
			sp.announce(now)
		}
		if !slices.Equal(now, last) {
			d.log.Info("local addresses changed", zap.Stringers("from", last), zap.Stringers("to", now))
			last = now
			d.introduceAgain(d.sps...)
		}
		return true
	})
}

// peer returns the state of a peer, making it if asked.
func (d *Device) peer(id identity.PeerID, create bool) *peerState {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.peers[id]
	if p == nil && create {
		p = d.newPeerLocked(id)
	}
	return p
}

// newPeerLocked makes the state of a peer the device has none for.
func (d *Device) newPeerLocked(id identity.PeerID) *peerState {
	p := newPeerState(d, id)
	d.peers[id] = p
	d.sock.addPeer(p)
	return p
}

// onCandidates acts on a super peer's introduction: punch at once, and,
// when the other device relays through this super peer, open this
// device's side of the relay there, the one super peer that introduced
// the two for it. spLoopback says whether the device reaches sp over
// loopback (punchScope). Candidates for a peer the device does not
// accept (from a super peer that does not ask for consent) are ignored:
// no state, no punch, no relay leg.
func (d *Device) onCandidates(sp *superPeer, spLoopback bool, c rendezvous.Candidates) {
	if !d.policy.accepts(c.Peer) {
		d.policy.refused(c.Peer)
		return
	}
	d.hook(hookAccepted, c.Peer)
	p := d.introducedPeer(c.Peer)
	if p == nil {
		return
	}
	d.hook(hookCreated, c.Peer)
	p.setPeerRTT(sp, c.PeerRTT)
	p.addCandidates(c.All(), true, d.scopeVia(spLoopback))
	if c.Relay && !c.Initiator {
		d.goRun(func() { d.joinRelay(p, sp) })
	}
}

// handlePunch acts on a punch message from the socket. A punch from a
// sender the device does not accept, or has no state for, is dropped
// before its signature is checked, and checks are rate-limited per
// source (verifyLimit): anyone can send UDP.
func (d *Device) handlePunch(b []byte, from netip.AddrPort) {
	if !d.takesDirectPaths() {
		return
	}
	pn, err := parsePunch(b, d.id)
	if err != nil {
		return
	}
	p := d.peer(pn.sender, false)
	if p == nil || !d.policy.accepts(pn.sender) || !d.verify.allow(from.Addr()) {
		return
	}
	d.verified.Add(1)
	if !pn.verify(b) {
		return
	}
	if pn.typ == punchPing {
		p.onPing(pn, from)
	} else {
		p.onPong(pn, from)
	}
}

// Conn is an end-to-end QUIC connection to a peer.
type Conn struct {
	*quic.Conn
	peer identity.PeerID
	ps   *peerState
}

// Peer is the peer ID at the other end, checked against its key.
func (c *Conn) Peer() identity.PeerID { return c.peer }

// Path is how the connection's packets travel now.
func (c *Conn) Path() Path { return c.ps.path() }

// Dial connects to a peer: it asks every super peer to introduce the two
// devices, opens the relay at once, punches in parallel, and returns the
// QUIC connection as soon as the handshake is done over whichever path
// works first. The other side's key must be peer. Dialling a peer allows
// it while the dial runs, and for good once it connects (as Allow). A
// peer that is offline, or does not accept this device, gives
// ErrUnavailable.
func (d *Device) Dial(ctx context.Context, peer identity.PeerID) (*Conn, error) {
	if peer == d.id {
		return nil, errors.New("peer: cannot connect to oneself")
	}
	done := d.policy.allowDial(peer)
	p := d.peer(peer, true)
	qc, err := d.dial(ctx, p)
	if !done(err == nil) {
		// No dial connected and nothing else allows the peer: nothing of
		// the dial stays, as for a stranger.
		d.forget(p)
	}
	if err != nil {
		return nil, err
	}
	p.track(qc)
	return &Conn{Conn: qc, peer: peer, ps: p}, nil
}

// dial introduces the devices and makes the QUIC connection to p.
func (d *Device) dial(ctx context.Context, p *peerState) (*quic.Conn, error) {
	if err := d.introduce(ctx, p.id); err != nil {
		return nil, err
	}
	d.goRun(func() { d.ensureRelay(p) })
	qc, err := d.tr.Dial(ctx, net.UDPAddrFromAddrPort(p.virt), tlsConfig(d.cert, p.id), quicConfig())
	if err != nil {
		return nil, fmt.Errorf("peer: connecting to %s: %w", p.id.Short(), err)
	}
	return qc, nil
}

// introduce asks the connected super peers, all at once, for peer, for
// candidates to punch. It waits for a super peer only while none is
// connected, and returns as soon as one knows the peer; a super peer that
// is down does not hold it up. The relay is asked for separately, at one
// super peer (ensureRelay).
func (d *Device) introduce(ctx context.Context, peer identity.PeerID) error {
	if len(d.sps) == 0 {
		return errors.New("peer: no super peers configured")
	}
	var sessions []*rendezvous.Session
	for _, sp := range d.sps {
		if sess := sp.session(); sess != nil {
			sessions = append(sessions, sess)
		}
	}
	if len(sessions) == 0 {
		sess, err := d.anySuperPeer(ctx)
		if err != nil {
			return err
		}
		sessions = append(sessions, sess)
	}
	results := make(chan error, len(sessions))
	for _, sess := range sessions {
		go func() {
			_, err := sess.Introduce(ctx, peer, rendezvous.IntroduceOptions{})
			if err != nil {
				err = fmt.Errorf("%s: %w", sess.Authority(), err)
			}
			results <- err
		}()
	}
	var errs []error
	for range sessions {
		if err := <-results; err != nil {
			errs = append(errs, err)
			continue
		}
		return nil // the others answer in their own time
	}
	err := errors.Join(errs...)
	if rerr := (*rendezvous.Error)(nil); errors.As(err, &rerr) && rerr.Code == rendezvous.ErrCodePeerNotFound {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, peer.Short(), err)
	}
	return fmt.Errorf("peer: no super peer could introduce %s: %w", peer.Short(), err)
}

// anySuperPeer waits until some super peer is connected.
func (d *Device) anySuperPeer(ctx context.Context) (*rendezvous.Session, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan *rendezvous.Session, len(d.sps))
	var errs []error
	errCh := make(chan error, len(d.sps))
	for _, sp := range d.sps {
		go func() {
			sess, err := sp.wait(ctx)
			if err != nil {
				errCh <- fmt.Errorf("%s: %w", sp.url, err)
				return
			}
			got <- sess
		}()
	}
	for range d.sps {
		select {
		case sess := <-got:
			return sess, nil
		case err := <-errCh:
			errs = append(errs, err)
		}
	}
	return nil, fmt.Errorf("peer: no super peer reachable: %w", errors.Join(errs...))
}

// Accept waits for a peer's connection.
func (d *Device) Accept(ctx context.Context) (*Conn, error) {
	qc, err := d.ln.Accept(ctx)
	if err != nil {
		return nil, err
	}
	certs := qc.ConnectionState().TLS.PeerCertificates
	if len(certs) == 0 {
		qc.CloseWithError(1, "no certificate")
		return nil, errors.New("peer: incoming connection without a certificate")
	}
	id, err := peerIDOf([][]byte{certs[0].Raw})
	if err != nil {
		qc.CloseWithError(1, "bad certificate")
		return nil, err
	}
	p := d.peer(id, true)
	p.track(qc)
	return &Conn{Conn: qc, peer: id, ps: p}, nil
}

// forgetIdlePeers drops, now and then, the peers without a connection for
// PeerIdleTimeout.
func (d *Device) forgetIdlePeers() {
	d.every(min(d.cfg.PeerIdleTimeout/4, forgetCheckMax), func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		for id, p := range d.peers {
			if p.forgetIfIdle(d.cfg.PeerIdleTimeout) {
				delete(d.peers, id)
				d.log.Debug("forgot idle peer", zap.String("peer", p.id.Short()))
			}
		}
		return true
	})
}

// Close ends every connection and session and closes the socket. It may
// be called more than once, and concurrently: every call returns once the
// device is closed.
func (d *Device) Close() error {
	d.closeOnce.Do(d.close)
	return nil
}

func (d *Device) close() {
	// Sessions first, while the socket still carries their close, so
	// that the super peers forget this device at once.
	for _, sp := range d.sps {
		sp.close()
	}
	close(d.closed)
	d.cancel()
	d.ln.Close()
	d.mu.Lock()
	for _, p := range d.peers {
		p.mu.Lock()
		if rp := p.paths.relay; rp != nil {
			rp.conn.Close()
		}
		p.mu.Unlock()
	}
	d.mu.Unlock()
	d.tr.Close()
	d.sock.Close()
	d.wg.Wait()
}
