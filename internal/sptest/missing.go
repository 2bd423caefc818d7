package sptest

import (
	"os"
	"testing"
)

// Missing reports that something the test needs is not on this machine
// (a tool, a kernel feature): it skips the test, and fails it in CI
// (CI=true), where .ci/run installs everything the tests need.
func Missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true requires it)", what)
	}
	t.Skipf("%s (with CI=true this is a failure)", what)
}
