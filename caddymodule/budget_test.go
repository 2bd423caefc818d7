package caddymodule_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/rendezvous"
)

// budgetCaddyfile is siteCaddyfile with a device budget (device_rate's
// arguments).
const budgetCaddyfile = `
localhost {
	netsody_superpeer {
		relay {
			device_rate %s
		}
	}
	root * {DIR}/site
	file_server
}
`

// A `caddy reload` that lowers the device budget throttles the relay
// sessions that run: an HTTP/2 transfer slows to the new rate at once and
// loses nothing (SHA-256), and HTTP/3 datagrams over it are dropped and
// counted rather than queued. The budgets' metrics read back.
func TestBudgetLoweredByReload(t *testing.T) {
	const lowered, burst = 400_000, 40 << 10
	c := startWith(t, testcaddy.Global+fmt.Sprintf(budgetCaddyfile, "1MB 64KiB"), "budgets")
	a, b := register(t, c, "127.0.0.1", rendezvous.TransportH2), register(t, c, "127.0.0.1", rendezvous.TransportH2)
	ca, cb := relayPair(t, a, b)
	x, y := register(t, c, "127.0.0.1", rendezvous.TransportH3), register(t, c, "127.0.0.1", rendezvous.TransportH3)
	cx, _ := relayPair(t, x, y)

	type result struct {
		sent, got int
		sum       [32]byte
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.sent, r.got, r.sum = transfer(t, ca, cb, 2_400_000) // 2,000 datagrams, about 2.4 s at 1 MB/s
		done <- r
	}()
	time.Sleep(300 * time.Millisecond) // the transfer runs at the first budget
	c.Reload(t, testcaddy.Global+fmt.Sprintf(budgetCaddyfile, fmt.Sprintf("%d %d", lowered, burst)))
	const window = time.Second
	relayed := func() float64 { return c.Metrics(t)["netsody_superpeer_relay_bytes_total"] }
	before := relayed()
	time.Sleep(window) // the measurement's window, not an assertion
	got := relayed() - before
	bound := 1.2*lowered*window.Seconds() + burst
	t.Logf("HTTP/2 after the reload: %.0f bytes in %v, bound %.0f", got, window, bound)
	if got > bound {
		t.Errorf("HTTP/2: %.0f bytes relayed in %v after the budget was lowered to %d B/s", got, window, lowered)
	}
	r := <-done
	if r.got != r.sent || r.sum != expectedSum(r.sent) {
		t.Errorf("HTTP/2: %d of %d datagrams arrived, in order: %v", r.got, r.sent, r.sum == expectedSum(r.sent))
	}

	// HTTP/3 datagrams at six times the budget: the excess is dropped.
	m := c.Metrics(t)
	const dropped = `netsody_superpeer_relay_dropped_total{reason="device_bandwidth"}`
	droppedBefore := m[dropped]
	for range 1000 {
		if _, err := cx.WriteTo(make([]byte, 1200), nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Microsecond)
	}
	m = c.Metrics(t)
	t.Logf("HTTP/3: %.0f datagrams dropped over the budget", m[dropped]-droppedBefore)
	if m[dropped] == droppedBefore {
		t.Errorf("no HTTP/3 datagram dropped over the lowered budget")
	}
	if l, h := m[`netsody_superpeer_budget_limit{budget="device_bandwidth"}`], m[`netsody_superpeer_budget_hits_total{budget="device_bandwidth"}`]; l != lowered || h == 0 {
		t.Errorf("device_bandwidth budget's metrics: limit %v, hits %v", l, h)
	}
}
