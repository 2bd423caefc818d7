package caddymodule

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/netsody/superpeer"
	"github.com/netsody/superpeer/relay"
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
	// Relay configures relaying between devices that cannot connect
	// directly. Its defaults are a working relay.
	Relay *RelayConfig `json:"relay,omitempty"`

	app    *App
	sp     *superpeer.Server
	logger *zap.Logger
}

// RelayConfig configures the relay.
type RelayConfig struct {
	// PairTimeout is how long a device's relay session waits for its
	// peer's session towards it (consent). Default: 10s.
	PairTimeout caddy.Duration `json:"pair_timeout,omitempty"`
	// MaxSessionsPerDevice caps each device's relay sessions, waiting or
	// bridged; more get 429. Default: 16.
	MaxSessionsPerDevice int `json:"max_sessions_per_device,omitempty"`
	// Rate is each relay leg's sustained rate, in bytes per second, a
	// token bucket: HTTP/2 legs are throttled, excess HTTP/3 datagrams are
	// dropped. Default: 25000000 (200 Mbit/s).
	Rate float64 `json:"rate,omitempty"`
	// Burst is the token bucket's size in bytes; at least
	// max_datagram_size. Default: 1048576.
	Burst int `json:"burst,omitempty"`
	// MaxDatagramSize is the largest HTTP datagram payload relayed, in
	// bytes; larger ones are dropped and counted. Default: 1500.
	MaxDatagramSize int `json:"max_datagram_size,omitempty"`
	// QueueLen bounds the datagrams queued towards each leg; more are
	// dropped and counted. Default: 512.
	QueueLen int `json:"queue_len,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.netsody_superpeer",
		New: func() caddy.Module { return new(Handler) },
	}
}

// servers holds the super peer, shared by every netsody_superpeer handler
// of a process and kept across reloads with its sessions.
var servers = caddy.NewUsagePool()

const serverKey = "superpeer"

// superPeer is the process's super peer in the pool.
type superPeer struct{ *superpeer.Server }

// Destruct implements caddy.Destructor.
func (sp superPeer) Destruct() error { return sp.Close() }

func (h *Handler) relayConfig() relay.Config {
	r := h.Relay
	if r == nil {
		r = &RelayConfig{}
	}
	logger := h.logger
	if logger == nil {
		logger = zap.NewNop()
	}
	return relay.Config{
		PairTimeout:          time.Duration(r.PairTimeout),
		MaxSessionsPerDevice: r.MaxSessionsPerDevice,
		Rate:                 r.Rate,
		Burst:                r.Burst,
		MaxDatagramSize:      r.MaxDatagramSize,
		QueueLen:             r.QueueLen,
		Logger:               logger.Named("relay"),
	}
}

func (h *Handler) superPeerConfig() superpeer.Config {
	return superpeer.Config{Rendezvous: h.config(), Relay: h.relayConfig()}
}

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
		return superPeer{superpeer.New(h.superPeerConfig())}, nil
	})
	if err != nil {
		return err
	}
	h.sp = val.(superPeer).Server
	h.sp.SetConfig(h.superPeerConfig())
	if err := registerMetrics(ctx.GetMetricsRegistry(), h.sp); err != nil {
		return fmt.Errorf("registering metrics: %w", err)
	}
	// On exit Caddy's HTTP/2 server and the app's HTTP/3 endpoint wait
	// for every stream to end, and a session never does on its own; which
	// of the two stops first is up to Caddy.
	sp := h.sp
	srv.RegisterOnShutdown(func() {
		if caddy.Exiting() {
			sp.Close()
		}
	})
	h.app.atExit(func() { sp.Close() })
	return nil
}

// Validate checks the configuration.
func (h *Handler) Validate() error {
	if err := h.superPeerConfig().Validate(); err != nil {
		return fmt.Errorf("netsody_superpeer: %w", err)
	}
	return nil
}

// Cleanup leaves the shared rendezvous server; the last handler out
// closes it. Safe after a failed Provision.
func (h *Handler) Cleanup() error {
	if h.sp == nil {
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
	if !superpeer.Handles(r.URL.Path) {
		return next.ServeHTTP(w, r)
	}
	rd, wr := caddyhttp.IdleTimeoutsFromContext(r.Context())
	if rd != nil {
		defer rd.Override(longLived, 0)()
	}
	if wr != nil {
		defer wr.Override(longLived, 0, 0)()
	}
	h.sp.ServeHTTP(w, r)
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
