package peer

// What strangers may cost a device. Anyone can send it UDP, and anyone
// can have a super peer introduce them (issue 10's first part will add
// consent before addresses): so the device paces what it sends to
// addresses that never answered (punch.go, dueLocked), punches only
// address classes it can vouch for (addrclass.go), checks signatures
// only for senders it has state for and at a bounded rate per source
// (verifylimit.go), and bounds the peers it tracks and the introductions
// of new ones it takes.

import (
	"net"
	"net/netip"
	"sync/atomic"

	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/netsody/superpeer/identity"
)

// guard is the device's share of those bounds.
type guard struct {
	punchPace   *rate.Limiter // pings to addresses that never answered, device-wide
	verify      *verifyLimit  // punch signatures checked, per source
	intros      *rate.Limiter // introductions of new peers
	prefixes    atomic.Pointer[[]netip.Prefix]
	viaLoopback atomic.Bool // some super peer is reached over loopback

	verified      atomic.Uint64 // punch signatures checked
	introsDropped atomic.Uint64 // introductions dropped: rate or table full
}

func (g *guard) init(cfg Config) {
	g.punchPace = rate.NewLimiter(rate.Limit(cfg.PunchRate), punchBurst)
	g.verify = newVerifyLimit()
	g.intros = rate.NewLimiter(rate.Limit(cfg.IntroductionRate), introductionBurst)
	ps := localPrefixes()
	g.prefixes.Store(&ps)
}

// scopeVia is where the device stands for candidates from a super peer
// it reaches over loopback or not.
func (g *guard) scopeVia(loopback bool) punchScope {
	s := punchScope{loopback: loopback}
	if ps := g.prefixes.Load(); ps != nil {
		s.local = *ps
	}
	return s
}

// scopeReflexive is where the device stands for a peer-reflexive
// address: loopback counts when any super peer is reached over it.
func (g *guard) scopeReflexive() punchScope { return g.scopeVia(g.viaLoopback.Load()) }

func isLoopbackHostPort(hostport string) bool {
	ap, err := netip.ParseAddrPort(hostport)
	if err != nil {
		host, _, _ := net.SplitHostPort(hostport)
		return host == "localhost"
	}
	return ap.Addr().Unmap().IsLoopback()
}

// introducedPeer is the state of a peer a super peer introduced: the one
// there is, or a new one when an introduction of a new peer is due
// (IntroductionRate) and the table has room (MaxPeers), after
// forgetting the peer idle longest if it must. It returns nil when the
// introduction is dropped, and counts and logs it, or when the device
// no longer accepts the peer.
func (d *Device) introducedPeer(id identity.PeerID) *peerState {
	if id == d.id {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.peers[id]; p != nil {
		return p
	}
	// Again under d.mu, which Revoke takes after changing the policy: a
	// Revoke since the caller's check either declines here or finds the
	// peer made and forgets it.
	if !d.policy.accepts(id) {
		d.policy.refused(id)
		return nil
	}
	why := ""
	switch {
	case !d.intros.Allow():
		why = "introductions of new peers come faster than IntroductionRate"
	case len(d.peers) >= d.cfg.MaxPeers && !d.forgetIdlestLocked():
		why = "MaxPeers peers, all with connections"
	}
	if why != "" {
		if n := d.introsDropped.Add(1); n&(n-1) == 0 { // the 1st, 2nd, 4th, ...: a flood logs little
			d.log.Warn("introduction dropped", zap.String("peer", id.Short()), zap.String("why", why), zap.Uint64("dropped", n))
		}
		return nil
	}
	return d.newPeerLocked(id)
}

// forgetIdlestLocked forgets the peer without connections that was used
// longest ago, and reports whether there was one.
func (d *Device) forgetIdlestLocked() bool {
	var idlest *peerState
	var since int64
	for _, p := range d.peers {
		p.mu.Lock()
		idle, used := len(p.life.conns) == 0, p.life.lastUsed.UnixNano()
		p.mu.Unlock()
		if idle && (idlest == nil || used < since) {
			idlest, since = p, used
		}
	}
	if idlest == nil || !idlest.forgetIfIdle(-1) {
		return false
	}
	delete(d.peers, idlest.id)
	return true
}
