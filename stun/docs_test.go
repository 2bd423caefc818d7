package stun

import (
	"testing"

	"github.com/netsody/superpeer/internal/doctable"
)

// The tables of limits and defaults in docs/PROTOCOL.md and
// docs/CONFIG.md state what the code does.
func TestDocsTables(t *testing.T) {
	doctable.Check(t, "stun.", map[string]any{
		"stun.MaxResponseSize":    MaxResponseSize,
		"stun.MaxRequestSize":     MaxRequestSize,
		"stun.DefaultSourceRate":  DefaultSourceRate,
		"stun.DefaultSourceBurst": DefaultSourceBurst,
		"stun.maxSources":         maxSources,
		"stun.sourceSweepEvery":   sourceSweepEvery,
	}, "../docs/PROTOCOL.md", "../docs/CONFIG.md")
}
