package natlab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// nsDir is where `ip netns` keeps named namespaces.
const nsDir = "/run/netns"

// nsPath is the file that names namespace ns.
func nsPath(ns string) string { return filepath.Join(nsDir, ns) }

// doIn runs fn on an OS thread switched into namespace ns. It runs fn on a
// goroutine of its own, locked to its thread: if the thread cannot be
// switched back, the goroutine ends locked and Go discards the thread, so no
// other code ever runs in the wrong namespace. A panic in fn is re-raised in
// the caller.
func doIn(ns string, fn func() error) error {
	type result struct {
		err      error
		returned bool
		panicked bool
		panicVal any
	}
	resc := make(chan result, 1)
	go func() {
		var res result
		defer func() { resc <- res }()

		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("natlab: opening this thread's namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(nsPath(ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("natlab: opening namespace %s: %w", ns, err)
			return
		}
		err = unix.Setns(target, unix.CLONE_NEWNET)
		unix.Close(target)
		if err != nil {
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("natlab: entering namespace %s: %w", ns, err)
			return
		}
		defer func() {
			if p := recover(); p != nil {
				res.panicked, res.panicVal = true, p
			}
			if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
				// Stay locked: the thread dies with this goroutine.
				res.err = errors.Join(res.err, fmt.Errorf("natlab: leaving namespace %s: %w", ns, err))
				return
			}
			runtime.UnlockOSThread()
		}()
		res.err = fn()
		res.returned = true
	}()
	res := <-resc
	switch {
	case res.panicked:
		panic(res.panicVal)
	case !res.returned && res.err == nil:
		return fmt.Errorf("natlab: function run in namespace %s exited its goroutine (t.FailNow inside Do?); return an error instead", ns)
	}
	return res.err
}

// createNamespace adds a named namespace.
func createNamespace(ns string) error {
	return runIP("", "", []string{"netns add " + ns})
}

// removeNamespaces kills the processes left in the namespaces and removes
// their names; the kernel frees each namespace once nothing holds it.
func removeNamespaces(names []string) error {
	if len(names) == 0 {
		return nil
	}
	killProcessesIn(names)
	lines := make([]string, len(names))
	for i, ns := range names {
		lines[i] = "netns del " + ns
	}
	// -force: remove what can be removed even when one line fails.
	return runIPForce(lines)
}

// killProcessesIn sends SIGKILL to every other process whose network
// namespace is one of names: binaries a test started with Host.Command and
// did not stop, or that outlived a killed test process.
func killProcessesIn(names []string) {
	type nsID struct{ dev, ino uint64 }
	want := make(map[nsID]bool, len(names))
	for _, ns := range names {
		var st unix.Stat_t
		if unix.Stat(nsPath(ns), &st) == nil {
			want[nsID{st.Dev, st.Ino}] = true
		}
	}
	if len(want) == 0 {
		return
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/net", &st) != nil {
			continue
		}
		if want[nsID{st.Dev, st.Ino}] {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// runIP runs `ip [family] [-n ns] -batch -` with lines as its script;
// family is "" or "-6". An empty ns means the namespace of the caller.
func runIP(ns, family string, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	var args []string
	if family != "" {
		args = append(args, family)
	}
	if ns != "" {
		args = append(args, "-n", ns)
	}
	return runIPArgs(append(args, "-batch", "-"), lines)
}

// runIPForce runs lines in the caller's namespace and goes on after a failed
// line.
func runIPForce(lines []string) error {
	return runIPArgs([]string{"-force", "-batch", "-"}, lines)
}

func runIPArgs(args, lines []string) error {
	t, err := lookTools()
	if err != nil {
		return err
	}
	cmd := exec.Command(t.ip, args...)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s\nscript:\n%s", strings.Join(args, " "), err,
			bytes.TrimSpace(out), strings.Join(lines, "\n"))
	}
	return nil
}

// applyNFT loads an nftables ruleset in namespace ns. nft has no namespace
// option; it is started from a thread inside the namespace, which the child
// inherits.
func applyNFT(ns, ruleset string) error {
	t, err := lookTools()
	if err != nil {
		return err
	}
	return doIn(ns, func() error {
		cmd := exec.Command(t.nft, "-f", "-")
		cmd.Stdin = strings.NewReader(ruleset)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("nft -f: %w: %s\nruleset:%s", err, bytes.TrimSpace(out), ruleset)
		}
		return nil
	})
}

// sysctl is one /proc/sys/net setting of a namespace.
type sysctl struct {
	key   string // below /proc/sys/net, e.g. "ipv4/ip_forward"
	value string
	ipv6  bool // an IPv6 setting: skipped when the kernel has no IPv6
	maybe bool // set only where the kernel has it (br_netfilter's)
}

var (
	// hostSysctls quiet IPv6 autoconfiguration: the lab sets every
	// address itself and wants them usable at once (no DAD delay).
	hostSysctls = []sysctl{
		{key: "ipv6/conf/all/accept_dad", value: "0", ipv6: true},
		{key: "ipv6/conf/default/accept_dad", value: "0", ipv6: true},
		{key: "ipv6/conf/default/addr_gen_mode", value: "1", ipv6: true},
		{key: "ipv6/conf/default/accept_ra", value: "0", ipv6: true},
		{key: "ipv6/conf/default/router_solicitations", value: "0", ipv6: true},
	}
	// routerSysctls add forwarding and turn off reverse-path filtering,
	// which would drop packets a delay router writes back into its TUN.
	routerSysctls = append(hostSysctls[:len(hostSysctls):len(hostSysctls)],
		sysctl{key: "ipv4/ip_forward", value: "1"},
		sysctl{key: "ipv4/conf/all/rp_filter", value: "0"},
		sysctl{key: "ipv4/conf/default/rp_filter", value: "0"},
		sysctl{key: "ipv6/conf/all/forwarding", value: "1", ipv6: true},
	)
	// natSysctls make the LAN bridge a plain switch: with br_netfilter
	// (built into some kernels) bridged frames would otherwise pass the
	// router's nftables hooks.
	natSysctls = append(routerSysctls[:len(routerSysctls):len(routerSysctls)],
		sysctl{key: "bridge/bridge-nf-call-iptables", value: "0", maybe: true},
		sysctl{key: "bridge/bridge-nf-call-ip6tables", value: "0", maybe: true},
	)
	// noIPv6Sysctls switch IPv6 off in a lab built without it.
	noIPv6Sysctls = []sysctl{
		{key: "ipv6/conf/all/disable_ipv6", value: "1", ipv6: true},
		{key: "ipv6/conf/default/disable_ipv6", value: "1", ipv6: true},
	}
)

// setSysctls applies settings in namespace ns; /proc/sys/net shows the
// namespace of the thread that opens it.
func setSysctls(ns string, settings []sysctl, kernelHasIPv6 bool) error {
	return doIn(ns, func() error {
		for _, s := range settings {
			if s.ipv6 && !kernelHasIPv6 {
				continue
			}
			p := "/proc/sys/net/" + s.key
			if err := os.WriteFile(p, []byte(s.value+"\n"), 0); err != nil {
				if s.maybe && errors.Is(err, os.ErrNotExist) {
					continue
				}
				return fmt.Errorf("natlab: sysctl net/%s=%s: %w", s.key, s.value, err)
			}
		}
		return nil
	})
}
