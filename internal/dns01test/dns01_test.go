package dns01test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/internal/testcaddy"
)

const (
	// testDomain is the super peer's name; testZone is its Cloudflare zone.
	testDomain = "sp.example.com"
	testZone   = "example.com"
	// fakeToken looks like a Cloudflare API token (35-50 characters of
	// letters, digits, - and _), since caddy-dns/cloudflare refuses others.
	fakeToken = "dns01test_fake_cloudflare_token_0123456789"
)

// TestDNS01 runs Caddyfile.example's site with its DNS-01 tls block
// uncommented, on the real Caddy binary the tests build (which has
// caddy-dns/cloudflare, as xcaddy.sh's build does), and checks that the
// certificate on Caddy's port was issued by the ACME server through a TXT
// record made with the Cloudflare API, and removed again.
func TestDNS01(t *testing.T) {
	requirePebble(t)
	dir := t.TempDir()
	ca := sptest.NewCA(t, dir, "dns01test CA")
	dns := startChalltestsrv(t)
	soa := startSOAServer(t, testZone, dns.DNSAddr)
	acme := startPebble(t, ca, dir, dns.DNSAddr)
	api := &fakeCloudflare{token: fakeToken, zone: testZone, dns: dns}
	proxy := startFakeCloudflare(t, ca, api)

	// Test-only lines in the tls block: pebble, not Let's Encrypt; the
	// test's resolver, not the system's; a propagation limit within the
	// test's.
	site := exampleSite(t, "\t\tresolvers "+soa.Addr+"\n"+
		"\t\tpropagation_timeout "+propagationTimeout.String()+"\n"+
		"\t\tca "+acme.Directory+"\n"+
		"\t\tca_root "+ca.File+"\n")
	// A localhost site on Caddy's internal CA is what testcaddy waits for.
	caddyfile := testcaddy.Global + "localhost {\n\ttls internal\n\trespond ready\n}\n\n" + site
	testcaddy.Binary(t) // built before the clock starts
	started := time.Now()
	c := testcaddy.Start(t, caddyfile,
		"CF_API_TOKEN="+fakeToken,
		"NETSODY_DOMAIN="+testDomain,
		"NETSODY_SITE_ROOT="+filepath.Join(repoRoot(), "demo-site"),
		// libdns/cloudflare uses Go's default client: it goes through
		// the proxy and trusts the test's CA like a system root. Pebble,
		// on loopback, is never proxied.
		"HTTPS_PROXY="+proxy,
		"NO_PROXY=127.0.0.1,localhost",
		"SSL_CERT_FILE="+ca.File,
	)

	roots, intermediates := acme.issuers(t)
	leaf := waitForCertificate(t, c, roots)
	t.Logf("certificate issued through DNS-01 in %v: %q by %q", time.Since(started).Round(time.Millisecond), leaf.DNSNames, leaf.Issuer.CommonName)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: testDomain, Roots: roots, Intermediates: intermediates}); err != nil {
		t.Fatalf("certificate does not chain to pebble's intermediate and root: %v", err)
	}

	body := get(t, c, roots, "/")
	if !strings.Contains(body, "A website on the super peer") {
		t.Fatalf("https://%s/ did not serve the demo site: %q", testDomain, body)
	}

	// The TXT record was created and, after validation, deleted through
	// the API with the operator's token; nothing came without it.
	waitFor(t, "the TXT record's deletion", func() bool {
		deleted, _ := api.seen(http.MethodDelete, "/dns_records/")
		return deleted > 0
	})
	created, refused := api.seen(http.MethodPost, "/dns_records")
	if created == 0 || refused != 0 {
		t.Fatalf("Cloudflare API saw %d creations and %d calls with a wrong token; want at least 1 and 0", created, refused)
	}
}

// exampleSite returns Caddyfile.example's site block with the commented
// DNS-01 tls block uncommented and extra appended inside it, so that the
// test runs the very lines the example shows.
func exampleSite(t *testing.T, extra string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(), "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	start := strings.Index(text, "\n{$NETSODY_DOMAIN")
	if start < 0 {
		t.Fatal("Caddyfile.example has no {$NETSODY_DOMAIN...} site block")
	}
	text = text[start+1:]
	block := regexp.MustCompile(`(?m)^\t# tls \{\n((?:\t# \t.*\n)+)\t# \}\n`)
	m := block.FindStringSubmatch(text)
	if m == nil || !strings.Contains(m[1], "dns cloudflare {env.CF_API_TOKEN}") {
		t.Fatal("Caddyfile.example's site block no longer shows the commented `tls { dns cloudflare {env.CF_API_TOKEN} }` block")
	}
	uncommented := "\ttls {\n" + strings.ReplaceAll(m[1], "\t# \t", "\t\t") + extra + "\t}\n"
	return strings.Replace(text, m[0], uncommented, 1)
}

// waitForCertificate waits until Caddy's port shows testDomain a
// certificate that verifies against roots, and returns it.
func waitForCertificate(t *testing.T, c *testcaddy.Caddy, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(c.Port)
	var leaf *x509.Certificate
	var lastErr error
	waitForWithin(t, issueTimeout, "a certificate for "+testDomain, func() bool {
		d := &tls.Dialer{Config: &tls.Config{ServerName: testDomain, RootCAs: roots}}
		ctx, cancel := context.WithTimeout(context.Background(), helperTimeout)
		defer cancel()
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			lastErr = err
			return false
		}
		defer conn.Close()
		leaf = conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
		return true
	}, func() string { return "last handshake: " + errString(lastErr) + "\n" + c.Logs() })
	return leaf
}

// get fetches path from testDomain on Caddy's port over HTTPS.
func get(t *testing.T, c *testcaddy.Caddy, roots *x509.CertPool, path string) string {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(c.Port)
	client := &http.Client{Timeout: helperTimeout, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	return string(getOK(t, client, "https://"+testDomain+":"+strconv.Itoa(c.Port)+path))
}

// getOK fetches url and returns its body; anything but 200 fails the test.
func getOK(t *testing.T, client *http.Client, url string) []byte {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, bodyLimit))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return body
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	waitForWithin(t, helperTimeout, what, ok, func() string { return "" })
}

// waitForWithin polls ok until it holds or limit passes; then it fails
// the test with what and detail().
func waitForWithin(t *testing.T, limit time.Duration, what string, ok func() bool, detail func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v in vain for %s\n%s", limit, what, detail())
		}
		time.Sleep(pollInterval)
	}
}

func errString(err error) string {
	if err == nil {
		return "none"
	}
	return err.Error()
}

// repoRoot is the checkout's root directory.
func repoRoot() string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..")
}
