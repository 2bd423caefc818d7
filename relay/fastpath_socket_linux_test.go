package relay

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The fast path's socket gets kernel buffers as large as the system
// allows, not the default (net.core.rmem_default) in which a reader that
// misses a CPU for a few milliseconds loses datagrams.
func TestFastPathSocketBuffers(t *testing.T) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := newFastPath(conn, new(Stats)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		opt        int
		def, limit string
	}{
		{unix.SO_RCVBUF, "rmem_default", "rmem_max"},
		{unix.SO_SNDBUF, "wmem_default", "wmem_max"},
	} {
		def, limit := sysctl(t, c.def), sysctl(t, c.limit)
		want := min(limit, fastPathSocketBuffer) * 2 // Linux doubles what is set, for its bookkeeping
		raw, _ := conn.SyscallConn()
		var got int
		raw.Control(func(fd uintptr) { got, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, c.opt) })
		if err != nil {
			t.Fatal(err)
		}
		if got < want || limit > def && got <= 2*def {
			t.Errorf("socket option %d: %d bytes, want %d (%s %d, %s %d)", c.opt, got, want, c.def, def, c.limit, limit)
		}
	}
}

func sysctl(t *testing.T, name string) int {
	b, err := os.ReadFile("/proc/sys/net/core/" + name)
	if err != nil {
		t.Skip(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
