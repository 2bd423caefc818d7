package dns01test

import (
	"net"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/netsody/superpeer/internal/testcaddy"
)

func TestMain(m *testing.M) {
	code := 0
	defer func() { testcaddy.Cleanup(); os.Exit(code) }()
	code = m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
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
