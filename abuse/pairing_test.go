package abuse_test

// Attack i: the relay's pairing race. One leg's pair timeout fires while
// its counterpart is being paired with it; before pairing notified under
// the lock, one side got 504 and the other 200 and a leg that hung until
// its registration ended.

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/rendezvous"
)

const (
	// racePairTimeout is the Caddyfile's pair_timeout, and raceHold how
	// long the relay's test hook holds the second leg between pairing and
	// its answer: longer, so that the first leg's timeout fires in
	// between.
	racePairTimeout = 300 * time.Millisecond
	raceHold        = time.Second
	// hookDelayEnv sets the hook in a netsody_testhooks build (relay's
	// testhooks.go).
	hookDelayEnv = "NETSODY_RELAY_HOOK_DELAY"
)

type dialResult struct {
	c   net.PacketConn
	err error
}

func dialAsync(ctx context.Context, d *dev, peer *dev) <-chan dialResult {
	ch := make(chan dialResult, 1)
	go func() { c, err := dialRelay(ctx, d, peer.peer()); ch <- dialResult{c, err} }()
	return ch
}

// passes sends a datagram from one leg and waits up to 2 s for it at the
// other.
func passes(from, to net.PacketConn) bool {
	got := make(chan bool, 1)
	go func() { _, _, err := to.ReadFrom(make([]byte, 100)); got <- err == nil }()
	from.WriteTo([]byte("through"), nil)
	select {
	case ok := <-got:
		return ok
	case <-time.After(2 * time.Second):
		to.Close() // ends the read
		<-got
		return false
	}
}

// Forced in a real Caddy (built with the netsody_testhooks tag, the hook
// set from the environment): B takes A's waiting leg, and the hook holds
// B until A's pair timeout has fired. A must find B there, so both are
// paired and relay; and should one be refused, the leg answered 200
// must not hang. (Checked: with B notifying A after the lock, as before,
// A gets 504 and the test fails; B's leg then ends at once, thanks to
// the other fix, ending a leg on every refusal path.)
func TestPairingRaceLeavesNoHungLeg(t *testing.T) {
	bin := testcaddy.BinaryWithTags(t, "netsody_testhooks")
	c := testcaddy.StartBinary(t, bin, caddyfile("relay {\n\tpair_timeout "+racePairTimeout.String()+"\n}"), hookDelayEnv+"=paired="+raceHold.String())
	a, b := join(t, c, "127.0.0.1", rendezvous.TransportH2), join(t, c, "127.0.0.1", rendezvous.TransportH3)
	if _, err, _ := introduce(t, a, b.peer(), rendezvous.IntroduceOptions{Relay: true}); err != nil {
		t.Fatal(err) // neither asks for consent: the introduction is the consent to relay
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	aRes := dialAsync(ctx, a, b)
	waitFor(t, 5*time.Second, "A's leg to wait", func() bool { return c.Metrics(t)["netsody_superpeer_relay_waiting"] == 1 })
	start := time.Now()
	bRes := dialAsync(ctx, b, a)
	ra, rb := <-aRes, <-bRes
	t.Logf("after %v: A %v, B %v", time.Since(start).Round(time.Millisecond), ra.err, rb.err)
	if time.Since(start) < raceHold {
		t.Fatal("B was answered before the hook let it go: the hook is not set, the race not forced")
	}
	for _, r := range []dialResult{ra, rb} {
		if r.c != nil {
			defer r.c.Close()
		}
	}
	switch {
	case ra.err == nil && rb.err == nil:
		if !passes(ra.c, rb.c) || !passes(rb.c, ra.c) {
			t.Error("both legs were answered 200 but do not relay")
		}
	case ra.err != nil && rb.err != nil:
		t.Error("B took A's waiting leg, yet neither was paired")
	default:
		// B took A's leg under the lock, so A's timeout must find it:
		// one refused and one answered is the race.
		t.Error("one leg was refused and the other answered 200")
		up := ra.c
		if up == nil {
			up = rb.c
		}
		ended := make(chan error, 1)
		go func() { _, _, err := up.ReadFrom(make([]byte, 100)); ended <- err }()
		select {
		case err := <-ended:
			t.Logf("the leg answered 200 ended: %v", err)
		case <-time.After(2 * time.Second):
			up.Close()
			<-ended
			t.Fatal("one leg was refused and the other, answered 200, hangs")
		}
	}
}
