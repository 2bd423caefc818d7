// Package caddymodule adapts the Netsody super peer to Caddy v2: the
// netsody app, which owns the process's super peer (package superpeer) and
// its options, and the http.handlers.netsody_superpeer handler (Caddyfile
// directive netsody_superpeer), which routes a site's requests to it. It
// holds no protocol logic: that is in the superpeer, rendezvous and relay
// packages.
//
// One super peer serves the whole process, as the pki app's CA serves
// every acme_server handler: its options are the app's, merged from the
// global netsody option and every handler's options (docs/CONFIG.md). It
// lives in a caddy.UsagePool, so that a config reload keeps its sessions.
//
// Caddy's own HTTP/3 listener cannot enable HTTP datagrams, which MASQUE
// needs, so the handler has the app take HTTP/3 over for the server it
// sits in: the app removes "h3" from that server's protocols while the
// server is provisioned, and serves HTTP/3 on the same addresses with a
// quic-go endpoint of its own that keeps Caddy's protections (handshake
// rate limiting with source-address validation, Caddy's TLS policies and
// ECH keys) and hands every request to the Caddy server, so that the
// whole route chain, other sites included, still runs. Endpoints live in
// a caddy.UsagePool too, so a reload keeps the UDP socket and every QUIC
// connection.
package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/netsody/superpeer"
	"github.com/netsody/superpeer/rendezvous"
)

func init() {
	caddy.RegisterModule(new(App))
}

// App is the netsody app: the process's super peer and its options, and
// HTTP/3 with datagrams for every server that holds a netsody_superpeer
// handler. The handler loads it, so it needs an entry in the config only
// for options set there. Caddy starts and stops it with the config.
type App struct {
	// Options set here (the Caddyfile's global netsody option) apply to
	// every netsody_superpeer handler, as if each had set them; a handler
	// may set the others.
	Options
	// AdmissionRaw are the admission modules (namespace
	// netsody.admission, inline key "policy"): a device must pass all of
	// them, cheapest first, to register. Default: allow_all.
	AdmissionRaw []json.RawMessage `json:"admission,omitempty" caddy:"namespace=netsody.admission inline_key=policy"`
	// Cluster, if set, makes this super peer a node of a cluster that
	// shares its devices through NATS (docs/CLUSTER.md). Default: none,
	// a single super peer with no NATS.
	Cluster *ClusterOptions `json:"cluster,omitempty"`

	ctx       caddy.Context
	logger    *zap.Logger
	superPeer *pooledSuperPeer
	admission admissionChain
	// The cluster connection this config uses (cluster.go), if any.
	clusterKey  string
	clusterNode *pooledNode

	mu        sync.Mutex     // guards the following
	options   optionSet      // the app's and every handler's, merged
	applied   *appliedConfig // by Start, until Stop
	takeovers []*takeover
	joined    []*registration
	fastPath  *fastPathSocket // joined by Start, until Stop
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "netsody",
		New: func() caddy.Module { return new(App) },
	}
}

// superPeers holds the process's super peer, kept across reloads with its
// sessions: a new config's app joins it before the old one leaves.
var superPeers = caddy.NewUsagePool()

const superPeerKey = "superpeer"

// pooledSuperPeer is the super peer in the pool, with the configuration
// of every started config that uses it. The newest applies: after a
// reload, the new config's; after a reload that failed once this app had
// started, the running config's again.
type pooledSuperPeer struct {
	*superpeer.Server
	ops operatorState // the operator's run-time changes (operator.go)

	mu      sync.Mutex // guards configs
	configs []*appliedConfig
}

// appliedConfig is a started config's super peer configuration, with the
// key of its admission chain (admissionChain.key).
type appliedConfig struct {
	superpeer.Config
	admission string
	cluster   rendezvous.Cluster // nil: none
}

// apply makes cfg the super peer's configuration.
func (p *pooledSuperPeer) apply(cfg *appliedConfig) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var was *appliedConfig
	if len(p.configs) > 0 {
		was = p.configs[len(p.configs)-1]
	}
	p.configs = append(p.configs, cfg)
	p.switchLocked(was, cfg)
}

// withdraw removes cfg; if it was the newest, the one before applies.
func (p *pooledSuperPeer) withdraw(cfg *appliedConfig) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := slices.Index(p.configs, cfg)
	if i < 0 {
		return
	}
	newest := i == len(p.configs)-1
	p.configs = slices.Delete(p.configs, i, i+1)
	if newest && len(p.configs) > 0 {
		p.switchLocked(cfg, p.configs[len(p.configs)-1])
	}
}

// switchLocked applies to, which replaces was (nil: none); if they admit
// differently, registered devices are checked again under to's rules.
func (p *pooledSuperPeer) switchLocked(was, to *appliedConfig) {
	p.SetConfig(to.Config)
	if was == nil || was.cluster != to.cluster {
		p.Rendezvous().SetCluster(to.cluster)
	}
	if was != nil && was.admission != to.admission {
		p.Rendezvous().Recheck()
	}
}

// Destruct implements caddy.Destructor: the last config out ends every
// session.
func (p *pooledSuperPeer) Destruct() error { return p.Close() }

// Provision joins the process's super peer, or starts it with the app's
// own options if this is the first config; Start applies the merged ones.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	a.options.add(a.Options, "the netsody app") // the first, so no conflict
	if err := a.loadAdmission(ctx); err != nil {
		return err
	}
	val, _, err := superPeers.LoadOrNew(superPeerKey, func() (caddy.Destructor, error) {
		return &pooledSuperPeer{Server: superpeer.New(a.Options.superPeerConfig(a.logger))}, nil
	})
	if err != nil {
		return err
	}
	a.superPeer = val.(*pooledSuperPeer)
	if err := registerMetrics(ctx.GetMetricsRegistry(), a.superPeer); err != nil {
		return err
	}
	return a.joinCluster()
}

// Validate checks the app's own options; Start checks them merged with
// the handlers'.
func (a *App) Validate() error {
	if err := a.Options.validate(); err != nil {
		return fmt.Errorf("netsody: %w", err)
	}
	if a.Cluster != nil {
		if err := a.Cluster.validate(); err != nil {
			return fmt.Errorf("netsody: %w", err)
		}
	}
	return nil
}

// addOptions merges a handler's options, set at where, into this
// config's; a conflict is an error that names the options.
func (a *App) addOptions(o Options, where string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.options.add(o, where)
}

// withAppOptions returns o with the app's own options added; a conflict
// keeps the app's value (addOptions reports it).
func (a *App) withAppOptions(o Options) Options {
	var s optionSet
	s.add(a.Options, "")
	s.add(o, "")
	return s.Options
}

// Start checks the merged options, opens (or joins) the HTTP/3 endpoints,
// and then applies the options to the super peer: a config that fails to
// load leaves the running one's options in place.
func (a *App) Start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.options.validate(); err != nil {
		return fmt.Errorf("netsody: %w", err)
	}
	if err := a.joinEndpointsLocked(); err != nil {
		return err
	}
	if err := a.joinFastPathLocked(); err != nil {
		a.leaveEndpointsLocked()
		return err
	}
	cfg := a.options.superPeerConfig(a.logger)
	cfg.Rendezvous.STUNPort = stunPort(a.ctx)
	a.admission.observe = a.superPeer.ops.decided
	cfg.Rendezvous.Admit = a.superPeer.ops.admit(a.admission.admit())
	a.applied = &appliedConfig{Config: cfg, admission: a.admission.key, cluster: a.cluster()}
	a.superPeer.apply(a.applied)
	return nil
}

// Stop drains the super peer if this config is the last to use it, then
// leaves the endpoints and withdraws this config's options. The
// endpoints stay open through the drain, so that devices on HTTP/3 move
// their relays over them.
func (a *App) Stop() error {
	a.drainIfLast()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.applied != nil {
		a.superPeer.withdraw(a.applied)
		a.applied = nil
	}
	return errors.Join(a.leaveFastPathLocked(), a.leaveEndpointsLocked())
}

// drainIfLast drains the super peer (superpeer.Server.Drain, bounded by
// drain_timeout) when it is going away: Caddy exits (`caddy stop`), or no
// config that uses it remains (a reload that removes it; a config that
// keeps it joined the pool before this one stops). The drain ends every
// session, which Caddy's HTTP/2 servers and the app's HTTP/3 endpoints
// wait for: a session never ends on its own.
func (a *App) drainIfLast() {
	reason := "the super peer is stopping"
	if refs, _ := superPeers.References(superPeerKey); !caddy.Exiting() {
		if refs > 1 {
			return // a newer config keeps it
		}
		reason = "the super peer was removed from the configuration"
		a.holdEndpoints()
	}
	start := time.Now()
	a.superPeer.ops.drain(reason) // the health route answers 503 from now on
	if err := a.superPeer.Drain(context.Background(), reason); err != nil {
		a.logger.Warn("drained", zap.Duration("took", time.Since(start)), zap.Error(err))
		return
	}
	a.logger.Info("drained: every relay moved", zap.Duration("took", time.Since(start)))
}

// holdEndpoints steers the devices' HTTP/3 packets to this config's
// endpoints through a reload's drain, though the new config's own HTTP/3
// socket shares their ports (steer.go): the index probed when an
// endpoint opened may have changed since. A `caddy stop` opens no socket.
func (a *App) holdEndpoints() {
	a.mu.Lock()
	regs := slices.Clone(a.joined)
	a.mu.Unlock()
	for _, reg := range regs {
		reg.ep.steerOrWarn()
	}
}

// drainAtExit drains the super peer if Caddy is exiting. Caddy's HTTP/2
// servers call it as they shut down, since which of them and the app
// stops first is up to Caddy; the app's Stop then waits for the same
// drain.
func (a *App) drainAtExit() {
	if caddy.Exiting() {
		a.drainIfLast()
	}
}

// Cleanup leaves the process's super peer; the last config out closes it.
// Safe after a failed Provision.
func (a *App) Cleanup() error {
	err := a.leaveCluster()
	if a.superPeer == nil {
		return err
	}
	_, err2 := superPeers.Delete(superPeerKey)
	return errors.Join(err, err2)
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
	_ caddy.Destructor   = (*pooledSuperPeer)(nil)
)
