// Package cluster makes many super peers behind one name (nodes) share
// their devices through NATS: it implements rendezvous.Cluster. A node
// subscribes to a subject per device it holds, for the life of the
// device's session; an introduction for a device at another node is a
// NATS request to that subject, which the node holding the device serves
// (rendezvous.Server.IntroduceFromCluster). It knows nothing of Caddy;
// docs/CLUSTER.md has the design, the messages (message.go), the trust
// model and the limits (constants below).
package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"go.uber.org/zap"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

// Limits and timings, each with its reason (docs/CLUSTER.md, "Limits").
const (
	// maxMessage is the largest request or reply, in bytes: a request
	// with 16 IPv6 local addresses takes under 1.5 KiB.
	maxMessage = 4 << 10
	// maxNodeID is the longest node ID a request may carry.
	maxNodeID = 64
	// maxInbound bounds the requests of other nodes that this node holds
	// (waiting for its devices' consent), in all: each is an ask and a
	// NATS message, about 2 KiB.
	maxInbound = 4096
	// maxInboundPerNode bounds those from one asking node, so that one
	// node (buggy, or compromised) cannot take the rest.
	maxInboundPerNode = 1024
	// inboundQueue is how many received requests wait for a worker; NATS
	// drops more (a slow consumer, counted), and their askers time out.
	inboundQueue = 1024
	// inboundWorkers handle received requests: handling never waits (a
	// consent's wait is a timer), so a few keep up with many nodes.
	inboundWorkers = 4
	// pingInterval and maxPingsOutstanding notice a hung connection to
	// NATS within about three intervals, not the client's default two
	// minutes.
	pingInterval        = 2 * time.Second
	maxPingsOutstanding = 2
	// reconnectWait is the pause between reconnection attempts; nats.go
	// adds jitter, and retries forever.
	reconnectWait = time.Second
	// dialTimeout bounds one connection attempt to a NATS server.
	dialTimeout = 2 * time.Second
	// reconnectBuffer bounds what is kept for NATS while reconnecting
	// (subscriptions of devices that register meanwhile): requests are
	// refused then, not buffered.
	reconnectBuffer = 1 << 20
	// restoreGrace is how long after this node reconnects to NATS "no
	// responders" means "retry later", not "not found" (and so does "not
	// found", which must look alike to the device): the other nodes
	// reconnect within about reconnectWait of it (a NATS server's
	// restart drops them all) and resubscribe their devices as they do,
	// so for a moment a device that is registered may have no subscriber.
	restoreGrace = 5 * time.Second
)

// Options configure a node's cluster.
type Options struct {
	// Name is the cluster's name: nodes of one cluster share it, and it
	// is part of every subject ([A-Za-z0-9_-], 1 to 64 characters).
	Name string
	// URL is this node's own public URL (https://sp-3.example.com), which
	// it names to other nodes.
	URL string
	// Servers are the NATS URLs (nats://, tls://).
	Servers []string
	// Credentials is a NATS credentials file (a user JWT and its seed).
	Credentials string
	// User and Password, or Token, authenticate without credentials.
	User, Password, Token string
	// TLS, if set, is used for the connection to NATS (a CA, a client
	// certificate); tls:// URLs without it use the system's roots.
	TLS *tls.Config
	// Logger receives the node's logs; nil discards them.
	Logger *zap.Logger
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Validate reports options that cannot work, saying what to fix.
func (o *Options) Validate() error {
	if !nameRE.MatchString(o.Name) {
		return fmt.Errorf("cluster: the name %q must be 1 to 64 letters, digits, '-' or '_'", o.Name)
	}
	if !strings.HasPrefix(o.URL, "https://") {
		return fmt.Errorf("cluster: this node's url %q must be its public https:// URL", o.URL)
	}
	if len(o.Servers) == 0 {
		return errors.New("cluster: no NATS server URL given")
	}
	for _, s := range o.Servers {
		if !strings.HasPrefix(s, "nats://") && !strings.HasPrefix(s, "tls://") {
			return fmt.Errorf("cluster: the NATS URL %q must start with nats:// or tls://", s)
		}
	}
	if o.Token != "" && (o.User != "" || o.Credentials != "") {
		return errors.New("cluster: give a NATS token, or a user, or credentials, not several")
	}
	return nil
}

// Stats counts what a node did. Read it with Node.Stats.
type Stats struct {
	Joined        atomic.Int64  // devices reachable through this node now
	Requests      atomic.Uint64 // requests sent to other nodes
	NoResponders  atomic.Uint64 // of those, for devices no node holds
	Restoring     atomic.Uint64 // requests asked within restoreGrace of a reconnect that nobody answered, or that were answered not found: retry later
	Unavailable   atomic.Uint64 // requests not sent: NATS not connected, or failing
	BadReplies    atomic.Uint64 // replies that did not decode
	Served        atomic.Uint64 // requests of other nodes handled
	Refused       atomic.Uint64 // of those, refused over maxInbound or maxInboundPerNode
	BadRequests   atomic.Uint64 // requests that did not decode
	SlowConsumer  atomic.Uint64 // requests NATS dropped: inboundQueue was full
	Disconnects   atomic.Uint64
	Reconnects    atomic.Uint64
	InboundNow    atomic.Int64  // requests of other nodes held now
	SpentLost     atomic.Uint64 // introductions spent here that other nodes were not told of (NATS down)
	SpentHeard    atomic.Uint64 // introductions other nodes spent, heard here
	InboundLimits [2]int        // maxInbound, maxInboundPerNode in force, for metrics
}

// Local is the node's own rendezvous server, which serves other nodes'
// requests (rendezvous.Server implements it).
type Local interface {
	IntroduceFromCluster(req rendezvous.ClusterRequest, reply func(rendezvous.ClusterAnswer))
	// SpentInCluster spends one of the device's introductions that
	// another node spent (rendezvous.ClusterSpender).
	SpentInCluster(peer identity.PeerID)
}

// Node is this super peer's membership of a cluster. It implements
// rendezvous.Cluster.
type Node struct {
	opts    Options
	nc      *nats.Conn
	prefix  string // subject of a peer, less the peer ID
	id      string // this connection's node ID
	log     *zap.Logger
	inbox   chan *nats.Msg // shared by every subscription: no goroutine per device
	done    chan struct{}  // closed by Close: the workers stop
	workers sync.WaitGroup
	local   atomic.Pointer[localRef]
	stats   Stats
	// reconnectedAt is when the connection to NATS came back (Unix
	// nanoseconds; 0: never lost; reconnecting while it is away).
	reconnectedAt atomic.Int64

	maxInbound, maxPerNode int // maxInbound and maxInboundPerNode; tests lower them

	mu      sync.Mutex // guards the following
	inbound int
	byNode  map[string]int
	closed  bool
}

type localRef struct{ Local }

// Connect joins the cluster: it connects to NATS, and goes on trying in
// the background if no server answers now (the node serves its own
// devices meanwhile). Serve says which server answers other nodes.
func Connect(opts Options) (*Node, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	n := &Node{
		opts:       opts,
		prefix:     "netsody." + opts.Name + "." + subjectVersion + ".peer.",
		id:         nuid.Next(),
		log:        opts.Logger,
		inbox:      make(chan *nats.Msg, inboundQueue),
		done:       make(chan struct{}),
		byNode:     make(map[string]int),
		maxInbound: maxInbound,
		maxPerNode: maxInboundPerNode,
	}
	if n.log == nil {
		n.log = zap.NewNop()
	}
	n.stats.InboundLimits = [2]int{n.maxInbound, n.maxPerNode}
	nopts := []nats.Option{
		nats.Name("netsody " + opts.Name + " " + opts.URL),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOutstanding),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.Timeout(dialTimeout),
		nats.ReconnectBufSize(reconnectBuffer),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			n.reconnectedAt.Store(reconnecting)
			n.stats.Disconnects.Add(1)
			n.log.Warn("cluster: disconnected from NATS; introductions across nodes fail until it is back", zap.Error(err))
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			n.reconnectedAt.Store(time.Now().UnixNano())
			n.stats.Reconnects.Add(1)
			n.log.Info("cluster: connected to NATS", zap.String("server", c.ConnectedUrlRedacted()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				n.stats.SlowConsumer.Add(1)
				return
			}
			n.log.Warn("cluster: NATS error", zap.Error(err))
		}),
	}
	switch {
	case opts.Credentials != "":
		nopts = append(nopts, nats.UserCredentials(opts.Credentials))
	case opts.Token != "":
		nopts = append(nopts, nats.Token(opts.Token))
	}
	if opts.User != "" {
		nopts = append(nopts, nats.UserInfo(opts.User, opts.Password))
	}
	if opts.TLS != nil {
		nopts = append(nopts, nats.Secure(opts.TLS))
	}
	nc, err := nats.Connect(strings.Join(opts.Servers, ","), nopts...)
	if err != nil {
		return nil, fmt.Errorf("cluster: connecting to NATS: %w", err)
	}
	n.nc = nc
	for range inboundWorkers {
		n.workers.Add(1)
		go n.serve()
	}
	return n, nil
}

// Serve makes local answer other nodes' requests (nil: none, they are
// answered not found).
func (n *Node) Serve(local Local) {
	if local == nil {
		n.local.Store(nil)
		return
	}
	n.local.Store(&localRef{local})
}

// reconnecting is reconnectedAt from a disconnect until the reconnect
// handler runs (nats.go calls it a moment after the connection is back).
const reconnecting = -1

// restoring reports whether this node reconnected to NATS less than
// restoreGrace ago, or is reconnecting: a lookup nobody answers may be
// for a device whose node has not resubscribed yet.
func (n *Node) restoring() bool {
	at := n.reconnectedAt.Load()
	return at == reconnecting || at != 0 && time.Since(time.Unix(0, at)) < restoreGrace
}

// Stats returns the node's counters.
func (n *Node) Stats() *Stats { return &n.stats }

// Connected reports whether the node's connection to NATS is up.
func (n *Node) Connected() bool { return n.nc.IsConnected() }

// subject is the subject of peer's introductions.
func (n *Node) subject(peer identity.PeerID) string { return n.prefix + peer.String() }

// Join subscribes to peer's subject until leave.
func (n *Node) Join(peer identity.PeerID) (leave func()) {
	sub, err := n.nc.ChanSubscribe(n.subject(peer), n.inbox)
	if err != nil {
		n.log.Warn("cluster: cannot make a device reachable through the cluster", zap.String("peer", peer.Short()), zap.Error(err))
		return func() {}
	}
	n.stats.Joined.Add(1)
	var once sync.Once
	return func() {
		once.Do(func() {
			n.stats.Joined.Add(-1)
			sub.Unsubscribe() // fails only once the connection is closed, which dropped it
		})
	}
}

// Spent tells the other nodes that may hold peer that this node spent
// one of its introductions (rendezvous.ClusterSpender). A publish: it
// never waits, and nats.go drops it while disconnected (a budget shared
// a little less for that while).
func (n *Node) Spent(peer identity.PeerID) {
	data, err := json.Marshal(&spent{V: Version, Caps: capabilities, NodeID: n.id, Spent: 1})
	if err == nil && n.nc.IsConnected() {
		err = n.nc.Publish(n.subject(peer), data)
	}
	if err != nil {
		n.stats.SpentLost.Add(1)
	}
}

// Introduce asks the node that holds req.Target for an introduction.
func (n *Node) Introduce(ctx context.Context, req rendezvous.ClusterRequest) (rendezvous.ClusterAnswer, error) {
	if !n.nc.IsConnected() {
		n.stats.Unavailable.Add(1)
		return rendezvous.ClusterAnswer{}, fmt.Errorf("cluster: NATS is %s: %w", n.nc.Status(), rendezvous.ErrClusterUnavailable)
	}
	data, err := json.Marshal(&request{V: Version, Caps: capabilities, Node: n.opts.URL, NodeID: n.id, Asker: fromCandidates(req.Asker), Relay: req.Relay})
	if err != nil {
		return rendezvous.ClusterAnswer{}, err
	}
	n.stats.Requests.Add(1)
	restoring := n.restoring()
	msg, err := n.nc.RequestWithContext(ctx, n.subject(req.Target), data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		if restoring {
			return n.retryLater()
		}
		n.stats.NoResponders.Add(1)
		return rendezvous.ClusterAnswer{Status: rendezvous.ClusterNotFound}, nil
	case ctx.Err() != nil:
		return rendezvous.ClusterAnswer{}, ctx.Err()
	case err != nil:
		n.stats.Unavailable.Add(1)
		return rendezvous.ClusterAnswer{}, fmt.Errorf("cluster: %v: %w", err, rendezvous.ErrClusterUnavailable)
	}
	var r reply
	if err := r.decode(msg.Data); err != nil {
		n.stats.BadReplies.Add(1)
		n.log.Warn("cluster: a node's reply does not decode", zap.Error(err))
		return rendezvous.ClusterAnswer{Status: rendezvous.ClusterBusy, Reason: "the peer's node of this cluster answered what this node cannot read; retry later"}, nil
	}
	switch r.Status {
	case statusAccepted:
		return rendezvous.ClusterAnswer{Status: rendezvous.ClusterAccepted, Target: r.Target.rendezvous(r.Caps), Node: r.Node}, nil
	case statusBusy:
		return rendezvous.ClusterAnswer{Status: rendezvous.ClusterBusy, Reason: r.Reason}, nil
	}
	if restoring {
		// Answered as no responders are, or the grace would tell a
		// stranger a declining device (not found) from an absent one
		// (retry later).
		return n.retryLater()
	}
	return rendezvous.ClusterAnswer{Status: rendezvous.ClusterNotFound}, nil
}

// retryLater is Introduce's answer within restoreGrace of a reconnect to
// a request that found nobody: the device's node may not have
// resubscribed it yet. A busy node's answer, so that the asker's node
// treats it as any failed lookup that may be retried: it spends one of
// the pair's failed lookups (LookupRate), and with HidePresence it is
// answered as every failed lookup is.
func (n *Node) retryLater() (rendezvous.ClusterAnswer, error) {
	n.stats.Restoring.Add(1)
	return rendezvous.ClusterAnswer{Status: rendezvous.ClusterBusy, Reason: msgRestoring}, nil
}

// msgRestoring is retryLater's reason, for the device.
const msgRestoring = "this super peer reconnected to the rest of its cluster moments ago, where the peer may be registered; retry later"

// serve is one of inboundWorkers: it handles other nodes' requests until
// Close. (The inbox stays open: NATS may deliver to it while it closes.)
func (n *Node) serve() {
	defer n.workers.Done()
	for {
		select {
		case msg := <-n.inbox:
			n.handle(msg)
		case <-n.done:
			return
		}
	}
}

// handle serves one request: it holds it (within maxInbound and
// maxInboundPerNode) until the local server answers.
func (n *Node) handle(msg *nats.Msg) {
	target, err := identity.ParsePeerID(strings.TrimPrefix(msg.Subject, n.prefix))
	if msg.Reply == "" { // a publish, not a request: a budget spent elsewhere
		var m spent
		if err == nil {
			err = m.decode(msg.Data)
		}
		if err != nil {
			n.stats.BadRequests.Add(1)
			return
		}
		if local := n.local.Load(); local != nil && m.NodeID != n.id {
			n.stats.SpentHeard.Add(1)
			local.SpentInCluster(target)
		}
		return
	}
	var req request
	if err == nil {
		err = req.decode(msg.Data)
	}
	if err != nil {
		n.stats.BadRequests.Add(1)
		n.respond(msg, &reply{Status: statusBusy, Reason: "this node cannot read the request"})
		return
	}
	n.stats.Served.Add(1)
	local := n.local.Load()
	if local == nil {
		n.respond(msg, &reply{Status: statusNotFound})
		return
	}
	n.mu.Lock()
	if n.inbound >= n.maxInbound || n.byNode[req.NodeID] >= n.maxPerNode {
		n.mu.Unlock()
		n.stats.Refused.Add(1)
		n.respond(msg, &reply{Status: statusBusy, Reason: "the peer's node has too many introductions waiting now; retry in a moment"})
		return
	}
	n.inbound++
	n.byNode[req.NodeID]++
	n.mu.Unlock()
	n.stats.InboundNow.Add(1)
	var once sync.Once
	local.IntroduceFromCluster(rendezvous.ClusterRequest{Target: target, Asker: req.Asker.rendezvous(req.Caps), Relay: req.Relay, Node: req.Node}, func(a rendezvous.ClusterAnswer) {
		once.Do(func() {
			n.mu.Lock()
			n.inbound--
			if n.byNode[req.NodeID]--; n.byNode[req.NodeID] <= 0 {
				delete(n.byNode, req.NodeID)
			}
			n.mu.Unlock()
			n.stats.InboundNow.Add(-1)
			r := &reply{Status: statusNotFound}
			switch a.Status {
			case rendezvous.ClusterAccepted:
				c := fromCandidates(a.Target)
				r = &reply{Status: statusAccepted, Target: &c}
			case rendezvous.ClusterBusy:
				r = &reply{Status: statusBusy, Reason: a.Reason}
			}
			n.respond(msg, r)
		})
	})
}

// respond answers a request; a failure means the asker times out.
func (n *Node) respond(msg *nats.Msg, r *reply) {
	r.V, r.Caps, r.Node = Version, capabilities, n.opts.URL
	data, err := json.Marshal(r)
	if err == nil {
		err = msg.Respond(data)
	}
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		n.log.Debug("cluster: cannot answer a node", zap.Error(err))
	}
}

// Close leaves the cluster: it closes the NATS connection, which drops
// every subscription, and stops the workers. Requests still held are
// answered by the local server as its devices' sessions end.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	n.nc.Close()
	close(n.done)
	n.workers.Wait()
	return nil
}

// Interface guards
var _ rendezvous.Cluster = (*Node)(nil)
