package relay

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/netsody/superpeer/identity"
)

// FuzzFastPathHeader: the decoder never panics, accepts only the range
// and the known types at their lengths, and what it accepts re-encodes
// to the same header.
func FuzzFastPathHeader(f *testing.F) {
	c := NewFastPathClient(FastPathBinding{ID: 42})
	f.Add(c.AppendProbe(nil))
	f.Add(c.AppendData(nil, []byte{0, 1, 2}))
	f.Add(forgedAnswer(f, c))
	f.Add([]byte{0x40, 0, 0})
	f.Add([]byte{fpBound})
	f.Fuzz(func(t *testing.T, p []byte) {
		pk, err := parseFastPath(p)
		if err != nil {
			return
		}
		if !IsFastPath(p) || pk.typ < fpData || pk.typ > fpBound {
			t.Fatalf("accepted %x", p)
		}
		if h := appendFastPathHeader(nil, pk.typ, pk.id); !bytes.Equal(h, p[:fastPathHeaderLen]) || !bytes.Equal(pk.body, p[fastPathHeaderLen:]) {
			t.Fatalf("%x decoded to %+v", p, pk)
		}
		// The client's Handle takes the same input without panicking.
		NewFastPathClient(FastPathBinding{ID: pk.id}).Handle(p, nil)
	})
}

func TestFastPathBindingCapsule(t *testing.T) {
	b := FastPathBinding{ID: 7, Port: 3479}
	b.Token[3] = 9
	typ, r, err := http3.NewCapsuleParser(bytes.NewReader(b.capsule())).Next()
	if err != nil || typ != CapsuleFastPathBinding {
		t.Fatalf("capsule type %x, %v", typ, err)
	}
	v, _ := io.ReadAll(r)
	got, err := ParseFastPathBinding(v)
	if err != nil || got != b {
		t.Fatalf("got %+v, %v", got, err)
	}
	if _, err := ParseFastPathBinding(v[1:]); err == nil {
		t.Fatal("a short binding parsed")
	}
}

// Forwarding DATA from one fast-path device to another allocates nothing
// per datagram: the batch is written from the read buffers.
func TestFastPathForwardingAllocs(t *testing.T) {
	conn, sink := loopbackUDP(t), loopbackUDP(t)
	defer conn.Close()
	defer sink.Close()
	fp, a, b, src := fastPathPair(t, conn, sink.LocalAddr().(*net.UDPAddr).AddrPort())
	pkts := make([][]byte, fastPathBatch)
	for i := range pkts {
		pkts[i] = appendFastPathHeader(make([]byte, 0, 1300), fpData, a.id)[:1209]
	}
	allocs := testing.AllocsPerRun(20, func() {
		for _, p := range pkts {
			p[0] = fpData
			putID(p, a.id)
			fp.handle(p, src)
		}
		fp.flush()
	})
	if allocs > 1 && !raceEnabled { // per batch of fastPathBatch, whatever its size
		t.Fatalf("%.1f allocations per batch of %d datagrams", allocs, fastPathBatch)
	}
	if fp.stats.FastPath.Datagrams.Load() == 0 || b == nil {
		t.Fatal("nothing forwarded")
	}
}

func putID(p []byte, id uint64) { binary.BigEndian.PutUint64(p[1:9], id) }

// fastPathPair makes a fast path on conn and binds two legs of a pair on
// it, both validated: a's at src, b's at dst.
func fastPathPair(t testing.TB, conn *net.UDPConn, dst netip.AddrPort) (fp *fastPath, a, b *binding, src netip.AddrPort) {
	t.Helper()
	fp, err := newFastPath(conn, new(Stats))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Rate: 1e12, Burst: 1 << 30}.withDefaults()
	la, err := newLeg(kindCapsule, nil, httptest.NewRequest("POST", "/", nil), identity.PeerID{1}, identity.PeerID{2}, &cfg, fp.stats)
	if err != nil {
		t.Fatal(err)
	}
	lb, _ := newLeg(kindCapsule, nil, httptest.NewRequest("POST", "/", nil), identity.PeerID{2}, identity.PeerID{1}, &cfg, fp.stats)
	t.Cleanup(func() { la.cancel(); lb.cancel() })
	if a, err = fp.bind(la, lb); err != nil {
		t.Fatal(err)
	}
	if b, err = fp.bind(lb, la); err != nil {
		t.Fatal(err)
	}
	la.fast.Store(a)
	lb.fast.Store(b)
	src = netip.MustParseAddrPort("127.0.0.1:9")
	a.addr.Store(&boundAddr{ap: src, ua: net.UDPAddrFromAddrPort(src)})
	b.addr.Store(&boundAddr{ap: dst, ua: net.UDPAddrFromAddrPort(dst)})
	b.lastData.Store(time.Now().Add(time.Hour).UnixNano()) // b's device sends on its fast path too
	return fp, a, b, src
}
