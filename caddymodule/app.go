// Package caddymodule adapts the Netsody super peer to Caddy v2: the
// http.handlers.netsody_superpeer handler (Caddyfile directive
// netsody_superpeer) and the netsody app it pulls in, which serves
// HTTP/3 with datagrams on the site's own UDP port. It holds no protocol
// logic: that is in the rendezvous and relay packages.
//
// Caddy's own HTTP/3 listener cannot enable HTTP datagrams, which MASQUE
// needs, so the handler takes HTTP/3 over for the server it sits in: it
// removes "h3" from that server's protocols while the server is
// provisioned, and the app serves HTTP/3 on the same addresses with a
// quic-go endpoint of its own that keeps Caddy's protections (handshake
// rate limiting with source-address validation, Caddy's TLS policies and
// ECH keys) and hands every request to the Caddy server, so that the
// whole route chain, other sites included, still runs. Endpoints live in
// a caddy.UsagePool, so a config reload keeps the UDP socket and every
// QUIC connection.
package caddymodule

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(new(App))
	caddy.RegisterModule(Handler{})
}

// App is the netsody app. It needs no configuration: the
// netsody_superpeer handler loads it and tells it which servers' HTTP/3 to
// take over. Caddy starts and stops it with the config.
type App struct {
	ctx    caddy.Context
	logger *zap.Logger

	mu        sync.Mutex // guards the following
	takeovers []*takeover
	started   []*registration
	onExit    []func() // run first when the process is exiting
}

// takeover is a Caddy server whose HTTP/3 this app serves, with the listen
// addresses that wanted HTTP/3.
type takeover struct {
	srv   *caddyhttp.Server
	addrs []string
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "netsody",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision sets up the app.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.logger = ctx.Logger()
	return nil
}

// takeOver makes the app serve HTTP/3 for srv: it records which of srv's
// listen addresses want HTTP/3 and removes "h3" from srv's protocols, so
// that Caddy opens no QUIC listener of its own there. It must run while srv
// is being provisioned (a handler's Provision), after the http app has
// defaulted srv.Protocols. A server whose user turned HTTP/3 off keeps it
// off. Calling it again for the same server does nothing.
func (a *App) takeOver(srv *caddyhttp.Server) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, t := range a.takeovers {
		if t.srv == srv {
			return
		}
	}
	t := &takeover{srv: srv}
	for i, addr := range srv.Listen {
		protos := srv.Protocols
		if i < len(srv.ListenProtocols) && srv.ListenProtocols[i] != nil {
			protos = srv.ListenProtocols[i]
		}
		if slices.Contains(protos, "h3") {
			t.addrs = append(t.addrs, addr)
		}
	}
	srv.Protocols = withoutH3(srv.Protocols)
	for i := range srv.ListenProtocols {
		if srv.ListenProtocols[i] != nil {
			srv.ListenProtocols[i] = withoutH3(srv.ListenProtocols[i])
		}
	}
	a.takeovers = append(a.takeovers, t)
}

func withoutH3(protos []string) []string {
	return slices.DeleteFunc(slices.Clone(protos), func(p string) bool { return p == "h3" })
}

// Start opens (or joins, across a reload) an HTTP/3 endpoint on every UDP
// address the taken-over servers listen on, and makes this config's
// servers the ones they serve.
func (a *App) Start() error {
	httpAppIface, err := a.ctx.App("http")
	if err != nil {
		return fmt.Errorf("netsody: loading the http app: %w", err)
	}
	httpPort := httpAppIface.(*caddyhttp.App).HTTPPort
	if httpPort == 0 {
		httpPort = caddyhttp.DefaultHTTPPort
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, t := range a.takeovers {
		if len(t.srv.TLSConnPolicies) == 0 {
			continue // no TLS, no HTTP/3
		}
		tlsCfg := t.srv.TLSConnPolicies.TLSConfig(a.ctx)
		for _, addr := range t.addrs {
			na, err := caddy.ParseNetworkAddress(addr)
			if err != nil {
				a.stopLocked()
				return fmt.Errorf("netsody: parsing listen address %q: %w", addr, err)
			}
			if na.IsUnixNetwork() || na.IsFdNetwork() {
				continue
			}
			switch na.Network {
			case "tcp", "tcp4", "tcp6":
				na.Network = "udp" + na.Network[3:]
			default:
				continue // a plugin network: not ours to guess
			}
			for off := uint(0); off < na.PortRangeSize(); off++ {
				if int(na.StartPort+off) == httpPort {
					continue // the plain-HTTP port never serves TLS
				}
				reg, err := joinEndpoint(a.ctx, a.logger, na, off, t.srv, tlsCfg)
				if err != nil {
					a.stopLocked()
					return err
				}
				a.started = append(a.started, reg)
			}
		}
	}
	return nil
}

// Stop leaves every endpoint this config joined; the last config to leave
// one closes it.
func (a *App) Stop() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if caddy.Exiting() {
		// End sessions with a reason before HTTP/3 shutdown waits for them.
		for _, f := range a.onExit {
			f()
		}
	}
	return a.stopLocked()
}

// atExit registers f to run when the app stops because Caddy exits.
func (a *App) atExit(f func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.onExit = append(a.onExit, f)
}

func (a *App) stopLocked() error {
	var firstErr error
	for _, reg := range a.started {
		if err := reg.leave(); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	a.started = nil
	return firstErr
}

// servesH3 reports whether the app serves HTTP/3 on the UDP port of the
// TCP address a request arrived at, so that the handler can advertise it.
func (a *App) servesH3(local net.Addr) (port string, ok bool) {
	tcp, isTCP := local.(*net.TCPAddr)
	if !isTCP {
		return "", false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, reg := range a.started {
		if reg.ep.port == tcp.Port {
			return strconv.Itoa(tcp.Port), true
		}
	}
	return "", false
}

// Interface guards
var (
	_ caddy.App         = (*App)(nil)
	_ caddy.Provisioner = (*App)(nil)
)
