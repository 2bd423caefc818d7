//go:build !linux

package peer

import "net"

// groOOB is no room: there is no UDP_GRO here.
const groOOB = 0

// enableGRO: every read is one datagram here.
func enableGRO(*net.UDPConn) bool { return false }

func groSegment([]byte) int { return 0 }
