package natlab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/netsody/superpeer/internal/testcaddy"
)

// A super peer in the lab is the real thing: the Caddy binary that
// internal/caddymain builds (Caddy, the netsody_superpeer plugin and the
// extra modules xcaddy.sh adds), run with `caddy run` inside a public
// host's namespace. It owns that namespace, so it listens on the standard
// ports, 443 (TCP and UDP) and 80. Its site is named by the host's public
// IP address with `tls internal`: Caddy's internal CA issues a certificate
// for that IP, and devices, which reach the super peer by IP because the
// lab has no DNS, trust that CA's root.

// e2eCaddyfile is the super peer's configuration; {DIR}, {SITES} (the
// host's addresses, IPv4 and IPv6) and {SUPERPEER} (the directive, with
// any options) are replaced. Beside the super peer, the site serves a small website, as a
// real one would, and the layer4 app answers STUN on UDP 3478, as in
// Caddyfile.example: devices learn their NAT's mapping from it. The admin endpoint is off (the process is stopped by
// signal), and the grace period bounds how long a stop waits for open
// HTTP/1 and HTTP/2 connections (the plugin's HTTP/3 endpoint waits up to
// 5 s of its own).
const e2eCaddyfile = `{
	admin off
	https_port 443
	http_port 80
	skip_install_trust
	storage file_system {DIR}/data
	grace_period 2s
	auto_https disable_redirects
	layer4 {
		udp/:3478 {
			idle_timeout 5s
			route {
				netsody_stun
			}
		}
	}
}

{SITES} {
	tls internal
	{SUPERPEER}
	respond "a website beside the super peer"
}
`

// e2eCaddyBinary builds internal/caddymain and returns the binary's path.
// It builds into the user's cache directory, where `go build` finds an
// up-to-date binary and skips the link (about 4 s for Caddy); a fresh
// directory would relink every time. Without a cache directory it builds
// into dir.
func e2eCaddyBinary(t testing.TB, dir string) string {
	t.Helper()
	return e2eCaddyBinaryTags(t, dir, "")
}

// e2eCaddyBinaryTags is e2eCaddyBinary built with -tags tags (a binary
// of its own name per tags).
func e2eCaddyBinaryTags(t testing.TB, dir, tags string) string {
	t.Helper()
	if cache, err := os.UserCacheDir(); err == nil {
		c := filepath.Join(cache, "netsody-superpeer", "natlab")
		if err := os.MkdirAll(c, 0o755); err == nil {
			dir = c
		}
	}
	_, here, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(here), "..", "..")
	bin := filepath.Join(dir, "caddy")
	args := []string{"build", "-o", bin}
	if tags != "" {
		bin += "-" + strings.ReplaceAll(tags, ",", "-")
		args = []string{"build", "-tags", tags, "-o", bin}
	}
	cmd := exec.Command("go", append(args, "./internal/caddymain")...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building caddy: %v\n%s", err, out)
	}
	return bin
}

// labSuperPeer is a Caddy process serving as super peer on a lab host.
type labSuperPeer struct {
	host  *Host
	url   string // https://<public IPv4>:443
	url6  string // https://[<public IPv6>]:443, if the lab has IPv6
	dir   string // Caddyfile, data (with the internal CA's root)
	roots *x509.CertPool

	cmd  *exec.Cmd
	logs *testcaddy.SyncBuffer
	done chan struct{} // closed when the process has been waited for
	err  error         // the process's exit, valid once done is closed
}

// startSuperPeer runs Caddy on host and waits until it answers over
// HTTP/2 and HTTP/3 on the host's public address. The process is stopped
// by t.Cleanup, before the lab goes (cleanups run last in, first out), and
// its output is shown if the test failed.
func startSuperPeer(t testing.TB, bin string, host *Host) *labSuperPeer {
	t.Helper()
	return startSuperPeerWith(t, bin, host, "netsody_superpeer")
}

// startTwoSuperPeers starts a super peer on a new public host of lab,
// with the netsody_superpeer directive nearDirective, and another, as
// startSuperPeer does, on one e2eFarDelay further each way.
func startTwoSuperPeers(t testing.TB, lab *Lab, bin, nearDirective string) (near, far *labSuperPeer) {
	t.Helper()
	nearHost, err := lab.AddPublicHost("spnear")
	if err != nil {
		t.Fatal(err)
	}
	farHost, err := lab.AddPublicHost("spfar", WithDelay(e2eFarDelay))
	if err != nil {
		t.Fatal(err)
	}
	return startSuperPeerWith(t, bin, nearHost, nearDirective), startSuperPeer(t, bin, farHost)
}

// startSuperPeerWith is startSuperPeer with the site's netsody_superpeer
// directive, options and all.
func startSuperPeerWith(t testing.TB, bin string, host *Host, directive string) *labSuperPeer {
	t.Helper()
	sp := &labSuperPeer{
		host: host,
		url:  "https://" + netip.AddrPortFrom(host.Addr(), 443).String(),
		dir:  t.TempDir(),
		logs: &testcaddy.SyncBuffer{},
		done: make(chan struct{}),
	}
	sites := "https://" + host.Addr().String()
	if a6 := host.Addr6(); a6.IsValid() {
		sp.url6 = "https://" + netip.AddrPortFrom(a6, 443).String()
		sites += ", https://[" + a6.String() + "]"
	}
	caddyfile := strings.NewReplacer("{DIR}", sp.dir, "{SITES}", sites, "{SUPERPEER}", directive).Replace(e2eCaddyfile)
	sp.run(t, bin, "Caddyfile", caddyfile)
	return sp
}

// run starts Caddy with caddyfile (written to name in sp.dir) and waits
// until it is ready; t.Cleanup stops it.
func (sp *labSuperPeer) run(t testing.TB, bin, name, caddyfile string) {
	t.Helper()
	host := sp.host
	path := filepath.Join(sp.dir, name)
	if err := os.WriteFile(path, []byte(caddyfile), 0o644); err != nil {
		t.Fatal(err)
	}
	sp.cmd = host.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
	sp.cmd.Dir = sp.dir
	sp.cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+sp.dir+"/xdg", "XDG_CONFIG_HOME="+sp.dir+"/xdg", "HOME="+sp.dir)
	sp.cmd.Stdout, sp.cmd.Stderr = sp.logs, sp.logs
	if err := sp.cmd.Start(); err != nil {
		t.Fatalf("starting caddy on %s: %v", host.Name(), err)
	}
	go func() { sp.err = sp.cmd.Wait(); close(sp.done) }()
	t.Cleanup(func() {
		if err := sp.stop(); err != nil {
			t.Errorf("super peer on %s: %v", host.Name(), err)
		}
		if t.Failed() {
			t.Logf("caddy on %s:\n%s", host.Name(), sp.logs.String())
		}
	})
	if err := sp.waitReady(20 * time.Second); err != nil {
		t.Fatalf("super peer on %s: %v", host.Name(), err)
	}
}

// waitReady waits for the internal CA's root, then for a TLS handshake
// over TCP and a QUIC handshake offering HTTP/3, both verified with that
// root, from inside the host's namespace. A device that started before
// HTTP/3 is up would register over HTTP/2.
func (sp *labSuperPeer) waitReady(within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	rootPath := sp.rootFile()
	addr := netip.AddrPortFrom(sp.host.Addr(), 443)
	var last error
	for {
		select {
		case <-sp.done:
			return fmt.Errorf("caddy exited: %v", sp.err)
		case <-ctx.Done():
			return fmt.Errorf("not ready within %v: %v", within, last)
		case <-time.After(50 * time.Millisecond):
		}
		if sp.roots == nil {
			pem, err := os.ReadFile(rootPath)
			if err != nil {
				last = err
				continue
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				last = errors.New("no certificate in " + rootPath)
				continue
			}
			sp.roots = pool
		}
		if last = sp.probeTLS(ctx, addr); last != nil {
			continue
		}
		if last = sp.probeQUIC(ctx, addr); last != nil {
			continue
		}
		return nil
	}
}

// urlFor is the super peer's URL in the address family (IPv6 if v6).
func (sp *labSuperPeer) urlFor(v6 bool) string {
	if v6 {
		return sp.url6
	}
	return sp.url
}

// rootFile is the path of the super peer's internal CA root.
func (sp *labSuperPeer) rootFile() string {
	return filepath.Join(sp.dir, "data", "pki", "authorities", "local", "root.crt")
}

func (sp *labSuperPeer) tlsConfig(alpn string) *tls.Config {
	return &tls.Config{RootCAs: sp.roots, ServerName: sp.host.Addr().String(), NextProtos: []string{alpn}}
}

// probeTLS completes a TLS handshake over TCP that negotiates HTTP/2.
func (sp *labSuperPeer) probeTLS(ctx context.Context, addr netip.AddrPort) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c, err := sp.host.DialContext(ctx, "tcp4", addr.String())
	if err != nil {
		return err
	}
	defer c.Close()
	tc := tls.Client(c, sp.tlsConfig("h2"))
	if err := tc.HandshakeContext(ctx); err != nil {
		return err
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		return fmt.Errorf("TLS negotiated %q, want h2", p)
	}
	return nil
}

// probeQUIC completes a QUIC handshake that negotiates HTTP/3.
func (sp *labSuperPeer) probeQUIC(ctx context.Context, addr netip.AddrPort) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	pc, err := sp.host.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return err
	}
	tr := &quic.Transport{Conn: pc}
	defer func() { tr.Close(); pc.Close() }()
	c, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(addr), sp.tlsConfig(http3.NextProtoH3), nil)
	if err != nil {
		return err
	}
	return c.CloseWithError(0, "")
}

// stop ends Caddy gracefully with SIGINT, as Ctrl-C would, and kills it
// if it has not exited within 10 s. A Caddy that exited by itself before
// is an error.
func (sp *labSuperPeer) stop() error {
	select {
	case <-sp.done:
		return fmt.Errorf("caddy exited before the test ended: %v", sp.err)
	default:
	}
	sp.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-sp.done:
		return nil
	case <-time.After(10 * time.Second):
	}
	sp.cmd.Process.Kill()
	<-sp.done
	return errors.New("caddy did not exit within 10s of SIGINT; killed")
}
