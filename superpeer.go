// Package superpeer is a Netsody super peer without Caddy: the rendezvous
// server (discovery and hole punching) and the relay it authenticates,
// composed once, behind one http.Handler. Tests, benchmarks and the Caddy
// adapter (caddymodule) all build a super peer with New.
//
// Embedding one in a plain Go server takes a few lines: serve it over
// HTTP/2 with TLS, and over HTTP/3 with datagrams on the same port (the
// relay's MASQUE legs need them), with ConnContext so that a session
// follows its device's NAT rebinding:
//
//	sp := superpeer.New(superpeer.Config{})
//	defer sp.Close()
//	h2 := &http.Server{Addr: ":443", Handler: sp, ReadHeaderTimeout: 10 * time.Second,
//		ConnContext: superpeer.ConnStarted}
//	go h2.ListenAndServeTLS(certFile, keyFile)
//	h3 := &http3.Server{Addr: ":443", Handler: sp, EnableDatagrams: true,
//		ConnContext: superpeer.ConnContext}
//	log.Fatal(h3.ListenAndServeTLS(certFile, keyFile))
//
// (A server exposed to the internet bounds what a stranger may hold
// before the super peer sees a request: ReadHeaderTimeout here; the
// super peer bounds the rest, a session's registration from its
// connection's start, which ConnStarted and ConnContext record.)
//
// Who may register is Config.Rendezvous.Admit's to decide, once a
// registration's signature verified (an allowlist, a proof of work with
// identity.CheckProofOfWork, a call to a service); after SetConfig changes
// it, Rendezvous().Recheck checks registered devices again.
//
// It answers only its own paths (rendezvous.Path and relay.PathPrefix,
// see Handles) and 404 elsewhere; mount it beside a website with
// http.ServeMux, or pass other paths on as caddymodule does.
//
// # API stability
//
// Before 1.0, exported names of this package, rendezvous, relay and peer
// may change between minor versions; every change is listed in
// docs/CHANGELOG.md. The wire protocol is versioned separately
// (docs/PROTOCOL.md).
package superpeer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

// Config configures a super peer. Zero values take each package's
// defaults.
type Config struct {
	Rendezvous rendezvous.Config
	// Relay's Auth is set by New: relay requests are authenticated by the
	// rendezvous registration on their connection.
	Relay relay.Config
}

// Validate reports a configuration that cannot work, naming the part.
func (c Config) Validate() error {
	return errors.Join(prefixed("rendezvous", c.Rendezvous.Validate()), prefixed("relay", c.Relay.Validate()))
}

func prefixed(part string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", part, err)
}

// Server is a super peer: rendezvous and relay. It is an http.Handler for
// both protocols' paths.
type Server struct {
	rv *rendezvous.Server
	rl *relay.Server

	drainOnce sync.Once
	drained   chan struct{} // closed when the first Drain returns
	drainErr  error         // its result, set before drained closes
}

// New returns a super peer. Validate the configuration first: New takes
// invalid values as the defaults.
func New(cfg Config) *Server {
	s := &Server{drained: make(chan struct{})}
	s.rv = rendezvous.NewServer(s.rendezvousConfig(cfg.Rendezvous))
	s.rl = relay.NewServer(s.relayConfig(cfg.Relay))
	return s
}

// rendezvousConfig tells devices the relay's headroom, unless c has a
// Headroom of its own.
func (s *Server) rendezvousConfig(c rendezvous.Config) rendezvous.Config {
	if c.Headroom == nil {
		c.Headroom = s.headroom
	}
	return c
}

// headroom is the rendezvous Config.Headroom: one look at the relay's,
// from which each device's follows.
func (s *Server) headroom() func(identity.PeerID) rendezvous.Headroom {
	h := s.rl.Headroom()
	bandwidth := uint64(h.Bandwidth)
	return func(peer identity.PeerID) rendezvous.Headroom {
		return rendezvous.Headroom{Bandwidth: bandwidth, Sessions: uint32(min(uint64(h.SpareSessions(peer)), math.MaxUint32))}
	}
}

func (s *Server) relayConfig(c relay.Config) relay.Config {
	c.Auth = s.rv
	return c
}

// SetConfig replaces the configuration; running sessions are kept (see
// rendezvous.Server.SetConfig and relay.Server.SetConfig).
func (s *Server) SetConfig(cfg Config) {
	s.rv.SetConfig(s.rendezvousConfig(cfg.Rendezvous))
	s.rl.SetConfig(s.relayConfig(cfg.Relay))
}

// Handles reports whether path is one of the super peer's.
func Handles(path string) bool {
	return path == rendezvous.Path || strings.HasPrefix(path, relay.PathPrefix)
}

// ServeHTTP serves the rendezvous and relay paths, and 404 elsewhere.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == rendezvous.Path:
		s.rv.ServeHTTP(w, r)
	case strings.HasPrefix(r.URL.Path, relay.PathPrefix):
		s.rl.ServeHTTP(w, r)
	default:
		http.NotFound(w, r)
	}
}

// Rendezvous is the super peer's rendezvous server, for its statistics.
func (s *Server) Rendezvous() *rendezvous.Server { return s.rv }

// Relay is the super peer's relay, for its statistics.
func (s *Server) Relay() *relay.Server { return s.rl }

// Budgets returns the super peer's budgets, their limits and their use
// now: the registered devices' (rendezvous.Config.MaxSessions, counting
// sessions about to register, whose refusals count as hits) and the
// relay's (relay.Server.Budgets).
func (s *Server) Budgets() []relay.BudgetUse {
	_, all := s.rv.Sessions()
	devices := relay.BudgetUse{Name: "devices", Limit: float64(s.rv.MaxSessions()), Use: float64(all),
		Hits: s.rv.Stats().SessionsRefused[rendezvous.RefusedFull].Load()}
	return append([]relay.BudgetUse{devices}, s.rl.Budgets()...)
}

// Drain ends the super peer without dropping what it relays
// (docs/OPERATIONS.md, "Drain and reloads"): it tells every device to
// move (rendezvous.Server.Drain, with reason), refuses new sessions and
// relay legs with 503, and keeps the relay legs that run until their
// devices have moved them all to other super peers, the rendezvous
// Config.DrainTimeout has passed, or ctx ends, whichever comes first;
// then it closes the super peer (Close). It returns nil when every relay
// moved, and an error that says how many relay legs were cut when the
// timeout or ctx ended the drain. Later calls wait for the first's end
// (or their ctx) and return its result; Close may be called alongside.
func (s *Server) Drain(ctx context.Context, reason string) error {
	first := false
	s.drainOnce.Do(func() { first = true })
	if !first {
		select {
		case <-s.drained:
			return s.drainErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer close(s.drained)
	until := s.rv.Drain(0, reason)
	idle := s.rl.Drain()
	timer := time.NewTimer(time.Until(until))
	defer timer.Stop()
	var cut error
	select {
	case <-idle:
	case <-timer.C:
		cut = fmt.Errorf("superpeer: the drain timeout passed with %d relay legs left", s.rl.Stats().Active.Load()+s.rl.Stats().Waiting.Load())
	case <-ctx.Done():
		cut = fmt.Errorf("superpeer: the drain was cut short with %d relay legs left: %w", s.rl.Stats().Active.Load()+s.rl.Stats().Waiting.Load(), ctx.Err())
	}
	s.drainErr = errors.Join(cut, s.Close())
	return s.drainErr
}

// Draining reports whether the super peer drains or has drained: a
// health check answers 503 then, so that a load balancer or monitor
// sends no device here.
func (s *Server) Draining() bool { return s.rv.Draining() }

// Close ends every relay session, then every device session.
func (s *Server) Close() error {
	s.rl.Close()
	return s.rv.Close()
}

// ConnContext is the http3.Server.ConnContext a super peer's HTTP/3
// server needs, so that sessions follow their devices' NAT rebindings (see
// rendezvous.ConnContext).
func ConnContext(ctx context.Context, c *quic.Conn) context.Context {
	return rendezvous.ConnContext(ctx, c)
}

// ConnStarted is the http.Server.ConnContext a super peer's HTTP/2 server
// needs, so that a session registers within the register timeout of its
// connection's start, not of its request (see rendezvous.ConnStarted).
func ConnStarted(ctx context.Context, c net.Conn) context.Context {
	return rendezvous.ConnStarted(ctx, c)
}
