package l4stun

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/mholt/caddy-l4/layer4"

	"github.com/netsody/superpeer/stun"
)

// MatchSTUN matches STUN Binding requests, with the magic cookie (RFC
// 5389/8489) and without (RFC 3489), so that one port can carry STUN
// next to other layer4 routes. It reads the header only: the type
// (0x0001), a length that is a multiple of four, and, over UDP, a
// datagram that holds the whole message. RFC 3489's form has no cookie to
// tell it from other protocols, so put more specific matchers first.
type MatchSTUN struct{}

// CaddyModule returns the Caddy module information.
func (*MatchSTUN) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "layer4.matchers.stun",
		New: func() caddy.Module { return new(MatchSTUN) },
	}
}

// Match reports whether cx starts with a STUN Binding request.
func (*MatchSTUN) Match(cx *layer4.Connection) (bool, error) {
	b := cx.MatchingBytes()
	if len(b) == 0 {
		return false, layer4.ErrConsumedAllPrefetchedBytes
	}
	ok, complete := stun.IsBindingRequest(b)
	if !complete && !isPacket(cx) && (ok || len(b) < 20) {
		// A stream may still bring the rest of the header or message; a
		// datagram came whole.
		return false, layer4.ErrConsumedAllPrefetchedBytes
	}
	return ok && complete, nil
}

// Interface guards
var _ layer4.ConnMatcher = (*MatchSTUN)(nil)
