package natlab

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/peer"
)

// The transport choice to the relaying super peer (issue 12): fast path,
// HTTP/3 datagrams, HTTP/2, by measurement. TestE2ETransportChoice blocks
// and unblocks, at device A's NAT, first the fast path's port and then all
// UDP to the super peer, in the middle of one long transfer, and measures
// how soon A's relayed packets move to the next transport and back.

// Sizes and bounds of the transport test.
const (
	// streamChunk and streamEvery pace the transfer: 16 KiB every 20 ms,
	// 800 KiB/s, so that bytes are in flight at every toggle without
	// filling two shared cores.
	streamChunk = 16 << 10
	streamEvery = 20 * time.Millisecond
	// streamProgressEvery: how often the stream role reports the bytes
	// echoed so far.
	streamProgressEvery = 250 * time.Millisecond
	// transportCarried is what each transport must carry (echoed bytes)
	// once it is in use, before the next toggle: proof that it delivers.
	transportCarried = 256 << 10
	// transportHold is the fast path's hysteresis (peer's fastPathHold):
	// a fast path that came back is taken again only after answering for
	// this long, so no return is sooner.
	transportHold = 2 * time.Second
	// transportRetry is the first HTTP/3 retry after a fall (peer's
	// h3RetryMin): HTTP/3 comes back no sooner.
	transportRetry = 5 * time.Second
	// Why status says the packets moved (peer's whyNoFast and whyH2).
	whyNoFast = "fast path unanswered"
	whyH2     = "HTTP/3 unanswered for 3s"
)

// transportStep is one toggle at A's NAT and the transport A's relayed
// packets must be on within the bound after it.
type transportStep struct {
	name   string
	toggle func(t *testing.T) // nil: a move that follows the step before

	want peer.RelayTransport
	// wantLeg, if set instead, is the relay leg's transport to wait for
	// (the packets may take the fast path at once on it).
	wantLeg string
	within  time.Duration
	// notBefore: the move must not come sooner after the toggle, nor
	// afterLast after the step before's move (hysteresis).
	notBefore, afterLast time.Duration
	// why: the reason status must give for the transport reached.
	why string
}

// TestE2ETransportChoice runs one relayed connection between devices
// behind symmetric NATs (no direct path) through a real Caddy super peer,
// A streaming paced data that B echoes, and toggles firewall rules at A's
// NAT in the middle of it:
//
//  1. the fast path's port blocked: A's packets go over its HTTP/3 leg's
//     datagrams within about a second (fastpath.go's probes);
//  2. unblocked: back on the fast path, after its hysteresis;
//  3. all UDP to the super peer blocked, both ways: the fast path falls
//     back, the session's pings go unanswered, and within seconds the
//     session and the relay move to HTTP/2 (transport.go);
//  4. unblocked: HTTP/3 again at the first retry after the fall (its
//     hysteresis), and the fast path on the new leg.
//
// A's relayed packets must follow each step within its bound, carry data
// on each transport, and the whole transfer must arrive intact at B and
// back at A (SHA-256).
func TestE2ETransportChoice(t *testing.T) {
	l := newEchoLab(t, "transp", e2eCase{a: Symmetric, b: Symmetric})
	ha, natA, spHost, sps, roots, b, readyB := l.ha, l.natA, l.spHost, l.sps, l.roots, l.b, l.readyB
	a := startDevice(t, ha, e2eDeviceConfig{
		Role: "stream", SuperPeers: sps, RootCAs: roots, Peer: readyB.PeerID,
		Size: streamChunk, StreamEvery: streamEvery,
	})
	if _, err := waitEvent(a, "path", 20*time.Second, func(ev e2eEvent) bool { return ev.Path.Relay == string(peer.RelayFast) }); err != nil {
		t.Fatalf("A's relayed packets never took the fast path: %v", err)
	}
	if _, err := waitCarried(a, time.Now(), transportCarried); err != nil {
		t.Fatalf("on the fast path: %v", err)
	}

	steps := []transportStep{
		{name: "fast-path port blocked", toggle: func(t *testing.T) { blockFastPath(t, natA) }, want: peer.RelayH3, within: 3 * time.Second, why: whyNoFast},
		{name: "fast-path port unblocked", toggle: func(t *testing.T) { unblockNFT(t, natA, "natlab_nofast") }, want: peer.RelayFast, within: 15 * time.Second, notBefore: transportHold},
		{name: "UDP to the super peer blocked", toggle: func(t *testing.T) { blockUDPTo(t, natA, spHost.Addr()) }, want: peer.RelayH2, within: 10 * time.Second, why: whyH2},
		{name: "UDP unblocked", toggle: func(t *testing.T) { unblockNFT(t, natA, "natlab_noudp") }, wantLeg: "h3", within: 15 * time.Second, afterLast: transportRetry},
		{name: "then", want: peer.RelayFast, within: 15 * time.Second},
	}
	var figures []string
	// last is when the last step's transport was reached; since is what
	// the next step's hysteresis counts from: last, or for a fall to
	// HTTP/2 the moment the fall ended A's relay (its path went none),
	// since the retry's wait starts at the fall, before the HTTP/2
	// session and leg that last waits for (0.1–0.3 s under load).
	var last, since time.Time
	for _, st := range steps {
		at := time.Now()
		if st.toggle != nil {
			st.toggle(t)
		} else {
			at = last // no toggle: a move that follows the last one
		}
		want := string(st.want)
		var fell time.Time // A's last path none in this step
		ev, err := waitEvent(a, "path", st.within, func(ev e2eEvent) bool {
			if !ev.Wall.Before(at) && ev.Path.Kind == string(peer.PathNone) {
				fell = ev.Wall
			}
			if ev.Wall.Before(at) || ev.Path.Kind != string(peer.PathRelay) {
				return false
			}
			if st.wantLeg != "" {
				return ev.Path.Transport == st.wantLeg
			}
			return ev.Path.Relay == want
		})
		if st.wantLeg != "" {
			want = "a leg over " + st.wantLeg
		}
		if err != nil {
			t.Fatalf("%s: A's relayed packets not on %s within %v: %v", st.name, want, st.within, err)
		}
		took := ev.Wall.Sub(at)
		if took < st.notBefore {
			t.Errorf("%s: A moved to %s after %v, sooner than the hysteresis allows (%v)", st.name, want, took, st.notBefore)
		}
		// fallSlack: the fall's decision comes a moment before A's path
		// says none, on a loaded machine up to a few hundred ms.
		const fallSlack = 300 * time.Millisecond
		if d := ev.Wall.Sub(since); st.afterLast > 0 && d < st.afterLast-fallSlack {
			t.Errorf("%s: A moved to %s %v after the move before, sooner than the hysteresis allows (%v)", st.name, want, d, st.afterLast)
		}
		if ev.Path.Why != st.why {
			t.Errorf("%s: A's path says %q, want the reason %q", st.name, ev.Path.Why, st.why)
		}
		if st.want == peer.RelayH2 {
			// The super peer's session moved, and says why.
			sp, err := waitEvent(a, "superpeer", 5*time.Second, func(ev e2eEvent) bool {
				return ev.SuperPeers[0].Connected && ev.SuperPeers[0].Transport == "h2"
			})
			if err != nil || sp.SuperPeers[0].TransportReason != whyH2 {
				t.Errorf("%s: A's super peer status %+v (%v), want over h2 saying %q", st.name, sp.SuperPeers, err, whyH2)
			}
		}
		if _, err := waitCarried(a, ev.Wall, transportCarried); err != nil {
			t.Fatalf("%s: on %s: %v", st.name, want, err)
		}
		figures = append(figures, fmt.Sprintf("%s → %s in %v", st.name, ev.Path, took.Round(time.Millisecond)))
		last, since = ev.Wall, ev.Wall
		if st.want == peer.RelayH2 && !fell.IsZero() {
			since = fell
		}
	}
	t.Logf("A's relayed packets moved: %s", strings.Join(figures, "; "))

	// The end of the transfer: intact at B and back at A.
	a.stdin.Close()
	out, err := a.wait("result", 0, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	atB, err := b.wait("stream", 0, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Transfers) != 1 {
		t.Fatalf("%d transfers, want the one stream", len(out.Transfers))
	}
	tr := out.Transfers[0]
	if tr.Echoed != tr.Sent || atB.SHA256 != tr.Sent || atB.Bytes != tr.Bytes {
		t.Errorf("the stream: %d bytes echoed, echo intact %v; %d bytes at B, intact %v", tr.Bytes, tr.Echoed == tr.Sent, atB.Bytes, atB.SHA256 == tr.Sent)
	}
	t.Logf("one stream of %d KiB over %v, intact at B and back at A; A's path: %s", tr.Bytes>>10, tr.Took.Round(time.Millisecond), pathSteps(a, out.Wall))
	t.Logf("B's path: %s", pathSteps(b, out.Wall))
}

// blockUDPTo drops, at n, all UDP between its devices and addr, both
// ways: a network that stops passing UDP to the super peer (QUIC, the
// fast path) while TCP still goes through.
func blockUDPTo(t *testing.T, n *NAT, addr netip.Addr) {
	t.Helper()
	ruleset := fmt.Sprintf(`
table inet natlab_noudp {
	chain forward {
		type filter hook forward priority filter - 1; policy accept;
		ip daddr %[1]s meta l4proto udp drop
		ip saddr %[1]s meta l4proto udp drop
	}
}
`, addr)
	if err := applyNFT(n.router.ns, ruleset); err != nil {
		t.Fatalf("blocking UDP to %s at %s: %v", addr, n.router.name, err)
	}
}

// unblockNFT removes the table name that a block added at n.
func unblockNFT(t *testing.T, n *NAT, table string) {
	t.Helper()
	if err := applyNFT(n.router.ns, "delete table inet "+table+"\n"); err != nil {
		t.Fatalf("unblocking %s at %s: %v", table, n.router.name, err)
	}
}

// waitEvent waits up to timeout for an event of type typ that ok accepts.
func waitEvent(d *labDevice, typ string, timeout time.Duration, ok func(e2eEvent) bool) (e2eEvent, error) {
	deadline := time.Now().Add(timeout)
	for n := 0; ; n++ {
		ev, err := d.wait(typ, n, time.Until(deadline))
		if err != nil {
			return ev, err
		}
		if ok(ev) {
			return ev, nil
		}
	}
}

// waitCarried waits until the stream has echoed more bytes after since,
// as its progress events tell.
func waitCarried(d *labDevice, since time.Time, more int) (e2eEvent, error) {
	base := -1
	return waitEvent(d, "progress", 20*time.Second, func(ev e2eEvent) bool {
		if !ev.Wall.After(since) {
			return false
		}
		if base < 0 {
			base = ev.Bytes
		}
		return ev.Bytes-base >= more
	})
}

// pathSteps lists d's path events, relative to start.
func pathSteps(d *labDevice, start time.Time) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var s []string
	for _, ev := range d.events {
		if ev.Type == "path" {
			s = append(s, fmt.Sprintf("%+v %s", ev.Wall.Sub(start).Round(time.Millisecond), ev.Path))
		}
	}
	return strings.Join(s, " → ")
}

// dialAndStream is the stream role: one stream to cfg.Peer carrying
// cfg.Size random bytes every cfg.StreamEvery, read back as the peer
// echoes it, until stdin is closed; then the stream is closed and read to
// its end. Its result holds the one transfer; Wall is when the dial
// began.
func dialAndStream(ctx context.Context, dev *peer.Device, cfg e2eDeviceConfig, out *eventWriter) (e2eEvent, error) {
	res := e2eEvent{Type: "result"}
	pid, err := identity.ParsePeerID(cfg.Peer)
	if err != nil {
		return res, err
	}
	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	t0 := time.Now()
	res.Wall = t0
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	c, err := dev.Dial(dctx, pid)
	cancel()
	if err != nil {
		return res, err
	}
	defer c.CloseWithError(0, "")
	res.Dialed = time.Since(t0)
	str, err := c.OpenStreamSync(ctx)
	if err != nil {
		return res, err
	}
	defer str.CancelRead(0)
	unwatch := context.AfterFunc(ctx, func() { str.CancelRead(1); str.CancelWrite(1) })
	defer unwatch()

	tr := e2eTransfer{}
	var echoed atomic.Int64
	read := make(chan error, 1)
	go func() {
		h := sha256.New()
		buf := make([]byte, 32<<10)
		for {
			n, err := str.Read(buf)
			h.Write(buf[:n])
			echoed.Add(int64(n))
			if err == io.EOF {
				tr.Echoed = hex.EncodeToString(h.Sum(nil))
				read <- nil
				return
			}
			if err != nil {
				read <- err
				return
			}
		}
	}()

	sent := sha256.New()
	chunk := make([]byte, cfg.Size)
	pace := time.NewTicker(cfg.StreamEvery)
	defer pace.Stop()
	progress := time.NewTicker(streamProgressEvery)
	defer progress.Stop()
	var werr error
writing:
	for {
		select {
		case <-stop:
			break writing
		case <-ctx.Done():
			werr = ctx.Err()
			break writing
		case <-progress.C:
			out.emit(e2eEvent{Type: "progress", Bytes: int(echoed.Load()), Wall: time.Now()})
		case <-pace.C:
			rand.Read(chunk)
			sent.Write(chunk)
			if _, werr = str.Write(chunk); werr != nil {
				break writing
			}
		}
	}
	str.Close()
	if werr != nil {
		return res, fmt.Errorf("writing the stream: %w", werr)
	}
	if err := <-read; err != nil {
		return res, fmt.Errorf("reading the echo: %w", err)
	}
	tr.Sent = hex.EncodeToString(sent.Sum(nil))
	tr.Bytes = int(echoed.Load())
	tr.Took = time.Since(t0)
	res.Transfers = []e2eTransfer{tr}
	res.Path = pathOf(c.Path())
	res.SuperPeers = dev.Status().SuperPeers
	return res, nil
}
