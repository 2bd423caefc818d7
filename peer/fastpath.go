package peer

// The relay fast path on the device (docs/PROTOCOL.md, "Relay fast
// path"): once a relay leg is up, the device asks for a binding on it,
// validates its one socket's address with the super peer, and sends the
// peer's packets as plain UDP to the super peer's fast-path port while
// that delivers, falling back to the leg's own datagrams or capsules
// when it does not.
//
//	          BOUND                       two probes unanswered
//	probing ---------> using  -------------------------------------> falling back
//	   ^   (hysteresis    ^                                                |
//	   |   after a fall)  +------ answered for fastPathHold ----------------+
//	   +-- unanswered: PROBE again, backing off to fastPathRetryMax
//
// The state is the loop's own (runFastPath); the send path reads only
// the using flag (and wakes the loop if it sleeps, idle), and the
// socket's reader the receive times.

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/netsody/superpeer/relay"
)

// fastLeg is one relay leg's fast path.
type fastLeg struct {
	p    *peerState
	cl   *relay.FastPathClient
	addr netip.AddrPort // the super peer's fast-path port
	// relayed is its relay path's byte count (relayPath.relayed), which
	// what arrives here adds to.
	relayed *atomic.Uint64

	using atomic.Bool // DATA goes over the fast path, not the leg
	// unanswered: it fell back, or gave up before it was ever used, for
	// want of answers (status says why the packets take the leg).
	unanswered atomic.Bool
	lastRecv   atomic.Int64 // unix nanoseconds of the last packet from addr
	lastSent   atomic.Int64 // of the last DATA sent

	// The loop sleeps while the fast path in use is idle (sleepIfIdle):
	// asleep says it does, and the next DATA sent sets it back and wakes
	// it through wake. ticks counts its ticks (the tests' measure of an
	// idle device's cost).
	asleep atomic.Bool
	wake   chan struct{}
	ticks  atomic.Uint64

	// The loop's own.
	probeAt   time.Time // an unanswered PROBE's; zero if none
	fails     int       // PROBEs unanswered in a row
	nextProbe time.Time
	goodSince time.Time // answered since, while not in use
	everUsed  bool
}

// fastLegRequester is a relay leg that can ask for a fast path: both
// relay.DatagramConn (HTTP/3) and relay.StreamConn (HTTP/2).
type fastLegRequester interface {
	RequestFastPath(ctx context.Context) (relay.FastPathBinding, error)
}

// packetBufs hold packets on their way to QUIC or to the fast path, so
// that neither the socket's reader nor the relay reader allocates per
// packet.
var packetBufs = sync.Pool{New: func() any { b := make([]byte, 0, packetBufSize); return &b }}

// contextIDZero starts every HTTP datagram payload of a UDP packet (RFC
// 9298 section 4).
var contextIDZero = []byte{0}

// runFastPath asks for a binding on rp's leg and runs its fast path until
// the leg ends or the device closes.
func (d *Device) runFastPath(p *peerState, rp *relayPath) {
	req, ok := rp.conn.(fastLegRequester)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.RelayDialTimeout)
	b, err := req.RequestFastPath(ctx)
	cancel()
	if err != nil {
		d.log.Debug("no fast path", zap.String("peer", p.id.Short()), zap.Error(err))
		return
	}
	spAddr, err := netip.ParseAddrPort(rp.remote)
	if err != nil {
		return
	}
	f := &fastLeg{p: p, cl: relay.NewFastPathClient(b), addr: netip.AddrPortFrom(spAddr.Addr().Unmap(), b.Port), relayed: &rp.relayed, wake: make(chan struct{}, 1)}
	if d.cfg.fastPathVia != nil {
		f.addr = d.cfg.fastPathVia(f.addr)
	}
	d.sock.setBinding(b.ID, f)
	defer d.sock.setBinding(b.ID, nil)
	rp.fast.Store(f)
	defer f.setUsing(false)
	t := time.NewTimer(fastPathTick)
	defer t.Stop()
	for {
		select {
		case <-rp.done:
			return
		case <-d.closed:
			return
		case <-f.wake: // DATA sent while it slept: tick from now on
		case now := <-t.C:
			f.ticks.Add(1)
			if !f.tick(now) {
				return
			}
		}
		t.Reset(f.sleepIfIdle(time.Now()))
	}
}

// sleepIfIdle returns how long the loop waits for its next tick: until
// the keepalive probe is due if the fast path is in use and idle (no
// probe waited for, nothing sent since the last packet received), with
// the next DATA sent waking it (send); fastPathTick otherwise.
func (f *fastLeg) sleepIfIdle(now time.Time) time.Duration {
	if !f.using.Load() || !f.probeAt.IsZero() || f.fails > 0 {
		return fastPathTick
	}
	f.asleep.Store(true)
	recv := f.lastRecv.Load()
	if f.lastSent.Load() > recv {
		f.asleep.Store(false) // sent since: answers are waited for
		select {              // a wake the send may have left
		case <-f.wake:
		default:
		}
		return fastPathTick
	}
	return max(time.Unix(0, recv).Add(fastPathKeepalive).Sub(now), fastPathTick)
}

// tick drives the fast path's state at now (the diagram above), and
// reports whether it is worth going on.
func (f *fastLeg) tick(now time.Time) bool {
	recv := time.Unix(0, f.lastRecv.Load())
	if !f.probeAt.IsZero() {
		switch {
		case recv.After(f.probeAt) && f.cl.Bound():
			f.probeAt, f.fails = time.Time{}, 0
			if f.goodSince.IsZero() {
				f.goodSince = now
			}
		case now.Sub(f.probeAt) > fastPathProbeTimeout:
			f.probeAt, f.goodSince = time.Time{}, time.Time{}
			f.fails++
		}
	}
	if f.using.Load() {
		if f.fails >= fastPathDeadProbes {
			f.unanswered.Store(true)
			f.setUsing(false)
			f.nextProbe = now.Add(fastPathRetryMin)
			return true
		}
		sent := time.Unix(0, f.lastSent.Load())
		quiet := sent.After(recv) && now.Sub(recv) > fastPathQuiet
		if f.probeAt.IsZero() && (quiet || now.Sub(recv) > fastPathKeepalive) {
			f.probe(now)
		}
		return true
	}
	if f.probeAt.IsZero() && f.fails == 0 && !f.goodSince.IsZero() && (!f.everUsed || now.Sub(f.goodSince) >= fastPathHold) {
		f.everUsed = true
		f.goodSince = time.Time{}
		f.setUsing(true)
		return true
	}
	if !f.everUsed && f.fails >= fastPathGiveUp {
		f.unanswered.Store(true)
		return false // its port is blocked: the leg carries on alone
	}
	if f.probeAt.IsZero() && !now.Before(f.nextProbe) {
		f.probe(now)
		wait := fastPathHold / 4 // while answered: check again within the hold
		if f.fails > 0 {
			wait = min(fastPathRetryMin<<min(f.fails-1, 16), fastPathRetryMax)
		}
		f.nextProbe = now.Add(wait)
	}
	return true
}

// probe sends a PROBE; its CHALLENGE is answered by handle.
func (f *fastLeg) probe(now time.Time) {
	f.probeAt = now
	var buf [64]byte
	f.write(f.cl.AppendProbe(buf[:0]))
}

// setUsing moves the peer's packets onto the fast path or off it, and
// reports the change as a path change.
func (f *fastLeg) setUsing(on bool) {
	if on {
		f.unanswered.Store(false)
	}
	if f.using.Swap(on) == on {
		return
	}
	p := f.p
	p.dev.log.Debug("relay fast path", zap.String("peer", p.id.Short()), zap.Bool("in_use", on))
	p.mu.Lock()
	p.changedLocked()
	p.mu.Unlock()
}

// write sends one fast-path packet to the super peer, unless the tests
// cut the fast path.
func (f *fastLeg) write(b []byte) {
	if f.p.dev.cfg.blockFast() {
		return
	}
	f.p.dev.sock.writeUDP(b, f.addr)
}

// send sends one QUIC packet to the peer over the fast path.
func (f *fastLeg) send(b []byte) {
	bp := packetBufs.Get().(*[]byte)
	pkt := append(f.cl.AppendData((*bp)[:0], contextIDZero), b...)
	f.write(pkt)
	f.lastSent.Store(time.Now().UnixNano())
	if f.asleep.Load() && f.asleep.CompareAndSwap(true, false) {
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
	*bp = pkt[:0]
	packetBufs.Put(bp)
}

// handle takes a fast-path packet from the socket; b is reused after it
// returns. DATA goes to QUIC as the peer's; a CHALLENGE is answered.
func (f *fastLeg) handle(b []byte, from netip.AddrPort) {
	if from != f.addr {
		return // only the super peer's port speaks for the binding
	}
	payload, answer, err := f.cl.Handle(b, nil)
	if err != nil {
		return
	}
	f.lastRecv.Store(time.Now().UnixNano())
	if answer != nil {
		f.write(answer)
	}
	if len(payload) > 1 && payload[0] == 0 { // context ID 0: a UDP payload
		f.relayed.Add(uint64(len(payload) - 1))
		f.p.dev.sock.deliverCopy(payload[1:], f.p.virtUDP)
	}
}

// fastPacket routes a fast-path packet from the socket to its binding.
func (s *sock) fastPacket(b []byte, from netip.AddrPort) {
	if len(b) < 9 || s.dev.cfg.blockFast() {
		return
	}
	s.mu.RLock()
	f := s.byBinding[binary.BigEndian.Uint64(b[1:9])]
	s.mu.RUnlock()
	if f != nil {
		f.handle(b, from)
	}
}

// setBinding maps a binding ID to its fast path, or unmaps it (nil).
func (s *sock) setBinding(id uint64, f *fastLeg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f == nil {
		delete(s.byBinding, id)
		return
	}
	s.byBinding[id] = f
}

// deliverCopy hands a copy of b to QUIC, in a pooled buffer.
func (s *sock) deliverCopy(b []byte, from net.Addr) {
	bp := packetBufs.Get().(*[]byte)
	*bp = append((*bp)[:0], b...)
	s.deliver(packet{b: *bp, from: from, buf: bp})
}
