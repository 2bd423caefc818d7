package abuse_test

// Attack d: strangers ask, all at once, to be introduced to a device, so
// that the frames the super peer owes it overflow its queue and end its
// session ("slow reader"), again and again.

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netsody/superpeer/rendezvous"
)

// floodStrangers is how many fresh identities flood the device: "dozens"
// (about ten overflowed its queue before).
const floodStrangers = 40

// Introductions from dozens of strangers, each within its own connect
// burst, sent at once, do not end the session at Caddy of a device that
// reads its frames slowly; it stays registered and is still served.
func TestStrangersDoNotEndADevice(t *testing.T) {
	c := start(t, "")
	var got atomic.Int64
	// The device does not ask for consent: the strangers cause
	// candidates, the longest frames others can cause. Its reader
	// sleeps on each: a slow device.
	victim := join(t, c, "127.0.0.1", rendezvous.TransportH3, func(cfg *rendezvous.ClientConfig) {
		cfg.OnCandidates = func(rendezvous.Candidates) { got.Add(1); time.Sleep(2 * time.Millisecond) }
	})
	var strangers []*dev
	for i := range floodStrangers {
		strangers = append(strangers, join(t, c, "127.0.0.1", transports[i%2]))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var answered, limited atomic.Int64
	go1 := make(chan struct{})
	for _, s := range strangers {
		for range rendezvous.DefaultConnectBurst {
			wg.Go(func() {
				<-go1
				_, err := s.s.Introduce(ctx, victim.peer(), rendezvous.IntroduceOptions{})
				var rerr *rendezvous.Error
				if err == nil || errors.As(err, &rerr) {
					answered.Add(1)
				}
				if rerr != nil && rerr.Code == rendezvous.ErrCodeRateLimited {
					limited.Add(1)
				}
			})
		}
	}
	close(go1)
	wg.Wait()
	t.Logf("%d introductions sent at once, %d answered (%d rate limited); the device read %d candidates", floodStrangers*rendezvous.DefaultConnectBurst, answered.Load(), limited.Load(), got.Load())
	if err := victim.s.Err(); err != nil {
		t.Fatalf("strangers' introductions ended the device's session: %v", err)
	}
	if _, err, _ := introduce(t, victim, strangers[0].peer(), rendezvous.IntroduceOptions{}); err != nil {
		t.Fatalf("the device is no longer served after the flood: %v", err)
	}
	m := c.Metrics(t)
	t.Logf("introductions refused to the device: %v over its rate, %v over its queue share; %v coalesced",
		m[`netsody_superpeer_introductions_refused_total{reason="target_rate_limited"}`], m[`netsody_superpeer_introductions_refused_total{reason="queue_full"}`], m["netsody_superpeer_introductions_coalesced_total"])
}
