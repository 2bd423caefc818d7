package dns01test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/internal/testcaddy"
)

// plainClient talks to challtestsrv's management API: bounded, and without
// idle connections that would outlive the test.
var plainClient = &http.Client{Timeout: helperTimeout, Transport: &http.Transport{DisableKeepAlives: true}}

// The binaries of Debian's pebble package.
const (
	pebbleBin       = "pebble"
	challtestsrvBin = "pebble-challtestsrv"
)

// requirePebble skips the test when pebble is not installed, and fails it
// instead where CI=true: CI installs the package, so its absence there is
// a broken setup, not a reason to pass.
func requirePebble(t *testing.T) {
	t.Helper()
	for _, bin := range []string{pebbleBin, challtestsrvBin} {
		if _, err := exec.LookPath(bin); err != nil {
			sptest.Missing(t, fmt.Sprintf("%s not found (apt-get install pebble): %v", bin, err))
		}
	}
}

// process runs a helper binary until the test ends; its output is kept and
// shown when the test fails.
func process(t *testing.T, env []string, name string, args ...string) *testcaddy.SyncBuffer {
	t.Helper()
	logs := &testcaddy.SyncBuffer{}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, logs.String())
		}
	})
	return logs
}

// challtestsrv is pebble-challtestsrv: a DNS server (DNSAddr, UDP and TCP)
// whose TXT records are set and cleared over its management API. It has no
// SOA records: soaServer stands in front of it for Caddy.
type challtestsrv struct {
	DNSAddr string
	mgmt    string
}

func startChalltestsrv(t *testing.T) *challtestsrv {
	t.Helper()
	c := &challtestsrv{
		DNSAddr: "127.0.0.1:" + strconv.Itoa(testcaddy.FreePort(t)),
		mgmt:    "127.0.0.1:" + strconv.Itoa(freeTCPPort(t)),
	}
	// Only DNS and the management API; the HTTP-01 and TLS-ALPN-01
	// responders stay off, as port 80 does on the hosts DNS-01 is for.
	process(t, nil, challtestsrvBin, "-dns01", c.DNSAddr, "-management", c.mgmt,
		"-http01", "", "-https01", "", "-tlsalpn01", "")
	waitHTTP(t, plainClient, "http://"+c.mgmt+"/")
	return c
}

// setTXT publishes a TXT record (host is absolute, with the final dot).
func (c *challtestsrv) setTXT(host, value string) error {
	return c.post("/set-txt", map[string]string{"host": host, "value": value})
}

// clearTXT removes every TXT record of host.
func (c *challtestsrv) clearTXT(host string) error {
	return c.post("/clear-txt", map[string]string{"host": host})
}

func (c *challtestsrv) post(path string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), helperTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+c.mgmt+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	resp, err := plainClient.Do(req)
	if err != nil {
		return fmt.Errorf("challtestsrv %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, bodyLimit))
		return fmt.Errorf("challtestsrv %s: %s: %s", path, resp.Status, msg)
	}
	return nil
}

// pebble is the ACME server: its directory at Directory, served over HTTPS
// with a certificate of the test's CA; its management API hands out the
// roots it issues under.
type pebble struct {
	Directory string
	mgmt      string
	client    *http.Client
}

func startPebble(t *testing.T, ca *sptest.CA, dir, dnsServer string) *pebble {
	t.Helper()
	listen := "127.0.0.1:" + strconv.Itoa(freeTCPPort(t))
	p := &pebble{
		Directory: "https://" + listen + "/dir",
		mgmt:      "https://127.0.0.1:" + strconv.Itoa(freeTCPPort(t)),
		client: &http.Client{
			Timeout:   helperTimeout,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, DisableKeepAlives: true},
		},
	}
	certFile, keyFile := filepath.Join(dir, "pebble.pem"), filepath.Join(dir, "pebble.key")
	sptest.WriteLeaf(t, ca.Leaf(t, "127.0.0.1", "localhost"), certFile, keyFile)
	config, err := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":           listen,
		"managementListenAddress": p.mgmt[len("https://"):],
		"certificate":             certFile,
		"privateKey":              keyFile,
		// Never used: Caddy offers only DNS-01 when a dns provider is set.
		"httpPort": freeTCPPort(t),
		"tlsPort":  freeTCPPort(t),
	}})
	if err != nil {
		t.Fatal(err)
	}
	configFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(configFile, config, 0o600); err != nil {
		t.Fatal(err)
	}
	// NOSLEEP: validate at once, not after pebble's random delay;
	// NONCEREJECT=0: no deliberate badNonce errors, so timings hold.
	process(t, []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"},
		pebbleBin, "-config", configFile, "-dnsserver", dnsServer)
	waitHTTP(t, p.client, p.Directory)
	return p
}

// issuers returns pebble's root and intermediate certificates: the chain
// every certificate it issues must verify against.
func (p *pebble) issuers(t *testing.T) (roots, intermediates *x509.CertPool) {
	t.Helper()
	return p.pool(t, "/roots/0"), p.pool(t, "/intermediates/0")
}

func (p *pebble) pool(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	body := getOK(t, p.client, p.mgmt+path)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(body) {
		t.Fatalf("pebble %s: no certificate in %q", path, body)
	}
	return pool
}

// waitHTTP waits until url answers at all (any status).
func waitHTTP(t *testing.T, client *http.Client, url string) {
	t.Helper()
	var lastErr error
	waitForWithin(t, helperTimeout, url+" to answer", func() bool {
		resp, err := client.Get(url)
		if err != nil {
			lastErr = err
			return false
		}
		resp.Body.Close()
		return true
	}, func() string { return "last error: " + errString(lastErr) })
}
