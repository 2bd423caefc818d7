package relay

import (
	"testing"

	"github.com/netsody/superpeer/internal/doctable"
)

// The relay's limits in docs/PROTOCOL.md and its options in
// docs/CONFIG.md state what the code does.
func TestDocsTables(t *testing.T) {
	doctable.Check(t, "relay.", map[string]any{
		"relay.DefaultPairTimeout":          DefaultPairTimeout,
		"relay.DefaultWriteTimeout":         DefaultWriteTimeout,
		"relay.DefaultMaxSessionsPerDevice": DefaultMaxSessionsPerDevice,
		"relay.DefaultRate":                 DefaultRate,
		"relay.DefaultBurst":                DefaultBurst,
		"relay.DefaultDeviceRate":           DefaultDeviceRate,
		"relay.DefaultDeviceBurst":          DefaultDeviceBurst,
		"relay.DefaultTotalRate":            DefaultTotalRate,
		"relay.DefaultTotalBurst":           DefaultTotalBurst,
		"relay.DefaultMaxDatagramSize":      DefaultMaxDatagramSize,
		"relay.DefaultQueueLen":             DefaultQueueLen,
		"relay.DefaultQueueBytes":           DefaultQueueBytes,
		"relay.DefaultMaxQueuedBytes":       DefaultMaxQueuedBytes,
		"relay.DefaultStallTimeout":         DefaultStallTimeout,
		"relay.DefaultMaxWaiting":           DefaultMaxWaiting,
		"relay.DefaultMaxWaitingPerDevice":  DefaultMaxWaitingPerDevice,
		"relay.DefaultMaxWaitingPerPrefix":  DefaultMaxWaitingPerPrefix,
		"relay.DefaultFastPathPort":         DefaultFastPathPort,
		"relay.DefaultMaxFastPathBindings":  DefaultMaxFastPathBindings,
		"relay.fastPathChallengeInterval":   fastPathChallengeInterval,
		"relay.fastPathCookieSlot":          fastPathCookieSlot,
		"relay.fastPathActive":              fastPathActive,
		"relay.retryAfterDraining":          retryAfterDraining,
	}, "../docs/PROTOCOL.md", "../docs/CONFIG.md")
}
