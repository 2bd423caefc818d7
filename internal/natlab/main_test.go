package natlab

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// signalHelperEnv makes the test binary a lab owner for TestSignalCleanup
// instead of running tests.
const signalHelperEnv = "NATLAB_SIGNAL_HELPER"

// initialNetns is the namespace the test process started in.
var initialNetns os.FileInfo

func TestMain(m *testing.M) {
	if os.Getenv(signalHelperEnv) == "1" {
		os.Exit(signalHelper())
	}
	var err error
	if initialNetns, err = os.Stat("/proc/thread-self/ns/net"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m)
}

// signalHelper builds a lab with a process in it, prints that process's pid
// and the lab's namespaces on one line and waits to be signalled or killed;
// after 20 s it gives up.
func signalHelper() int {
	l, err := New(Options{Name: "sighelp"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer l.Close()
	if _, err := l.AddPublicHost("sp", WithDelay(10*time.Millisecond)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	nat, err := l.AddNAT("nat", PortDependentFiltering)
	var dev *Host
	if err == nil {
		dev, err = nat.AddDevice("dev")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	// A process in the lab, as a test's Caddy would be; it must die with
	// the lab however the helper ends.
	sleeper := dev.Command("sleep", "30")
	if err := sleeper.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := waitEntered(sleeper.Process.Pid, dev.Namespace()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println(sleeper.Process.Pid, strings.Join(l.Namespaces(), " "))
	time.Sleep(20 * time.Second)
	return 3
}

// waitEntered waits until process pid has entered namespace ns (ip netns
// exec switches after it starts).
func waitEntered(pid int, ns string) error {
	want, err := os.Stat(nsPath(ns))
	if err != nil {
		return err
	}
	for range 200 {
		if fi, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && os.SameFile(fi, want) {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("process %d did not enter namespace %s", pid, ns)
}
