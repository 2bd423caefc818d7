package caddymodule

import (
	"context"
	"net"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// The endpoint keeps Caddy's protection against handshake floods: past
// handshakesPerSecond, new clients must prove their source address.
func TestEndpointVerifiesSourceAddressUnderLoad(t *testing.T) {
	ep := testEndpoint(t)
	if ep.tr.VerifySourceAddress == nil {
		t.Fatal("no source address verification")
	}
	addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	verified := 0
	for range handshakesPerSecond + 100 {
		if ep.tr.VerifySourceAddress(addr) {
			verified++
		}
	}
	if verified < 50 {
		t.Fatalf("%d of %d handshakes in a burst had to verify their address, want the excess over %d", verified, handshakesPerSecond+100, handshakesPerSecond)
	}
}

// testEndpoint opens an endpoint on loopback, closed when the test ends.
func testEndpoint(t *testing.T) *endpoint {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	na, err := caddy.ParseNetworkAddress("udp/127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep, err := openEndpoint(ctx, zap.NewNop(), "test", na, 0, &caddyhttp.Server{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Destruct() })
	return ep
}
