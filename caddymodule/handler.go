package caddymodule

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/netsody/superpeer"
	"github.com/netsody/superpeer/rendezvous"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler is the netsody_superpeer HTTP handler: a Netsody super peer in a
// Caddy site. It routes the super peer's paths (docs/PROTOCOL.md) to the
// netsody app's super peer and passes every other request to the next
// handler, so a website in the same site block keeps working over
// HTTP/1.1, HTTP/2 and HTTP/3.
type Handler struct {
	// Options are the super peer's. They are process-wide: the netsody app
	// merges those of every handler, and two handlers that set one
	// option to different values fail to load.
	Options

	app *App
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.netsody_superpeer",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision hands the handler's options to the netsody app and has it
// take over HTTP/3 for the server the handler is in.
func (h *Handler) Provision(ctx caddy.Context) error {
	srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if !ok || srv == nil {
		return fmt.Errorf("netsody_superpeer must be used inside an HTTP server")
	}
	appIface, err := ctx.App("netsody")
	if err != nil {
		return fmt.Errorf("loading the netsody app: %w", err)
	}
	h.app = appIface.(*App)
	if err := h.app.addOptions(h.Options, fmt.Sprintf("server %q", srv.Name())); err != nil {
		return err
	}
	h.app.takeOver(srv)
	srv.RegisterOnShutdown(h.app.drainAtExit)
	// A session must register within register_timeout of its connection's
	// accept, not of its request (HTTP/3: the endpoint's ConnContext).
	srv.RegisterConnContext(rendezvous.ConnStarted)
	return nil
}

// Validate checks the handler's options with the app's own; the app
// checks them merged with every other handler's when it starts.
func (h *Handler) Validate() error {
	if err := h.app.withAppOptions(h.Options).validate(); err != nil {
		return fmt.Errorf("netsody_superpeer: %w", err)
	}
	return nil
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
	lift, restore := liftIdleTimeouts(r)
	defer restore()
	if r.URL.Path == rendezvous.Path {
		// Caddy's idle timeouts bound a session until it registers: a
		// stranger's session that sends nothing is cut by them.
		r = r.WithContext(rendezvous.OnRegistered(r.Context(), lift))
	} else {
		// A relay request is served on a registered connection only.
		lift()
	}
	h.app.superPeer.ServeHTTP(w, r)
	return nil
}

// liftIdleTimeouts returns lift, which lifts Caddy's idle timeouts on r
// (to longLived) while the handler runs, and restore, which the handler
// calls when it returns. A lift after that does nothing: an HTTP/3
// session taken over from the server outlives its handler and Caddy's
// request state.
func liftIdleTimeouts(r *http.Request) (lift, restore func()) {
	rd, wr := caddyhttp.IdleTimeoutsFromContext(r.Context())
	var (
		mu    sync.Mutex
		done  bool
		undos []func()
	)
	lift = func() {
		mu.Lock()
		defer mu.Unlock()
		if done || undos != nil {
			return
		}
		undos = []func(){}
		if rd != nil {
			undos = append(undos, rd.Override(longLived, 0))
		}
		if wr != nil {
			undos = append(undos, wr.Override(longLived, 0, 0))
		}
	}
	restore = func() {
		mu.Lock()
		defer mu.Unlock()
		done = true
		for _, undo := range undos {
			undo()
		}
	}
	return lift, restore
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
