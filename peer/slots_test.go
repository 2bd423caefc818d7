package peer

// Config.Accept's slots against strangers: each test fails without the
// guard it names (checked by removing it).

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

// Strangers whose Accept call never gets an answer, asking again as
// often as the super peer lets them, keep no peer out: a peer that comes
// while they hold every slot waits for one (acceptQueue) and is
// accepted within AcceptTimeout; once their calls timed out they are
// declined without asking (acceptCooldown), so a later peer finds a free
// slot and each stranger was asked once.
func TestStrangersCannotHoldAcceptSlots(t *testing.T) {
	s, _ := superPeerServer(t)
	const timeout = 500 * time.Millisecond
	friends := map[identity.PeerID]*identity.Identity{}
	for range 2 {
		id := newID(t)
		friends[id.PeerID()] = id
	}
	var strangerCalls atomic.Int32
	b := newDevice(t, s, func(c *Config) {
		c.AcceptTimeout = timeout
		c.Accept = func(ctx context.Context, p identity.PeerID, _ bool) bool {
			if friends[p] != nil {
				return true
			}
			strangerCalls.Add(1)
			<-ctx.Done() // nobody answers for a stranger
			return false
		}
	})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for range maxAccepting {
		sess := strangerSession(t, s, newID(t), nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
				sess.Introduce(ictx, b.PeerID(), rendezvous.IntroduceOptions{})
				icancel()
				select { // as often as the super peer's lookup limit lets it
				case <-ctx.Done():
				case <-time.After(time.Second / rendezvous.DefaultLookupRate):
				}
			}
		}()
	}
	waitFor(t, "strangers hold every Accept slot", func() bool {
		b.policy.mu.Lock()
		defer b.policy.mu.Unlock()
		return len(b.policy.calling) == maxAccepting
	})
	first := true
	for _, id := range friends {
		if !first {
			time.Sleep(3 * timeout) // the strangers asked again meanwhile
		}
		first = false
		a := newDevice(t, s, func(c *Config) { c.Identity = id })
		start := time.Now()
		c, err := tryDial(a, b.PeerID())
		if err != nil {
			t.Fatalf("a peer Accept accepts, while strangers ask: %v", err)
		}
		c.CloseWithError(0, "")
		if took := time.Since(start); took > timeout+time.Second {
			t.Errorf("accepted after %v, want within AcceptTimeout (%v) and a second", took, timeout)
		}
	}
	if n := strangerCalls.Load(); n != maxAccepting {
		t.Errorf("Accept asked about strangers %d times, want once each (%d)", n, maxAccepting)
	}
	if r := b.Status().Refusals; r.TimedOut != maxAccepting || r.Cooling == 0 {
		t.Errorf("Status: %+v; want %d timed out and some declined while cooling", r, maxAccepting)
	}
}

// One stranger holds one slot at most: while its call runs past its
// deadline (an Accept that ignores its context), it is declined without
// another call, even once its cooldown is over.
func TestOneSlotPerPeer(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	var calls atomic.Int32
	var pl policy
	pl.init(Config{Logger: zap.NewNop(), AcceptTimeout: 20 * time.Millisecond, Accept: func(context.Context, identity.PeerID, bool) bool {
		calls.Add(1)
		<-release
		return false
	}})
	pl.cooldown = 0
	stranger := newID(t).PeerID()
	for range maxAccepting + 2 {
		got := make(chan bool, 1)
		pl.decide(context.Background(), stranger, false, func(ok bool) { got <- ok }, func(f func()) { go f() })
		if <-got {
			t.Fatal("the stranger was accepted")
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d Accept calls for one peer, want 1 while its first runs", n)
	}
	if n := pl.refusals.cooling.Load(); n == 0 {
		t.Error("no request declined for the peer's running call")
	}
}
