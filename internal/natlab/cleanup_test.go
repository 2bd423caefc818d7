package natlab

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCloseRemovesEverything builds a lab with one of everything, times the
// build and the teardown, and checks that Close leaves no namespace.
func TestCloseRemovesEverything(t *testing.T) {
	t.Parallel()
	Require(t)
	start := time.Now()
	lab, err := New(Options{Name: "close"})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			lab.Close()
		}
	}()
	_, err = lab.AddPublicHost("sp1")
	if err == nil {
		_, err = lab.AddPublicHost("sp2", WithDelay(10*time.Millisecond))
	}
	var dev *Host
	for i, kind := range []NATKind{EndpointIndependent, PortDependentFiltering, Symmetric, UDPBlocked} {
		if err != nil {
			break
		}
		var nat *NAT
		if nat, err = lab.AddNAT(fmt.Sprintf("nat%d", i), kind); err == nil {
			dev, err = nat.AddDevice(fmt.Sprintf("dev%d", i))
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	built := time.Since(start)
	names := lab.Namespaces()

	// A process left running in the lab is killed by Close.
	sleeper := dev.Command("sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	if err := waitEntered(sleeper.Process.Pid, dev.Namespace()); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	closed = true
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	removed := time.Since(start)
	t.Logf("%d namespaces built in %v, removed in %v", len(names), built, removed)

	for _, ns := range names {
		if _, err := os.Stat(nsPath(ns)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s still exists after Close (%v)", ns, err)
		}
	}
	if exited, _ := waitExit(sleeper, 5*time.Second); !exited {
		t.Error("a process in the lab survived Close")
	}
	if err := lab.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := lab.AddPublicHost("late"); err == nil {
		t.Error("AddPublicHost after Close succeeded")
	}
}

// TestStaleNamespacesRemoved fakes namespaces of lab owners that are gone —
// one with a dead pid, one with this pid but another start time (the pid was
// reused) — and checks that the next New removes them, while a namespace of
// this live process stays. Another test binary's New may remove the fakes
// first, which is as good; that processes in stale namespaces are killed is
// checked by TestSignalCleanup.
//
// It does not run in parallel, so that the New of a test in this binary
// cannot interfere.
func TestStaleNamespacesRemoved(t *testing.T) {
	Require(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	owner, err := selfOwner()
	if err != nil {
		t.Fatal(err)
	}
	stale := []string{
		fmt.Sprintf("%s%d-zz-1-stale-a", nsPrefix, dead.Process.Pid),
		fmt.Sprintf("%s%d-0-1-stale-b", nsPrefix, os.Getpid()),
	}
	live := fmt.Sprintf("%s%s-999999-stale-c", nsPrefix, owner)
	for _, ns := range append(stale, live) {
		if err := createNamespace(ns); err != nil {
			t.Fatal(err)
		}
	}
	defer removeNamespaces([]string{live})

	lab, err := New(Options{Name: "stale"})
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	for _, ns := range stale {
		if _, err := os.Stat(nsPath(ns)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stale namespace %s survived New (%v)", ns, err)
			removeNamespaces([]string{ns})
		}
	}
	if _, err := os.Stat(nsPath(live)); err != nil {
		t.Errorf("namespace %s of this live process was removed: %v", live, err)
	}
}

// TestSignalCleanup runs a lab in a child process: on SIGTERM the child must
// remove its namespaces and die of the signal; after SIGKILL, which nothing
// can catch, RemoveStale must remove them. Not parallel, for the reason
// TestStaleNamespacesRemoved gives.
func TestSignalCleanup(t *testing.T) {
	Require(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), signalHelperEnv+"=1")
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := make(chan string, 1)
			go func() {
				sc := bufio.NewScanner(out)
				if sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			// The helper prints the pid of a process it left in its
			// lab, then the lab's namespaces.
			var sleeper int
			var names []string
			select {
			case line := <-lines:
				if f := strings.Fields(line); len(f) > 1 {
					sleeper, _ = strconv.Atoi(f[0])
					names = f[1:]
				}
			case <-time.After(10 * time.Second):
			}
			if sleeper == 0 {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatal("the helper built no lab")
			}
			for _, ns := range names {
				if _, err := os.Stat(nsPath(ns)); err != nil {
					t.Fatalf("helper namespace %s: %v", ns, err)
				}
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			exited, err := waitExit(cmd, 10*time.Second)
			var exit *exec.ExitError
			if !exited || !errors.As(err, &exit) {
				t.Fatalf("helper: %v, want death by %v", err, sig)
			}
			if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != sig {
				t.Errorf("helper ended with %v, want death by %v", exit, sig)
			}
			if sig == syscall.SIGKILL {
				// Another test binary's New may be removing them at the
				// same time, and make a removal here fail; what counts is
				// that they are gone afterwards.
				removed, err := RemoveStale()
				t.Logf("RemoveStale removed %v (%v)", removed, err)
			}
			for _, ns := range names {
				if _, err := os.Stat(nsPath(ns)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("namespace %s survived %v (%v)", ns, sig, err)
					removeNamespaces([]string{ns})
				}
			}
			if !processGone(sleeper) {
				t.Errorf("process %d left in the lab survived %v", sleeper, sig)
				syscall.Kill(sleeper, syscall.SIGKILL)
			}
		})
	}
}

// processGone reports whether pid has exited (or is a zombie), waiting up to
// 2 s: the kernel delivers SIGKILL asynchronously.
func processGone(pid int) bool {
	for range 200 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && bytes.HasPrefix(b[i+1:], []byte(" Z")) {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// waitExit waits for cmd to exit, up to timeout; after that it kills it.
// It reports whether cmd exited by itself, with Wait's error.
func waitExit(cmd *exec.Cmd, timeout time.Duration) (bool, error) {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return true, err
	case <-time.After(timeout):
		cmd.Process.Kill()
		return false, <-done
	}
}
