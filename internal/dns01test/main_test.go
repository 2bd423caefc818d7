package dns01test

import (
	"net"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/netsody/superpeer/internal/testcaddy"
)

// TestMain checks for leaked goroutines after passing tests and removes
// the Caddy binary the tests built.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		testcaddy.Cleanup()
		os.Exit(code)
	}))
}

// freeTCPPort returns a loopback TCP port that was free a moment ago, for
// the helpers that take a port on their command line.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
