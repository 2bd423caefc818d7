package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuTime returns the CPU time (user and system, all threads) that
// process pid has used, from /proc/PID/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	// The command name, field 2, is in parentheses and may hold spaces;
	// utime and stime are fields 14 and 15, the 12th and 13th after it.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: /proc/%d/stat: %q", pid, s)
	}
	var ticks uint64
	for _, v := range f[11:13] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: /proc/%d/stat: %q", pid, s)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// machineCPU returns the CPU time that all CPUs of the machine have spent
// busy (anything but idle and waiting for I/O), from /proc/stat.
func machineCPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("bench: /proc/stat begins %q", line)
	}
	// user nice system idle iowait irq softirq steal (guest time is
	// already in user).
	var ticks uint64
	for i, v := range f[1:9] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: /proc/stat begins %q", line)
		}
		if i != 3 && i != 4 {
			ticks += n
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// forwarder is the running plain UDP forwarder (./udpforward).
type forwarder struct {
	pid  int
	addr *net.UDPAddr
}

// buildForwarder builds ./udpforward and returns the binary's path.
func buildForwarder(ctx context.Context, b *testing.B) string {
	b.Helper()
	return goBuild(ctx, b, "./udpforward", "the UDP forwarder")
}

// startForwarder runs the forwarder between the addresses a and b; it is
// stopped, by closing its standard input, when the benchmark ends.
func startForwarder(b *testing.B, bin string, a, c net.Addr) *forwarder {
	b.Helper()
	cmd := exec.Command(bin, "-a", a.String(), "-b", c.String())
	stdout := startChild(b, "the UDP forwarder", cmd)

	// It prints "udp ADDR".
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Scan()
		line <- sc.Text()
		io.Copy(io.Discard, stdout)
	}()
	var l string
	select {
	case l = <-line:
	case <-time.After(10 * time.Second):
		b.Fatal("the UDP forwarder did not print its address within 10s")
	}
	addr, err := net.ResolveUDPAddr("udp", strings.TrimPrefix(l, "udp "))
	if err != nil || !addr.IP.IsLoopback() {
		b.Fatalf("the UDP forwarder printed %q", l)
	}
	return &forwarder{pid: cmd.Process.Pid, addr: addr}
}

// relayCounters are the super peer's relay counters, from its /metrics.
type relayCounters struct {
	datagrams float64            // relayed, both directions
	drops     map[string]float64 // by reason
}

// readRelayCounters reads p's relay counters; ok is false if it has none.
func readRelayCounters(ctx context.Context, p Process) (c relayCounters, ok bool) {
	var sb strings.Builder
	if err := p.get(ctx, "/metrics", &sb); err != nil {
		return c, false
	}
	const (
		datagrams = "netsody_superpeer_relay_datagrams_total "
		dropped   = `netsody_superpeer_relay_dropped_total{reason="`
		fastDrop  = `netsody_superpeer_fast_path_dropped_total{reason="`
	)
	c.drops = map[string]float64{}
	for line := range strings.Lines(sb.String()) {
		if v, found := strings.CutPrefix(line, datagrams); found {
			c.datagrams, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
			ok = true
		} else if rest, found := strings.CutPrefix(line, dropped); found {
			reason, v, _ := strings.Cut(rest, `"} `)
			c.drops[reason], _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
		} else if rest, found := strings.CutPrefix(line, fastDrop); found {
			reason, v, _ := strings.Cut(rest, `"} `)
			c.drops["fast path "+reason], _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return c, ok
}

// sub returns c − d.
func (c relayCounters) sub(d relayCounters) relayCounters {
	r := relayCounters{datagrams: c.datagrams - d.datagrams, drops: map[string]float64{}}
	for k, v := range c.drops {
		r.drops[k] = v - d.drops[k]
	}
	return r
}

// cpuProfile fetches a CPU profile of p for d into dir/name.cpu.pb.gz, in
// the background; wait for it with the returned function.
func cpuProfile(ctx context.Context, p Process, d time.Duration, dir, name string) (wait func() error) {
	secs := min(max(int(d/time.Second), 1), 25) // within debugClient's timeout
	errc := make(chan error, 1)
	go func() {
		f, err := os.Create(filepath.Join(dir, name+".cpu.pb.gz"))
		if err != nil {
			errc <- fmt.Errorf("bench: %w", err)
			return
		}
		err = p.get(ctx, "/debug/pprof/profile?seconds="+strconv.Itoa(secs), f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		errc <- err
	}()
	return func() error { return <-errc }
}
