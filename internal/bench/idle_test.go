package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/rendezvous"
)

const (
	// Targets for heap in use plus goroutine stacks per idle device.
	targetH2 = 32 << 10
	targetH3 = 64 << 10

	benchTimeout = 5 * time.Minute
	dialTimeout  = 15 * time.Second // one attempt to connect (and register)
	dialAttempts = 3
	// settleTime lets registrations finish on the server before a sample.
	settleTime = 2 * time.Second
	// devicesPerSocket is how many HTTP/3 devices share a client UDP
	// socket (a quic.Transport), to spare file descriptors; each is still
	// a QUIC connection, and a device, of its own to the super peer.
	devicesPerSocket = 250
)

const superPeerCaddyfile = testcaddy.Global + `
localhost {
	bind 127.0.0.1
	netsody_superpeer
	respond "hi"
}
`

// BenchmarkIdleDevices registers -devices idle devices over HTTP/2, then
// as many over HTTP/3, with one super peer, and prints what each costs the
// super peer (heap in use and goroutine stacks after GC, and resident
// memory) next to what an idle TLS connection with HTTP/2 costs a bare Go
// net/http server, measured in the same run. It is a single measurement:
// run it with -benchtime=1x; b.N is ignored.
func BenchmarkIdleDevices(b *testing.B) {
	n := *flagDevices
	if n <= 0 {
		b.Fatalf("-devices=%d: need at least one device", n)
	}
	ctx, cancel := context.WithTimeout(b.Context(), benchTimeout)
	defer cancel()
	baselineBin := buildBaseline(ctx, b)
	testcaddy.Binary(b)
	if *flagProfiles != "" {
		// Exact heap profiles; the runtime keeps the records off the heap.
		b.Setenv("GODEBUG", "memprofilerate=1")
	}
	h2, h3 := measureSuperPeer(ctx, b, n)
	base := measureBaseline(ctx, b, baselineBin, n)
	report(b, n, h2, h3, base)
}

// measureSuperPeer starts a super peer, registers n devices over HTTP/2,
// then n over HTTP/3, and measures what each batch added.
func measureSuperPeer(ctx context.Context, b *testing.B, n int) (h2, h3 growth) {
	b.Helper()
	c := testcaddy.Start(b, superPeerCaddyfile)
	pid, err := ChildPID(c.Bin)
	if err != nil {
		b.Fatal(err)
	}
	sp := Process{Admin: c.Admin, PID: pid}

	var sessions []*rendezvous.Session
	var sockets []*quic.Transport
	defer func() {
		start := time.Now()
		closeAll(sessions)
		for _, tr := range sockets {
			tr.Close()
			tr.Conn.Close()
		}
		c.Stop(b)
		fmt.Printf("closed %d devices and stopped the super peer in %v\n", len(sessions), time.Since(start).Round(time.Millisecond))
	}()

	h2 = growth{name: "HTTP/2 device (super peer)", n: n, target: targetH2}
	h2.before = mustSample(ctx, b, sp)
	writeProfiles(ctx, b, sp, "superpeer-0")
	made := register(ctx, b, c, rendezvous.TransportH2, n, nil)
	sessions = append(sessions, made...)
	time.Sleep(settleTime)
	h2.after = mustSample(ctx, b, sp)
	writeProfiles(ctx, b, sp, "superpeer-1-h2")

	for range (n + devicesPerSocket - 1) / devicesPerSocket {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		sockets = append(sockets, &quic.Transport{Conn: pc})
	}
	h3 = growth{name: "HTTP/3 device (super peer)", n: n, target: targetH3}
	h3.before = h2.after
	made = register(ctx, b, c, rendezvous.TransportH3, n, sockets)
	sessions = append(sessions, made...)
	time.Sleep(settleTime)
	h3.after = mustSample(ctx, b, sp)
	writeProfiles(ctx, b, sp, "superpeer-2-h3")
	return h2, h3
}

// register registers n devices over tr; HTTP/3 devices take turns on
// sockets. It fails the benchmark unless all of them registered.
func register(ctx context.Context, b *testing.B, c *testcaddy.Caddy, tr rendezvous.Transport, n int, sockets []*quic.Transport) []*rendezvous.Session {
	b.Helper()
	port := strconv.Itoa(c.Port)
	start := time.Now()
	made, failures, err := setUp(ctx, n, func(ctx context.Context, i int) (*rendezvous.Session, error) {
		id, err := identity.Generate()
		if err != nil {
			return nil, err
		}
		cfg := rendezvous.ClientConfig{
			Identity:  id,
			URL:       "https://localhost:" + port,
			Addr:      "127.0.0.1:" + port,
			Transport: tr,
			TLSConfig: &tls.Config{RootCAs: c.Roots},
		}
		if len(sockets) > 0 {
			cfg.QUICTransport = sockets[i%len(sockets)]
		}
		return rendezvous.Dial(ctx, cfg)
	})
	if err != nil {
		closeAll(made)
		b.Fatalf("registered %d of %d devices over %s: %v", len(made), n, tr, err)
	}
	fmt.Printf("registered %d devices over %s in %v (%d failed attempts)\n", n, tr, time.Since(start).Round(time.Millisecond), failures)
	return made
}

func closeAll(sessions []*rendezvous.Session) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, *flagParallel)
	for _, s := range sessions {
		sem <- struct{}{}
		wg.Go(func() {
			s.Close()
			<-sem
		})
	}
	wg.Wait()
}

// setUp makes n connections with dial, -parallel at a time. Each attempt
// is bounded by dialTimeout, and a failed one is tried again, up to
// dialAttempts in all; when one fails that often, setUp stops. It returns
// the connections it made, how many attempts failed, and an error unless
// it made all n.
func setUp[T any](ctx context.Context, n int, dial func(ctx context.Context, i int) (T, error)) (made []T, failures int, err error) {
	out := make([]T, n)
	ok := make([]bool, n)
	var (
		next, failed atomic.Int64
		stop         atomic.Bool
		mu           sync.Mutex // guards firstErr
		firstErr     error
		wg           sync.WaitGroup
	)
	for range min(max(*flagParallel, 1), n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || stop.Load() || ctx.Err() != nil {
					return
				}
				for attempt := 1; ; attempt++ {
					actx, cancel := context.WithTimeout(ctx, dialTimeout)
					v, err := dial(actx, i)
					cancel()
					if err == nil {
						out[i], ok[i] = v, true
						break
					}
					failed.Add(1)
					if attempt == dialAttempts || ctx.Err() != nil {
						stop.Store(true)
						mu.Lock()
						if firstErr == nil {
							firstErr = fmt.Errorf("connection %d, attempt %d: %w", i, attempt, err)
						}
						mu.Unlock()
						return
					}
				}
			}
		})
	}
	wg.Wait()
	for i, v := range out {
		if ok[i] {
			made = append(made, v)
		}
	}
	if firstErr == nil && len(made) < n {
		firstErr = errors.Join(errors.New("gave up"), ctx.Err())
	}
	return made, int(failed.Load()), firstErr
}

func mustSample(ctx context.Context, b *testing.B, p Process) Sample {
	b.Helper()
	s, err := p.Sample(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// writeProfiles saves p's heap and goroutine profiles in the -profiles
// directory, if there is one.
func writeProfiles(ctx context.Context, b *testing.B, p Process, name string) {
	b.Helper()
	if *flagProfiles == "" {
		return
	}
	if err := p.WriteProfiles(ctx, *flagProfiles, name); err != nil {
		b.Fatal(err)
	}
}

// growth is what n connections added to a process.
type growth struct {
	name          string
	n             int
	target        float64 // bytes of heap and stacks per connection; 0 for none
	before, after Sample
}

// per is the growth of a measure per connection, in bytes.
func (g growth) per(measure func(Sample) uint64) float64 {
	return (float64(measure(g.after)) - float64(measure(g.before))) / float64(g.n)
}

func heapInuse(s Sample) uint64  { return s.HeapInuse }
func heapAlloc(s Sample) uint64  { return s.HeapAlloc }
func stackInuse(s Sample) uint64 { return s.StackInuse }
func rss(s Sample) uint64        { return s.RSS }
func goroutines(s Sample) uint64 { return uint64(s.Goroutines) }

// report prints the table and reports the numbers as benchmark metrics.
func report(b *testing.B, n int, h2, h3, base growth) {
	const kib = 1024
	fmt.Printf("\nPer idle connection, after GC, with %d of each (KiB = 1024 bytes; %d CPUs, %s):\n\n", n, runtime.NumCPU(), runtime.Version())
	const row = "%-32s %11s %8s %8s %12s %9s %11s %11s  %s\n"
	fmt.Printf(row, "", "heap in use", "(live)", "stacks", "heap+stacks", "ratio", "RSS growth", "goroutines", "target (heap+stacks)")
	for _, g := range []growth{h2, h3, base} {
		held := g.per(Sample.Held)
		target := "-"
		if g.target > 0 {
			verdict := "PASS"
			if held > g.target {
				verdict = "FAIL"
			}
			target = fmt.Sprintf("≤ %.0f KiB %s", g.target/kib, verdict)
		}
		kb := func(v float64) string { return strconv.FormatFloat(v/kib, 'f', 1, 64) }
		fmt.Printf(row, g.name, kb(g.per(heapInuse)), kb(g.per(heapAlloc)), kb(g.per(stackInuse)), kb(held),
			strconv.FormatFloat(held/base.per(Sample.Held), 'f', 2, 64), kb(g.per(rss)),
			strconv.FormatFloat(g.per(goroutines), 'f', 1, 64), target)
	}
	const mib = 1 << 20
	fmt.Printf("\n(live) is the heap's live objects; heap in use adds the unused room in its spans.\n")
	fmt.Printf("Super peer with all %d devices: heap in use %.1f MiB, stacks %.1f MiB, RSS %.1f MiB, %d goroutines.\n",
		2*n, float64(h3.after.HeapInuse)/mib, float64(h3.after.StackInuse)/mib, float64(h3.after.RSS)/mib, h3.after.Goroutines)
	fmt.Printf("For scale: Tailscale's derper reports about 63-100 KB of resident memory per connection in production.\n\n")

	b.ReportMetric(0, "ns/op")
	b.ReportMetric(h2.per(Sample.Held)/kib, "KiB/h2-device")
	b.ReportMetric(h3.per(Sample.Held)/kib, "KiB/h3-device")
	b.ReportMetric(base.per(Sample.Held)/kib, "KiB/baseline-conn")
	b.ReportMetric(h2.per(rss)/kib, "RSS-KiB/h2-device")
	b.ReportMetric(h3.per(rss)/kib, "RSS-KiB/h3-device")
	b.ReportMetric(base.per(rss)/kib, "RSS-KiB/baseline-conn")
}
