package bench

import (
	"flag"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/netsody/superpeer/internal/testcaddy"
)

var (
	flagDevices  = flag.Int("devices", 2000, "idle devices per transport, and idle connections to the baseline server")
	flagParallel = flag.Int("parallel", 32, "connections being set up at a time")
	flagProfiles = flag.String("profiles", "", "directory for the super peer's profiles: heap and goroutine profiles with every idle device registered (IdleDevices), CPU profiles while relaying (Relay)")
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
