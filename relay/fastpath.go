package relay

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// fastPath is the relay's UDP fast path (docs/PROTOCOL.md, "Relay fast
// path"): one socket, one reader goroutine that owns the read buffers,
// the write batch and the MACs. Bindings are made on legs' request streams
// (fastpath_leg.go) and end with their legs.
type fastPath struct {
	conn  *net.UDPConn
	port  uint16
	v6    bool // the socket is IPv6: addresses are written as such
	stats *Stats

	// The reader goroutine's own.
	r      *batchReader
	w      *batchWriter
	out    []outPacket // the write batch, over the read buffers
	cookie *macer      // keyed with a secret of this fast path's only

	mu       sync.Mutex // guards bindings
	bindings map[uint64]*binding
}

// outPacket is one DATA packet of the write batch and where it goes.
type outPacket struct {
	b  []byte
	to *boundAddr
}

// binding is one leg's fast path. Its address is set once validated and
// read on every packet, from any goroutine.
type binding struct {
	id       uint64
	token    [fastPathTokenLen]byte
	l, other *leg
	fp       *fastPath
	mac      *macer                    // under the token: the reader goroutine's only
	addr     atomic.Pointer[boundAddr] // nil until validated
	lastChal atomic.Int64              // unix nanoseconds of the last unasked CHALLENGE
	lastData atomic.Int64              // unix nanoseconds of the device's last DATA forwarded
}

// to returns where the other leg's packets go to b's device on the fast
// path, or nil for its HTTP leg: only to a validated address from which
// the device sent DATA within fastPathActive. A device that falls back to
// its leg takes its peer's packets back with it, and one whose fast path
// died unnoticed here stops receiving into it within that time.
func (b *binding) to(now int64) *boundAddr {
	if now-b.lastData.Load() > int64(fastPathActive) {
		return nil
	}
	return b.addr.Load()
}

// boundAddr is a validated source, in the two forms the socket wants.
type boundAddr struct {
	ap netip.AddrPort
	ua *net.UDPAddr // for the write batch, made once per validation
	// noGSO: the kernel refused a GSO message to it (a segment over its
	// route's MTU: DATA near MaxDatagramSize on a 1500-byte route; a
	// device's own 1200-byte QUIC packets fit), so its packets leave one
	// a message (batchWriter).
	noGSO atomic.Bool
}

func newFastPath(conn *net.UDPConn, stats *Stats) (*fastPath, error) {
	la, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil, errors.New("relay: the fast path needs a UDP socket")
	}
	// As large as the system allows (net.core.rmem_max, wmem_max cap it
	// silently): a full buffer drops what the kernel receives while the
	// reader waits for a CPU.
	_ = conn.SetReadBuffer(fastPathSocketBuffer)
	_ = conn.SetWriteBuffer(fastPathSocketBuffer)
	bufs := make([][]byte, fastPathBatch)
	for i := range bufs {
		bufs[i] = make([]byte, fastPathBuffer)
	}
	r, err := newBatchReader(conn, bufs)
	if err != nil {
		return nil, err
	}
	w, err := newBatchWriter(conn, la.IP.To4() == nil)
	if err != nil {
		return nil, err
	}
	var secret [32]byte
	rand.Read(secret[:])
	fp := &fastPath{
		conn:     conn,
		port:     uint16(la.Port),
		v6:       la.IP.To4() == nil,
		stats:    stats,
		r:        r,
		w:        w,
		out:      make([]outPacket, 0, fastPathBatch),
		cookie:   newMacer(secret[:]),
		bindings: make(map[uint64]*binding),
	}
	return fp, nil
}

// ServeFastPath serves the relay's UDP fast path on conn until conn is
// closed, then returns nil. Until it is called, devices that ask for a
// binding are refused and stay on their legs' HTTP transports. The
// embedder opens conn, at DefaultFastPathPort unless configured
// otherwise, and closes it to stop; bindings end with their legs.
func (s *Server) ServeFastPath(conn *net.UDPConn) error {
	fp, err := newFastPath(conn, &s.stats)
	if err != nil {
		return err
	}
	if !s.fast.CompareAndSwap(nil, fp) {
		return errors.New("relay: the fast path is already served")
	}
	defer s.fast.CompareAndSwap(fp, nil)
	return fp.serve()
}

func (fp *fastPath) serve() error {
	for {
		n, err := fp.r.read()
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			continue // an ICMP error for an earlier send: nothing was read
		}
		for i := range n {
			fp.handle(fp.r.packet(i))
		}
		fp.flush()
	}
}

// handle takes one packet from src. DATA bound for another fast-path
// device joins the write batch; everything else is answered or handed on
// at once.
func (fp *fastPath) handle(p []byte, src netip.AddrPort) {
	pk, err := parseFastPath(p)
	if err != nil {
		fp.stats.FastPath.drop(FastPathMalformed)
		return
	}
	b := fp.lookup(pk.id)
	if b == nil {
		fp.stats.FastPath.drop(FastPathUnknownBinding)
		return
	}
	switch pk.typ {
	case fpData:
		fp.data(b, p, src)
	case fpProbe:
		fp.probe(b, p, pk.body, src)
	case fpAnswer:
		fp.answer(b, p, pk.body, src)
	default: // CHALLENGE and BOUND go only to devices
		fp.stats.FastPath.drop(FastPathMalformed)
	}
}

func (fp *fastPath) lookup(id uint64) *binding {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return fp.bindings[id]
}

// data forwards a DATA packet from a validated source to the other leg:
// rewritten in place into the write batch if that leg's fast path is
// validated, into its HTTP transport if not.
func (fp *fastPath) data(b *binding, p []byte, src netip.AddrPort) {
	a := b.addr.Load()
	switch {
	case a == nil:
		fp.stats.FastPath.drop(FastPathUnvalidated)
		return
	case a.ap != src:
		fp.stats.FastPath.drop(FastPathWrongSource)
		fp.challenge(b, p, src) // a changed NAT mapping, or a forger
		return
	}
	l := b.l
	payload := p[fastPathHeaderLen:]
	if len(p) == fastPathBuffer || len(payload) > l.cfg.MaxDatagramSize {
		fp.stats.FastPath.drop(FastPathTooLarge)
		return
	}
	now := time.Now()
	if over, ok := l.account.allow(now, len(payload)); !ok {
		if over < 0 {
			fp.stats.FastPath.drop(FastPathRateLimited)
		} else {
			fp.stats.drop(dropFor(over)) // the budgets' drops count alike on every path
		}
		return
	}
	b.lastData.Store(now.UnixNano())
	if ob := b.other.fast.Load(); ob != nil {
		if oa := ob.to(now.UnixNano()); oa != nil {
			binary.BigEndian.PutUint64(p[1:9], ob.id)
			fp.out = append(fp.out, outPacket{b: p, to: oa}) // at most one per datagram read: no allocation
			b.other.delivered(TransportFastPath, len(payload))
			return
		}
	}
	d := newDatagram(len(payload)) // pooled: the other leg frees it once sent
	copy(d, payload)
	b.other.deliver(d) // the other leg's now
}

// flush writes the batch. A datagram the socket refuses is dropped, as a
// router would.
func (fp *fastPath) flush() {
	if len(fp.out) == 0 {
		return
	}
	sent, failed := fp.w.write(fp.out)
	fp.stats.FastPath.Datagrams.Add(uint64(sent))
	for range failed {
		fp.stats.FastPath.drop(FastPathSendFailed)
	}
	clear(fp.out) // no read buffer or address kept past the batch
	fp.out = fp.out[:0]
}

// probe answers a PROBE whose MAC is the token's with a CHALLENGE, in
// the probe's own buffer: never larger than the probe.
func (fp *fastPath) probe(b *binding, p, body []byte, src netip.AddrPort) {
	nonce := body[:fastPathNonceLen]
	if !hmac.Equal(body[fastPathNonceLen:fastPathNonceLen+fastPathMACLen], b.mac.mac(labelProbe, b.id, nonce)) {
		fp.stats.FastPath.drop(FastPathBadMAC)
		return
	}
	fp.sendChallenge(b, p, nonce, src)
}

// challenge sends an unasked CHALLENGE to src, which sent p: only if p is
// at least as large, and at most once per fastPathChallengeInterval per
// binding.
func (fp *fastPath) challenge(b *binding, p []byte, src netip.AddrPort) {
	now := time.Now().UnixNano()
	last := b.lastChal.Load()
	if len(p) < fpChallengeLen || now-last < int64(fastPathChallengeInterval) || !b.lastChal.CompareAndSwap(last, now) {
		fp.stats.FastPath.drop(FastPathChallengeLimited)
		return
	}
	var zero [fastPathNonceLen]byte
	fp.sendChallenge(b, p, zero[:], src)
}

// sendChallenge writes a CHALLENGE over p (at least as long) and sends it.
func (fp *fastPath) sendChallenge(b *binding, p, nonce []byte, src netip.AddrPort) {
	var n [fastPathNonceLen]byte
	copy(n[:], nonce) // nonce aliases p
	c := appendFastPathHeader(p[:0], fpChallenge, b.id)
	c = append(c, n[:]...)
	c = append(c, fp.cookieFor(b.id, src, time.Now())...)
	fp.stats.FastPath.Challenges.Add(1)
	fp.send(c, src)
}

// cookieFor is the cookie of binding id for src in the time slot of t:
// the super peer keeps no state per source.
func (fp *fastPath) cookieFor(id uint64, src netip.AddrPort, t time.Time) []byte {
	var a [16 + 2 + 8]byte
	ip := src.Addr().As16()
	copy(a[:], ip[:])
	binary.BigEndian.PutUint16(a[16:], src.Port())
	binary.BigEndian.PutUint64(a[18:], uint64(t.UnixNano()/int64(fastPathCookieSlot)))
	return fp.cookie.mac(labelCookie, id, a[:])
}

// answer validates src for b if its cookie is src's, of this slot or the
// last, and its MAC the token's; then it answers BOUND.
func (fp *fastPath) answer(b *binding, p, body []byte, src netip.AddrPort) {
	var cookie [fastPathMACLen]byte
	copy(cookie[:], body)
	now := time.Now()
	if !hmac.Equal(cookie[:], fp.cookieFor(b.id, src, now)) && !hmac.Equal(cookie[:], fp.cookieFor(b.id, src, now.Add(-fastPathCookieSlot))) {
		fp.stats.FastPath.drop(FastPathBadCookie)
		return
	}
	if !hmac.Equal(body[fastPathMACLen:2*fastPathMACLen], b.mac.mac(labelAnswer, b.id, cookie[:])) {
		fp.stats.FastPath.drop(FastPathBadMAC)
		return
	}
	if old := b.addr.Load(); old == nil || old.ap != src {
		ua := &net.UDPAddr{IP: net.IP(src.Addr().AsSlice()), Port: int(src.Port())}
		if fp.v6 {
			ip := src.Addr().As16()
			ua.IP = net.IP(ip[:])
		}
		b.addr.Store(&boundAddr{ap: src, ua: ua})
		fp.stats.FastPath.Validations.Add(1)
		if old != nil {
			fp.stats.FastPath.Rebindings.Add(1)
		}
	}
	r := appendFastPathHeader(p[:0], fpBound, b.id)
	r = append(r, b.mac.mac(labelBound, b.id, cookie[:])...)
	fp.send(r, src)
}

// send writes one control packet at once.
func (fp *fastPath) send(p []byte, dst netip.AddrPort) {
	if _, err := fp.conn.WriteToUDPAddrPort(p, dst); err != nil {
		fp.stats.FastPath.drop(FastPathSendFailed)
	}
}

// sendBufs holds the buffers in which DATA from HTTP legs is framed for
// a fast-path device.
var sendBufs = sync.Pool{New: func() any { b := make([]byte, 0, fastPathBuffer); return &b }}

// sendData sends what the other leg relayed to b's device on its fast
// path, if validated and in use (to); false leaves it to the leg's own transport. Called
// from the other leg's goroutine; the write does not wait for the device.
func (b *binding) sendData(d []byte) bool {
	fp := b.fp
	a := b.to(time.Now().UnixNano())
	if a == nil {
		return false
	}
	bp := sendBufs.Get().(*[]byte)
	p := append(appendFastPathHeader((*bp)[:0], fpData, b.id), d...)
	if _, err := fp.conn.WriteToUDPAddrPort(p, a.ap); err != nil {
		fp.stats.FastPath.drop(FastPathSendFailed)
	} else {
		fp.stats.FastPath.Datagrams.Add(1)
		b.l.delivered(TransportFastPath, len(d))
	}
	*bp = p
	sendBufs.Put(bp)
	return true
}

// bind makes l's binding, towards other; it ends with l.
func (fp *fastPath) bind(l, other *leg) (*binding, error) {
	b := &binding{l: l, other: other, fp: fp}
	rand.Read(b.token[:])
	b.mac = newMacer(b.token[:])
	fp.mu.Lock()
	if len(fp.bindings) >= l.cfg.MaxFastPathBindings {
		fp.mu.Unlock()
		return nil, errFastPathFull
	}
	for b.id == 0 || fp.bindings[b.id] != nil {
		var id [8]byte
		rand.Read(id[:])
		b.id = binary.BigEndian.Uint64(id[:])
	}
	fp.bindings[b.id] = b
	fp.mu.Unlock()
	fp.stats.FastPath.Bindings.Add(1)
	context.AfterFunc(l.ctx, func() {
		fp.mu.Lock()
		delete(fp.bindings, b.id)
		fp.mu.Unlock()
		fp.stats.FastPath.Bindings.Add(-1)
	})
	return b, nil
}

var errFastPathFull = errors.New("the super peer holds as many fast-path bindings as it may")
