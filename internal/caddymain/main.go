// Command caddymain is Caddy with the Netsody super peer plugin and the
// same extra modules xcaddy.sh builds in (caddy-l4, caddy-dns/cloudflare).
// The tests build and run it; operators use xcaddy.sh or xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddy-dns/cloudflare"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/mholt/caddy-l4"

	_ "github.com/netsody/superpeer/caddymodule"
)

func main() {
	caddycmd.Main()
}
