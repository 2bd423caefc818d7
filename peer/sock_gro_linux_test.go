package peer

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/sptest"
	"golang.org/x/sys/unix"
)

// Datagrams sent as one UDP GSO message, as a super peer's fast path
// sends a device's packets, reach QUIC one by one, whole and in order,
// though the socket (UDP_GRO) reads them at once.
func TestReadLoopCutsGRO(t *testing.T) {
	d := offlineDevice(t)
	u, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	d.sock = newSock([]*net.UDPConn{u}, d)
	done := make(chan struct{})
	go func() { defer close(done); d.sock.readLoop(u) }()
	defer func() { d.sock.Close(); <-done }()

	from, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	other, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	p := d.peer(other.PeerID(), true)
	d.sock.mapDirect(from.LocalAddr().(*net.UDPAddr).AddrPort(), p)

	const seg = 1200
	var msg []byte
	var want [][]byte
	for i := range 6 {
		n := seg
		if i == 5 {
			n = 500 // the last of a GSO message may be shorter
		}
		pkt := bytes.Repeat([]byte{byte(i)}, n)
		pkt[0] = 0x40 // a QUIC short header
		binary.BigEndian.PutUint32(pkt[1:], uint32(i))
		msg = append(msg, pkt...)
		want = append(want, pkt)
	}
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], seg)
	if _, _, err := from.WriteMsgUDPAddrPort(msg, oob, u.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		sptest.Missing(t, "no UDP GSO here: "+err.Error())
	}

	buf := make([]byte, 1<<16)
	for i, w := range want {
		d.sock.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, addr, err := d.sock.ReadFrom(buf)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], w) || addrPort(addr) != p.virt {
			t.Fatalf("packet %d: %d bytes from %v, want %d from %v", i, n, addr, len(w), p.virt)
		}
	}
}
