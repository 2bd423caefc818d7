package bench

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/rendezvous"
)

var (
	flagClusterDevices = flag.String("cluster-devices", "1500,3000,6000", "ClusterScale: devices registered in all after each step, comma-separated and rising (each rounded up to a multiple of the three nodes)")
	flagIntroductions  = flag.Int("introductions", 300, "ClusterScale: introductions of each kind (on one node, across nodes) per step")
	flagFailover       = flag.Bool("failover", true, "ClusterScale: after the last step, kill a node and re-register its devices at the two others")
	flagBurst          = flag.Int("intro-burst", 1000, "ClusterScale: introductions across nodes per step run -intro-parallel at a time, for their rate (0: none)")
	flagBurstParallel  = flag.Int("intro-parallel", 32, "ClusterScale: introductions at a time in the burst")
	flagClusterH3      = flag.Bool("cluster-h3", false, "ClusterScale: devices register over HTTP/3 (sharing a UDP socket per 250) instead of HTTP/2")
)

const (
	clusterBenchTimeout = 30 * time.Minute
	clusterBenchToken   = "bench-cluster-token-0123456789"
	// introTimeout bounds one introduction: the consent timeout (10s)
	// and the cluster's reply margin, with room for a loaded machine.
	introTimeout = 30 * time.Second
	// deathTimeout bounds how long the killed node's devices may take
	// to see their sessions end.
	deathTimeout = time.Minute
	// maxIntroFailures is the share of introductions that may fail
	// before the benchmark fails: none should, on loopback.
	maxIntroFailures = 0
)

// clusterNodeCaddyfile is one node of cluster "bench" on {HOST}, with
// the session limits raised above what one source address (the
// benchmark's loopback) registers: every simulated device comes from
// 127.0.0.1.
const clusterNodeCaddyfile = testcaddy.NodeGlobal + `	log {
		level WARN
	}
	netsody {
		cluster {
			name bench
			url https://NODE.cluster.test:{PORT}
			nats NATS_URL
			nats_token ` + clusterBenchToken + `
		}
	}
}
localhost {
	tls internal
	netsody_superpeer {
		max_sessions 100000
		prefix_session_rate 100000 100000
		max_unregistered_per_prefix 4096
	}
}
`

var clusterBenchHosts = []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}

// simDevice is a simulated device: a rendezvous session over HTTP/2 (its
// own TCP connection) that accepts every consent request.
type simDevice struct {
	id   *identity.Identity
	node int
	sock *quic.Transport // for HTTP/3; nil for HTTP/2
	sess atomic.Pointer[rendezvous.Session]
}

// onRequest accepts, off the session's reading goroutine.
func (d *simDevice) onRequest(r rendezvous.Request) {
	go func() {
		if s := d.sess.Load(); s != nil {
			s.Answer(r.Peer, true)
		}
	}()
}

// benchCluster is three Caddy nodes sharing one external nats-server,
// to which a second nats-server routes without clients of its own: it
// holds the interest graph as every server of a NATS cluster does.
type benchCluster struct {
	nodes   []*testcaddy.Caddy
	procs   []Process
	ns      *natsServer
	routed  *natsServer
	sockets []*quic.Transport // HTTP/3 devices' UDP sockets
}

func startBenchCluster(ctx context.Context, b *testing.B) *benchCluster {
	b.Helper()
	natsBin := buildNATSServer(ctx, b)
	routePort := testcaddy.FreePort(b)
	c := &benchCluster{ns: startNATSServer(ctx, b, natsBin, clusterBenchToken, routePort)}
	c.routed = startNATSServer(ctx, b, natsBin, clusterBenchToken, testcaddy.FreePort(b), "nats://127.0.0.1:"+strconv.Itoa(routePort))
	for deadline := time.Now().Add(30 * time.Second); c.routed.mustVarz(ctx, b).Routes == 0 || c.ns.mustVarz(ctx, b).Routes == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("the two nats-servers not routed within 30s")
		}
	}
	bin := testcaddy.Binary(b)
	port := testcaddy.FreePort(b)
	data := b.TempDir()
	for i, h := range clusterBenchHosts {
		cfg := strings.NewReplacer("NATS_URL", c.ns.URL, "NODE", "node-"+strconv.Itoa(i+1)).Replace(clusterNodeCaddyfile)
		n := testcaddy.StartNodeBinary(b, bin, h, port, data, cfg)
		c.nodes = append(c.nodes, n)
		c.procs = append(c.procs, Process{Admin: n.Admin, PID: n.Pid()})
	}
	for i, n := range c.nodes {
		for deadline := time.Now().Add(30 * time.Second); n.Metrics(b)["netsody_superpeer_cluster_connected"] != 1; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("node %d not connected to NATS within 30s", i+1)
			}
		}
	}
	return c
}

// dial registers d at its node.
func (c *benchCluster) dial(ctx context.Context, d *simDevice) (*rendezvous.Session, error) {
	n := c.nodes[d.node]
	tr := rendezvous.TransportH2
	if d.sock != nil {
		tr = rendezvous.TransportH3
	}
	cfg := n.ClientConfig(d.id, clusterBenchHosts[d.node], tr)
	cfg.QUICTransport = d.sock
	cfg.OnRequest = d.onRequest
	s, err := rendezvous.Dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	d.sess.Store(s)
	return s, nil
}

// registerAll registers devs, -parallel at a time, and returns how long
// that took and how many attempts failed.
func (c *benchCluster) registerAll(ctx context.Context, b *testing.B, devs []*simDevice) (time.Duration, int) {
	b.Helper()
	start := time.Now()
	made, failures, err := setUp(ctx, len(devs), func(ctx context.Context, i int) (*rendezvous.Session, error) {
		return c.dial(ctx, devs[i])
	})
	if err != nil {
		closeAll(made)
		b.Fatalf("registered %d of %d devices: %v", len(made), len(devs), err)
	}
	return time.Since(start), failures
}

// scaleStep is what one step measured.
type scaleStep struct {
	devices     int
	added       int // registered in this step
	regWall     time.Duration
	regFails    int
	regRate     float64
	nodes       []Sample
	perNode     []int // devices at each node (its metric)
	nats        natsVarz
	routed      natsVarz        // the routed server without clients
	one         []time.Duration // introductions on one node
	cross       []time.Duration // introductions across nodes
	failed      int
	inMsgs      int64 // NATS messages in, during the introductions
	outMsgs     int64
	burst       []time.Duration // the burst's introductions, across nodes
	burstFailed int
	burstWall   time.Duration
	load        [2]string // load average before and after
}

// BenchmarkClusterScale runs three Caddy nodes (each its own process, on
// 127.0.0.2-4) and an external nats-server, registers simulated devices
// spread over the nodes in rising steps (-cluster-devices), and prints
// per step: registrations per second, memory per registered device in
// each node and in nats-server, NATS subscriptions, and the latency of
// introductions on one node and across nodes (interleaved; both sides
// consent), with the NATS messages each cross-node introduction costs.
// With -failover it then kills a node and re-registers its devices at
// the survivors, as after a node's death. It is a single measurement:
// run it with -benchtime=1x.
func BenchmarkClusterScale(b *testing.B) {
	steps, err := parseSteps(*flagClusterDevices, len(clusterBenchHosts))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(b.Context(), clusterBenchTimeout)
	defer cancel()
	c := startBenchCluster(ctx, b)

	var devs []*simDevice
	defer func() {
		var ss []*rendezvous.Session
		for _, d := range devs {
			if s := d.sess.Load(); s != nil {
				ss = append(ss, s)
			}
		}
		closeAll(ss)
		for _, tr := range c.sockets {
			tr.Close()
			tr.Conn.Close()
		}
	}()
	base := make([]Sample, len(c.nodes))
	for i, p := range c.procs {
		base[i] = mustSample(ctx, b, p)
	}
	natsBase, routedBase := c.ns.mustVarz(ctx, b), c.routed.mustVarz(ctx, b)

	var results []scaleStep
	offset := 0
	for _, total := range steps {
		st := scaleStep{devices: total, load: [2]string{loadAvg(), ""}}
		var batch []*simDevice
		for i := len(devs); i < total; i++ {
			id, err := identity.Generate()
			if err != nil {
				b.Fatal(err)
			}
			d := &simDevice{id: id, node: i % len(c.nodes)}
			if *flagClusterH3 {
				if i%devicesPerSocket == 0 {
					pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
					if err != nil {
						b.Fatal(err)
					}
					c.sockets = append(c.sockets, &quic.Transport{Conn: pc})
				}
				d.sock = c.sockets[len(c.sockets)-1]
			}
			batch = append(batch, d)
		}
		st.regWall, st.regFails = c.registerAll(ctx, b, batch)
		st.added = len(batch)
		st.regRate = float64(len(batch)) / st.regWall.Seconds()
		devs = append(devs, batch...)
		time.Sleep(settleTime)
		for i, p := range c.procs {
			st.nodes = append(st.nodes, mustSample(ctx, b, p))
			st.perNode = append(st.perNode, devicesAt(b, c.nodes[i]))
		}
		st.nats, st.routed = c.ns.mustVarz(ctx, b), c.routed.mustVarz(ctx, b)
		if got := sum(st.perNode); got != total {
			b.Fatalf("the nodes hold %d devices (%v); want %d", got, st.perNode, total)
		}
		offset = c.introduce(ctx, b, devs, offset, &st)
		offset = burst(ctx, devs, offset, &st)
		st.load[1] = loadAvg()
		results = append(results, st)
		printStep(st)
	}
	printScale(results, base, natsBase, routedBase)
	reportScale(b, results[len(results)-1], base, natsBase)
	if *flagFailover {
		c.failover(ctx, b, devs)
	}
}

// introduce runs -introductions introductions on one node and as many
// across nodes, interleaved, one at a time, and returns the next offset
// into devs. Pair k on one node is (devs[j], devs[j+3]), across nodes
// (devs[j+1], devs[j+2]), with j = offset+6k modulo len(devs), a
// multiple of three: device i is at node i%3.
func (c *benchCluster) introduce(ctx context.Context, b *testing.B, devs []*simDevice, offset int, st *scaleStep) int {
	b.Helper()
	before := c.ns.mustVarz(ctx, b)
	n := len(devs)
	for k := range *flagIntroductions {
		j := (offset + 6*k) % n
		for _, pair := range [][2]int{{j, (j + 3) % n}, {(j + 1) % n, (j + 2) % n}} {
			a, t := devs[pair[0]], devs[pair[1]]
			d, err := introduceOnce(ctx, a, t)
			if err != nil {
				st.failed++
				fmt.Printf("introduction %d (node %d to node %d): %v\n", k, a.node+1, t.node+1, err)
				continue
			}
			if a.node == t.node {
				st.one = append(st.one, d)
			} else {
				st.cross = append(st.cross, d)
			}
		}
	}
	after := c.ns.mustVarz(ctx, b)
	st.inMsgs, st.outMsgs = after.InMsgs-before.InMsgs, after.OutMsgs-before.OutMsgs
	if st.failed > maxIntroFailures {
		b.Errorf("%d introductions failed", st.failed)
	}
	return (offset + 6**flagIntroductions) % n
}

// burst runs -intro-burst introductions across nodes, -intro-parallel
// at a time: pair k is (devs[j], devs[j+1]), j = offset+2k modulo
// len(devs), at neighbouring nodes. It returns the next offset.
func burst(ctx context.Context, devs []*simDevice, offset int, st *scaleStep) int {
	n, total := len(devs), *flagBurst
	if total <= 0 {
		return offset
	}
	durations := make([]time.Duration, total)
	errs := make([]error, total)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range min(max(*flagBurstParallel, 1), total) {
		wg.Go(func() {
			for {
				k := int(next.Add(1) - 1)
				if k >= total || ctx.Err() != nil {
					return
				}
				j := (offset + 2*k) % n
				durations[k], errs[k] = introduceOnce(ctx, devs[j], devs[(j+1)%n])
			}
		})
	}
	wg.Wait()
	st.burstWall = time.Since(start)
	for k, err := range errs {
		if err != nil {
			if st.burstFailed == 0 {
				fmt.Printf("burst introduction %d: %v\n", k, err)
			}
			st.burstFailed++
			continue
		}
		st.burst = append(st.burst, durations[k])
	}
	return (offset + 2*total) % n
}

// introduceOnce asks a's node to introduce a to t, which accepts, and
// returns how long a waited for t's candidates.
func introduceOnce(ctx context.Context, a, t *simDevice) (time.Duration, error) {
	s := a.sess.Load()
	ctx, cancel := context.WithTimeout(ctx, introTimeout)
	defer cancel()
	start := time.Now()
	cands, err := s.Introduce(ctx, t.id.PeerID(), rendezvous.IntroduceOptions{})
	d := time.Since(start)
	if err != nil {
		return d, err
	}
	if cands.Peer != t.id.PeerID() {
		return d, fmt.Errorf("candidates of %v, not of %v", cands.Peer, t.id.PeerID())
	}
	return d, nil
}

// failover kills node 3 (SIGKILL: its sockets close, as when a machine
// dies), waits for its devices to see their sessions end and for NATS to
// drop its subscriptions, then re-registers those devices at nodes 1
// and 2 as fast as -parallel allows, and prints the rate.
func (c *benchCluster) failover(ctx context.Context, b *testing.B, devs []*simDevice) {
	b.Helper()
	const dead = 2
	var lost []*simDevice
	for _, d := range devs {
		if d.node == dead {
			lost = append(lost, d)
		}
	}
	before := c.ns.mustVarz(ctx, b)
	killed := time.Now()
	if err := syscall.Kill(c.nodes[dead].Pid(), syscall.SIGKILL); err != nil {
		b.Fatal(err)
	}
	deadline := time.After(deathTimeout)
	for _, d := range lost {
		select {
		case <-d.sess.Load().Done():
		case <-deadline:
			b.Fatalf("the killed node's devices did not see their sessions end within %v", deathTimeout)
		}
	}
	ended := time.Since(killed)
	var gone natsVarz
	for {
		gone = c.ns.mustVarz(ctx, b)
		if int(before.Subscriptions-gone.Subscriptions) >= len(lost) {
			break
		}
		if time.Since(killed) > deathTimeout {
			b.Fatalf("nats-server kept %d subscriptions after the node died (had %d)", gone.Subscriptions, before.Subscriptions)
		}
		time.Sleep(20 * time.Millisecond)
	}
	dropped := time.Since(killed)
	for i, d := range lost {
		d.node = i % dead
	}
	load := loadAvg()
	wall, fails := c.registerAll(ctx, b, lost)
	after := c.ns.mustVarz(ctx, b)
	fmt.Printf("\nFailover: node 3 killed with %d devices; their sessions ended within %v, NATS dropped its %d subscriptions within %v.\n",
		len(lost), ended.Round(time.Millisecond), before.Subscriptions-gone.Subscriptions, dropped.Round(time.Millisecond))
	fmt.Printf("Re-registered all %d at nodes 1 and 2 in %v: %.0f registrations/s (%d failed attempts, -parallel=%d, load %s -> %s); NATS subscriptions %d -> %d.\n\n",
		len(lost), wall.Round(time.Millisecond), float64(len(lost))/wall.Seconds(), fails, *flagParallel, load, loadAvg(), gone.Subscriptions, after.Subscriptions)
	b.ReportMetric(float64(len(lost))/wall.Seconds(), "failover-reg/s")
}

// devicesAt is the number of devices node n holds.
func devicesAt(b *testing.B, n *testcaddy.Caddy) int {
	return int(n.Metrics(b)["netsody_superpeer_devices"])
}

func printStep(st scaleStep) {
	if len(st.burst)+st.burstFailed > 0 {
		fmt.Printf("burst: %d introductions across nodes, %d at a time, in %v: %.0f/s, p50/p99 %s, %d failed\n",
			len(st.burst)+st.burstFailed, *flagBurstParallel, st.burstWall.Round(time.Millisecond),
			float64(len(st.burst))/st.burstWall.Seconds(), percentiles(st.burst), st.burstFailed)
	}
	fmt.Printf("step: %d devices registered (%d new in %v, %d failed attempts), introductions: %d on one node, %d across, %d failed; load %s -> %s\n",
		st.devices, st.added, st.regWall.Round(time.Millisecond), st.regFails, len(st.one), len(st.cross), st.failed, st.load[0], st.load[1])
}

// printScale prints the table of all steps and reports the last step's
// figures as metrics.
func printScale(steps []scaleStep, base []Sample, natsBase, routedBase natsVarz) {
	const kib = 1024.0
	transport := "HTTP/2"
	if *flagClusterH3 {
		transport = "HTTP/3"
	}
	fmt.Printf("\nCluster scale: three Caddy nodes, one external nats-server and one routed to it, %s devices spread evenly (KiB = 1024 bytes; %d CPUs, %s).\n", transport, runtime.NumCPU(), runtime.Version())
	fmt.Printf("Memory per device is each node's growth since it started empty, after GC, divided by the devices it holds; NATS's is its RSS growth over all devices.\n\n")
	const row = "%8s %8s | %-20s %-20s %-7s | %10s %9s %5s | %10s %9s | %-17s %-17s %9s\n"
	fmt.Printf(row, "devices", "reg/s", "node heap+stk KiB/d", "node RSS KiB/dev", "gor/dev", "NATS KiB/d", "NATS subs", "conns", "routed KiB/d", "subs", "one node p50/p99", "across p50/p99", "msgs/intro")
	for _, st := range steps {
		var held, rssPer, gor []string
		for i, s := range st.nodes {
			n := float64(st.perNode[i])
			held = append(held, strconv.FormatFloat((float64(s.Held())-float64(base[i].Held()))/n/kib, 'f', 0, 64))
			rssPer = append(rssPer, strconv.FormatFloat((float64(s.RSS)-float64(base[i].RSS))/n/kib, 'f', 0, 64))
			gor = append(gor, strconv.FormatFloat(float64(s.Goroutines-base[i].Goroutines)/n, 'f', 1, 64))
		}
		natsPer := float64(st.nats.Mem-natsBase.Mem) / float64(st.devices) / kib
		routedPer := float64(st.routed.Mem-routedBase.Mem) / float64(st.devices) / kib
		msgs := "-"
		if len(st.cross) > 0 {
			msgs = fmt.Sprintf("%.2f/%.2f", float64(st.inMsgs)/float64(len(st.cross)), float64(st.outMsgs)/float64(len(st.cross)))
		}
		fmt.Printf(row, strconv.Itoa(st.devices), strconv.FormatFloat(st.regRate, 'f', 0, 64),
			strings.Join(held, " "), strings.Join(rssPer, " "), gor[0],
			strconv.FormatFloat(natsPer, 'f', 2, 64), strconv.Itoa(int(st.nats.Subscriptions)), strconv.Itoa(st.nats.Connections),
			strconv.FormatFloat(routedPer, 'f', 2, 64), strconv.Itoa(int(st.routed.Subscriptions)),
			percentiles(st.one), percentiles(st.cross), msgs)
	}
	fmt.Printf("\nreg/s: registrations per second in the step (TLS, HTTP/2 or HTTP/3, a signed registration, a NATS subscription; the devices share the 2 cores), -parallel=%d at a time.\n", *flagParallel)
	fmt.Printf("routed: the second nats-server, without clients, routed to the first: the interest graph every server of a NATS cluster holds.\n")
	fmt.Printf("msgs/intro: NATS messages in/out at nats-server per cross-node introduction (one-node introductions send none).\n")
	fmt.Printf("Latencies: from the asker's FrameConnect to the target's candidates, the target consenting; one introduction at a time, one-node and cross-node alternating.\n\n")
}

// reportScale reports the last step's figures as benchmark metrics.
func reportScale(b *testing.B, st scaleStep, base []Sample, natsBase natsVarz) {
	var held, devices float64
	for i, s := range st.nodes {
		held += float64(s.Held()) - float64(base[i].Held())
		devices += float64(st.perNode[i])
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(st.regRate, "reg/s")
	b.ReportMetric(held/devices/1024, "node-KiB/device")
	b.ReportMetric(float64(st.nats.Mem-natsBase.Mem)/devices/1024, "NATS-KiB/device")
	b.ReportMetric(ms(percentile(st.one, 0.50)), "one-node-p50-ms")
	b.ReportMetric(ms(percentile(st.one, 0.99)), "one-node-p99-ms")
	b.ReportMetric(ms(percentile(st.cross, 0.50)), "across-p50-ms")
	b.ReportMetric(ms(percentile(st.cross, 0.99)), "across-p99-ms")
	if st.burstWall > 0 {
		b.ReportMetric(float64(len(st.burst))/st.burstWall.Seconds(), "burst-intro/s")
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile is the p-quantile of ds (0 for none).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// percentiles formats p50/p99 of ds in milliseconds.
func percentiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	at := func(p float64) string { return strconv.FormatFloat(ms(percentile(ds, p)), 'f', 2, 64) }
	return at(0.50) + "/" + at(0.99) + " ms"
}

// parseSteps parses the rising device counts, each rounded up to a
// multiple of nodes.
func parseSteps(s string, nodes int) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2*nodes {
			return nil, fmt.Errorf("-cluster-devices=%q: %q is not a count of at least %d", s, f, 2*nodes)
		}
		n = (n + nodes - 1) / nodes * nodes
		if len(out) > 0 && n <= out[len(out)-1] {
			return nil, fmt.Errorf("-cluster-devices=%q: counts must rise", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// loadAvg is the machine's 1-minute load average, for the record.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func sum(xs []int) int {
	t := 0
	for _, x := range xs {
		t += x
	}
	return t
}
