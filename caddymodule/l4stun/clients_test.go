package l4stun_test

// Standard STUN clients, written by others and packaged by Debian, against
// the real Caddy: each reports the address it is seen at.

import (
	"context"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/internal/testcaddy"
)

// needTool returns name's path; a missing tool skips the test, or fails it
// where CI=true: CI installs the package, so its absence there is a bug.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		sptest.Missing(t, name+" not found; apt-get install "+pkg)
	}
	return path
}

// run runs a client for at most 20 s and returns what it printed; these
// clients report their findings in their exit status, so it is not an
// error.
func run(t *testing.T, path string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %v: no answer within 20 s: %v\n%s", path, args, err, out)
	}
	return string(out)
}

func TestStandardClients(t *testing.T) {
	c, port := startSTUN(t, 2*time.Second)
	server := "127.0.0.1:" + strconv.Itoa(port)

	// Debian's stun-client (Vovida's stund client) speaks RFC 3489: no
	// magic cookie, a CHANGE-REQUEST in every request. With -v it prints
	// the ports it opened and each MAPPED-ADDRESS it was told.
	t.Run("stun", func(t *testing.T) {
		out := run(t, needTool(t, "stun", "stun-client"), server, "-v")
		opened := regexp.MustCompile(`Opened port (\d+)`).FindStringSubmatch(out)
		mapped := regexp.MustCompile(`MappedAddress = 127\.0\.0\.1:(\d+)`).FindStringSubmatch(out)
		if opened == nil || mapped == nil || opened[1] != mapped[1] {
			t.Fatalf("stun reported no MAPPED-ADDRESS of 127.0.0.1 and the port it opened:\n%s", out)
		}
		wantCounted(t, c, `netsody_superpeer_stun_answered_total{form="rfc3489"}`)
	})

	// coturn's turnutils_stunclient speaks RFC 5389 and prints the
	// XOR-MAPPED-ADDRESS; it does not say which port it bound.
	t.Run("turnutils_stunclient", func(t *testing.T) {
		path := needTool(t, "turnutils_stunclient", "coturn")
		hosts := map[string]string{"127.0.0.1": `IPv4. UDP reflexive addr: 127\.0\.0\.1:(\d+)`}
		if hasIPv6Loopback() {
			hosts["::1"] = `IPv6. UDP reflexive addr: ::1:(\d+)`
		}
		for host, want := range hosts {
			out := run(t, path, "-p", strconv.Itoa(port), host)
			m := regexp.MustCompile(want).FindStringSubmatch(out)
			if m == nil || m[1] == "0" {
				t.Errorf("turnutils_stunclient %s: no reflexive address of %s:\n%s", host, host, out)
			}
		}
		wantCounted(t, c, `netsody_superpeer_stun_answered_total{form="rfc5389"}`)
	})
}

// wantCounted checks that Caddy's metrics count series.
func wantCounted(t *testing.T, c *testcaddy.Caddy, series string) {
	t.Helper()
	if m := c.Metrics(t); m[series] == 0 {
		t.Errorf("%s not counted: %v", series, m)
	}
}
