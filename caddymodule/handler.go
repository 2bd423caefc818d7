package caddymodule

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/netsody/superpeer/rendezvous"
)

// Handler is the netsody_superpeer HTTP handler: a Netsody super peer in a
// Caddy site. It serves its own paths (docs/PROTOCOL.md) and passes every
// other request to the next handler, so a website in the same site block
// keeps working over HTTP/1.1, HTTP/2 and HTTP/3.
type Handler struct {
	// KeepaliveInterval is how often the super peer pings each device.
	// Default: 15s.
	KeepaliveInterval caddy.Duration `json:"keepalive_interval,omitempty"`
	// SessionTimeout ends the session of a device from which nothing has
	// arrived for this long. It must be longer than keepalive_interval.
	// Default: 45s.
	SessionTimeout caddy.Duration `json:"session_timeout,omitempty"`
	// WriteTimeout ends the session of a device that does not take a frame
	// within this long. Default: 10s.
	WriteTimeout caddy.Duration `json:"write_timeout,omitempty"`
	// MaxSessions caps concurrent device sessions; more get 503.
	// Default: 100000.
	MaxSessions int `json:"max_sessions,omitempty"`
	// ConnectRate is how many connect requests per second each device may
	// make (a token bucket). Default: 10.
	ConnectRate float64 `json:"connect_rate,omitempty"`
	// ConnectBurst is the token bucket's size for connect requests.
	// Default: 20.
	ConnectBurst int `json:"connect_burst,omitempty"`

	app    *App
	rv     *rendezvous.Server
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.netsody_superpeer",
		New: func() caddy.Module { return new(Handler) },
	}
}

// servers holds the rendezvous server, shared by every netsody_superpeer
// handler of a process and kept across reloads with its sessions.
var servers = caddy.NewUsagePool()

const serverKey = "rendezvous"

type sharedServer struct{ *rendezvous.Server }

func (s sharedServer) Destruct() error { return s.Close() }

func (h *Handler) config() rendezvous.Config {
	logger := h.logger
	if logger == nil {
		logger = zap.NewNop()
	}
	return rendezvous.Config{
		KeepaliveInterval: time.Duration(h.KeepaliveInterval),
		SessionTimeout:    time.Duration(h.SessionTimeout),
		WriteTimeout:      time.Duration(h.WriteTimeout),
		MaxSessions:       h.MaxSessions,
		ConnectRate:       h.ConnectRate,
		ConnectBurst:      h.ConnectBurst,
		Logger:            logger.Named("rendezvous"),
	}
}

// Provision takes over HTTP/3 for the server the handler is in, and joins
// the process's rendezvous server.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if !ok || srv == nil {
		return fmt.Errorf("netsody_superpeer must be used inside an HTTP server")
	}
	appIface, err := ctx.App("netsody")
	if err != nil {
		return fmt.Errorf("loading the netsody app: %w", err)
	}
	h.app = appIface.(*App)
	h.app.takeOver(srv)

	val, _, err := servers.LoadOrNew(serverKey, func() (caddy.Destructor, error) {
		return sharedServer{rendezvous.NewServer(h.config())}, nil
	})
	if err != nil {
		return err
	}
	h.rv = val.(sharedServer).Server
	h.rv.SetConfig(h.config())
	// On exit Caddy's HTTP/2 server and the app's HTTP/3 endpoint wait
	// for every stream to end, and a session never does on its own; which
	// of the two stops first is up to Caddy.
	rv := h.rv
	srv.RegisterOnShutdown(func() {
		if caddy.Exiting() {
			rv.Close()
		}
	})
	h.app.atExit(func() { rv.Close() })
	return nil
}

// Validate checks the configuration.
func (h *Handler) Validate() error {
	if h.MaxSessions < 0 || h.ConnectRate < 0 || h.ConnectBurst < 0 {
		return fmt.Errorf("netsody_superpeer: max_sessions, connect_rate and connect_burst must not be negative")
	}
	if err := h.config().Validate(); err != nil {
		return fmt.Errorf("netsody_superpeer: %w", err)
	}
	return nil
}

// Cleanup leaves the shared rendezvous server; the last handler out
// closes it. Safe after a failed Provision.
func (h *Handler) Cleanup() error {
	if h.rv == nil {
		return nil
	}
	_, err := servers.Delete(serverKey)
	return err
}

// longLived is how long a session's request may go without reading or
// writing, as far as Caddy's idle timeouts go; the rendezvous protocol has
// its own, shorter, keepalive and timeouts.
const longLived = 24 * time.Hour

// ServeHTTP serves the super peer's paths and passes on everything else.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if r.ProtoMajor < 3 && r.TLS != nil {
		// Caddy advertises HTTP/3 only when it serves it itself.
		if local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			if port, ok := h.app.servesH3(local); ok {
				w.Header().Set("Alt-Svc", `h3=":`+port+`"; ma=2592000`)
			}
		}
	}
	if r.URL.Path == rendezvous.Path {
		rd, wr := caddyhttp.IdleTimeoutsFromContext(r.Context())
		if rd != nil {
			defer rd.Override(longLived, 0)()
		}
		if wr != nil {
			defer wr.Override(longLived, 0, 0)()
		}
		h.rv.ServeHTTP(w, r)
		return nil
	}
	return next.ServeHTTP(w, r)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
