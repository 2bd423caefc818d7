package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

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
	sps  []*superPeer // Config.SuperPeers, fixed at New
	// relayNodes are the super peers held for relays to peers at other
	// nodes of a cluster (relaynode.go), added and dropped as they go.
	relayNodes relayNodes

	ctx       context.Context
	cancel    context.CancelFunc
	closed    chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup // every goroutine of the device's (goRun)

	// Lock order: mu before peerState.mu before sock.mu. relayNodes.mu
	// and superPeer.mu are taken with none of these held.
	mu         sync.Mutex // guards peers and lastPinged
	peers      map[identity.PeerID]*peerState
	lastPinged time.Time // pingSuperPeers

	guard // what strangers may cost (guard.go)

	policy policy // which peers the device accepts (policy.go)

	mapping mappingState // its NAT's mapping behaviour (mapping.go)

	events hub // the Watchers of the device's events (events.go)

	// raceHook, if set, is called at the points named by the hook*
	// constants: the package's tests force races with it. Set before
	// the device is used.
	raceHook func(at string, peer identity.PeerID)
}

// The points where raceHook is called.
const (
	hookAccepted   = "onCandidates: the policy accepts the peer"
	hookCreated    = "onCandidates: the peer's state is made"
	hookJoining    = "joinRelay: before the relay is dialled"
	hookDialling   = "dialRelay: a relay leg is dialled"
	hookRelayEnded = "readRelay: a leg ended, and any relay opened in its place is dialled"
	hookAdmitted   = "Accept: the listener admitted the peer's handshake"
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
	d.mapping.init()
	d.relayNodes.init()
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
		d.sps = append(d.sps, makeSuperPeer(d, u, false))
	}
	d.startCallbacks()
	d.goRun(d.forgetIdlePeers)
	d.goRun(d.watchLocalAddrs)
	d.goRun(d.mappingLoop)
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
	p.setPeerNAT(c.PeerNAT.Mapping)
	p.setRelayNode(sp, c.RelayNode, c.PeerRTT)
	p.addCandidates(c.All(), true, d.scopeVia(spLoopback))
	if c.Relay && !c.Initiator {
		d.goRun(func() { d.joinRelay(p, sp) })
	}
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
	d.closeRelayNodes()
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
