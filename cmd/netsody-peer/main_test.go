package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/peer"
	"github.com/netsody/superpeer/rendezvous"
)

// The tests drive the binary as a user would: built once, run with
// os/exec against super peers in the test process, on loopback only.

var (
	bin        string   // the netsody-peer binary under test
	buildFlags []string // -race when the tests run with it (race_test.go)
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "netsody-peer-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "netsody-peer")
	args := append([]string{"build", "-o", bin}, buildFlags...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	out, err := exec.CommandContext(ctx, "go", append(args, ".")...).CombinedOutput()
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building netsody-peer: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// pathLine is connect's report of a path.
var pathLine = regexp.MustCompile(`(?m)^path: (direct 127\.0\.0\.1:\d+|relay via https://127\.0\.0\.1:\d+ \((h[23]|fast)(: [^)]+)?\))$`)

func TestKeygen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "id")
	out, errOut, code := runPeer(t, nil, 30*time.Second, "keygen", "--out", path)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}\n$`).MatchString(out) {
		t.Fatalf("stdout %q, want a peer ID alone on its line", out)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", st.Mode().Perm())
	}
	id, err := identity.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := id.PeerID().String() + "\n"; got != out {
		t.Errorf("file holds %s, printed %s", got, out)
	}

	_, errOut, code = runPeer(t, nil, 30*time.Second, "keygen", "--out", path)
	if code != 1 || !oneLineWith(errOut, "already exists") {
		t.Errorf("keygen over an identity: exit %d, stderr %q", code, errOut)
	}
}

// keygen --pow mines a nonce that passes the check, reporting progress
// on stderr (a few reports for 2^21 expected hashes); a difficulty out of
// range is a usage error.
func TestKeygenPoW(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "id")
	out, errOut, code := runPeer(t, nil, 60*time.Second, "keygen", "--out", path, "--pow", "21")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	id, err := identity.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := id.PeerID().String() + "\n"; got != out {
		t.Errorf("file holds %s, printed %s", got, out)
	}
	if err := identity.CheckProofOfWork(id.PeerID(), id.ProofOfWork, 21); err != nil {
		t.Error(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(errOut), "\n") {
		if line != "" && !strings.HasPrefix(line, "mining proof of work: ") {
			t.Errorf("stderr line %q", line)
		}
	}
	_, errOut, code = runPeer(t, nil, 30*time.Second, "keygen", "--out", path+"2", "--pow", "33")
	if code != 2 || !oneLineWith(errOut, "--pow must be 0 to 32 bits") {
		t.Errorf("--pow 33: exit %d, stderr %q", code, errOut)
	}
}

// keygen --pow shows its progress while it mines: at 32 bits (about 4.3
// billion hashes expected) it reports every 2^20 hashes tried, and an
// interrupt stops it, writing no identity.
func TestKeygenPoWProgress(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "id")
	p := start(t, nil, "keygen", "--out", path, "--pow", "32")
	const first = `mining proof of work: 1048576 hashes, 0% of the 4294967296 expected`
	for deadline := time.Now().Add(2 * time.Minute); !strings.Contains(p.stderr.String(), first); time.Sleep(20 * time.Millisecond) {
		select {
		case <-p.done:
			if p.cmd.ProcessState.ExitCode() == 0 {
				t.Skip("the new key had 32 bits within 2^20 hashes (one in 4096)")
			}
			t.Fatalf("keygen exited %v before its first progress line; stderr:\n%s", p.cmd.ProcessState, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no progress line within 2m; stderr:\n%s", p.stderr.String())
		}
	}
	p.cmd.Process.Signal(os.Interrupt)
	if code := p.wait(30 * time.Second); code != 1 || !strings.Contains(p.stderr.String(), "context canceled") {
		t.Errorf("interrupted keygen: exit %d, stderr:\n%s", code, p.stderr.String())
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("an interrupted keygen left %s: %v", path, err)
	}
}

// listen registers with the identity file's proof of work: a super peer
// that demands it admits an identity from keygen --pow and tells one
// without why, which listen reports.
func TestListenProofOfWork(t *testing.T) {
	t.Parallel()
	const bits = 8
	sp := startSuperPeerAt(t, "127.0.0.1:0", rendezvous.Config{Admit: func(_ context.Context, req rendezvous.AdmissionRequest) error {
		return identity.CheckProofOfWork(req.Peer, req.ProofOfWork, bits)
	}})
	mined := filepath.Join(t.TempDir(), "id")
	if _, errOut, code := runPeer(t, nil, 30*time.Second, "keygen", "--out", mined, "--pow", "8"); code != 0 {
		t.Fatalf("keygen --pow: exit %d: %s", code, errOut)
	}
	p := start(t, nil, append([]string{"listen", "--allow-any"}, deviceArgs(mined, sp)...)...)
	p.waitFor(&p.stderr, `super peer `+regexp.QuoteMeta(sp.URL)+`: connected over h3`, 15*time.Second)
	p.interrupt()

	plain, id := newIdentity(t)
	if identity.ProofOfWorkBits(id, 0) >= bits {
		t.Skip("a new key with 8 bits of proof of work by chance")
	}
	p = start(t, nil, append([]string{"listen", "--allow-any"}, deviceArgs(plain, sp)...)...)
	p.waitFor(&p.stderr, `cannot reach super peer `+regexp.QuoteMeta(sp.URL)+`: .*refused.*8 are required; mine one with .netsody-peer keygen --pow 8.; still trying`, 15*time.Second)
	p.interrupt()
}

// Bytes go to an echoing peer and come back, and the path is reported.
func TestConnectEcho(t *testing.T) {
	t.Parallel()
	sp := startSuperPeer(t)
	l, lid := listen(t, sp, "--echo")
	in := make([]byte, 256<<10)
	rand.Read(in)
	in = append([]byte("hello, peer\n"), in...)
	out, errOut := connect(t, sp, lid, in)
	if !bytes.Equal([]byte(out), in) {
		t.Errorf("got %d bytes back, sent %d", len(out), len(in))
	}
	if !pathLine.MatchString(errOut) {
		t.Errorf("no path line on stderr:\n%s", errOut)
	}
	l.waitFor(&l.stderr, `peer [0-9a-f]{8}: connected`, 5*time.Second)
}

// Without --echo, the listener prints what arrives, and the connection
// ends when the connector's input does.
func TestConnectPrint(t *testing.T) {
	t.Parallel()
	sp := startSuperPeer(t)
	l, lid := listen(t, sp)
	out, _ := connect(t, sp, lid, []byte("printed by the listener\n"))
	if out != "" {
		t.Errorf("connect printed %q, want nothing", out)
	}
	l.waitFor(&l.stdout, `^printed by the listener\n$`, 5*time.Second)
}

// --relay-only goes through the super peer's relay and stays there.
func TestConnectRelayOnly(t *testing.T) {
	t.Parallel()
	sp := startSuperPeer(t)
	_, lid := listen(t, sp, "--echo")
	out, errOut := connect(t, sp, lid, []byte("through the relay"), "--relay-only")
	if out != "through the relay" {
		t.Errorf("echo %q", out)
	}
	want := "path: relay via " + sp.URL + " (h3)\n"
	if !strings.Contains(errOut, want) || strings.Contains(errOut, "path: direct") {
		t.Errorf("stderr:\n%s\nwant %q and no direct path", errOut, want)
	}
}

// listen --allow takes the peer it names and no other; the other hears
// that the listener is unavailable, and both sides say what to do.
func TestListenAllow(t *testing.T) {
	t.Parallel()
	sp := startSuperPeer(t)
	allowedFile, allowed := newIdentity(t)
	strangerFile, stranger := newIdentity(t)
	l, lid := listen(t, sp, "--echo", "--allow", allowed.String())
	run := func(idFile string) (string, string, int) {
		args := append(append([]string{"connect"}, deviceArgs(idFile, sp)...), lid.String())
		return runPeer(t, strings.NewReader("allowed"), 60*time.Second, args...)
	}
	if out, errOut, code := run(allowedFile); code != 0 || out != "allowed" {
		t.Errorf("the allowed peer: exit %d, echo %q; stderr:\n%s", code, out, errOut)
	}
	_, errOut, code := run(strangerFile)
	want := "peer " + lid.Short() + " is unavailable: it is offline, or does not accept this device; there, run listen with --allow " + stranger.String() + " or --allow-any"
	if lines := strings.Split(strings.TrimSpace(errOut), "\n"); code != 1 || lines[len(lines)-1] != "netsody-peer: "+want {
		t.Errorf("a peer not allowed: exit %d, stderr:\n%s\nwant %q", code, errOut, want)
	}
	l.waitFor(&l.stderr, `(?m)^peer `+stranger.String()+` is not allowed: run listen with --allow `+stranger.String()+` or --allow-any$`, 5*time.Second)
}

func TestBench(t *testing.T) {
	t.Parallel()
	sp := startSuperPeer(t)
	_, lid := listen(t, sp, "--echo")
	idFile, _ := newIdentity(t)
	args := append(append([]string{"bench"}, deviceArgs(idFile, sp)...), "--duration", "2s", lid.String())
	out, errOut, code := runPeer(t, nil, 60*time.Second, args...)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, errOut)
	}
	summary := regexp.MustCompile(`^bench: \d+\.\d Mbit/s up, RTT p50 [\d.]+ ms p99 [\d.]+ ms, under load p50 [\d.]+ ms, path (direct 127\.0\.0\.1:\d+|relay via https://127\.0\.0\.1:\d+ \((h[23]|fast)(: [^)]+)?\))( \(.*\))?\n$`)
	if !summary.MatchString(out) {
		t.Errorf("summary %q", out)
	}
	if !regexp.MustCompile(`(?m)^bench: +1s .*RTT p50`).MatchString(errOut) {
		t.Errorf("no progress on stderr:\n%s", errOut)
	}
	t.Logf("%s", strings.TrimSpace(out))
}

// bench says so when the peer does not echo.
func TestBenchNeedsEcho(t *testing.T) {
	t.Parallel()
	sp := startSuperPeer(t)
	_, lid := listen(t, sp)
	idFile, _ := newIdentity(t)
	args := append(append([]string{"bench"}, deviceArgs(idFile, sp)...), "--duration", "1s", lid.String())
	_, errOut, code := runPeer(t, nil, 60*time.Second, args...)
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if code != 1 || !strings.HasSuffix(lines[len(lines)-1], "is the peer running 'listen --echo'?") {
		t.Errorf("exit %d, stderr:\n%s", code, errOut)
	}
}

// --status serves the device's status and metrics; status shows them.
func TestStatus(t *testing.T) {
	t.Parallel()
	sp := startSuperPeer(t)
	l, lid := listen(t, sp, "--echo", "--status", "127.0.0.1:0")
	addr := l.waitFor(&l.stderr, `(?m)^status: http://(127\.0\.0\.1:\d+)/status$`, 5*time.Second)[1]
	connect(t, sp, lid, []byte("x"))

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string) string {
		t.Helper()
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s, %v", path, resp.Status, err)
		}
		return string(b)
	}
	var st peer.Status
	if err := json.Unmarshal([]byte(get("/status")), &st); err != nil {
		t.Fatal(err)
	}
	if st.PeerID != lid.String() || len(st.SuperPeers) != 1 || !st.SuperPeers[0].Connected || st.SuperPeers[0].URL != sp.URL {
		t.Errorf("status %+v", st)
	}
	if len(st.Peers) != 1 {
		t.Fatalf("peers %+v, want the one that connected", st.Peers)
	}
	connector := st.Peers[0].PeerID

	metrics := get("/metrics")
	for _, want := range []string{
		`netsody_peer_super_peer_up{url="` + sp.URL + `"} 1`,
		`netsody_peer_path{path="` + string(st.Peers[0].Path) + `",peer="` + connector + `"} 1`,
		`netsody_peer_path{path="none",peer="` + connector + `"} 0`,
		`netsody_peer_refused_total{reason="busy"} 0`,
		`netsody_peer_refused_total{reason="handshakes"} `,
		// One super peer without a STUN port: one view, no verdict.
		`netsody_peer_nat_mapping{mapping="unknown"} 1`,
		`netsody_peer_nat_mapping{mapping="endpoint-dependent"} 0`,
		`netsody_peer_stun_responses_total{result="dropped"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, metrics)
		}
	}

	out, errOut, code := runPeer(t, nil, 10*time.Second, "status", addr)
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^peer ID +` + lid.String() + `$`),
		regexp.MustCompile(`(?m)^SUPER PEER +CONNECTED +RTT +FAMILY +TRANSPORT +SEEN AS$`),
		regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sp.URL) + ` +yes +(\S+ ms|-) +ipv4 +h3 +127\.0\.0\.1:\d+$`),
		regexp.MustCompile(`(?m)^PEER +PATH +VIA +RTT$`),
		regexp.MustCompile(`(?m)^` + connector[:8] + ` +(direct|relay) +\S+`),
	} {
		if !want.MatchString(out) {
			t.Errorf("status table lacks %s:\n%s", want, out)
		}
	}
	t.Logf("\n%s", out)
}

// A listener that cannot reach its super peer says so once and keeps
// trying, and is reachable when the super peer comes.
func TestListenKeepsTrying(t *testing.T) {
	t.Parallel()
	addr := closedPort(t)
	idFile, _ := newIdentity(t)
	p := start(t, nil, "listen", "--identity", idFile, "--super-peer", "https://"+addr, "--listen", "127.0.0.1:0", "--allow-any")
	p.waitFor(&p.stderr, `(?m)^netsody-peer: cannot reach super peer https://`+regexp.QuoteMeta(addr)+`: .*; still trying$`, 20*time.Second)

	sp := startSuperPeerAt(t, addr)
	// The listener has no --ca: it reaches the super peer but does not
	// trust it. The error changes, the report does not repeat.
	time.Sleep(3 * time.Second)
	if n := strings.Count(p.stderr.String(), "cannot reach super peer"); n != 1 {
		t.Errorf("%d reports of the unreachable super peer, want 1:\n%s", n, p.stderr.String())
	}
	p.interrupt()

	// With the CA it connects once the super peer is up.
	p = start(t, nil, "listen", "--identity", idFile, "--super-peer", sp.URL, "--ca", sp.CA, "--listen", "127.0.0.1:0", "--allow-any")
	p.waitFor(&p.stderr, `super peer `+regexp.QuoteMeta(sp.URL)+`: connected`, 15*time.Second)
	p.interrupt()
}

// A listener whose NAT mapping changes says so.
func TestListenReportsRebinding(t *testing.T) {
	t.Parallel()
	sp := startSuperPeerAt(t, "127.0.0.1:0", rendezvous.Config{KeepaliveInterval: 300 * time.Millisecond, SessionTimeout: 10 * time.Second})
	u, err := url.Parse(sp.URL)
	if err != nil {
		t.Fatal(err)
	}
	nat := sptest.StartUDPProxy(t, netip.MustParseAddrPort(u.Host), nil)
	via := "https://" + nat.Addr().String()
	idFile, _ := newIdentity(t)
	p := start(t, nil, "listen", "--identity", idFile, "--super-peer", via, "--ca", sp.CA, "--listen", "127.0.0.1:0", "--allow-any")
	p.waitFor(&p.stderr, `super peer `+regexp.QuoteMeta(via)+`: connected over h3`, 15*time.Second)
	moved := nat.Rebind()
	if len(moved) != 1 {
		t.Fatalf("the NAT rebound %d mappings, want 1", len(moved))
	}
	p.waitFor(&p.stderr, `(?m)^super peer `+regexp.QuoteMeta(via)+`: now sees this device as `+regexp.QuoteMeta(moved[0].String())+` \(its NAT mapping changed\)$`, 10*time.Second)
	p.interrupt()
}

// oneLineWith reports whether s is one line that contains want, and no
// stack trace.
func oneLineWith(s, want string) bool {
	return strings.Count(s, "\n") == 1 && strings.HasSuffix(s, "\n") && strings.Contains(s, want) && !strings.Contains(s, "goroutine ")
}

// Mistakes get one clear line and a non-zero exit.
func TestErrors(t *testing.T) {
	t.Parallel()
	sp := startSuperPeer(t)
	idFile, _ := newIdentity(t)
	loose := filepath.Join(t.TempDir(), "loose")
	if b, err := os.ReadFile(idFile); err != nil || os.WriteFile(loose, b, 0o644) != nil {
		t.Fatal(err)
	}
	os.Chmod(loose, 0o644) // whatever the umask
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644)
	other, _ := identity.Generate()
	someone := other.PeerID().String()
	dev := func(cmd string, args ...string) []string {
		return append(append([]string{cmd}, deviceArgs(idFile, sp)...), args...)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		want    string
		oneLine bool
	}{
		{"no command", nil, 2, "usage: netsody-peer <command>", false},
		{"unknown command", []string{"frobnicate"}, 2, `unknown command "frobnicate"`, false},
		{"bad flag", dev("connect", "--bogus", someone), 2, "flag provided but not defined: -bogus", true},
		{"bad duration", dev("bench", "--duration", "fast", someone), 2, `invalid value "fast" for flag -duration`, true},
		{"no identity flag", []string{"connect", "--super-peer", sp.URL, someone}, 2, "--identity is required", true},
		{"no super peer", []string{"listen", "--identity", idFile}, 2, "--super-peer is required", true},
		{"no peer ID", dev("connect"), 2, "missing PEERID", true},
		{"short peer ID", dev("connect", "abc123"), 2, "must be 64 hex digits", true},
		{"non-hex peer ID", dev("bench", strings.Repeat("zz", 32)), 2, "not hex", true},
		{"missing identity", []string{"connect", "--identity", "/nonexistent/id", "--super-peer", sp.URL, someone}, 1, "no such file or directory; make one with 'netsody-peer keygen --out /nonexistent/id'", true},
		{"world-readable identity", []string{"listen", "--identity", loose, "--super-peer", sp.URL, "--allow-any"}, 1, "has mode 0644, so others may read the secret key; run 'chmod 600 " + loose + "'", true},
		{"CA not PEM", []string{"connect", "--identity", idFile, "--super-peer", sp.URL, "--ca", notPEM, someone}, 1, "holds no PEM certificate", true},
		{"bad super peer URL", []string{"listen", "--identity", idFile, "--super-peer", "sp.example.com", "--allow-any"}, 1, "must look like https://host[:port]", true},
		{"unknown peer", dev("connect", someone), 1, "peer " + other.PeerID().Short() + " is unavailable: it is offline, or does not accept this device; there, run listen with --allow ", true},
		{"listen allowing nobody", dev("listen"), 2, "say who may connect: --allow PEERID (repeatable) or --allow-any", true},
		{"bad --allow", dev("listen", "--allow", "abc"), 2, `invalid value "abc" for flag -allow: `, true},
		{"keygen without --out", []string{"keygen"}, 2, "--out is required", true},
		{"status without ADDR", []string{"status"}, 2, "missing ADDR", true},
		{"status unreachable", []string{"status", closedPort(t)}, 1, "connection refused", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, errOut, code := runPeer(t, nil, 30*time.Second, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) || (tc.oneLine && !oneLineWith(errOut, tc.want)) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q (one line: %v)", code, errOut, tc.code, tc.want, tc.oneLine)
			}
		})
	}
}

// connect to a super peer that does not answer gives up within --timeout,
// with one line.
func TestConnectUnreachable(t *testing.T) {
	t.Parallel()
	idFile, _ := newIdentity(t)
	other, _ := identity.Generate()
	const timeout = 2 * time.Second
	began := time.Now()
	_, errOut, code := runPeer(t, nil, timeout+10*time.Second,
		"connect", "--identity", idFile, "--super-peer", "https://"+closedPort(t), "--listen", "127.0.0.1:0",
		"--timeout", timeout.String(), other.PeerID().String())
	took := time.Since(began)
	if code != 1 || !oneLineWith(errOut, "cannot reach super peer within 2s") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	if took > timeout+5*time.Second {
		t.Errorf("gave up after %v, with --timeout %v", took, timeout)
	}
}
