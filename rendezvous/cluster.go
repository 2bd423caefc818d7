package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netsody/superpeer/identity"
)

// A cluster: many super peers (nodes) behind one name that share their
// devices (docs/CLUSTER.md). The server looks a target up among its own
// devices, else through its Cluster, which carries the introduction to
// the node holding the target; without one (the default) a server is a
// single super peer, exactly as before. Package cluster implements
// Cluster over NATS.
//
//	asker's node                               target's node
//	handleConnect: target not here
//	  askClusterLocked (a timer, as a request) ──▶ IntroduceFromCluster
//	                                               FrameRequest to the target
//	                                               FrameAnswer: accepted
//	  clusterAnswered ◀── ClusterAccepted, target's candidates;
//	  FrameCandidates to the asker                 FrameCandidates to the target
//
// The asker's limits stay at its node (ConnectRate, LookupRate, its
// waiting lookups); the target's at the target's, which every
// introduction for it reaches, so that they hold across the cluster
// (IntroductionRate, the requests waiting for its answer). With
// HidePresence, the asker's node delays a failed lookup as for a local
// one. The consent outcome alone crosses: a decline, a timeout and a
// departed target are all ClusterNotFound.
//
// A relay runs on one node, never forwarded between nodes: FlagRelay is
// cleared on both sides of a cross-node introduction, since a relay leg
// rides a connection registered at the node that relays, which the
// other device does not hold. Instead each device that announced
// CapRelayNode learns the other's node (Candidates.RelayNode): the
// asker the target's, the target the asker's. A device that relays
// registers at that node for the life of the relay, for relays only
// (Register.RelayOnly: never joined nor introduced, so that every
// introduction for a device reaches its one ordinary session and the
// target's limits hold across the cluster), and asks for it there,
// where both legs meet (docs/CLUSTER.md, "Relays").

// Cluster is how a Server reaches devices registered at the other nodes
// of its cluster. Its methods may be called from any goroutine.
type Cluster interface {
	// Join makes peer reachable through the cluster, for the life of
	// its session here; leave withdraws it. Join must not wait for the
	// network.
	Join(peer identity.PeerID) (leave func())
	// Introduce asks the node that holds req.Target to introduce
	// req.Asker to it, and waits for its answer or ctx's end. An error
	// that wraps ErrClusterUnavailable says that the cluster could not
	// be asked; ctx's error, that no node answered in time.
	Introduce(ctx context.Context, req ClusterRequest) (ClusterAnswer, error)
}

// ErrClusterUnavailable is what Cluster.Introduce wraps when it cannot
// ask the rest of the cluster (its connection to it is down).
var ErrClusterUnavailable = errors.New("rendezvous: the rest of the cluster cannot be reached")

// ClusterRequest is an introduction that one node asks of another.
type ClusterRequest struct {
	Target identity.PeerID
	// Asker is how to reach the asking device (Asker.Peer), as its node
	// sees it, with the NAT mapping it reported (PeerNAT; the target's
	// node passes it on only to a device that reads it); the flags are
	// not used.
	Asker Candidates
	// Relay is FrameConnect's FlagRelay (not acted on: see above).
	Relay bool
	// Node is the asking node's public URL (the cluster's url option),
	// which the target learns as the asker's RelayNode; "" if none.
	Node string
}

// ClusterStatus is what became of a ClusterRequest.
type ClusterStatus int

const (
	// ClusterNotFound: the target is not registered at the node, or it
	// declined, did not answer, or left: one answer for all of them.
	ClusterNotFound ClusterStatus = iota
	// ClusterAccepted: the target accepted, and has the asker's
	// candidates; ClusterAnswer.Target holds its own.
	ClusterAccepted
	// ClusterBusy: the target, or the node, is at a limit; Reason says
	// which, for the device.
	ClusterBusy
)

// ClusterAnswer answers a ClusterRequest.
type ClusterAnswer struct {
	Status ClusterStatus
	Target Candidates // with ClusterAccepted: how to reach the target
	Reason string     // with ClusterBusy: why, in words for the device
	// Node is the answering node's public URL, which the asker learns as
	// the target's RelayNode; "" if none.
	Node string
}

// CheckRelayNode reports whether u may be named as a relay node
// (Candidates.RelayNode): an https URL of at most MaxRelayNodeURL bytes
// that names a host (and perhaps a port), and nothing else. Both ends
// check it: a super peer before it names a node, a device before it
// dials one.
func CheckRelayNode(u string) error {
	if len(u) == 0 || len(u) > MaxRelayNodeURL {
		return fmt.Errorf("a relay node URL of %d bytes, 1 to %d allowed", len(u), MaxRelayNodeURL)
	}
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("the relay node %q is not a URL", u)
	}
	if p.Scheme != "https" || p.Host == "" || p.Hostname() == "" || p.User != nil || p.Opaque != "" ||
		(p.Path != "" && p.Path != "/") || p.RawQuery != "" || p.Fragment != "" {
		return fmt.Errorf("the relay node %q is not https://host[:port]", u)
	}
	return nil
}

// relayNodeFor is node as what a device that announced caps may be
// told of its peer's node: "" if it did not announce CapRelayNode, or if
// node is not a URL a device may be named (CheckRelayNode).
func relayNodeFor(caps Capabilities, node string) string {
	if !caps.Has(CapRelayNode) || CheckRelayNode(node) != nil {
		return ""
	}
	return node
}

// msgClusterUnavailable is the refusal when the rest of the cluster
// cannot be asked: this node serves its own devices still.
const msgClusterUnavailable = "this super peer cannot reach the rest of its cluster now, where the peer may be registered; retry later"

// clusterState is the server's cluster, with what it holds.
type clusterState struct {
	mu sync.Mutex // guards c; taken before any session's mu
	c  Cluster

	outbound sync.WaitGroup // running askCluster goroutines
	inFlight int            // guarded by Server.consent.mu: requests asked of other nodes
	// spender is c, if it shares introduction budgets (ClusterSpender);
	// read without a lock on the paths that spend one.
	spender atomic.Pointer[spenderRef]
}

// ClusterSpender is a Cluster that shares the introduction budget of a
// device registered at several of its nodes (an operator's list naming
// two nodes): each node that spends one of the device's introductions
// tells the others (Spent), which spend it too (SpentInCluster), so
// that the device's introduction rate (IntroductionRate and its burst)
// holds across the cluster, not per node. Spent must not wait for the
// network.
type ClusterSpender interface {
	Spent(peer identity.PeerID)
}

type spenderRef struct{ s ClusterSpender }

// allowIntro spends one of the device's introductions, if its rate has
// one left, and tells the other nodes of the cluster that may hold it.
func (s *session) allowIntro() bool {
	if !s.intros.Allow() {
		return false
	}
	if ref := s.srv.cluster.spender.Load(); ref != nil {
		ref.s.Spent(s.peer)
	}
	return true
}

// SpentInCluster spends one of peer's introductions here because
// another node of the cluster spent one (ClusterSpender): the budget is
// the device's, wherever it is asked for. Nothing if the peer is not
// registered here, or its budget is spent already.
func (srv *Server) SpentInCluster(peer identity.PeerID) {
	if t := srv.lookup(peer); t != nil {
		t.intros.Allow()
	}
}

// SetCluster makes c the server's cluster (nil: none) and moves every
// registered device to it: it joins c, and leaves the cluster it was in.
// A config reload that keeps the cluster's options keeps its Cluster and
// so calls nothing.
func (srv *Server) SetCluster(c Cluster) {
	srv.cluster.mu.Lock()
	srv.cluster.c = c
	if sp, ok := c.(ClusterSpender); ok {
		srv.cluster.spender.Store(&spenderRef{sp})
	} else {
		srv.cluster.spender.Store(nil)
	}
	srv.mu.Lock()
	registered := make([]*session, 0, len(srv.byPeer))
	for _, sess := range srv.byPeer {
		registered = append(registered, sess)
	}
	srv.mu.Unlock()
	for _, sess := range registered {
		sess.joinClusterLocked(c)
	}
	srv.cluster.mu.Unlock()
}

// Cluster returns the server's cluster, or nil.
func (srv *Server) Cluster() Cluster {
	srv.cluster.mu.Lock()
	defer srv.cluster.mu.Unlock()
	return srv.cluster.c
}

// joinCluster makes the registered session's device reachable through
// the server's cluster, if any.
func (s *session) joinCluster() {
	s.srv.cluster.mu.Lock()
	defer s.srv.cluster.mu.Unlock()
	if s.srv.cluster.c != nil {
		s.joinClusterLocked(s.srv.cluster.c)
	}
}

// joinClusterLocked joins c (nil: none), and leaves what the session
// joined before. A session that ended joins nothing.
func (s *session) joinClusterLocked(c Cluster) {
	var leave func()
	if c != nil {
		leave = c.Join(s.peer)
	}
	s.mu.Lock()
	if s.leftCluster {
		s.mu.Unlock()
		if leave != nil {
			leave()
		}
		return
	}
	old := s.leave
	s.leave = leave
	s.mu.Unlock()
	if old != nil {
		old()
	}
}

// leaveCluster withdraws the ended session's device from the cluster.
func (s *session) leaveCluster() {
	s.srv.cluster.mu.Lock()
	defer s.srv.cluster.mu.Unlock()
	s.mu.Lock()
	s.leftCluster = true
	leave := s.leave
	s.leave = nil
	s.mu.Unlock()
	if leave != nil {
		leave()
	}
}

// askClusterLocked asks the cluster for a's target, not registered here,
// on a goroutine that ends with the answer, the request's timeout or the
// session; like a consent request, a counts among its asker's waiting
// lookups meanwhile, and a connect joins it. It returns a frame to send
// now if the cluster cannot be asked.
func (s *session) askClusterLocked(a *ask, cl Cluster, relay bool, now time.Time, cfg *Config) []byte {
	srv := s.srv
	if srv.cluster.inFlight >= maxClusterRequests {
		srv.stats.ClusterBusy.Add(1)
		srv.stats.Refused[ErrCodeRateLimited].Add(1)
		return (&Error{Code: ErrCodeRateLimited, Peer: a.peer, Message: "this super peer has too many introductions waiting for other nodes of its cluster; retry in a moment"}).frame()
	}
	srv.cluster.inFlight++
	timeout := cfg.ConsentTimeout + clusterReplyMargin
	a.relay, a.since = relay, now
	srv.consent.afterLocked(a, timeout, func() {
		srv.stats.ClusterTimeouts.Add(1)
		a.limiter.Allow() // a failed lookup
	})
	t := a.timer
	ctx, cancel := context.WithTimeout(s.reg.Context(), timeout)
	srv.cluster.outbound.Add(1)
	srv.stats.ClusterAsked.Add(1)
	go func() {
		defer srv.cluster.outbound.Done()
		defer cancel()
		ans, err := cl.Introduce(ctx, ClusterRequest{Target: a.peer, Asker: s.candidates(), Relay: relay})
		s.clusterAnswered(a, t, ans, err)
	}()
	return nil
}

// clusterAnswered acts on the cluster's answer to a's request, unless a
// was answered already (its timer fired, or the session ended).
func (s *session) clusterAnswered(a *ask, t *time.Timer, ans ClusterAnswer, err error) {
	srv := s.srv
	cfg := srv.config()
	c := &srv.consent
	c.mu.Lock()
	srv.cluster.inFlight--
	if a.timer != t {
		c.mu.Unlock()
		return
	}
	c.stopLocked(a)
	var f []byte
	switch {
	case errors.Is(err, ErrClusterUnavailable):
		srv.stats.ClusterUnavailable.Add(1)
		srv.stats.Refused[ErrCodeRateLimited].Add(1)
		f = (&Error{Code: ErrCodeRateLimited, Peer: a.peer, Message: msgClusterUnavailable}).frame()
	case err != nil:
		// No node answered in time: a hung node, or a request lost.
		srv.stats.ClusterTimeouts.Add(1)
		f = c.unavailableLocked(a, a.since, cfg)
	case ans.Status == ClusterAccepted && ans.Target.Peer == a.peer:
		theirs := s.readable(ans.Target)
		theirs.Initiator, theirs.Relay = true, false
		theirs.RelayNode = relayNodeFor(s.proto.Capabilities, ans.Node)
		f = theirs.frame()
		srv.stats.Connects.Add(1)
	case ans.Status == ClusterBusy && !cfg.HidePresence:
		a.limiter.AllowN(time.Now(), 1) // a failed lookup
		srv.stats.Refused[ErrCodeRateLimited].Add(1)
		f = (&Error{Code: ErrCodeRateLimited, Peer: a.peer, Message: cutUTF8(ans.Reason, MaxErrorMessage)}).frame()
	default:
		f = c.unavailableLocked(a, a.since, cfg)
	}
	c.mu.Unlock()
	s.sendNow(f)
}

// remoteAsk is the part of an ask whose asker is at another node
// (ask.remote): the asker's candidates, and how to answer its node.
type remoteAsk struct {
	cands Candidates
	reply func(ClusterAnswer)
	timer *time.Timer // the request's deadline
}

// IntroduceFromCluster serves an introduction that another node asks
// for (Cluster implementations call it): reply is called once, with the
// answer, now or when the target has answered. It never waits. The
// target's limits apply as to a local asker's connect.
func (srv *Server) IntroduceFromCluster(req ClusterRequest, reply func(ClusterAnswer)) {
	asker := req.Asker.Peer
	if asker.IsZero() || asker.Validate() != nil || asker == req.Target || checkAddrs(req.Asker.LocalAddrs) != nil {
		reply(ClusterAnswer{Status: ClusterBusy, Reason: "the asking node sent a request this node cannot serve"})
		return
	}
	req.Asker.Initiator, req.Asker.Relay = false, false
	srv.stats.ClusterServed.Add(1)
	target := srv.lookup(req.Target)
	if target == nil {
		reply(ClusterAnswer{})
		return
	}
	req.Asker.RelayNode = relayNodeFor(target.proto.Capabilities, req.Node)
	cfg := srv.config()
	c := &srv.consent
	c.mu.Lock()
	busy := ""
	switch {
	case target.consentClosed || cfg.RequireConsent && !target.proto.Capabilities.Has(CapConsent):
		c.mu.Unlock()
		reply(ClusterAnswer{})
		return
	case !target.proto.Capabilities.Has(CapConsent):
		c.mu.Unlock()
		srv.introduceRemoteAtOnce(target, req.Asker, reply)
		return
	case target.asked[asker] != nil:
		busy = "the peer has a request from this device waiting for its answer already; retry in a moment"
	case !target.allowIntro():
		srv.stats.IntroductionsLimited.Add(1)
		busy = "the peer is asked for by too many devices now; retry in a moment"
	case len(target.asked) >= target.pendingSlotsLocked() || c.pending >= maxPending:
		srv.stats.ConsentBusy.Add(1)
		busy = "the peer has too many requests waiting for its answer; retry in a moment"
	default:
		switch target.out.offer(asker, (&Request{Peer: asker}).frame()) {
		case offerDropped:
			srv.stats.IntroductionsDropped.Add(1)
			busy = "the peer is not taking its frames now; retry in a moment"
		case offerCoalesced:
			srv.stats.IntroductionsCoalesced.Add(1)
		}
	}
	if busy != "" {
		c.mu.Unlock()
		reply(ClusterAnswer{Status: ClusterBusy, Reason: busy})
		return
	}
	a := &ask{peer: req.Target, target: target, since: time.Now(), remote: &remoteAsk{cands: req.Asker, reply: reply}}
	if target.asked == nil {
		target.asked = make(map[identity.PeerID]*ask)
	}
	target.asked[asker] = a
	c.pending++
	a.remote.timer = time.AfterFunc(cfg.ConsentTimeout, func() {
		c.mu.Lock()
		if a.target == nil { // answered, or the target left
			c.mu.Unlock()
			return
		}
		srv.stats.ConsentTimeouts.Add(1)
		target.silent++
		c.dropLocked(a)
		c.mu.Unlock()
		reply(ClusterAnswer{})
	})
	srv.stats.ConsentRequests.Add(1)
	c.mu.Unlock()
}

// introduceRemoteAtOnce introduces a device at another node to target,
// which does not ask for consent: the asker's candidates to target, its
// own to the asker's node.
func (srv *Server) introduceRemoteAtOnce(target *session, asker Candidates, reply func(ClusterAnswer)) {
	if !target.allowIntro() {
		srv.stats.IntroductionsLimited.Add(1)
		reply(ClusterAnswer{Status: ClusterBusy, Reason: "the peer is asked for by too many devices now; retry in a moment"})
		return
	}
	asker = target.readable(asker)
	switch target.out.offer(asker.Peer, asker.frame()) {
	case offerDropped:
		srv.stats.IntroductionsDropped.Add(1)
		reply(ClusterAnswer{Status: ClusterBusy, Reason: "the peer is not taking its frames now; retry in a moment"})
		return
	case offerCoalesced:
		srv.stats.IntroductionsCoalesced.Add(1)
	}
	reply(ClusterAnswer{Status: ClusterAccepted, Target: target.candidates()})
	srv.stats.Connects.Add(1)
}

// answerRemote acts on the device's answer to a request from another
// node's device, a, already dropped: on accept the asking node gets the
// device's candidates, and the device the asker's, back to back.
func (s *session) answerRemote(a *ask, accept bool) {
	if !accept {
		s.srv.stats.ConsentDeclined.Add(1)
		a.remote.reply(ClusterAnswer{})
		return
	}
	s.srv.stats.ConsentAccepted.Add(1)
	a.remote.reply(ClusterAnswer{Status: ClusterAccepted, Target: s.candidates()})
	cands := s.readable(a.remote.cands)
	s.send(cands.frame())
	s.srv.stats.Connects.Add(1)
}

// from is the asker's peer ID, at this node or another.
func (a *ask) from() identity.PeerID {
	if a.remote != nil {
		return a.remote.cands.Peer
	}
	return a.asker.peer
}
