//go:build netsody_testhooks

package relay

import (
	"os"
	"strings"
	"time"
)

// hookDelayEnv, in a binary built with -tags netsody_testhooks (only
// internal/testcaddy builds one, for the abuse tests), holds the relay's
// goroutines at a test hook point: "point=duration", such as
// "paired=1s". A test cannot reach into a real Caddy process to set the
// hook as the package's own tests do, so it forces a race this way.
// Without the tag this file is not built and the hook stays unset.
const hookDelayEnv = "NETSODY_RELAY_HOOK_DELAY"

func init() {
	point, delay, ok := strings.Cut(os.Getenv(hookDelayEnv), "=")
	d, err := time.ParseDuration(delay)
	if !ok || err != nil {
		return
	}
	f := func(p string) {
		if p == point {
			time.Sleep(d)
		}
	}
	testHookFn.Store(&f)
}
