#!/usr/bin/env bash
# Builds ./caddy: Caddy v2.11.9 with the Netsody super peer plugin from this
# checkout, caddy-l4 and caddy-dns/cloudflare, using xcaddy at a pinned
# version. Needs only Go. The published form of the same build is
#   xcaddy build --with github.com/netsody/superpeer/caddymodule
set -euo pipefail
cd "$(dirname "$0")"

# xcaddy is pinned in go.mod as a tool dependency (v0.4.7).
CADDY_VERSION=v2.11.9

# xcaddy asks the module proxy about every --with module, including this
# unpublished checkout; an empty local file proxy at the end of the chain
# lets that question fall through to a pseudo-version of the local copy.
empty=$(mktemp -d)
trap 'rm -rf "$empty"' EXIT
# "direct" (a git fetch) is left out: it fails without falling through.
proxies=$(go env GOPROXY | tr ',' '\n' | grep -v -x -e direct -e off | paste -sd'|' -)
export GOPROXY="${proxies:+$proxies|}file://$empty"
export GOFLAGS="${GOFLAGS:-} -mod=mod"

go tool xcaddy build "$CADDY_VERSION" \
	--output ./caddy \
	--with github.com/netsody/superpeer/caddymodule \
	--replace github.com/netsody/superpeer="$PWD" \
	--with github.com/mholt/caddy-l4@v0.1.2 \
	--with github.com/caddy-dns/cloudflare@v0.2.4

./caddy list-modules | grep -E '^(netsody|http\.handlers\.netsody_superpeer|layer4\.handlers\.netsody_stun|layer4\.matchers\.stun)$'
