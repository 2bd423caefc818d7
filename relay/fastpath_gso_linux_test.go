package relay

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netsody/superpeer/internal/sptest"
)

// The write batch leaves as one UDP GSO message per device: a receiver
// with UDP_GRO reads a device's packets at once, with their segment
// size; one without reads them one by one; either way each device's
// packets arrive whole and in order, a shorter one ending its message.
func TestFastPathWriteBatchGSO(t *testing.T) {
	_, w := gsoWriter(t)
	var err error
	gro, plain := listenUDP4(t), listenUDP4(t)
	rc, _ := gro.SyscallConn()
	rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) })
	if err != nil {
		sptest.Missing(t, "no UDP_GRO: "+err.Error())
	}
	to := func(c *net.UDPConn) *boundAddr {
		return &boundAddr{ap: c.LocalAddr().(*net.UDPAddr).AddrPort()}
	}
	// Interleaved, as both directions of a busy pair are: ten of 1200
	// bytes and one of 700 to each, then three more of 1200 to each.
	var out []outPacket
	var want [2][][]byte
	for i := range 14 {
		for j, c := range []*net.UDPConn{gro, plain} {
			n := 1200
			if i == 10 {
				n = 700
			}
			p := bytes.Repeat([]byte{byte(j)}, n)
			binary.BigEndian.PutUint32(p, uint32(i))
			out = append(out, outPacket{b: p, to: to(c)})
			want[j] = append(want[j], p)
		}
	}
	sent, failed := w.write(out)
	if sent != len(out) || failed != 0 {
		t.Fatalf("sent %d, failed %d of %d", sent, failed, len(out))
	}
	if len(w.msgs) > 6 {
		t.Errorf("%d messages for two devices", len(w.msgs))
	}

	buf, oob := make([]byte, 1<<16), make([]byte, 64)
	var got [2][][]byte
	reads := 0
	for len(got[0]) < len(want[0]) {
		gro.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, oobn, _, _, err := gro.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", len(got[0]), err)
		}
		reads++
		seg := n
		if s := groSegmentOf(oob[:oobn]); s > 0 {
			seg = s
		}
		for b := buf[:n]; len(b) > 0; b = b[min(seg, len(b)):] {
			got[0] = append(got[0], bytes.Clone(b[:min(seg, len(b))]))
		}
	}
	if reads > 2 {
		t.Errorf("the GRO receiver read %d times for %d datagrams", reads, len(got[0]))
	}
	for len(got[1]) < len(want[1]) {
		plain.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := plain.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", len(got[1]), err)
		}
		got[1] = append(got[1], bytes.Clone(buf[:n]))
	}
	for j := range got {
		if len(got[j]) != len(want[j]) {
			t.Fatalf("receiver %d: %d datagrams, want %d", j, len(got[j]), len(want[j]))
		}
		for i := range got[j] {
			if !bytes.Equal(got[j][i], want[j][i]) {
				t.Errorf("receiver %d: datagram %d is %d bytes starting %x, want %d starting %x",
					j, i, len(got[j][i]), got[j][i][:4], len(want[j][i]), want[j][i][:4])
			}
		}
	}
}

// A GSO message the kernel refuses is sent again one datagram a message,
// and GSO stays on for the next batch: here the socket sends without UDP
// checksums (SO_NO_CHECK), which Linux refuses to combine with GSO
// (EINVAL) and allows for single datagrams.
func TestFastPathWriteBatchGSORefused(t *testing.T) {
	send, w := gsoWriter(t)
	var err error
	rc, _ := send.SyscallConn()
	rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NO_CHECK, 1) })
	if err != nil {
		sptest.Missing(t, "no SO_NO_CHECK: "+err.Error())
	}
	recv := listenUDP4(t)
	to := &boundAddr{ap: recv.LocalAddr().(*net.UDPAddr).AddrPort()}
	var out []outPacket
	for i := range 3 {
		p := make([]byte, 1200)
		binary.BigEndian.PutUint32(p, uint32(i))
		out = append(out, outPacket{b: p, to: to})
	}
	sent, failed := w.write(out)
	if sent != 3 || failed != 0 {
		t.Fatalf("sent %d, failed %d", sent, failed)
	}
	buf := make([]byte, 1<<16)
	for i := range 3 {
		recv.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := recv.ReadFromUDPAddrPort(buf)
		if err != nil || n != 1200 || binary.BigEndian.Uint32(buf) != uint32(i) {
			t.Fatalf("datagram %d: %d bytes starting %x, %v", i, n, buf[:4], err)
		}
	}
	if !w.gso {
		t.Error("GSO given up for a refusal that was not EIO")
	}

	// The address refused it once: its next batches are not offered as
	// GSO messages to be refused again (as a 1500-byte route refuses,
	// EMSGSIZE, every message of a device that sends DATA of 1500 bytes);
	// another address is.
	for range 3 {
		if sent, failed := w.write(out); sent != 3 || failed != 0 {
			t.Fatalf("again: sent %d, failed %d", sent, failed)
		}
	}
	if w.refused != 1 {
		t.Errorf("%d GSO messages refused to one address, want 1", w.refused)
	}
	other := &boundAddr{ap: listenUDP4(t).LocalAddr().(*net.UDPAddr).AddrPort()}
	for i := range out {
		out[i].to = other
	}
	w.write(out)
	if w.refused != 2 {
		t.Errorf("%d GSO messages refused after one to another address, want 2", w.refused)
	}
}

// gsoWriter is a batch writer on a fresh socket, with GSO (a kernel
// without UDP_SEGMENT is Missing).
func gsoWriter(t *testing.T) (*net.UDPConn, *batchWriter) {
	t.Helper()
	send := listenUDP4(t)
	w, err := newBatchWriter(send, false)
	if err != nil {
		t.Fatal(err)
	}
	if !w.gso {
		sptest.Missing(t, "the kernel has no UDP_SEGMENT")
	}
	return send, w
}

func listenUDP4(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// groSegmentOf returns the UDP_GRO segment size in oob, 0 if none.
func groSegmentOf(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level == unix.IPPROTO_UDP && m.Header.Type == unix.UDP_GRO && len(m.Data) >= 4 {
			return int(binary.NativeEndian.Uint32(m.Data))
		}
	}
	return 0
}
