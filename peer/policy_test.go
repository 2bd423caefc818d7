package peer

// The accept policy: each test fails without the guard it names (checked
// by removing it).

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

// tryDial dials peer within 5 s.
func tryDial(d *Device, peer identity.PeerID) (*Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.Dial(ctx, peer)
}

func hasState(d *Device, peer identity.PeerID) bool { return d.peer(peer, false) != nil }

// A stranger that dials a device with the default policy gets
// ErrUnavailable and none of its addresses; the device sends nothing to
// the addresses the stranger announces and keeps no state for it.
func TestStrangerGetsNothing(t *testing.T) {
	s, _ := superPeerServer(t)
	d := newDevice(t, s)
	if _, err := tryDial(newDevice(t, s), d.PeerID()); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a stranger's dial: %v, want ErrUnavailable", err)
	}
	sk := newSinks(t, 3)
	id := newID(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := strangerSession(t, s, id, sk.Addrs(0, 3)).Introduce(ctx, d.PeerID(), rendezvous.IntroduceOptions{Relay: true})
	if err == nil || len(c.All()) > 0 {
		t.Fatalf("the stranger was introduced to %v (%v)", c.All(), err)
	}
	time.Sleep(300 * time.Millisecond) // a first punch goes at once
	if sum, _ := sk.Total(); sum > 0 || hasState(d, id.PeerID()) {
		t.Fatalf("%d punches to the stranger's addresses, state for it %v; want none", sum, hasState(d, id.PeerID()))
	}
	if r := d.Status().Refusals; r.Declined < 2 {
		t.Errorf("Status counts %d declined requests, want the two strangers'", r.Declined)
	}
}

// Candidates for a peer the device does not accept (from a super peer
// that does not ask for consent) are ignored: no state, no punch, no
// relay leg.
func TestCandidatesOfStrangersIgnored(t *testing.T) {
	s, rl := superPeerServer(t)
	d := newDevice(t, s)
	sk := newSinks(t, 3)
	stranger := newID(t).PeerID()
	d.onCandidates(d.sps[0], true, rendezvous.Candidates{Peer: stranger, LocalAddrs: sk.Addrs(0, 3), Relay: true})
	time.Sleep(300 * time.Millisecond)
	if sum, _ := sk.Total(); sum > 0 || hasState(d, stranger) || rl.Stats().Waiting.Load() > 0 {
		t.Fatalf("%d punches, state %v, %d relay legs for a stranger; want none", sum, hasState(d, stranger), rl.Stats().Waiting.Load())
	}
}

// A peer in Config.Allow connects, directly and through the relay,
// without anything else allowing it.
func TestAllowedPeerConnects(t *testing.T) {
	s, _ := superPeerServer(t)
	for _, only := range []bool{false, true} {
		aID := newID(t)
		a := newDevice(t, s, func(c *Config) { c.Identity, c.RelayOnly = aID, only })
		b := newDevice(t, s, func(c *Config) { c.Allow, c.RelayOnly = []identity.PeerID{aID.PeerID()}, only })
		echo(t, b)
		c, err := tryDial(a, b.PeerID())
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c, "allowed")
		want := PathDirect
		if only {
			want = PathRelay
		}
		waitPath(t, c, want, 5*time.Second)
		c.CloseWithError(0, "")
	}
}

// Config.Accept is asked once per peer, with a deadline, however many
// super peers ask and however often the peer is introduced again.
func TestAcceptAskedOnce(t *testing.T) {
	s1, _ := superPeerServer(t)
	s2, _ := superPeerServer(t)
	both := func(c *Config) { c.SuperPeers = []string{s1.H3URL, s2.H3URL} }
	var calls atomic.Int32
	var deadlineOK atomic.Bool
	b := newDevice(t, s1, both, func(c *Config) {
		c.Accept = func(ctx context.Context, _ identity.PeerID, _ bool) bool {
			calls.Add(1)
			dl, ok := ctx.Deadline()
			deadlineOK.Store(ok && time.Until(dl) <= DefaultAcceptTimeout)
			time.Sleep(200 * time.Millisecond) // both super peers' requests arrive meanwhile
			return true
		}
	})
	a := newDevice(t, s1, both)
	echo(t, b)
	c, err := tryDial(a, b.PeerID())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, "accepted")
	for range 2 { // re-introductions, as after a rebinding, through both
		time.Sleep(time.Second / rendezvous.DefaultLookupRate) // the super peers' pace
		for _, sp := range a.sps {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			if _, err := sp.session().Introduce(ctx, b.PeerID(), rendezvous.IntroduceOptions{}); err != nil {
				t.Errorf("introduced again via %s: %v", sp.url, err)
			}
			cancel()
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("Accept called %d times, want once", n)
	}
	if !deadlineOK.Load() {
		t.Error("Accept's context has no deadline within DefaultAcceptTimeout")
	}
}

// A Config.Accept that never returns, or panics, wedges nothing: its
// request is declined after AcceptTimeout, requests beyond maxAccepting
// such calls wait in the queue (acceptQueue) and are declined after it
// too, requests beyond the queue are declined at once, an allowed peer
// connects meanwhile, and Close does not wait for the calls.
func TestAcceptThatHangs(t *testing.T) {
	s, _ := superPeerServer(t)
	release := make(chan struct{})
	panicky := newID(t)
	aID := newID(t)
	const timeout = time.Second
	b := newDevice(t, s, func(c *Config) {
		c.Allow = []identity.PeerID{aID.PeerID()}
		c.AcceptTimeout = timeout
		c.Accept = func(_ context.Context, p identity.PeerID, _ bool) bool {
			if p == panicky.PeerID() {
				panic("an application's bug")
			}
			<-release // ignores its context
			return true
		}
	})
	t.Cleanup(func() { close(release) }) // runs before b's Close, though Close does not wait for the calls
	introduce := func(sess *rendezvous.Session) error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err := sess.Introduce(ctx, b.PeerID(), rendezvous.IntroduceOptions{})
		return err
	}
	ask := func(id *identity.Identity) error { return introduce(strangerSession(t, s, id, nil)) }
	wantDeclined := func(err error, within time.Duration, took time.Duration) {
		t.Helper()
		var rerr *rendezvous.Error
		if !errors.As(err, &rerr) || rerr.Code != rendezvous.ErrCodePeerNotFound || took > within {
			t.Errorf("after %v: %v; want peer not found within %v", took, err, within)
		}
	}
	if err := ask(panicky); err == nil {
		t.Error("a peer whose Accept panicked was introduced")
	}
	sessions := make([]*rendezvous.Session, maxAccepting+acceptQueue)
	for i := range sessions {
		sessions[i] = strangerSession(t, s, newID(t), nil)
	}
	var wg sync.WaitGroup
	for _, sess := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			err := introduce(sess)
			wantDeclined(err, timeout+time.Second, time.Since(start))
		}()
	}
	waitFor(t, "every slot and queue place taken", func() bool {
		b.policy.mu.Lock()
		defer b.policy.mu.Unlock()
		return len(b.policy.queue) == acceptQueue
	})
	start := time.Now()
	err := ask(newID(t)) // slots and queue full: declined at once
	wantDeclined(err, timeout/2, time.Since(start))
	wg.Wait()
	if b.policy.refusals.busy.Load() == 0 {
		t.Error("no request declined for want of room")
	}

	a := newDevice(t, s, func(c *Config) { c.Identity = aID })
	echo(t, b)
	c, err := tryDial(a, b.PeerID())
	if err != nil {
		t.Fatalf("an allowed peer, while Accept hangs: %v", err)
	}
	roundTrip(t, c, "not wedged")
	c.CloseWithError(0, "")

	closed := make(chan struct{})
	go func() {
		b.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waits for Accept calls")
	}
}

// Revoke closes the peer's connections, forgets it, and declines it
// from then on.
func TestRevoke(t *testing.T) {
	s, _ := superPeerServer(t)
	a, b := newDevice(t, s), newDevice(t, s)
	echo(t, b)
	c := dial(t, a, b)
	roundTrip(t, c, "before")
	b.Revoke(a.PeerID())
	select {
	case <-c.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the revoked peer's connection is still open")
	}
	if hasState(b, a.PeerID()) {
		t.Error("state kept for a revoked peer")
	}
	// The first dial and the relay's recovery may have spent the super
	// peer's lookups of b for a second or two (rendezvous.DefaultLookupBurst).
	var err error
	for range 3 {
		var rerr *rendezvous.Error
		if _, err = tryDial(a, b.PeerID()); !errors.As(err, &rerr) || rerr.Code != rendezvous.ErrCodeRateLimited {
			break
		}
		time.Sleep(time.Second / rendezvous.DefaultLookupRate)
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("dialling again after Revoke: %v, want ErrUnavailable", err)
	}
}

// A stranger whose handshake packets reach the listener (it sends from
// the address of a peer the device accepts, a candidate) still cannot
// complete a QUIC handshake, though its certificate is a valid Netsody
// one: the listener checks the policy too. Once accepted, it can.
// (Packets from any other address get no answer at all:
// TestStrangerHandshakeUnanswered.)
func TestStrangerHandshakeRefused(t *testing.T) {
	s, _ := superPeerServer(t)
	d := newDevice(t, s)
	id, cert, udp := strangerEndpoint(t)
	tr := &quic.Transport{Conn: udp}
	defer tr.Close()
	friend := newID(t).PeerID()
	d.Allow(friend)
	d.onCandidates(d.sps[0], true, rendezvous.Candidates{Peer: friend, LocalAddrs: []netip.AddrPort{udp.LocalAddr().(*net.UDPAddr).AddrPort()}})
	// A TLS 1.3 client finishes its handshake before the server has
	// checked its certificate: the server's refusal then closes the
	// connection, and the device's Accept never returns it.
	handshake := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		qc, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(d.LocalAddr()), tlsConfig(cert, d.PeerID()), quicConfig())
		if err != nil {
			return err
		}
		defer qc.CloseWithError(0, "")
		actx, acancel := context.WithTimeout(ctx, time.Second)
		defer acancel()
		c, err := d.Accept(actx)
		if err != nil {
			return err
		}
		c.CloseWithError(0, "")
		return nil
	}
	if err := handshake(); err == nil {
		t.Fatal("a stranger's connection was accepted")
	}
	d.Allow(id.PeerID())
	if err := handshake(); err != nil {
		t.Fatalf("an allowed peer's handshake: %v", err)
	}
}

// Strangers asking to relay through the device's super peer cannot use
// up its relay sessions (relay.DefaultMaxSessionsPerDevice): the device
// opens no leg for them, and an allowed peer still reaches it through
// the relay.
func TestStrangersCannotFillRelayQuota(t *testing.T) {
	s, _ := superPeerServer(t)
	aID := newID(t)
	b := newDevice(t, s, relayOnly, func(c *Config) { c.Allow = []identity.PeerID{aID.PeerID()} })
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for range relay.DefaultMaxSessionsPerDevice {
		sess := strangerSession(t, s, newID(t), nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if conn, err := relay.DialH3(ctx, sess.HTTP3(), sess.Authority(), b.PeerID()); err == nil {
				<-ctx.Done() // held: the device's leg counts as long
				conn.Close()
			}
		}()
		ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
		sess.Introduce(ictx, b.PeerID(), rendezvous.IntroduceOptions{Relay: true})
		icancel()
	}
	time.Sleep(300 * time.Millisecond) // legs the device would open, opened
	a := newDevice(t, s, relayOnly, func(c *Config) { c.Identity = aID })
	echo(t, b)
	c, err := tryDial(a, b.PeerID())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, "through the relay")
	c.CloseWithError(0, "")
}

// Strangers whose requests Accept declines cannot crowd out a peer it
// accepts: a yes is kept however many no's came first.
func TestDeclinedStrangersCrowdOutNothing(t *testing.T) {
	friend := newID(t).PeerID()
	var pl policy
	pl.init(Config{Logger: zap.NewNop(), AcceptTimeout: time.Second, Accept: func(_ context.Context, p identity.PeerID, _ bool) bool {
		return p == friend
	}})
	decide := func(p identity.PeerID) bool {
		got := make(chan bool, 1)
		pl.decide(context.Background(), p, false, func(ok bool) { got <- ok }, func(f func()) { go f() })
		return <-got
	}
	for range maxRemembered + 10 {
		if decide(newID(t).PeerID()) {
			t.Fatal("a stranger was accepted")
		}
	}
	if !decide(friend) {
		t.Fatal("Accept's yes was not given")
	}
	if !pl.accepts(friend) {
		t.Error("a peer Accept said yes to is not accepted once strangers filled the remembered no's")
	}
}
