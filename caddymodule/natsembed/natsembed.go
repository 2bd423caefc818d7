// Package natsembed is the Caddy app netsody_nats: a NATS server
// (nats-server, as a library) inside Caddy, for operators of a Netsody
// cluster who run nothing else (docs/CLUSTER.md). Each node runs one,
// with its siblings as route seeds; the netsody app's cluster option then
// names it (nats nats://127.0.0.1:4222). It is a package of its own so
// that a super peer built without it does not carry nats-server:
//
//	xcaddy build --with github.com/netsody/superpeer/caddymodule \
//		--with github.com/netsody/superpeer/caddymodule/natsembed
//
// The server logs through Caddy's logger and never exits the process
// (nats-server's own logger calls os.Exit on a fatal error). It lives in
// a caddy.UsagePool keyed by its options, so that a reload that leaves
// them unchanged keeps it, its routes and every client.
package natsembed

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"

	"github.com/netsody/superpeer/internal/secret"
)

func init() {
	caddy.RegisterModule(new(App))
	httpcaddyfile.RegisterGlobalOption("netsody_nats", parseGlobalOption)
}

// Limits and timings, each with its reason.
const (
	// readyTimeout bounds the server's start: it listens on local
	// sockets, which takes milliseconds.
	readyTimeout = 10 * time.Second
	// pingInterval and maxPingsOut notice a hung client or route within
	// about three intervals, not nats-server's two minutes.
	pingInterval = 2 * time.Second
	maxPingsOut  = 2
)

// App is the netsody_nats app: an embedded NATS server.
type App struct {
	// Listen is the address clients (the netsody app's cluster
	// connection) reach it at. Default: 127.0.0.1:4222.
	Listen string `json:"listen,omitempty"`
	// Token authenticates clients. Required unless Listen is a
	// loopback address.
	Token string `json:"token,omitempty"`
	// ClusterListen is the address that the other nodes' servers route
	// to (host:port). Required with Routes.
	ClusterListen string `json:"cluster_listen,omitempty"`
	// Routes are the other nodes' servers, nats-route://host:port; each
	// server learns the rest of the mesh from them.
	Routes []string `json:"routes,omitempty"`
	// RouteUser and RoutePassword authenticate routes, both ways.
	RouteUser     string `json:"route_user,omitempty"`
	RoutePassword string `json:"route_password,omitempty"`
	// TLSCert, TLSKey and TLSCA (PEM files) encrypt clients and routes:
	// the server's certificate, and the CAs routes are verified against
	// (routes present the same certificate as clients of each other).
	TLSCert string `json:"tls_cert,omitempty"`
	TLSKey  string `json:"tls_key,omitempty"`
	TLSCA   string `json:"tls_ca,omitempty"`

	key    string
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "netsody_nats", New: func() caddy.Module { return new(App) }}
}

var servers = caddy.NewUsagePool()

// pooled is a running server.
type pooled struct{ *natsserver.Server }

// Destruct shuts the server down; the last config that uses it does.
func (p *pooled) Destruct() error {
	p.Shutdown()
	p.WaitForShutdown()
	return nil
}

// Provision starts the server, or joins the one a running config
// started with the same options.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	if err := secret.Expand("netsody_nats: ", secret.Field{Name: "token", Value: &a.Token},
		secret.Field{Name: "route_user", Value: &a.RouteUser}, secret.Field{Name: "route_password", Value: &a.RoutePassword}); err != nil {
		return err
	}
	if a.Listen == "" {
		a.Listen = "127.0.0.1:4222"
	}
	b, _ := json.Marshal(a)
	a.key = string(b)
	_, _, err := servers.LoadOrNew(a.key, func() (caddy.Destructor, error) {
		opts, err := a.options()
		if err != nil {
			return nil, err
		}
		s, err := natsserver.NewServer(opts)
		if err != nil {
			return nil, fmt.Errorf("netsody_nats: %w", err)
		}
		s.SetLoggerV2(&logger{a.logger}, false, false, false)
		s.Start()
		if !s.ReadyForConnections(readyTimeout) {
			s.Shutdown()
			return nil, fmt.Errorf("netsody_nats: the server is not ready within %v (is %s in use?)", readyTimeout, a.Listen)
		}
		a.logger.Info("NATS server started", zap.String("listen", a.Listen), zap.String("cluster_listen", a.ClusterListen), zap.Strings("routes", a.Routes))
		return &pooled{s}, nil
	})
	return err
}

// options are the server's options.
func (a *App) options() (*natsserver.Options, error) {
	host, port, err := hostPort(a.Listen)
	if err != nil {
		return nil, fmt.Errorf("netsody_nats: listen: %w", err)
	}
	opts := &natsserver.Options{Host: host, Port: port, NoSigs: true, Authorization: a.Token,
		PingInterval: pingInterval, MaxPingsOut: maxPingsOut}
	if a.TLSCert != "" {
		tc, err := natsserver.GenTLSConfig(&natsserver.TLSConfigOpts{CertFile: a.TLSCert, KeyFile: a.TLSKey, CaFile: a.TLSCA})
		if err != nil {
			return nil, fmt.Errorf("netsody_nats: TLS: %w", err)
		}
		opts.TLSConfig, opts.TLS, opts.TLSTimeout = tc, true, 2
	}
	if a.ClusterListen != "" {
		ch, cp, err := hostPort(a.ClusterListen)
		if err != nil {
			return nil, fmt.Errorf("netsody_nats: cluster_listen: %w", err)
		}
		opts.Cluster = natsserver.ClusterOpts{Name: "netsody", Host: ch, Port: cp, Username: a.RouteUser, Password: a.RoutePassword,
			PingInterval: pingInterval, MaxPingsOut: maxPingsOut}
		if a.TLSCert != "" {
			tc, err := natsserver.GenTLSConfig(&natsserver.TLSConfigOpts{CertFile: a.TLSCert, KeyFile: a.TLSKey, CaFile: a.TLSCA, Verify: true})
			if err != nil {
				return nil, fmt.Errorf("netsody_nats: route TLS: %w", err)
			}
			// A route is a client of the server it dials as well as a
			// server: it verifies that one against the same CAs, as
			// nats-server's own configuration does for clusters
			// (getTLSConfig). Without it a route verified the other
			// node against the system's CAs and never came up.
			tc.RootCAs = tc.ClientCAs
			opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = tc, 2
		}
		for _, r := range a.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("netsody_nats: route %q: %w", r, err)
			}
			if a.RouteUser != "" {
				u.User = url.UserPassword(a.RouteUser, a.RoutePassword)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	return opts, nil
}

func hostPort(s string) (string, int, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q is not a port number", p)
	}
	return h, port, nil
}

// Validate checks the options, saying what to fix.
func (a *App) Validate() error {
	if len(a.Routes) > 0 && a.ClusterListen == "" {
		return errors.New("netsody_nats: routes need cluster_listen, where the other nodes route to")
	}
	if (a.TLSCert == "") != (a.TLSKey == "") {
		return errors.New("netsody_nats: tls_cert and tls_key go together")
	}
	if a.TLSCert != "" && a.ClusterListen != "" && a.TLSCA == "" {
		return errors.New("netsody_nats: tls with cluster_listen needs its third file, the CA that routes verify each other against")
	}
	if (a.RouteUser == "") != (a.RoutePassword == "") {
		return errors.New("netsody_nats: route_user and route_password go together")
	}
	if host, _, err := hostPort(a.Listen); err == nil && a.Token == "" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("netsody_nats: listen %s is not a loopback address: set a token", a.Listen)
		}
	}
	for _, r := range a.Routes {
		if u, err := url.Parse(r); err != nil || u.Scheme != "nats-route" && u.Scheme != "nats" && u.Scheme != "tls" {
			return fmt.Errorf("netsody_nats: route %q must be nats-route://host:port", r)
		}
	}
	return nil
}

// Start and Stop do nothing: the server runs from Provision to the
// Cleanup of the last config that uses it.
func (a *App) Start() error { return nil }
func (a *App) Stop() error  { return nil }

// Cleanup leaves the server; the last config out shuts it down.
func (a *App) Cleanup() error {
	if a.key == "" {
		return nil
	}
	_, err := servers.Delete(a.key)
	return err
}

// logger is nats-server's logger over zap: a fatal error is logged as
// an error, never an exit.
type logger struct{ l *zap.Logger }

func (l *logger) Noticef(format string, v ...any) { l.l.Info(fmt.Sprintf(format, v...)) }
func (l *logger) Warnf(format string, v ...any)   { l.l.Warn(fmt.Sprintf(format, v...)) }
func (l *logger) Fatalf(format string, v ...any) {
	l.l.Error("fatal (the process goes on): " + fmt.Sprintf(format, v...))
}
func (l *logger) Errorf(format string, v ...any) { l.l.Error(fmt.Sprintf(format, v...)) }
func (l *logger) Debugf(format string, v ...any) { l.l.Debug(fmt.Sprintf(format, v...)) }
func (l *logger) Tracef(format string, v ...any) {}

// parseGlobalOption parses the netsody_nats global option:
//
//	{
//		netsody_nats {
//			listen         <host:port>
//			token          <token>
//			cluster_listen <host:port>
//			routes         <nats-route://host:port>...
//			route_auth     <user> <password>
//			tls            <cert_file> <key_file> [<ca_file>]
//		}
//	}
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	d.Next()
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	if existing != nil {
		return nil, d.Err("the netsody_nats global option may appear only once")
	}
	var a App
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		args := d.RemainingArgs()
		switch {
		case opt == "listen" && len(args) == 1:
			a.Listen = args[0]
		case opt == "token" && len(args) == 1:
			a.Token = args[0]
		case opt == "cluster_listen" && len(args) == 1:
			a.ClusterListen = args[0]
		case opt == "routes" && len(args) > 0:
			a.Routes = append(a.Routes, args...)
		case opt == "route_auth" && len(args) == 2:
			a.RouteUser, a.RoutePassword = args[0], args[1]
		case opt == "tls" && (len(args) == 2 || len(args) == 3):
			a.TLSCert, a.TLSKey = args[0], args[1]
			if len(args) == 3 {
				a.TLSCA = args[2]
			}
		case opt == "listen" || opt == "token" || opt == "cluster_listen" || opt == "routes" || opt == "route_auth" || opt == "tls":
			return nil, d.ArgErr()
		default:
			return nil, d.Errf("unknown netsody_nats option %q", opt)
		}
	}
	return httpcaddyfile.App{Name: "netsody_nats", Value: caddyconfig.JSON(&a, nil)}, nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
	_ caddy.Destructor   = (*pooled)(nil)
	_ natsserver.Logger  = (*logger)(nil)
)
