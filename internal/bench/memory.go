// Package bench holds the super peer's benchmarks, each against a baseline
// measured in the same run. BenchmarkIdleDevices measures what an idle
// registered device costs the super peer, over HTTP/2 and over HTTP/3,
// against an idle TLS connection to a bare Go net/http server;
// BenchmarkRelay measures relaying between two devices (h3↔h3, h2↔h2)
// against a plain Go UDP forwarder:
//
//	go test -run='^$' -bench=IdleDevices -benchtime=1x ./internal/bench/
//	go test -run='^$' -bench=Relay -benchtime=1x ./internal/bench/
//
// See README.md in this directory for their flags and how to read their
// tables.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Process is a Go process measured from outside: through a debug endpoint
// that serves /debug/vars (expvar with memstats) and /debug/pprof/, as
// Caddy's admin endpoint does, and through /proc for its resident memory.
type Process struct {
	Admin string // host:port of the debug endpoint, plain HTTP
	PID   int
}

// Sample is a process's memory after forced garbage collections.
type Sample struct {
	HeapInuse  uint64 // bytes in in-use heap spans
	HeapAlloc  uint64 // bytes of live heap objects (after a GC)
	StackInuse uint64 // bytes in goroutine stack spans
	RSS        uint64 // resident set size (VmRSS), bytes
	Goroutines int
}

// Held is the memory the benchmark's targets are about: the heap in use
// (live objects and the unused room in their spans) and the goroutine
// stacks.
func (s Sample) Held() uint64 { return s.HeapInuse + s.StackInuse }

var debugClient = &http.Client{Timeout: 30 * time.Second}

// gcRounds is how many forced collections precede a sample: the second
// frees what the first only found unreachable through finalizers, and
// sweeps what the first left.
const gcRounds = 2

// Sample forces garbage collections and reads p's memory.
func (p Process) Sample(ctx context.Context) (Sample, error) {
	var s Sample
	for range gcRounds {
		// The heap profile with gc=1 runs runtime.GC first.
		if err := p.get(ctx, "/debug/pprof/heap?gc=1", io.Discard); err != nil {
			return s, err
		}
	}
	var vars struct {
		Memstats struct{ HeapInuse, HeapAlloc, StackInuse uint64 } `json:"memstats"`
	}
	var b bytes.Buffer
	if err := p.get(ctx, "/debug/vars", &b); err != nil {
		return s, err
	}
	if err := json.Unmarshal(b.Bytes(), &vars); err != nil {
		return s, fmt.Errorf("bench: reading %s/debug/vars: %w", p.Admin, err)
	}
	var err error
	m := vars.Memstats
	s.HeapInuse, s.HeapAlloc, s.StackInuse = m.HeapInuse, m.HeapAlloc, m.StackInuse
	if s.Goroutines, err = p.goroutines(ctx); err != nil {
		return s, err
	}
	if s.RSS, err = vmRSS(p.PID); err != nil {
		return s, err
	}
	return s, nil
}

// goroutines reads the total from the goroutine profile's first line,
// "goroutine profile: total N".
func (p Process) goroutines(ctx context.Context) (int, error) {
	var b strings.Builder
	if err := p.get(ctx, "/debug/pprof/goroutine?debug=1", &b); err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(b.String(), "\n")
	n, err := strconv.Atoi(strings.TrimPrefix(line, "goroutine profile: total "))
	if err != nil {
		return 0, fmt.Errorf("bench: goroutine profile of %s begins %q", p.Admin, line)
	}
	return n, nil
}

// WriteProfiles saves p's heap profile (after a GC) and its goroutine
// profile, grouped by stack, into dir as NAME.heap.pb.gz and
// NAME.goroutine.txt.
func (p Process) WriteProfiles(ctx context.Context, dir, name string) error {
	for file, path := range map[string]string{
		name + ".heap.pb.gz":    "/debug/pprof/heap?gc=1",
		name + ".goroutine.txt": "/debug/pprof/goroutine?debug=1",
	} {
		f, err := os.Create(filepath.Join(dir, file))
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		err = p.get(ctx, path, f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// get copies the body of the debug endpoint's path to w.
func (p Process) get(ctx context.Context, path string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Admin+path, nil)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	resp, err := debugClient.Do(req)
	if err != nil {
		return fmt.Errorf("bench: GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bench: GET %s: %s", path, resp.Status)
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("bench: GET %s: %w", path, err)
	}
	return nil
}

// vmRSS reads a process's resident set size from /proc/PID/status.
func vmRSS(pid int) (uint64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("bench: VmRSS of %d: %q", pid, v)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("bench: no VmRSS for process %d", pid)
}

// ChildPID finds the child process of this one that runs the executable
// bin: testcaddy keeps its process to itself.
func ChildPID(bin string) (int, error) {
	want, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink("/proc/" + e.Name() + "/exe"); err != nil || exe != want {
			continue
		}
		if ppid, err := parentPID(pid); err == nil && ppid == os.Getpid() {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("bench: no child process runs %s", bin)
}

func parentPID(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("no PPid for process %d", pid)
}

// goBuild builds the Go package pkg (a path or "./dir") into the
// benchmark's temporary directory and returns the binary's path; what
// names it in the error.
func goBuild(ctx context.Context, b *testing.B, pkg, what string) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), filepath.Base(strings.TrimSuffix(pkg, "/v2")))
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("building %s: %v\n%s", what, err, out)
	}
	return bin
}

// startChild starts cmd, whose standard input ending asks it to stop, and
// returns its standard output. When the benchmark ends it closes that
// input and waits up to 10s for the process, then kills it.
func startChild(b *testing.B, what string, cmd *exec.Cmd) io.Reader {
	b.Helper()
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			b.Errorf("%s did not exit within 10s of its input ending", what)
		}
	})
	return stdout
}
