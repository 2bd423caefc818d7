package bench

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

var (
	flagRelayDuration = flag.Duration("relay-duration", 5*time.Second, "how long device A sends in each throughput phase of BenchmarkRelay")
	flagRelayPings    = flag.Int("relay-pings", 2000, "pings per path in the RTT phase of BenchmarkRelay")
)

// Targets for relayed throughput, as a share of the plain forwarder's.
const (
	targetH3Share = 0.50
	targetH2Share = 0.40
)

// relayCaddyfile sets each leg's token bucket and the budgets far above what loopback
// carries, so that the limiter does not cap the measurement.
const relayCaddyfile = testcaddy.Global + `
localhost {
	bind 127.0.0.1
	netsody_superpeer {
		relay {
			rate           10GB
			burst          16MB
			device_rate    10GB 16MB
			total_rate     10GB 16MB
			fast_path_port FAST_PORT
		}
	}
	respond "x"
}
`

// relaySocketBuffer is asked for as the receive and send buffers of the
// devices' UDP sockets on the forwarder's path, as the forwarder asks for
// its own; quic-go asks for more on its sockets by itself.
const relaySocketBuffer = 4 << 20

// BenchmarkRelay relays 1200-byte datagrams from device A to device B
// through one super peer on this machine, over HTTP/3 on both legs and
// over HTTP/2 on both legs, and through a plain Go UDP forwarder
// (./udpforward) as the yardstick, each for -relay-duration; then it
// measures the round trip A→B→A with -relay-pings pings. It prints the
// delivered throughput, loss, the relaying process's CPU per GB, and the
// RTT, with ratios to the forwarder. It is a single measurement: run it
// with -benchtime=1x; b.N is ignored.
func BenchmarkRelay(b *testing.B) {
	if *flagRelayDuration <= 0 || *flagRelayPings <= 0 {
		b.Fatalf("-relay-duration=%v -relay-pings=%d: both must be positive", *flagRelayDuration, *flagRelayPings)
	}
	ctx, cancel := context.WithTimeout(b.Context(), benchTimeout)
	defer cancel()
	fwdBin := buildForwarder(ctx, b)
	testcaddy.Binary(b)

	udp := measureForwarder(ctx, b, fwdBin)

	fastPort := testcaddy.FreeUDPPort(b)
	c := testcaddy.Start(b, strings.Replace(relayCaddyfile, "FAST_PORT", strconv.Itoa(fastPort), 1))
	pid, err := ChildPID(c.Bin)
	if err != nil {
		b.Fatal(err)
	}
	sp := Process{Admin: c.Admin, PID: pid}
	fast := measureFast(ctx, b, c, sp, fastPort)
	h3 := measureRelay(ctx, b, c, sp, rendezvous.TransportH3)
	h2 := measureRelay(ctx, b, c, sp, rendezvous.TransportH2)
	c.Stop(b)

	reportRelay(b, []pathResult{fast, h3, h2}, udp)
}

// pathResult is what one path measured.
type pathResult struct {
	name      string
	tp        throughput
	rtt       rtt
	cpu       time.Duration  // the relaying process's, during the throughput phase
	clientCPU time.Duration  // this process's (both devices), likewise
	otherCPU  time.Duration  // every other process's and the kernel's, likewise
	relay     *relayCounters // the super peer's, in the phase; nil for the forwarder
	target    float64        // of the forwarder's throughput; 0 for none
	cpuTarget float64        // the most relay CPU per datagram, to the forwarder's; 0 for none
	key       string         // of its benchmark metrics
}

// cpuPerGB is the relaying process's CPU seconds per GB (1e9 bytes) of
// payload delivered.
func (r pathResult) cpuPerGB() float64 { return r.cpu.Seconds() / (r.tp.bytes() / 1e9) }

// cores is how many CPUs a process kept busy in the phase, on average.
func cores(cpu time.Duration, tp throughput) float64 { return cpu.Seconds() / tp.elapsed.Seconds() }

// measureForwarder measures the path through the plain UDP forwarder.
func measureForwarder(ctx context.Context, b *testing.B, bin string) pathResult {
	b.Helper()
	var socks [2]*net.UDPConn
	for i := range socks {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		pc.SetReadBuffer(relaySocketBuffer)
		pc.SetWriteBuffer(relaySocketBuffer)
		socks[i] = pc
	}
	closeSocks := func() { socks[0].Close(); socks[1].Close() }
	b.Cleanup(closeSocks) // if the forwarder does not start
	fwd := startForwarder(b, bin, socks[0].LocalAddr(), socks[1].LocalAddr())
	l := newLink("UDP forwarder", socks[0], socks[1], fwd.addr, fwd.addr, closeSocks)
	defer l.close()
	r := measure(ctx, b, l, fwd.pid, nil)
	r.key = "udp"
	return r
}

// measureRelay measures the path through the super peer with both
// devices on transport tr.
func measureRelay(ctx context.Context, b *testing.B, c *testcaddy.Caddy, sp Process, tr rendezvous.Transport) pathResult {
	b.Helper()
	l, err := dialRelayLink(ctx, c, tr)
	if err != nil {
		b.Fatalf("setting up the %s↔%s relay: %v", tr, tr, err)
	}
	defer l.close()
	r := measure(ctx, b, l, sp.PID, &sp)
	r.target, r.key = targetH3Share, "h3"
	if tr == rendezvous.TransportH2 {
		r.target, r.key = targetH2Share, "h2"
	}
	return r
}

// measure runs the throughput phase, then the RTT phase, on l; pid is the
// process that relays, sp the super peer if it is one.
func measure(ctx context.Context, b *testing.B, l *link, pid int, sp *Process) pathResult {
	b.Helper()
	r := pathResult{name: l.name}
	cpu0, me0, all0 := mustCPU(b, pid), mustCPU(b, os.Getpid()), mustMachineCPU(b)
	var counters0 relayCounters
	var profiled func() error
	if sp != nil {
		var ok bool
		if counters0, ok = readRelayCounters(ctx, *sp); !ok {
			sp = nil // a super peer without relay metrics: go without them
		}
		if *flagProfiles != "" {
			profiled = cpuProfile(ctx, *sp, *flagRelayDuration, *flagProfiles, "relay-"+strings.ReplaceAll(l.name, "↔", "-"))
		}
	}
	tp, err := l.blast(ctx, *flagRelayDuration)
	if err != nil {
		b.Fatalf("throughput phase: %v", err)
	}
	r.tp = tp
	r.cpu, r.clientCPU = mustCPU(b, pid)-cpu0, mustCPU(b, os.Getpid())-me0
	r.otherCPU = max(mustMachineCPU(b)-all0-r.cpu-r.clientCPU, 0)
	if sp != nil {
		if c, ok := readRelayCounters(ctx, *sp); ok {
			c = c.sub(counters0)
			r.relay = &c
		}
	}
	if profiled != nil {
		if err := profiled(); err != nil {
			b.Fatalf("CPU profile of the super peer: %v", err)
		}
	}
	if r.rtt, err = l.pingPong(ctx, *flagRelayPings); err != nil {
		b.Fatalf("RTT phase: %v", err)
	}
	fmt.Printf("measured %s: %.0f datagrams/s, RTT p50 %v\n", l.name, tp.dgramsPerSec(), r.rtt.percentile(50).Round(time.Microsecond))
	return r
}

func mustCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	d, err := cpuTime(pid)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

func mustMachineCPU(b *testing.B) time.Duration {
	b.Helper()
	d, err := machineCPU()
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// relayDevice is one device registered with the super peer for the
// relay benchmark.
type relayDevice struct {
	id   *identity.Identity
	s    *rendezvous.Session
	sock *quic.Transport // HTTP/3: the device's own UDP socket
}

func (d *relayDevice) close() {
	if d.s != nil {
		d.s.Close()
	}
	if d.sock != nil {
		d.sock.Close()
		d.sock.Conn.Close()
	}
}

// dialRelayLink registers two devices over tr and opens their relay
// sessions towards each other, at once, as consent requires.
func dialRelayLink(ctx context.Context, c *testcaddy.Caddy, tr rendezvous.Transport) (*link, error) {
	a, b, closeFn, err := dialRelayLegs(ctx, c, tr)
	if err != nil {
		return nil, err
	}
	return newLink(string(tr)+"↔"+string(tr), a, b, nil, nil, closeFn), nil
}

// dialRelayLegs registers two devices over tr and opens their relay
// sessions towards each other; closeFn closes both and the devices.
func dialRelayLegs(ctx context.Context, c *testcaddy.Caddy, tr rendezvous.Transport) (_, _ net.PacketConn, closeFn func(), err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*dialTimeout)
	defer cancel()
	var devs [2]*relayDevice
	defer func() {
		if err != nil {
			for _, d := range devs {
				if d != nil {
					d.close()
				}
			}
		}
	}()
	port := strconv.Itoa(c.Port)
	for i := range devs {
		d := &relayDevice{}
		devs[i] = d
		if d.id, err = identity.Generate(); err != nil {
			return nil, nil, nil, err
		}
		cfg := rendezvous.ClientConfig{
			Identity:  d.id,
			URL:       "https://localhost:" + port,
			Addr:      "127.0.0.1:" + port,
			Transport: tr,
			TLSConfig: &tls.Config{RootCAs: c.Roots},
		}
		if tr == rendezvous.TransportH3 {
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				return nil, nil, nil, err
			}
			d.sock = &quic.Transport{Conn: pc}
			cfg.QUICTransport = d.sock
		}
		if d.s, err = rendezvous.Dial(ctx, cfg); err != nil {
			return nil, nil, nil, fmt.Errorf("registering device %c: %w", 'A'+i, err)
		}
	}

	type dialed struct {
		c   net.PacketConn
		err error
	}
	dial := func(d, peer *relayDevice) dialed {
		if tr == rendezvous.TransportH3 {
			c, err := relay.DialH3(ctx, d.s.HTTP3(), d.s.Authority(), peer.id.PeerID())
			if err != nil {
				return dialed{err: err}
			}
			return dialed{c: c}
		}
		c, err := relay.DialH2(ctx, d.s.HTTP2(), d.s.Authority(), peer.id.PeerID())
		if err != nil {
			return dialed{err: err}
		}
		return dialed{c: c}
	}
	ach := make(chan dialed, 1)
	go func() { ach <- dial(devs[0], devs[1]) }()
	bd := dial(devs[1], devs[0])
	ad := <-ach
	if ad.err != nil || bd.err != nil {
		for _, d := range []dialed{ad, bd} {
			if d.c != nil {
				d.c.Close()
			}
		}
		if ad.err != nil {
			return nil, nil, nil, fmt.Errorf("relay A→B: %w", ad.err)
		}
		return nil, nil, nil, fmt.Errorf("relay B→A: %w", bd.err)
	}
	return ad.c, bd.c, func() {
		ad.c.Close()
		bd.c.Close()
		devs[0].close()
		devs[1].close()
	}, nil
}
