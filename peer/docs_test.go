package peer

import (
	"testing"

	"github.com/netsody/superpeer/internal/doctable"
)

// docs/DEVICE.md's tables of defaults and limits state what the code does.
func TestDocsTables(t *testing.T) {
	doctable.Check(t, "peer.", map[string]any{
		"peer.DefaultH3HeadStart":        DefaultH3HeadStart,
		"peer.DefaultH3RetryInterval":    DefaultH3RetryInterval,
		"peer.DefaultFastPunchInterval":  DefaultFastPunchInterval,
		"peer.DefaultFastPunchFor":       DefaultFastPunchFor,
		"peer.DefaultPunchInterval":      DefaultPunchInterval,
		"peer.DefaultDirectTimeout":      DefaultDirectTimeout,
		"peer.DefaultRelayDialTimeout":   DefaultRelayDialTimeout,
		"peer.DefaultRelayCheckInterval": DefaultRelayCheckInterval,
		"peer.DefaultPeerIdleTimeout":    DefaultPeerIdleTimeout,
		"peer.DefaultAddrCheckInterval":  DefaultAddrCheckInterval,
		"peer.quicPacketSize":            quicPacketSize,
		"peer.quicKeepAlive":             quicKeepAlive,
		"peer.quicIdleTimeout":           quicIdleTimeout,
		"peer.maxCandidates":             maxCandidates,
		"peer.maxPending":                maxPending,
		"peer.maxPings":                  maxPings,
		"peer.tailLen":                   tailLen,
		"peer.introduceRate":             introduceRate,
		"peer.maxUnread":                 maxUnread,
		"peer.relayMoveRatio":            relayMoveRatio,
		"peer.relayMoveMargin":           relayMoveMargin,
		"peer.relayNeedFloor":            relayNeedFloor,
		"peer.relayHeadroomMargin":       relayHeadroomMargin,
		"peer.relayRateWindow":           relayRateWindow,
		"peer.fastPathProbeTimeout":      fastPathProbeTimeout,
		"peer.fastPathQuiet":             fastPathQuiet,
		"peer.fastPathDeadProbes":        fastPathDeadProbes,
		"peer.fastPathKeepalive":         fastPathKeepalive,
		"peer.fastPathHold":              fastPathHold,
		"peer.fastPathRetryMin":          fastPathRetryMin,
		"peer.fastPathRetryMax":          fastPathRetryMax,
		"peer.fastPathGiveUp":            fastPathGiveUp,
		"peer.relayRetriesWhileDirect":   relayRetriesWhileDirect,
		"peer.sessionBackoffMin":         sessionBackoffMin,
		"peer.sessionBackoffMax":         sessionBackoffMax,
		"peer.sessionDialTimeout":        sessionDialTimeout,
		"peer.superPeerPingEvery":        superPeerPingEvery,
		"peer.DefaultMaxPeers":           DefaultMaxPeers,
		"peer.DefaultIntroductionRate":   DefaultIntroductionRate,
		"peer.punchRate":                 punchRate,
		"peer.punchBurst":                punchBurst,
		"peer.punchTries":                punchTries,
		"peer.consentFreshness":          consentFreshness,
		"peer.introductionBurst":         introductionBurst,
		"peer.verifyRate":                verifyRate,
		"peer.verifyBurst":               verifyBurst,
		"peer.verifySources":             verifySources,
		"peer.verifyPrefix6":             verifyPrefix6,
		"peer.DefaultAcceptTimeout":      DefaultAcceptTimeout,
		"peer.maxAccepting":              maxAccepting,
		"peer.maxRemembered":             maxRemembered,
		"peer.acceptQueue":               acceptQueue,
		"peer.acceptCooldown":            acceptCooldown,
		"peer.maxAnswersQueued":          maxAnswersQueued,
		"peer.maxDialedAddrs":            maxDialedAddrs,
	}, "../docs/DEVICE.md")
}
