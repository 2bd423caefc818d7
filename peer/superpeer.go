package peer

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/netsody/superpeer/rendezvous"
)

// superPeer keeps the device's session with one super peer: over HTTP/3,
// falling back to HTTP/2 when HTTP/3 does not answer within H3Timeout, and
// again after it ends.
type superPeer struct {
	dev *Device
	url string

	mu       sync.Mutex // guards the following
	sess     *rendezvous.Session
	lastErr  error
	ready    chan struct{} // closed while a session is up
	closed   bool
	told     []netip.AddrPort // the local addresses the session has
	observed netip.AddrPort   // as the last HTTP/3 session saw it

	// Introductions again (introduceAgain): the peers waiting for one,
	// whether a goroutine works through them, and its pace, below the
	// super peer's connect rate limit.
	reintro   map[*peerState]struct{}
	reintroOn bool
	pace      *rate.Limiter
}

func (sp *superPeer) run() {
	for backoff := time.Duration(0); ; {
		select {
		case <-sp.dev.closed:
			return
		case <-time.After(backoff):
		}
		sess, told, err := sp.dial("")
		if err != nil {
			sp.mu.Lock()
			sp.lastErr = err
			sp.mu.Unlock()
			sp.dev.log.Debug("super peer", zap.String("url", sp.url), zap.Error(err))
			sp.changed()
			backoff = min(max(2*backoff, 500*time.Millisecond), 10*time.Second)
			continue
		}
		backoff = 0
		sp.mu.Lock()
		if sp.closed {
			sp.mu.Unlock()
			sess.Close()
			return
		}
		sp.sess, sp.told, sp.lastErr = sess, told, nil
		close(sp.ready)
		moved := sp.followLocked(sess)
		sp.mu.Unlock()
		sp.changed()
		if moved {
			// A new session sees this device elsewhere than the one
			// before: as after a rebinding, peers need to know.
			sp.dev.introduceAgain(sp)
		}
		sp.awaitEnd(sess)
		sp.mu.Lock()
		sp.sess, sp.lastErr = nil, sess.Err()
		sp.ready = make(chan struct{})
		sp.mu.Unlock()
		sess.Close()
		select {
		case <-sp.dev.closed: // the device's own close is not news
		default:
			sp.changed()
		}
		backoff = 500 * time.Millisecond
	}
}

// dial opens a session over HTTP/3, racing HTTP/2 against it once HTTP/3
// has had H3HeadStart to answer: the first to register wins, the other is
// closed. A device whose UDP is blocked is registered over HTTP/2 a
// moment after the head start, not after a timeout.
func (sp *superPeer) dial(only rendezvous.Transport) (_ *rendezvous.Session, told []netip.AddrPort, _ error) {
	d := sp.dev
	addr, err := sp.resolve()
	if err != nil {
		return nil, nil, err
	}
	told = d.localAddrs()
	cfg := rendezvous.ClientConfig{
		Identity:      d.cfg.Identity,
		URL:           sp.url,
		Addr:          addr,
		QUICTransport: d.tr,
		DialTCP:       d.cfg.DialTCP,
		TLSConfig:     &tls.Config{RootCAs: d.cfg.RootCAs},
		LocalAddrs:    told,
		OnCandidates:  func(c rendezvous.Candidates) { d.onCandidates(sp, c) },
		OnObserved:    func(a netip.AddrPort) { d.onObserved(sp, a) },
		Logger:        d.log,
	}
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	defer cancel()
	type result struct {
		sess *rendezvous.Session
		err  error
	}
	results := make(chan result, 2)
	start := func(tr rendezvous.Transport) {
		c := cfg
		c.Transport = tr
		go func() {
			s, err := rendezvous.Dial(ctx, c)
			results <- result{s, err}
		}()
	}
	pending := 0
	if only != rendezvous.TransportH2 {
		start(rendezvous.TransportH3)
		pending++
	}
	headStart := time.NewTimer(d.cfg.H3HeadStart)
	defer headStart.Stop()
	h2Started := only == rendezvous.TransportH3
	if only == rendezvous.TransportH2 {
		start(rendezvous.TransportH2)
		pending, h2Started = 1, true
	}
	var errs []error
	for pending > 0 {
		select {
		case r := <-results:
			pending--
			if r.err == nil {
				if pending > 0 { // the loser may still register: close it
					go func() {
						if r := <-results; r.sess != nil {
							r.sess.Close()
						}
					}()
				}
				return r.sess, told, nil
			}
			errs = append(errs, r.err)
			sp.mu.Lock()
			down := sp.sess == nil
			if down {
				sp.lastErr = r.err // tell it now, not when the other attempt gives up
			}
			sp.mu.Unlock()
			if down {
				sp.changed()
			}
			if !h2Started {
				start(rendezvous.TransportH2)
				pending, h2Started = pending+1, true
			}
		case <-headStart.C:
			if !h2Started {
				start(rendezvous.TransportH2)
				pending, h2Started = pending+1, true
			}
		}
	}
	return nil, nil, errors.Join(errs...)
}

// followLocked records where a new session sees this device, and reports
// whether that is a move from where the last one saw it. Only HTTP/3
// sessions count: an HTTP/2 session sees a TCP connection's address,
// which every new connection changes.
func (sp *superPeer) followLocked(sess *rendezvous.Session) (moved bool) {
	if sess.Transport() != rendezvous.TransportH3 {
		return false
	}
	before := sp.observed
	sp.observed = sess.Observed()
	return before.IsValid() && before != sp.observed
}

// resolve finds the super peer's address in a family the device has a
// socket for, IPv4 first.
func (sp *superPeer) resolve() (string, error) {
	u, err := url.Parse(sp.url)
	if err != nil {
		return "", err
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	ips, err := net.DefaultResolver.LookupNetIP(sp.dev.ctx, "ip", u.Hostname())
	if err != nil || len(ips) == 0 {
		return "", errors.Join(errors.New("peer: cannot resolve "+u.Hostname()), err)
	}
	for _, want4 := range []bool{true, false} {
		for _, ip := range ips {
			ip = ip.Unmap()
			ap := netip.AddrPortFrom(ip, 0)
			if ip.Is4() == want4 && sp.dev.sock.socketFor(ap) != nil {
				return net.JoinHostPort(ip.String(), port), nil
			}
		}
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
		case <-sp.dev.closed:
			return nil, errors.New("peer: device closed")
		}
	}
}

// awaitEnd waits for the session to end. A session over HTTP/2 tries
// HTTP/3 again every H3RetryInterval and gives way to it when it works.
func (sp *superPeer) awaitEnd(sess *rendezvous.Session) {
	retry := time.NewTimer(sp.dev.cfg.H3RetryInterval)
	defer retry.Stop()
	for {
		var retryC <-chan time.Time
		if sess.Transport() == rendezvous.TransportH2 {
			retryC = retry.C
		}
		select {
		case <-sess.Done():
			return
		case <-sp.dev.closed:
			return
		case <-retryC:
			retry.Reset(sp.dev.cfg.H3RetryInterval)
			if h3, told, err := sp.dial(rendezvous.TransportH3); err == nil {
				sp.mu.Lock()
				sp.sess, sp.told = h3, told
				moved := sp.followLocked(h3)
				sp.mu.Unlock()
				sess.Close() // relays on it move on their own
				sess = h3
				sp.changed()
				if moved {
					sp.dev.introduceAgain(sp)
				}
			}
		}
	}
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
	sp.mu.Lock()
	sp.observed = a
	sp.mu.Unlock()
	sp.changed()
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
		if len(p.conns) > 0 && !p.gone {
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
			if _, err := sess.Lookup(ctx, p.id); err != nil {
				d.log.Debug("introducing again", zap.String("peer", p.id.Short()), zap.String("url", sp.url), zap.Error(err))
			}
		})
	}
}

// introduceAgain's pace, below rendezvous.DefaultConnectRate and
// DefaultConnectBurst.
const (
	introduceRate  = 8
	introduceBurst = 10
)

// pingSuperPeers pings every super peer now, at most once a second: a
// direct path died, perhaps because this device's NAT rebound, and a
// packet from the new mapping lets each super peer follow it at once
// (onObserved) and send relayed traffic there.
func (d *Device) pingSuperPeers() {
	d.mu.Lock()
	if time.Since(d.lastPinged) < time.Second {
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
	if sess != nil {
		sess.Close()
	}
}

// bestSuperPeer picks the super peer with the lowest latency between
// this device and peer through it: both legs, this device's RTT to it
// plus the peer's as the super peer reported it (the device's own when
// that is not known yet).
func (d *Device) bestSuperPeer(p *peerState) (*superPeer, *rendezvous.Session) {
	var (
		best     *superPeer
		bestSess *rendezvous.Session
		bestRTT  time.Duration
	)
	for _, sp := range d.sps {
		sess := sp.session()
		if sess == nil {
			continue
		}
		if rtt := p.relayCost(sp, sess); best == nil || rtt < bestRTT {
			best, bestSess, bestRTT = sp, sess, rtt
		}
	}
	return best, bestSess
}

// relayCost is the RTT between this device and p through a super peer:
// both legs, the peer's as the super peer reported it (this device's own
// when that is not known).
func (p *peerState) relayCost(sp *superPeer, sess *rendezvous.Session) time.Duration {
	mine := sess.RTT()
	theirs := p.peerRTT(sp)
	if theirs == 0 {
		theirs = mine
	}
	return mine + theirs
}

// Hysteresis for moving a relay to a nearer super peer: the new one must
// be this much better, relatively and absolutely.
const (
	relayMoveRatio  = 0.8
	relayMoveMargin = 5 * time.Millisecond
)

// maintainRelay moves the peer's relay to a clearly nearer super peer as
// latencies change. Only the device with the smaller peer ID decides, so
// that the two never chase each other; the other follows (joinRelay).
func (d *Device) maintainRelay(p *peerState) {
	if bytes.Compare(d.id[:], p.id[:]) > 0 {
		return
	}
	t := time.NewTicker(d.cfg.RelayCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-d.closed:
			return
		case <-t.C:
		}
		p.mu.Lock()
		rp, direct, gone := p.relay, p.direct.IsValid(), p.gone
		p.mu.Unlock()
		if gone {
			return
		}
		p.mu.Lock()
		p.mu.Unlock()
		if rp == nil || direct {
			continue
		}
		// Fresh candidates from every super peer: the peer's RTT to each,
		// and another round of punching while the connection is relayed.
		for _, sp := range d.sps {
			if sess := sp.session(); sess != nil {
				ctx, cancel := context.WithTimeout(d.ctx, d.cfg.RelayCheckInterval)
				sess.Lookup(ctx, p.id)
				cancel()
			}
		}
		cur := rp.sp.session()
		best, bestSess := d.bestSuperPeer(p)
		if cur == nil || best == nil || best == rp.sp {
			continue
		}
		now, better := p.relayCost(rp.sp, cur), p.relayCost(best, bestSess)
		if better >= time.Duration(float64(now)*relayMoveRatio)-relayMoveMargin {
			continue
		}
		d.log.Debug("moving relay", zap.String("peer", p.id.Short()), zap.String("from", rp.sp.url), zap.String("to", best.url),
			zap.Duration("from_rtt", now), zap.Duration("to_rtt", better))
		ctx, cancel := context.WithTimeout(d.ctx, d.cfg.RelayDialTimeout)
		if _, err := bestSess.Introduce(ctx, p.id, true); err == nil {
			d.dialRelay(ctx, p, best, bestSess)
		}
		cancel()
	}
}
