package cluster

import (
	"testing"

	"github.com/netsody/superpeer/internal/doctable"
)

// docs/CLUSTER.md's table of limits states what the code does.
func TestDocsTables(t *testing.T) {
	doctable.Check(t, "cluster.", map[string]any{
		"cluster.maxMessage":          maxMessage,
		"cluster.maxNodeID":           maxNodeID,
		"cluster.maxInbound":          maxInbound,
		"cluster.maxInboundPerNode":   maxInboundPerNode,
		"cluster.inboundQueue":        inboundQueue,
		"cluster.inboundWorkers":      inboundWorkers,
		"cluster.pingInterval":        pingInterval,
		"cluster.maxPingsOutstanding": maxPingsOutstanding,
		"cluster.reconnectWait":       reconnectWait,
		"cluster.dialTimeout":         dialTimeout,
		"cluster.reconnectBuffer":     reconnectBuffer,
		"cluster.restoreGrace":        restoreGrace,
	}, "../docs/CLUSTER.md")
}
