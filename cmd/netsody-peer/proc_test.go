package main

import (
	"bytes"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/testcaddy"
)

// syncBuffer collects a child's output while the test reads it.
type syncBuffer = testcaddy.SyncBuffer

// proc is a running netsody-peer.
type proc struct {
	t              *testing.T
	name           string
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{}
}

// start runs netsody-peer with args; it is killed when the test ends,
// if it has not exited by then.
func start(t *testing.T, stdin io.Reader, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: strings.Join(append([]string{"netsody-peer"}, args[:min(len(args), 1)]...), " "), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdin = stdin
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", p.name, p.stderr.String())
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit status.
func (p *proc) wait(within time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		p.t.Fatalf("%s still runs after %v; stderr:\n%s", p.name, within, p.stderr.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// interrupt sends SIGINT and checks the process exits cleanly.
func (p *proc) interrupt() {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(10 * time.Second); code != 0 {
		p.t.Errorf("%s exited %d after SIGINT; stderr:\n%s", p.name, code, p.stderr.String())
	}
}

// waitFor waits until re matches what the process wrote to buf, and
// returns the match and its submatches.
func (p *proc) waitFor(buf *syncBuffer, re string, within time.Duration) []string {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(within)
	for {
		if m := rx.FindStringSubmatch(buf.String()); m != nil {
			return m
		}
		select {
		case <-p.done:
			if m := rx.FindStringSubmatch(buf.String()); m != nil {
				return m
			}
			p.t.Fatalf("%s exited (%v) before writing %q; stderr:\n%s", p.name, p.cmd.ProcessState, re, p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not write %q within %v; stderr:\n%s", p.name, re, within, p.stderr.String())
		}
	}
}

// runPeer runs netsody-peer to its end.
func runPeer(t *testing.T, stdin io.Reader, within time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	p := start(t, stdin, args...)
	code = p.wait(within)
	return p.stdout.String(), p.stderr.String(), code
}

// newIdentity makes an identity with keygen.
func newIdentity(t *testing.T) (path string, id identity.PeerID) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "identity")
	out, errOut, code := runPeer(t, nil, 30*time.Second, "keygen", "--out", path)
	if code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, errOut)
	}
	id, err := identity.ParsePeerID(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("keygen printed %q: %v", out, err)
	}
	return path, id
}

// deviceArgs are the flags of a device on loopback.
func deviceArgs(idFile string, sp superPeer) []string {
	return []string{"--identity", idFile, "--super-peer", sp.URL, "--ca", sp.CA, "--listen", "127.0.0.1:0"}
}

// listen starts a listener that accepts any peer (--allow-any, unless
// extra says whom) and waits for its session with the super peer.
func listen(t *testing.T, sp superPeer, extra ...string) (*proc, identity.PeerID) {
	t.Helper()
	idFile, id := newIdentity(t)
	if !slices.ContainsFunc(extra, func(a string) bool { return a == "--allow" }) {
		extra = append(extra, "--allow-any")
	}
	p := start(t, nil, append(append([]string{"listen"}, deviceArgs(idFile, sp)...), extra...)...)
	p.waitFor(&p.stderr, `super peer `+regexp.QuoteMeta(sp.URL)+`: connected over h3 \(ipv4\)`, 15*time.Second)
	t.Cleanup(p.interrupt) // runs before start's cleanup: a clean exit, checked
	return p, id
}

// connect runs connect with stdin to its end.
func connect(t *testing.T, sp superPeer, to identity.PeerID, stdin []byte, extra ...string) (stdout, stderr string) {
	t.Helper()
	idFile, _ := newIdentity(t)
	args := append(append([]string{"connect"}, deviceArgs(idFile, sp)...), extra...)
	stdout, stderr, code := runPeer(t, bytes.NewReader(stdin), 60*time.Second, append(args, to.String())...)
	if code != 0 {
		t.Fatalf("connect: exit %d; stderr:\n%s", code, stderr)
	}
	return stdout, stderr
}
