// Package testcaddy builds Caddy with the super peer plugin and runs it as
// a real process for tests: random ports, its own admin endpoint, its own
// data directory (so its internal CA is the test's), and reloads through
// the `caddy reload` command as an operator would.
package testcaddy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

var (
	buildMu sync.Mutex
	builds  = map[string]*build{} // by build tags
	tmpDir  string
)

type build struct {
	once sync.Once
	bin  string
	err  error
}

// Binary builds internal/caddymain once per test process and returns the
// binary's path. The Go build cache makes later builds quick.
func Binary(t testing.TB) string { return BinaryWithTags(t, "") }

// BinaryWithTags is Binary built with -tags tags (comma-separated), once
// per test process and set of tags: the abuse tests' netsody_testhooks
// build sets the relay's test hook from the environment.
func BinaryWithTags(t testing.TB, tags string) string {
	t.Helper()
	buildMu.Lock()
	b := builds[tags]
	if b == nil {
		b = &build{}
		builds[tags] = b
	}
	if tmpDir == "" {
		var err error
		if tmpDir, err = os.MkdirTemp("", "netsody-caddy-"); err != nil {
			buildMu.Unlock()
			t.Fatal(err)
		}
	}
	dir := tmpDir
	buildMu.Unlock()
	b.once.Do(func() {
		_, here, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(here), "..", "..")
		b.bin = filepath.Join(dir, "caddy")
		args := []string{"build", "-o", b.bin}
		if tags != "" {
			b.bin += "-" + strings.ReplaceAll(tags, ",", "-")
			args = []string{"build", "-tags", tags, "-o", b.bin}
		}
		cmd := exec.Command("go", append(args, "./internal/caddymain")...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("building caddy (tags %q): %v\n%s", tags, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}

// Main is a TestMain for packages that run Caddy: it runs the tests,
// removes the built binaries, and fails the run if goroutines leaked.
func Main(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	Cleanup()
	os.Exit(code)
}

// Cleanup removes the built binary; call it from TestMain after m.Run.
func Cleanup() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if tmpDir != "" {
		os.RemoveAll(tmpDir)
	}
}

// Caddy is a running Caddy process.
type Caddy struct {
	Bin   string
	Dir   string // working directory: Caddyfiles, the site root, data
	Port  int    // the HTTPS port, TCP and UDP
	Admin string // admin endpoint host:port
	Roots *x509.CertPool
	// Host is the address Caddy is checked at (StartNode), and Data its
	// storage directory: "127.0.0.1" and Dir/data for Start.
	Host, Data string

	cmd  *exec.Cmd
	logs *SyncBuffer
	done chan struct{}
	err  error
}

// Vars are substituted in Caddyfiles: {PORT}, {HTTP_PORT}, {ADMIN},
// {DIR}, and {HOST} and {DATA} (Host and Data).
func (c *Caddy) expand(caddyfile string) string {
	return strings.NewReplacer(
		"{PORT}", strconv.Itoa(c.Port),
		"{HTTP_PORT}", strconv.Itoa(c.httpPort()),
		"{ADMIN}", c.Admin,
		"{DIR}", c.Dir,
		"{HOST}", c.Host,
		"{DATA}", c.Data,
	).Replace(caddyfile)
}

func (c *Caddy) httpPort() int { return c.Port + 1 }

// Global is a global options block that every test Caddyfile should start
// with: test ports, the test's admin endpoint, no system trust store.
const Global = `{
	admin {ADMIN}
	https_port {PORT}
	http_port {HTTP_PORT}
	skip_install_trust
	storage file_system {DIR}/data
}
`

// Start writes caddyfile (with the variables above) and runs Caddy on it,
// with env added to its environment ("GODEBUG=...", say). Caddy is stopped
// when the test ends.
func Start(t testing.TB, caddyfile string, env ...string) *Caddy {
	t.Helper()
	return StartBinary(t, Binary(t), caddyfile, env...)
}

// StartBinary is Start with a binary of BinaryWithTags.
func StartBinary(t testing.TB, bin, caddyfile string, env ...string) *Caddy {
	t.Helper()
	c := &Caddy{Bin: bin, Dir: t.TempDir(), logs: &SyncBuffer{}, done: make(chan struct{}), Host: "127.0.0.1"}
	c.Port = FreePort(t)
	c.Data = filepath.Join(c.Dir, "data")
	return c.start(t, caddyfile, env)
}

// NodeGlobal is Global for StartNode: Caddy binds host alone, and keeps
// its data (its internal CA, its certificates) in the shared {DATA}.
const NodeGlobal = `{
	admin {ADMIN}
	https_port {PORT}
	http_port {HTTP_PORT}
	default_bind {HOST}
	skip_install_trust
	storage file_system {DATA}
`

// StartNode runs a Caddy that listens on host (a loopback address) and
// port alone, with its storage in data, so that several share a port on
// distinct addresses and, through the storage, one internal CA: the
// nodes of a cluster. caddyfile should start with NodeGlobal (and close
// its block). Start the first node alone: it makes the CA.
func StartNode(t testing.TB, host string, port int, data, caddyfile string, env ...string) *Caddy {
	t.Helper()
	return StartNodeBinary(t, Binary(t), host, port, data, caddyfile, env...)
}

// StartNodeBinary is StartNode with a binary of BinaryWithTags.
func StartNodeBinary(t testing.TB, bin, host string, port int, data, caddyfile string, env ...string) *Caddy {
	t.Helper()
	c := &Caddy{Bin: bin, Dir: t.TempDir(), logs: &SyncBuffer{}, done: make(chan struct{}), Host: host, Port: port, Data: data}
	return c.start(t, caddyfile, env)
}

func (c *Caddy) start(t testing.TB, caddyfile string, env []string) *Caddy {
	t.Helper()
	c.Admin = "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	path := c.WriteCaddyfile(t, "Caddyfile", caddyfile)
	c.cmd = exec.Command(c.Bin, "run", "--config", path, "--adapter", "caddyfile")
	c.cmd.Dir = c.Dir
	c.cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+c.Dir+"/xdg", "XDG_CONFIG_HOME="+c.Dir+"/xdg", "HOME="+c.Dir)
	c.cmd.Env = append(c.cmd.Env, env...)
	c.cmd.Stdout, c.cmd.Stderr = c.logs, c.logs
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.err = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		c.Stop(t)
		if t.Failed() {
			t.Logf("caddy logs:\n%s", c.Logs())
		}
	})
	c.waitReady(t)
	return c
}

// WriteCaddyfile writes a Caddyfile with the variables substituted.
func (c *Caddy) WriteCaddyfile(t testing.TB, name, caddyfile string) string {
	t.Helper()
	path := filepath.Join(c.Dir, name)
	if err := os.WriteFile(path, []byte(c.expand(caddyfile)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitReady waits for the internal CA and an HTTPS answer on the port.
func (c *Caddy) waitReady(t testing.TB) {
	t.Helper()
	rootPath := c.RootCAFile()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			t.Fatalf("caddy exited: %v\n%s", c.err, c.Logs())
		default:
		}
		if pem, err := os.ReadFile(rootPath); err == nil {
			pool := x509.NewCertPool()
			if pool.AppendCertsFromPEM(pem) {
				c.Roots = pool
				conn, err := tls.Dial("tcp", net.JoinHostPort(c.Host, strconv.Itoa(c.Port)), &tls.Config{RootCAs: pool, ServerName: "localhost"})
				if err == nil {
					conn.Close()
					return
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("caddy not ready within 30s\n%s", c.Logs())
}

// RootCAFile is the path of Caddy's internal root certificate.
func (c *Caddy) RootCAFile() string {
	return filepath.Join(c.Data, "pki", "authorities", "local", "root.crt")
}

// Reload loads a new Caddyfile with `caddy reload`, as an operator would.
func (c *Caddy) Reload(t testing.TB, caddyfile string) {
	t.Helper()
	if err := c.TryReload(t, caddyfile); err != nil {
		t.Fatalf("%v\n%s", err, c.Logs())
	}
}

// TryReload is Reload for a config that may be refused: it returns the
// error `caddy reload` printed.
func (c *Caddy) TryReload(t testing.TB, caddyfile string) error {
	t.Helper()
	path := c.WriteCaddyfile(t, "Caddyfile.reload", caddyfile)
	cmd := exec.Command(c.Bin, "reload", "--config", path, "--adapter", "caddyfile", "--address", c.Admin, "--force")
	cmd.Dir = c.Dir
	cmd.Env = c.cmd.Env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("caddy reload: %v\n%s", err, out)
	}
	return nil
}

// Stop ends Caddy as `caddy stop` does (through the admin API) and waits
// up to 20s for the process to exit; it returns how long that took.
func (c *Caddy) Stop(t testing.TB) time.Duration {
	select {
	case <-c.done:
		return 0
	default:
	}
	start := time.Now()
	resp, err := http.Post("http://"+c.Admin+"/stop", "", nil)
	if err == nil {
		resp.Body.Close()
	}
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
		t.Errorf("caddy did not exit within 20s of stop\n%s", c.Logs())
	}
	return time.Since(start)
}

// ClientConfig is the rendezvous configuration of a device of id that
// reaches this Caddy's super peer at host (an address of loopback) over
// tr, trusting Caddy's internal CA.
func (c *Caddy) ClientConfig(id *identity.Identity, host string, tr rendezvous.Transport) rendezvous.ClientConfig {
	return rendezvous.ClientConfig{
		Identity:  id,
		URL:       "https://localhost:" + strconv.Itoa(c.Port),
		Transport: tr,
		TLSConfig: &tls.Config{RootCAs: c.Roots},
		Addr:      net.JoinHostPort(host, strconv.Itoa(c.Port)),
	}
}

// Pid is the process ID of Caddy, whose /proc/<pid>/status a test may
// read to measure what the process holds.
func (c *Caddy) Pid() int { return c.cmd.Process.Pid }

// Metrics scrapes the super peer's Prometheus metrics
// (netsody_superpeer_*) from Caddy's admin endpoint: each series, with
// its labels, to its value.
func (c *Caddy) Metrics(t testing.TB) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + c.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "netsody_superpeer_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// Logs returns what Caddy printed so far.
func (c *Caddy) Logs() string { return c.logs.String() }

// handedOut holds the ports this process's tests were given: the kernel
// may give a port that a test holds but does not listen on yet (two
// nodes' NATS ports, say) to the next caller too.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// claim reports whether the ports were free of earlier claims, and
// claims them if so.
func claim(ports ...int) bool {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = make(map[int]bool)
	}
	for _, p := range ports {
		if handedOut.ports[p] {
			return false
		}
	}
	for _, p := range ports {
		handedOut.ports[p] = true
	}
	return true
}

// FreePort returns a port that is free for both TCP and UDP on all
// addresses, as Caddy needs for HTTPS with HTTP/3; the next port must be
// free for TCP too (the HTTP port). No two calls in a process return the
// same port.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", ":"+strconv.Itoa(port))
		if err == nil {
			l2, err := net.Listen("tcp", ":"+strconv.Itoa(port+1))
			if err == nil {
				l2.Close()
				u.Close()
				l.Close()
				if claim(port, port+1) {
					return port
				}
				continue
			}
			u.Close()
		}
		l.Close()
	}
	t.Fatal("no free TCP+UDP port")
	return 0
}

// FreeUDPPort returns a UDP port free on every address a moment ago: a
// super peer's fast_path_port, say. No two calls in a process, nor a
// FreePort, return the same port.
func FreeUDPPort(t testing.TB) int {
	t.Helper()
	return freeClaimed(t, "UDP", func() (net.Addr, io.Closer, error) {
		c, err := net.ListenPacket("udp", ":0")
		if err != nil {
			return nil, nil, err
		}
		return c.LocalAddr(), c, nil
	})
}

func freeTCPPort(t testing.TB) int {
	t.Helper()
	return freeClaimed(t, "TCP", func() (net.Addr, io.Closer, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		return l.Addr(), l, nil
	})
}

// freeClaimed returns the port of a socket that listen opens (and that
// it closes) which no earlier call claimed.
func freeClaimed(t testing.TB, what string, listen func() (net.Addr, io.Closer, error)) int {
	t.Helper()
	for range 100 {
		a, c, err := listen()
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		port := int(netip.MustParseAddrPort(a.String()).Port())
		if claim(port) {
			return port
		}
	}
	t.Fatalf("no free %s port", what)
	return 0
}

// WaitLog waits until Caddy's logs contain s.
func (c *Caddy) WaitLog(ctx context.Context, s string) error {
	for !strings.Contains(c.Logs(), s) {
		select {
		case <-ctx.Done():
			return errors.New("testcaddy: no log line with " + strconv.Quote(s))
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// SyncBuffer collects a process's output while a test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
