//go:build !linux

package caddymodule

import "net"

// Other systems keep their own SO_REUSEPORT semantics; the endpoint
// does not steer there (steer.go).

func attachSteering(*net.UDPConn, uint16, uint32) error { return errNoSteering }

func detachSteering(*net.UDPConn) error { return nil }
