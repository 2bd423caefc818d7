package caddymodule

import (
	"testing"

	"github.com/netsody/superpeer/internal/doctable"
)

// The tables of limits and defaults in docs/CONFIG.md state what the
// code does.
func TestDocsTables(t *testing.T) {
	doctable.Check(t, "caddymodule.", map[string]any{
		"caddymodule.maxAllowlistFile":            maxAllowlistFile,
		"caddymodule.DefaultAdmissionTimeout":     DefaultAdmissionTimeout,
		"caddymodule.DefaultAdmissionConcurrency": DefaultAdmissionConcurrency,
		"caddymodule.DefaultAdmissionCacheSize":   DefaultAdmissionCacheSize,
		"caddymodule.DefaultAdmissionCacheTTL":    DefaultAdmissionCacheTTL,
		"caddymodule.maxAdmissionReason":          maxAdmissionReason,
		"caddymodule.maxDenyEntries":              maxDenyEntries,
		"caddymodule.defaultAdminPageLimit":       defaultAdminPageLimit,
		"caddymodule.maxAdminPageLimit":           maxAdminPageLimit,
		"caddymodule.maxAdminBody":                maxAdminBody,
	}, "../docs/CONFIG.md", "../docs/OPERATIONS.md")
}
