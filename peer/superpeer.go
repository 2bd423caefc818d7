package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

// superPeer keeps the device's session with one super peer: over HTTP/3,
// falling back to HTTP/2 when HTTP/3 does not answer within H3HeadStart,
// and again after it ends; while it lasts, HTTP/3 that stops answering
// gives way to HTTP/2, and HTTP/2 to HTTP/3 again (transport.go). It also re-introduces the device to its peers
// through that super peer (introduceAgain).
type superPeer struct {
	dev *Device
	url string
	// relayNode says that it is a relay node (relaynode.go), held for
	// the life of relays, not one of Config.SuperPeers.
	relayNode bool
	// ctx ends when the super peer is closed (close): its session, its
	// dials and its goroutines end with it.
	ctx    context.Context
	cancel context.CancelFunc

	// mu guards the following. No other lock of the device's is held
	// with it; under it, only a session's own (Observed).
	mu        sync.Mutex
	sess      *rendezvous.Session
	lastErr   error
	ready     chan struct{} // closed while a session is up
	closed    bool
	draining  bool             // the session's super peer drains (drain.go); a new session clears it
	announced []netip.AddrPort // the local addresses the session has
	// seenBy is the last HTTP/3 session: where it sees this device (its
	// Observed) is where this super peer last saw it. Only HTTP/3 counts:
	// an HTTP/2 session sees a TCP connection's address, which every new
	// connection changes.
	seenBy *rendezvous.Session

	// Introductions again (introduceAgain): the peers waiting for one,
	// whether a goroutine works through them, and its pace, below the
	// super peer's connect rate limit.
	reintro   map[*peerState]struct{}
	reintroOn bool
	pace      *rate.Limiter

	// The transport choice (transport.go): why the session is not over
	// HTTP/3 (under mu), the packets relayed through this super peer so
	// far (h3Check's measure of a relay in use), and the run goroutine's
	// own state.
	transportWhy string
	relayOut     atomic.Uint64
	transportCtl transportCtl
	// legs counts the relay legs open through this super peer
	// (dialRelay to readRelay's end): while there are any, the session's
	// check pings it every h3CheckEvery (transport.go), so that a dead
	// node ends idle relays too within seconds.
	legs atomic.Int32
	// failedAt is when each of the name's addresses last failed: a dial
	// that failed, or a session that ended. The next session tries the
	// name's addresses that have not failed first, in the resolver's
	// order, then the one that failed longest ago (resolve): a device
	// fails over between the nodes behind one name, and a dead node goes
	// to the back. The run goroutine's own; it holds only the name's
	// addresses.
	failedAt map[netip.Addr]time.Time
	// dialled is the address the last dial went to (resolve).
	dialled netip.Addr
	// The check sleeps while relays carry nothing (transport.go,
	// relayedOne): relayIdle says it does, and the first packet relayed
	// after, or a leg opened, sets it back and wakes it through
	// relayWake. checkWakeups counts its ticks (the tests' measure of an
	// idle device's cost).
	relayIdle    atomic.Bool
	relayWake    chan struct{}
	checkWakeups atomic.Uint64
}

// makeSuperPeer makes the device's super peer at url; run starts it.
func makeSuperPeer(d *Device, url string, relayNode bool) *superPeer {
	sp := &superPeer{dev: d, url: url, relayNode: relayNode, ready: make(chan struct{}), relayWake: make(chan struct{}, 1), pace: rate.NewLimiter(introduceRate, introduceBurst)}
	sp.ctx, sp.cancel = context.WithCancel(d.ctx)
	return sp
}

func (sp *superPeer) run() {
	for backoff := time.Duration(0); ; {
		select {
		case <-sp.ctx.Done():
			return
		case <-time.After(jitter(backoff)):
		}
		sess, announced, err := sp.dial(sp.raceH3H2)
		if err != nil {
			sp.addrFailed(sp.dialled) // the next dial tries another address of the name
			sp.mu.Lock()
			sp.lastErr = err
			sp.mu.Unlock()
			sp.dev.log.Debug("super peer", zap.String("url", sp.url), zap.Error(err))
			sp.changed()
			backoff = min(max(2*backoff, sessionBackoffMin), sessionBackoffMax)
			continue
		}
		backoff = 0
		if sess.Transport() == rendezvous.TransportH2 {
			why := whyNoH3
			if sp.transportCtl.falls > 0 {
				why = whyH2
			}
			sp.setTransportWhy(why)
		}
		if !sp.install(sess, announced) {
			sess.Close()
			return
		}
		sess, why := sp.awaitEnd(sess)
		if why == nil {
			why = sess.Err()
		}
		sp.mu.Lock()
		sp.sess, sp.lastErr = nil, why
		sp.ready = make(chan struct{})
		sp.mu.Unlock()
		sess.Close()
		select {
		case <-sp.ctx.Done(): // the device's own close, or the super peer's, is not news
		default:
			sp.changed()
		}
		// Whatever ended the session (its node died or drains, the path
		// to it broke), the next one starts at another node of the name.
		sp.addrFailed(sessionAddr(sess))
		backoff = sessionRedial
	}
}

// jitter spreads a wait d over [d/2, 3d/2), so that the devices of a
// node that died, which all lose their sessions at once, do not redial
// all at once.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d)
}

// sessionAddr is the address sess reached its super peer at.
func sessionAddr(sess *rendezvous.Session) netip.Addr {
	if sess.RemoteAddr() == nil {
		return netip.Addr{}
	}
	if ap, err := netip.ParseAddrPort(sess.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// addrFailed records that a of the super peer's name failed now.
func (sp *superPeer) addrFailed(a netip.Addr) {
	if !a.IsValid() {
		return
	}
	if sp.failedAt == nil {
		sp.failedAt = make(map[netip.Addr]time.Time)
	}
	sp.failedAt[a] = time.Now()
}

// pickAddr chooses among usable, the name's addresses in the resolver's
// order: the first that has not failed, else the one that failed longest
// ago. Failures of addresses the name no longer has are forgotten, so
// that failedAt holds only the name's.
func (sp *superPeer) pickAddr(usable []netip.Addr) netip.Addr {
	for a := range sp.failedAt {
		if !slices.Contains(usable, a) {
			delete(sp.failedAt, a)
		}
	}
	best := usable[0]
	for _, a := range usable {
		at, failed := sp.failedAt[a]
		if !failed {
			return a
		}
		if at.Before(sp.failedAt[best]) {
			best = a
		}
	}
	return best
}

// install makes sess the super peer's session, in place of the one there
// is (if any), and reports it. A session that sees this device elsewhere
// than the last HTTP/3 one did means that its NAT rebound: as then, its
// peers are introduced again. It reports false, and installs nothing,
// when the device is closing.
func (sp *superPeer) install(sess *rendezvous.Session, announced []netip.AddrPort) bool {
	sp.mu.Lock()
	if sp.closed {
		sp.mu.Unlock()
		return false
	}
	if sp.sess == nil {
		close(sp.ready)
	}
	sp.sess, sp.announced, sp.lastErr, sp.draining = sess, announced, nil, false
	moved := false
	if sess.Transport() == rendezvous.TransportH3 {
		sp.transportWhy = ""
		moved = sp.seenBy != nil && sp.seenBy.Observed().IsValid() && sp.seenBy.Observed() != sess.Observed()
		sp.seenBy = sess
	}
	sp.mu.Unlock()
	sp.changed()
	sp.dev.mapping.recheck() // a new view, and a session to tell
	if moved {
		sp.dev.introduceAgain(sp)
	}
	return true
}

// dial opens a session with connect, announcing the local addresses
// there are now, which it returns.
func (sp *superPeer) dial(connect func(context.Context, rendezvous.ClientConfig) (*rendezvous.Session, error)) (*rendezvous.Session, []netip.AddrPort, error) {
	return sp.dialWithin(sessionDialTimeout, connect)
}

// dialWithin is dial, bounded by timeout.
func (sp *superPeer) dialWithin(timeout time.Duration, connect func(context.Context, rendezvous.ClientConfig) (*rendezvous.Session, error)) (*rendezvous.Session, []netip.AddrPort, error) {
	cfg, err := sp.clientConfig()
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(sp.ctx, timeout)
	defer cancel()
	sess, err := connect(ctx, cfg)
	return sess, cfg.LocalAddrs, err
}

// raceH3H2 connects over HTTP/3, racing HTTP/2 against it once HTTP/3
// has had H3HeadStart to answer: the first session open wins, and only it
// registers (a registration on the loser would replace the winner's). A
// device whose UDP is blocked is registered over HTTP/2 a moment after
// the head start, not after a timeout.
func (sp *superPeer) raceH3H2(ctx context.Context, cfg rendezvous.ClientConfig) (*rendezvous.Session, error) {
	sess, err := race(ctx, sp.opener(cfg, rendezvous.TransportH3), sp.opener(cfg, rendezvous.TransportH2), sp.dev.cfg.H3HeadStart)
	if err != nil {
		return nil, err
	}
	return sess, sp.register(ctx, sess)
}

// onlyH3 connects over HTTP/3 alone.
func (sp *superPeer) onlyH3(ctx context.Context, cfg rendezvous.ClientConfig) (*rendezvous.Session, error) {
	sess, err := sp.opener(cfg, rendezvous.TransportH3)(ctx)
	if err != nil {
		return nil, err
	}
	return sess, sp.register(ctx, sess)
}

// register registers an opened session; a failure is reported as the
// opener's are.
func (sp *superPeer) register(ctx context.Context, sess *rendezvous.Session) error {
	err := sess.Register(ctx)
	if err != nil {
		sp.failed(err)
	}
	return err
}

// clientConfig is a session's configuration, announcing the local
// addresses there are now.
func (sp *superPeer) clientConfig() (rendezvous.ClientConfig, error) {
	d := sp.dev
	addr, err := sp.resolve()
	if err != nil {
		return rendezvous.ClientConfig{}, err
	}
	loopback := isLoopbackHostPort(addr)
	if loopback {
		d.viaLoopback.Store(true)
	}
	return rendezvous.ClientConfig{
		Identity:      d.cfg.Identity,
		URL:           sp.url,
		Addr:          addr,
		QUICTransport: d.tr,
		DialTCP:       d.cfg.DialTCP,
		TLSConfig:     &tls.Config{RootCAs: d.cfg.RootCAs},
		LocalAddrs:    d.localAddrs(),
		OnCandidates:  func(c rendezvous.Candidates) { d.onCandidates(sp, loopback, c) },
		OnObserved:    func(a netip.AddrPort) { d.onObserved(sp, a) },
		OnMove:        func(m rendezvous.Move) { d.onMove(sp, m) },
		OnHeadroom:    func(h rendezvous.Headroom) { d.onHeadroom(sp, h) },
		// A relay node's session is for relays only: beside the
		// device's own session, were that at the same node, neither
		// replacing the other; never introduced (relaynode.go).
		RelayOnly: sp.relayNode,
		Logger:    d.log,
	}, nil
}

// opener opens a session over one transport; a failure is reported at
// once (failed). The session answers its super peer's requests
// (onRequest) itself: it is known before it registers, and a request
// comes only after.
func (sp *superPeer) opener(cfg rendezvous.ClientConfig, tr rendezvous.Transport) func(context.Context) (*rendezvous.Session, error) {
	cfg.Transport = tr
	return func(ctx context.Context) (*rendezvous.Session, error) {
		var self atomic.Pointer[rendezvous.Session]
		q := newAnswers(func(peer identity.PeerID, ok bool) error {
			// A Revoke while the yes waited to be written turns it into a no.
			ok = ok && sp.dev.policy.accepts(peer)
			err := self.Load().Answer(peer, ok)
			if err != nil {
				sp.dev.log.Debug("answering a request", zap.String("peer", peer.Short()), zap.Error(err))
			}
			return err
		}, func() { sp.dev.policy.refusals.dropped.Add(1) })
		cfg := cfg
		cfg.OnRequest = func(r rendezvous.Request) { sp.dev.onRequest(q, r) }
		sess, err := rendezvous.Open(ctx, cfg)
		if err != nil {
			sp.failed(err)
			return nil, err
		}
		self.Store(sess)
		return sess, nil
	}
}

// failed makes err the super peer's last error at once, while no session
// is up: not only when the other transport gives up too.
func (sp *superPeer) failed(err error) {
	sp.mu.Lock()
	down := sp.sess == nil
	if down {
		sp.lastErr = err
	}
	sp.mu.Unlock()
	if down {
		sp.changed()
	}
}

// race runs first, and second alongside once first has failed or has had
// headStart without an answer (happy eyeballs, RFC 8305, between
// transports). The first session to be up wins; a loser that comes up
// later is closed.
func race(ctx context.Context, first, second func(context.Context) (*rendezvous.Session, error), headStart time.Duration) (*rendezvous.Session, error) {
	type result struct {
		sess *rendezvous.Session
		err  error
	}
	results := make(chan result, 2)
	start := func(dial func(context.Context) (*rendezvous.Session, error)) {
		go func() {
			s, err := dial(ctx)
			results <- result{s, err}
		}()
	}
	start(first)
	running := 1
	timer := time.NewTimer(headStart)
	defer timer.Stop()
	startSecond := func() {
		if second != nil {
			start(second)
			second, running = nil, running+1
		}
	}
	var errs []error
	for running > 0 {
		select {
		case r := <-results:
			running--
			if r.err == nil {
				if running > 0 { // the loser may still come up: close it
					go func() {
						if r := <-results; r.sess != nil {
							r.sess.Close()
						}
					}()
				}
				return r.sess, nil
			}
			errs = append(errs, r.err)
			startSecond()
		case <-timer.C:
			startSecond()
		}
	}
	return nil, errors.Join(errs...)
}

// resolve finds the super peer's address in a family the device has a
// socket for: of the name's addresses (IPv4 first, then IPv6, each in
// the resolver's order), the first that has not failed (pickAddr), so
// that a failure tries the next one (docs/CLUSTER.md: many nodes behind
// one name). The run goroutine's, as failedAt is.
func (sp *superPeer) resolve() (string, error) {
	sp.dialled = netip.Addr{}
	u, err := url.Parse(sp.url)
	if err != nil {
		return "", err
	}
	port := u.Port()
	if port == "" {
		port = httpsPort
	}
	lookup := sp.dev.cfg.LookupNetIP
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	ips, err := lookup(sp.ctx, u.Hostname())
	if err != nil || len(ips) == 0 {
		return "", errors.Join(errors.New("peer: cannot resolve "+u.Hostname()), err)
	}
	var usable []netip.Addr
	for _, want4 := range []bool{true, false} {
		for _, ip := range ips {
			ip = ip.Unmap()
			ap := netip.AddrPortFrom(ip, 0)
			if ip.Is4() == want4 && sp.dev.sock.socketFor(ap) != nil {
				usable = append(usable, ip)
			}
		}
	}
	if len(usable) > 0 {
		ip := sp.pickAddr(usable)
		sp.dialled = ip
		return net.JoinHostPort(ip.String(), port), nil
	}
	return "", fmt.Errorf("peer: %s has no address of a family this device has a socket for", u.Hostname())
}

// session returns the current session, or nil.
func (sp *superPeer) session() *rendezvous.Session {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.sess
}

// wait waits for a session.
func (sp *superPeer) wait(ctx context.Context) (*rendezvous.Session, error) {
	for {
		sp.mu.Lock()
		sess, ready, lastErr := sp.sess, sp.ready, sp.lastErr
		sp.mu.Unlock()
		if sess != nil {
			return sess, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, ctx.Err()
		case <-sp.ctx.Done():
			return nil, errors.New("peer: device closed, or super peer dropped")
		}
	}
}

// announce tells the session the device's local addresses, unless it
// has them: also a session that registered with addresses taken just
// before they changed.
func (sp *superPeer) announce(addrs []netip.AddrPort) {
	sp.mu.Lock()
	sess, announced := sp.sess, sp.announced
	sp.mu.Unlock()
	if sess == nil || slices.Equal(announced, addrs) {
		return
	}
	if err := sess.SetLocalAddrs(addrs); err != nil {
		sp.dev.log.Debug("announcing local addresses", zap.String("url", sp.url), zap.Error(err))
		return
	}
	sp.mu.Lock()
	if sp.sess == sess {
		sp.announced = addrs
	}
	sp.mu.Unlock()
}

// changed publishes the super peer's status, in order with other events.
func (sp *superPeer) changed() {
	sp.dev.publish(SuperPeerEvent{Status: sp.status()})
}

// onObserved runs when a super peer sees this device at a new address:
// its NAT rebound the mapping, so the candidates its peers hold for it are
// stale and a direct path to it may be dying. Every peer it is connected
// to is introduced again through that super peer, which has the new
// address: both devices get fresh candidates and punch, as at the start
// of a connection.
func (d *Device) onObserved(sp *superPeer, a netip.AddrPort) {
	d.log.Info("super peer observes a new address", zap.String("url", sp.url), zap.Stringer("observed", a))
	sp.changed()
	d.mapping.recheck()
	d.introduceAgain(sp)
}

// introduceAgain asks each of sps to introduce this device to every peer
// it is connected to: both get fresh candidates and punch. Each super
// peer's requests go out at its own pace (sp.pace), below its connect
// rate limit, however many calls overlap.
func (d *Device) introduceAgain(sps ...*superPeer) {
	var active []*peerState
	d.mu.Lock()
	for _, p := range d.peers {
		p.mu.Lock()
		if p.inUseLocked() {
			active = append(active, p)
		}
		p.mu.Unlock()
	}
	d.mu.Unlock()
	if len(active) == 0 {
		return
	}
	for _, sp := range sps {
		sp.mu.Lock()
		if sp.reintro == nil {
			sp.reintro = make(map[*peerState]struct{})
		}
		for _, p := range active {
			sp.reintro[p] = struct{}{}
		}
		start := !sp.reintroOn
		sp.reintroOn = true
		sp.mu.Unlock()
		if start {
			d.goRun(sp.introduceWaiting)
		}
	}
}

// introduceWaiting sends a connect for every peer in sp.reintro, at
// sp.pace, until none is left.
func (sp *superPeer) introduceWaiting() {
	d := sp.dev
	for {
		if sp.pace.Wait(d.ctx) != nil { // the device closed
			sp.mu.Lock()
			clear(sp.reintro)
			sp.reintroOn = false
			sp.mu.Unlock()
			return
		}
		sp.mu.Lock()
		var p *peerState
		for p = range sp.reintro {
			break
		}
		if p == nil {
			sp.reintroOn = false
			sp.mu.Unlock()
			return
		}
		delete(sp.reintro, p)
		sess := sp.sess
		sp.mu.Unlock()
		if sess == nil {
			continue
		}
		d.goRun(func() {
			ctx, cancel := context.WithTimeout(d.ctx, d.cfg.RelayDialTimeout)
			defer cancel()
			if _, err := sess.Introduce(ctx, p.id, rendezvous.IntroduceOptions{}); err != nil {
				d.log.Debug("introducing again", zap.String("peer", p.id.Short()), zap.String("url", sp.url), zap.Error(err))
			}
		})
	}
}

// pingSuperPeers pings every super peer now, at most every superPeerPingEvery: a
// direct path died, perhaps because this device's NAT rebound, and a
// packet from the new mapping lets each super peer follow it at once
// (onObserved) and send relayed traffic there.
func (d *Device) pingSuperPeers() {
	d.mu.Lock()
	if time.Since(d.lastPinged) < superPeerPingEvery {
		d.mu.Unlock()
		return
	}
	d.lastPinged = time.Now()
	d.mu.Unlock()
	for _, sp := range d.sps {
		if sess := sp.session(); sess != nil {
			sess.Ping()
		}
	}
}

func (sp *superPeer) close() {
	sp.mu.Lock()
	sp.closed = true
	sess := sp.sess
	sp.mu.Unlock()
	sp.cancel()
	if sess != nil {
		sess.Close()
	}
}
