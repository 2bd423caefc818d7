package caddymodule

import (
	"slices"

	"github.com/caddyserver/caddy/v2"
	"github.com/mholt/caddy-l4/layer4"

	// The layer4 modules (the STUN handler and matcher, and with them
	// caddy-l4's layer4 app) come with this package, so that
	// `xcaddy build --with github.com/netsody/superpeer/caddymodule` has them.
	"github.com/netsody/superpeer/caddymodule/l4stun"
)

// stdSTUNPort is STUN's port (RFC 8489 section 18.9), preferred when
// the layer4 app answers STUN on several.
const stdSTUNPort = 3478

// stunPort is the port on which this config's layer4 app answers STUN
// (its UDP servers with netsody_stun in a route), for the super peer to
// name in its registrations (rendezvous.Config.STUNPort): 3478 if it is
// one, else the lowest; 0 without a layer4 app or STUN in it. It is
// called at Start, once every app is provisioned.
func stunPort(ctx caddy.Context) uint16 {
	app, err := ctx.AppIfConfigured("layer4")
	if err != nil {
		return 0
	}
	l4, _ := app.(*layer4.App)
	ports := l4stun.Ports(l4)
	if len(ports) == 0 {
		return 0
	}
	if slices.Contains(ports, stdSTUNPort) {
		return stdSTUNPort
	}
	return ports[0]
}
