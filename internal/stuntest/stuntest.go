// Package stuntest runs a STUN server on loopback for tests: package
// stun's responder, as the layer4 app serves it beside Caddy, with
// answers that can play a NAT that maps per destination. (Not in sptest:
// package stun imports rendezvous, whose tests import sptest.)
package stuntest

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/netsody/superpeer/stun"
)

// Options shape the server's answers.
type Options struct {
	// Shift is added to the port each answer reports: the server then
	// sees the device at another port than its other destinations do,
	// as behind a NAT that maps per destination.
	Shift uint16
	// Delay holds each answer back this long.
	Delay time.Duration
}

// Serve answers STUN Binding requests with package stun's responder on
// a loopback port until the test ends, and returns the port.
func Serve(t testing.TB, o Options) uint16 {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var r stun.Responder
		var cfg stun.Config
		cfg.SetDefaults()
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			seen := netip.AddrPortFrom(from.Addr(), from.Port()+o.Shift)
			resp, drop := r.Respond(nil, buf[:n], seen, &cfg, time.Now())
			if drop != stun.DropNone {
				continue
			}
			time.Sleep(o.Delay)
			conn.WriteToUDPAddrPort(resp, from)
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return uint16(conn.LocalAddr().(*net.UDPAddr).Port)
}
