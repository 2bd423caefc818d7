package natlab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"unicode"
)

// EnvRequire is the environment variable that makes an unavailable lab a
// test failure instead of a skip. CI sets NETSODY_NATLAB=1 and runs as root.
const EnvRequire = "NETSODY_NATLAB"

// tools are the binaries the lab runs.
type tools struct{ ip, nft string }

var lookTools = sync.OnceValues(func() (tools, error) {
	var t tools
	var err error
	if t.ip, err = exec.LookPath("ip"); err != nil {
		return t, errors.New("natlab: ip (iproute2) not found in PATH; install iproute2")
	}
	if t.nft, err = exec.LookPath("nft"); err != nil {
		return t, errors.New("natlab: nft not found in PATH; install nftables")
	}
	return t, nil
})

// Available reports why the lab cannot run here, or nil when it can: it
// needs Linux, root, ip and nft, and network namespaces. The delay routers
// of WithDelay also need /dev/net/tun; building one says so if it is
// missing.
func Available() error { return available() }

var available = sync.OnceValue(func() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("natlab: needs Linux network namespaces, not %s", runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		return errors.New("natlab: needs root to create network namespaces")
	}
	if _, err := lookTools(); err != nil {
		return err
	}
	return netnsWorks()
})

// netnsWorks checks that the kernel has network namespaces. (Creating one
// here would cost a thread, and possibly the main one, which Go cannot
// discard; New reports it if `ip netns add` fails.)
func netnsWorks() error {
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return fmt.Errorf("natlab: kernel without network namespaces: %w", err)
	}
	return nil
}

// kernelIPv6 reports whether the kernel has IPv6.
func kernelIPv6() error {
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		return fmt.Errorf("natlab: kernel has no IPv6: %w", err)
	}
	return nil
}

// Require skips the test when the lab is unavailable, with the reason; with
// NETSODY_NATLAB=1 in the environment it fails the test instead.
func Require(tb testing.TB) {
	tb.Helper()
	err := Available()
	if err == nil {
		return
	}
	if os.Getenv(EnvRequire) == "1" {
		tb.Fatalf("%v (%s=1 requires the NAT lab)", err, EnvRequire)
	}
	tb.Skipf("%v (set %s=1 to make this a failure)", err, EnvRequire)
}

// NewForTest is Require, then New with the lab closed by tb.Cleanup (which
// also runs when the test fails or panics). An empty opts.Name becomes a tag
// from the test's name.
func NewForTest(tb testing.TB, opts Options) *Lab {
	tb.Helper()
	Require(tb)
	if opts.Name == "" {
		opts.Name = tagFrom(tb.Name())
	}
	l, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Errorf("natlab: closing lab: %v", err)
		}
	})
	return l
}

// tagFrom makes a lab name from a test name: its letters and digits after
// "Test", at most 8.
func tagFrom(testName string) string {
	var b strings.Builder
	for _, r := range strings.TrimPrefix(testName, "Test") {
		if r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)) {
			b.WriteRune(unicode.ToLower(r))
			if b.Len() == 8 {
				break
			}
		}
	}
	if b.Len() == 0 {
		return "test"
	}
	return b.String()
}
