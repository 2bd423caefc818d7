package peer

// Relay nodes: a relay between devices registered at different nodes of
// a cluster (docs/CLUSTER.md, "Relays"). A relay runs on one node,
// between two legs registered there, never forwarded between nodes. A
// super peer that introduces a peer through its cluster names the node
// that holds it (rendezvous.Candidates.RelayNode, CapRelayNode); that
// node is where a relay to the peer can meet, and the super peer that
// named it is not (its leg would wait for a peer that never comes).
//
// The one relay rule (bestSuperPeer) chooses among the device's super
// peers that hold the peer and the peer's relay node: when the peer has
// one, the device registers there (a super peer of its own, the relay
// node, registered for relays only so that the node neither introduces
// it nor lets it replace the device's own session there, which a
// failover may bring to the same node; for the life of the relay:
// ensureRelay holds it, and
// settleRelayNode drops it once no relay to the peer runs through it or
// is being opened), asks it for the relay (FlagRelay, which reaches the
// peer's own session there), and opens its leg on that session.
//
// A super peer may name any URL, so the device trusts none: a node must
// pass rendezvous.CheckRelayNode; it is dialled with the device's usual
// TLS verification (Config.RootCAs); each peer holds at most one; the
// device holds at most maxRelayNodes, and opens new ones at
// relayNodeRate; one named by a configured super peer is that super
// peer.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/netsody/superpeer/rendezvous"
)

// errRelayElsewhere: the super peer asked for a relay named another node
// as the peer's, so the relay meets there.
var errRelayElsewhere = errors.New("peer: the peer is registered at another node of the super peer's cluster")

// relayNodes are the device's relay nodes, each held by the peers whose
// relays need it.
type relayNodes struct {
	// mu guards the rest. It is taken with no other lock of the
	// device's held, and none is taken under it.
	mu     sync.Mutex
	byURL  map[string]*relayNodeHold
	byPeer map[*peerState]*relayNodeHold
	pace   *rate.Limiter // new relay nodes
	closed bool          // the device closes: no new one
}

// relayNodeHold is one relay node and the peers that hold it.
type relayNodeHold struct {
	sp    *superPeer
	peers map[*peerState]struct{}
}

func (r *relayNodes) init() {
	r.byURL = make(map[string]*relayNodeHold)
	r.byPeer = make(map[*peerState]*relayNodeHold)
	r.pace = rate.NewLimiter(relayNodeRate, relayNodeBurst)
}

// relayNodeFor makes p hold the relay node at url, in place of any other
// it holds, and returns it: a configured super peer of that URL, one
// that p or another peer holds already, or a new one, started.
func (d *Device) relayNodeFor(p *peerState, url string) (*superPeer, error) {
	if err := rendezvous.CheckRelayNode(url); err != nil {
		return nil, err
	}
	for _, sp := range d.sps {
		if sp.url == url {
			return sp, nil
		}
	}
	r := &d.relayNodes
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errors.New("peer: device closed")
	}
	if h := r.byPeer[p]; h != nil && h.sp.url == url {
		r.mu.Unlock()
		return h.sp, nil
	}
	h := r.byURL[url]
	start := false
	if h == nil {
		switch {
		case len(r.byURL) >= maxRelayNodes:
			r.mu.Unlock()
			return nil, fmt.Errorf("peer: %d relay nodes held already, at most %d", len(r.byURL), maxRelayNodes)
		case !r.pace.Allow():
			r.mu.Unlock()
			return nil, fmt.Errorf("peer: relay node %s not dialled: new relay nodes are paced at %d a second", url, relayNodeRate)
		}
		h = &relayNodeHold{sp: makeSuperPeer(d, url, true), peers: make(map[*peerState]struct{})}
		r.byURL[url] = h
		start = true
	}
	dropped := r.releaseLocked(p)
	h.peers[p] = struct{}{}
	r.byPeer[p] = h
	r.mu.Unlock()
	d.closeRelayNode(dropped)
	if start {
		d.log.Debug("relay node", zap.String("url", url), zap.String("peer", p.id.Short()))
		d.goRun(h.sp.run)
	}
	return h.sp, nil
}

// releaseLocked lets p's relay node go, and returns it if no peer holds
// it any more, for the caller to close outside r.mu.
func (r *relayNodes) releaseLocked(p *peerState) *superPeer {
	h := r.byPeer[p]
	if h == nil {
		return nil
	}
	delete(r.byPeer, p)
	delete(h.peers, p)
	if len(h.peers) > 0 {
		return nil
	}
	delete(r.byURL, h.sp.url)
	return h.sp
}

// closeRelayNode closes a relay node no peer holds (nil: none).
func (d *Device) closeRelayNode(sp *superPeer) {
	if sp == nil {
		return
	}
	d.log.Debug("relay node dropped", zap.String("url", sp.url))
	sp.close()
	sp.changed()
}

// relayNodeOf returns the relay node p holds, or nil.
func (d *Device) relayNodeOf(p *peerState) *superPeer {
	r := &d.relayNodes
	r.mu.Lock()
	defer r.mu.Unlock()
	if h := r.byPeer[p]; h != nil {
		return h.sp
	}
	return nil
}

// settleRelayNode lets p's relay node go unless a relay to p runs
// through it or is being opened (ensureRelay), or p is forgotten.
func (d *Device) settleRelayNode(p *peerState) {
	p.mu.Lock()
	keep := !p.life.gone && (p.relayCtl.dialing || p.paths.relay != nil && p.paths.relay.sp.relayNode)
	p.mu.Unlock()
	if keep {
		return
	}
	r := &d.relayNodes
	r.mu.Lock()
	dropped := r.releaseLocked(p)
	r.mu.Unlock()
	d.closeRelayNode(dropped)
}

// closeRelayNodes closes every relay node, as the device closes.
func (d *Device) closeRelayNodes() {
	r := &d.relayNodes
	r.mu.Lock()
	r.closed = true
	var sps []*superPeer
	for _, h := range r.byURL {
		sps = append(sps, h.sp)
	}
	clear(r.byURL)
	clear(r.byPeer)
	r.mu.Unlock()
	for _, sp := range sps {
		sp.close()
	}
}

// relayNodeStatus is the relay nodes' entries of Status.SuperPeers, in
// URL order.
func (d *Device) relayNodeStatus() []SuperPeerStatus {
	r := &d.relayNodes
	r.mu.Lock()
	sps := make([]*superPeer, 0, len(r.byURL))
	for _, h := range r.byURL {
		sps = append(sps, h.sp)
	}
	r.mu.Unlock()
	slices.SortFunc(sps, func(a, b *superPeer) int { return strings.Compare(a.url, b.url) })
	out := make([]SuperPeerStatus, 0, len(sps))
	for _, sp := range sps {
		out = append(out, sp.status())
	}
	return out
}

// relayNodeHolders are the peers that hold the relay node sp, for its
// status (SuperPeerStatus.ForPeers): their peer IDs in order,
// comma-separated.
func (d *Device) relayNodeHolders(sp *superPeer) string {
	r := &d.relayNodes
	r.mu.Lock()
	var ids []string
	if h := r.byURL[sp.url]; h != nil && h.sp == sp {
		for p := range h.peers {
			ids = append(ids, p.id.String())
		}
	}
	r.mu.Unlock()
	slices.Sort(ids)
	return strings.Join(ids, ",")
}

// reachRelayNode registers at the peer's relay node, if a super peer
// named one, and waits up to RelayDialTimeout for the session there, so
// that the relay rule can weigh it.
func (d *Device) reachRelayNode(p *peerState) {
	node, rtt := p.relayNode()
	if node == "" {
		return
	}
	sp, err := d.relayNodeFor(p, node)
	if err != nil {
		d.log.Debug("relay node", zap.String("peer", p.id.Short()), zap.String("url", node), zap.Error(err))
		return
	}
	if p.peerRTT(sp) == 0 {
		p.setPeerRTT(sp, rtt) // as the node told the super peer, until it tells this device
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.RelayDialTimeout)
	defer cancel()
	sp.wait(ctx)
}

// setRelayNode records what sp said of where p is registered: at
// another node of its cluster (node, with p's RTT to that node), or at
// sp itself (node "").
func (p *peerState) setRelayNode(sp *superPeer, node string, rtt time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := &p.relayCtl
	if node == "" {
		delete(c.elsewhere, sp)
		if len(c.elsewhere) == 0 {
			c.node, c.nodeRTT = "", 0
		}
		return
	}
	if c.elsewhere == nil {
		c.elsewhere = make(map[*superPeer]string)
	}
	c.elsewhere[sp] = node
	c.node, c.nodeRTT = node, rtt
}

// relayNode is the node a super peer last named as p's, or "".
func (p *peerState) relayNode() (string, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.relayCtl.node, p.relayCtl.nodeRTT
}

// elsewhere reports whether sp said that p is registered at another
// node: no relay to p meets at sp.
func (p *peerState) elsewhere(sp *superPeer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.relayCtl.elsewhere[sp] != ""
}
