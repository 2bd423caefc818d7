package caddymodule

import (
	"net"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// attachSteering sets the SO_REUSEPORT group's program (steer.go): a
// QUIC packet whose destination connection ID starts with marker goes to
// the group's socket at index; any other packet, or an index past the
// group's end, goes by the kernel's hash. The program sees the UDP
// payload. A short header (top bit clear) has the connection ID at byte
// 1; a long header has its length at byte 5 and the ID at byte 6.
func attachSteering(c *net.UDPConn, marker uint16, index uint32) error {
	const byHash = 0xffffffff // no such socket: the kernel hashes
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 0, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x80, SkipTrue: 2},
		bpf.LoadAbsolute{Off: 1, Size: 2}, // short header
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(marker), SkipTrue: 4, SkipFalse: 5},
		bpf.LoadAbsolute{Off: 5, Size: 1}, // long header
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: connIDLen, SkipFalse: 3},
		bpf.LoadAbsolute{Off: 6, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(marker), SkipFalse: 1},
		bpf.RetConstant{Val: index},
		bpf.RetConstant{Val: byHash},
	})
	if err != nil {
		return err
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		filter[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	return control(c, func(fd int) error {
		return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog)
	})
}

// detachSteering removes the group's program.
func detachSteering(c *net.UDPConn) error {
	return control(c, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_REUSEPORT_BPF, 0)
	})
}

func control(c *net.UDPConn, f func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
