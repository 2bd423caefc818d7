package caddymodule

// The layer4 modules (the STUN handler and matcher, and with them
// caddy-l4's layer4 app) come with this package, so that
// `xcaddy build --with github.com/netsody/superpeer/caddymodule` has them.
import _ "github.com/netsody/superpeer/caddymodule/l4stun"
