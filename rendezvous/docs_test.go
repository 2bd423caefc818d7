package rendezvous

import (
	"testing"

	"github.com/netsody/superpeer/internal/doctable"
)

// The tables of limits and defaults in docs/PROTOCOL.md and
// docs/CONFIG.md state what the code does.
func TestDocsTables(t *testing.T) {
	doctable.Check(t, "rendezvous.", map[string]any{
		"rendezvous.MaxPayload":                      MaxPayload,
		"rendezvous.MaxAddrs":                        MaxAddrs,
		"rendezvous.MaxErrorMessage":                 MaxErrorMessage,
		"rendezvous.MaxMoveReason":                   MaxMoveReason,
		"rendezvous.MaxRelayNodeURL":                 MaxRelayNodeURL,
		"rendezvous.DefaultDrainTimeout":             DefaultDrainTimeout,
		"rendezvous.retryAfterDraining":              retryAfterDraining,
		"rendezvous.DefaultKeepaliveInterval":        DefaultKeepaliveInterval,
		"rendezvous.DefaultSessionTimeout":           DefaultSessionTimeout,
		"rendezvous.DefaultWriteTimeout":             DefaultWriteTimeout,
		"rendezvous.DefaultMaxSessions":              DefaultMaxSessions,
		"rendezvous.DefaultConnectRate":              DefaultConnectRate,
		"rendezvous.DefaultConnectBurst":             DefaultConnectBurst,
		"rendezvous.maxQueuedFrames":                 maxQueuedFrames,
		"rendezvous.maxQueuedBytes":                  maxQueuedBytes,
		"rendezvous.maxOfferedFrames":                maxOfferedFrames,
		"rendezvous.maxOfferedBytes":                 maxOfferedBytes,
		"rendezvous.DefaultIntroductionRate":         DefaultIntroductionRate,
		"rendezvous.DefaultIntroductionBurst":        DefaultIntroductionBurst,
		"rendezvous.DefaultAddrsRate":                DefaultAddrsRate,
		"rendezvous.DefaultAddrsBurst":               DefaultAddrsBurst,
		"rendezvous.DefaultRegisterTimeout":          DefaultRegisterTimeout,
		"rendezvous.DefaultMaxUnregisteredPerPrefix": DefaultMaxUnregisteredPerPrefix,
		"rendezvous.DefaultPrefixSessionRate":        DefaultPrefixSessionRate,
		"rendezvous.DefaultPrefixSessionBurst":       DefaultPrefixSessionBurst,
		"rendezvous.prefixBits4":                     prefixBits4,
		"rendezvous.prefixBits6":                     prefixBits6,
		"rendezvous.maxPrefixes":                     maxPrefixes,
		"rendezvous.prefixSweepEvery":                prefixSweepEvery,
		"rendezvous.retryAfterPrefix":                retryAfterPrefix,
		"rendezvous.followMin":                       followMin,
		"rendezvous.retryAfterFull":                  retryAfterFull,
		"rendezvous.quicKeepalivePeriod":             quicKeepalivePeriod,
		"rendezvous.maxRefusalReason":                maxRefusalReason,
		"rendezvous.clientWriteTimeout":              clientWriteTimeout,
		"rendezvous.DefaultLookupRate":               DefaultLookupRate,
		"rendezvous.DefaultLookupBurst":              DefaultLookupBurst,
		"rendezvous.maxLookupPeers":                  maxLookupPeers,
		"rendezvous.DefaultConsentTimeout":           DefaultConsentTimeout,
		"rendezvous.maxPendingPerTarget":             maxPendingPerTarget,
		"rendezvous.maxPending":                      maxPending,
		"rendezvous.maxWaitingPerAsker":              maxWaitingPerAsker,
		"rendezvous.maxWaitingPerPrefix":             maxWaitingPerPrefix,
		"rendezvous.recheckRate":                     recheckRate,
		"rendezvous.headroomLook":                    headroomLook,
		"rendezvous.headroomInterval":                headroomInterval,
		"rendezvous.headroomChangeRatio":             headroomChangeRatio,
		"rendezvous.headroomChangeMin":               headroomChangeMin,
		"rendezvous.maxClusterRequests":              maxClusterRequests,
		"rendezvous.clusterReplyMargin":              clusterReplyMargin,
	}, "../docs/PROTOCOL.md", "../docs/CONFIG.md", "../docs/CLUSTER.md")
}
