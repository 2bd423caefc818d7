package bench

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// reportRelay prints the table, a column per relay path and the
// forwarder, and reports the numbers as benchmark metrics.
func reportRelay(b *testing.B, paths []pathResult, udp pathResult) {
	all := append(slices.Clone(paths), udp)
	d := *flagRelayDuration
	fmt.Printf("\n%d-byte datagrams from device A to device B for %v per path, then %d pings A→B→A, one at a time.\n",
		datagramSize, d, *flagRelayPings)
	fmt.Printf("All processes share this machine's %d CPUs: the super peer (Caddy) or the forwarder, and both devices\n"+
		"(this benchmark's process, which runs a QUIC or TLS client per device on the relay paths). %s, %s/%s.\n\n",
		runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)

	printRow := func(name string, values, ratios []string) {
		row := fmt.Sprintf("%-28s", name)
		for i, v := range values {
			w := 11
			if i == len(paths) {
				w = 13 // the forwarder's
			}
			row += fmt.Sprintf(" %*s", w, v)
		}
		for _, r := range ratios {
			row += fmt.Sprintf(" %9s", r)
		}
		fmt.Println(strings.TrimRight(row, " "))
	}
	var heads, ratioHeads []string
	for _, r := range paths {
		heads = append(heads, r.name)
		ratioHeads = append(ratioHeads, r.key+"/fwd")
	}
	printRow("", append(heads, "UDP forwarder"), ratioHeads)
	ratio := func(get func(pathResult) float64, r pathResult) string {
		if get(udp) == 0 {
			return "-"
		}
		return strconv.FormatFloat(get(r)/get(udp), 'f', 2, 64)
	}
	line := func(name string, get func(pathResult) float64, format func(float64) string, ratios bool) {
		var values, rs []string
		for _, r := range all {
			values = append(values, format(get(r)))
		}
		for _, r := range paths {
			if ratios {
				rs = append(rs, ratio(get, r))
			}
		}
		printRow(name, values, rs)
	}
	fixed := func(prec int) func(float64) string {
		return func(v float64) string { return strconv.FormatFloat(v, 'f', prec, 64) }
	}
	pct := func(v float64) string { return strconv.FormatFloat(100*v, 'f', 2, 64) + "%" }
	micros := func(v float64) string { return strconv.FormatFloat(v/1e3, 'f', 0, 64) }

	mbits := func(r pathResult) float64 { return r.tp.mbitPerSec() }
	line("throughput, Mbit/s", mbits, fixed(1), true)
	line("datagrams/s", func(r pathResult) float64 { return r.tp.dgramsPerSec() }, fixed(0), true)
	line("loss", func(r pathResult) float64 { return r.tp.loss() }, pct, false)
	line("relay CPU, s per GB", pathResult.cpuPerGB, fixed(2), true)
	line("relay CPU, cores busy", func(r pathResult) float64 { return cores(r.cpu, r.tp) }, fixed(2), false)
	line("devices' CPU, cores busy", func(r pathResult) float64 { return cores(r.clientCPU, r.tp) }, fixed(2), false)
	line("other CPU, cores busy", func(r pathResult) float64 { return cores(r.otherCPU, r.tp) }, fixed(2), false)
	p50 := func(r pathResult) float64 { return float64(r.rtt.percentile(50)) }
	p99 := func(r pathResult) float64 { return float64(r.rtt.percentile(99)) }
	line("RTT p50, µs", p50, micros, true)
	line("RTT p99, µs", p99, micros, true)
	verdicts := func(target func(pathResult) float64, at func(pathResult) float64, atMost bool) []string {
		var vs []string
		for _, r := range paths {
			t, v := target(r), "PASS"
			switch {
			case t == 0:
				vs = append(vs, "")
				continue
			case atMost && at(r) > t, !atMost && at(r) < t:
				v = "FAIL"
			}
			op := "≥"
			if atMost {
				op = "≤"
			}
			vs = append(vs, fmt.Sprintf("%s %.2f %s", op, t, v))
		}
		return vs
	}
	blank := make([]string, len(all))
	printRow("throughput target", blank, verdicts(func(r pathResult) float64 { return r.target },
		func(r pathResult) float64 { return mbits(r) / mbits(udp) }, false))
	printRow("relay CPU target", blank, verdicts(func(r pathResult) float64 { return r.cpuTarget },
		func(r pathResult) float64 { return r.cpuPerGB() / udp.cpuPerGB() }, true))

	fmt.Println()
	const busy = 0.25 // cores
	for _, r := range all {
		if c := cores(r.otherCPU, r.tp); c > busy {
			fmt.Printf("WARNING: other processes and the kernel kept %.2f cores busy while %s was measured: its numbers are disturbed; run again on a quiet machine.\n", c, r.name)
		}
	}
	fmt.Printf("Throughput is UDP payload delivered to B, from A's first datagram to B's last. Loss is (sent − received) / sent.\n")
	fmt.Printf("Relay CPU is the utime+stime of the relaying process in the throughput phase; GB = 1e9 bytes of payload.\n")
	fmt.Printf("A sends with a sliding window that B acknowledges through the same path (AIMD, see relay_link_test.go).\n\n")
	for _, r := range all {
		tp := r.tp
		fmt.Printf("%-14s A sent %d, B received %d; B sent %d acks, A received %d; mean window %.0f, %d cuts, %d stalls; %d pings lost\n",
			r.name+":", tp.sent, tp.received, tp.acks, tp.acksIn, tp.meanWindow, tp.lossEvents, tp.stalls, r.rtt.lost)
		if r.relay == nil {
			continue
		}
		// Acks that reached A were relayed; the rest of what the super
		// peer relayed was data, give or take the acks lost after it.
		data := r.relay.datagrams - float64(tp.acksIn)
		fmt.Printf("%-14s the super peer relayed about %.0f data datagrams: about %.0f lost on the way to it or in it, %.0f after it",
			"", data, float64(tp.sent)-data, data-float64(tp.received))
		for _, reason := range slices.Sorted(maps.Keys(r.relay.drops)) {
			if v := r.relay.drops[reason]; v != 0 {
				fmt.Printf("; it dropped %.0f (%s)", v, reason)
			}
		}
		fmt.Println()
	}
	fmt.Println()

	b.ReportMetric(0, "ns/op")
	for _, r := range all {
		b.ReportMetric(r.tp.mbitPerSec(), r.key+"-Mbit/s")
		b.ReportMetric(r.tp.dgramsPerSec(), r.key+"-dgrams/s")
		b.ReportMetric(100*r.tp.loss(), r.key+"-loss-%")
		b.ReportMetric(r.cpuPerGB(), r.key+"-CPU-s/GB")
		b.ReportMetric(float64(r.rtt.percentile(50))/1e3, r.key+"-RTT-p50-us")
		b.ReportMetric(float64(r.rtt.percentile(99))/1e3, r.key+"-RTT-p99-us")
	}
	for _, r := range paths {
		b.ReportMetric(mbits(r)/mbits(udp), r.key+"/udp-throughput")
		b.ReportMetric(r.cpuPerGB()/udp.cpuPerGB(), r.key+"/udp-CPU")
	}
}
