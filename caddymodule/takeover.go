package caddymodule

import (
	"fmt"
	"net"
	"slices"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// takeover is a Caddy server whose HTTP/3 this app serves, with the listen
// addresses that wanted HTTP/3.
type takeover struct {
	srv   *caddyhttp.Server
	addrs []string
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

// joinEndpointsLocked opens (or joins, across a reload) an HTTP/3 endpoint
// on every UDP address the taken-over servers listen on, and makes this
// config's servers the ones they serve. On error it leaves those it
// joined.
func (a *App) joinEndpointsLocked() error {
	httpAppIface, err := a.ctx.App("http")
	if err != nil {
		return fmt.Errorf("netsody: loading the http app: %w", err)
	}
	httpPort := httpAppIface.(*caddyhttp.App).HTTPPort
	if httpPort == 0 {
		httpPort = caddyhttp.DefaultHTTPPort
	}
	for _, t := range a.takeovers {
		if len(t.srv.TLSConnPolicies) == 0 {
			continue // no TLS, no HTTP/3
		}
		tlsCfg := t.srv.TLSConnPolicies.TLSConfig(a.ctx)
		for _, addr := range t.addrs {
			na, err := caddy.ParseNetworkAddress(addr)
			if err != nil {
				a.leaveEndpointsLocked()
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
					a.leaveEndpointsLocked()
					return err
				}
				a.joined = append(a.joined, reg)
			}
		}
	}
	return nil
}

// leaveEndpointsLocked leaves every endpoint this config joined; the last
// config to leave one closes it.
func (a *App) leaveEndpointsLocked() error {
	var firstErr error
	for _, reg := range a.joined {
		if err := reg.leave(); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	a.joined = nil
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
	for _, reg := range a.joined {
		if reg.ep.port == tcp.Port {
			return strconv.Itoa(tcp.Port), true
		}
	}
	return "", false
}
