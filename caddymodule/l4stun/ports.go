package l4stun

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/mholt/caddy-l4/layer4"
)

// The STUN ports of a config, for the netsody app to name in its
// registrations (rendezvous.Config.STUNPort), so that nobody keeps an
// option in step with the layer4 block by hand.
//
// Caddy gives a provisioned layer4 app no way to list its handlers: a
// route's raw handler JSON is dropped once its handlers are loaded, and
// what they become is unexported. So each netsody_stun handler looks
// while it is provisioned, when its own route's raw JSON is still there
// (caddy.Context.LoadModule drops it only after loading the whole
// list): it notes every UDP server of its layer4 app with a route whose
// handlers name netsody_stun. Every such route is seen at least by its
// own handler; the union over a config's handlers is every such server.

// portsMu guards portsOf.
var portsMu sync.Mutex

// portsOf holds, for each layer4 app being provisioned or running, the
// UDP ports of its servers that answer STUN; an app's handlers remove
// it when they are cleaned up.
var portsOf = map[*layer4.App]*appPorts{}

type appPorts struct {
	ports    []uint16
	handlers int // its netsody_stun handlers that were provisioned and are not cleaned up
}

// Ports returns the UDP ports on which app's servers answer STUN with
// netsody_stun in one of their routes (a handler of the route itself,
// not of a subroute), ascending; none for nil.
func Ports(app *layer4.App) []uint16 {
	portsMu.Lock()
	defer portsMu.Unlock()
	if ap := portsOf[app]; ap != nil {
		return slices.Clone(ap.ports)
	}
	return nil
}

// noteApp finds the layer4 app that is provisioning h (the nearest in
// ctx's ancestry) and notes its STUN ports; it returns the app, for
// forgetApp.
func noteApp(ctx caddy.Context) *layer4.App {
	mods := ctx.Modules()
	var app *layer4.App
	for i := len(mods) - 1; i >= 0 && app == nil; i-- {
		app, _ = mods[i].(*layer4.App)
	}
	if app == nil {
		return nil
	}
	portsMu.Lock()
	defer portsMu.Unlock()
	ap := portsOf[app]
	if ap == nil {
		ap = &appPorts{}
		portsOf[app] = ap
	}
	ap.handlers++
	repl := caddy.NewReplacer()
	for _, srv := range app.Servers {
		if !answersSTUN(srv) {
			continue
		}
		for _, l := range srv.Listen {
			addr, err := caddy.ParseNetworkAddress(repl.ReplaceAll(l, ""))
			if err != nil || !strings.HasPrefix(addr.Network, "udp") || addr.StartPort == 0 || addr.StartPort > 0xffff {
				continue // layer4's own Provision reports a bad address
			}
			if p := uint16(addr.StartPort); !slices.Contains(ap.ports, p) {
				ap.ports = append(ap.ports, p)
				slices.Sort(ap.ports)
			}
		}
	}
	return app
}

// forgetApp undoes one handler's noteApp: the app's entry goes with its
// last handler.
func forgetApp(app *layer4.App) {
	if app == nil {
		return
	}
	portsMu.Lock()
	defer portsMu.Unlock()
	if ap := portsOf[app]; ap != nil {
		if ap.handlers--; ap.handlers <= 0 {
			delete(portsOf, app)
		}
	}
}

// answersSTUN reports whether one of srv's routes, not yet provisioned,
// names netsody_stun among its handlers.
func answersSTUN(srv *layer4.Server) bool {
	for _, r := range srv.Routes {
		for _, raw := range r.HandlersRaw {
			var h struct {
				Handler string `json:"handler"`
			}
			if json.Unmarshal(raw, &h) == nil && h.Handler == handlerName {
				return true
			}
		}
	}
	return false
}

// handlerName is the handler's name in a route's JSON (its module ID's
// last part).
const handlerName = "netsody_stun"
