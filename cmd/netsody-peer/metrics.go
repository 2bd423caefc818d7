package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/netsody/superpeer/peer"
	"github.com/netsody/superpeer/rendezvous"
)

// The metrics that --status serves on /metrics, computed from the
// device's status at each scrape.
var (
	superPeerUpDesc = prometheus.NewDesc(
		"netsody_peer_super_peer_up",
		"Whether the device has a session with the super peer: 1 if so, 0 if not.",
		[]string{"url"}, nil)
	superPeerRTTDesc = prometheus.NewDesc(
		"netsody_peer_super_peer_rtt_seconds",
		"Smoothed round-trip time of the session with the super peer, from its registration and keepalives.",
		[]string{"url", "family", "transport"}, nil)
	pathDesc = prometheus.NewDesc(
		"netsody_peer_path",
		"The path to a peer: 1 for the path in use (none, direct or relay), 0 for the others.",
		[]string{"peer", "path"}, nil)
	peerRTTDesc = prometheus.NewDesc(
		"netsody_peer_rtt_seconds",
		"Round-trip time of the direct path to a peer, from punches; absent without a direct path.",
		[]string{"peer"}, nil)
	refusedDesc = prometheus.NewDesc(
		"netsody_peer_refused_total",
		"What the accept policy refused, by reason: declined (any request declined or candidates ignored), busy (no Accept slot), timed_out (Accept calls without an answer in time), cooling (declined without asking after a timeout), dropped (requests beyond a super peer's queue), handshakes (QUIC handshake packets from unknown addresses).",
		[]string{"reason"}, nil)
	mappingDesc = prometheus.NewDesc(
		"netsody_peer_nat_mapping",
		"The device's NAT mapping as it learned it from its one socket: 1 for the verdict now (endpoint-independent, endpoint-dependent or unknown), 0 for the others.",
		[]string{"mapping"}, nil)
	stunDesc = prometheus.NewDesc(
		"netsody_peer_stun_responses_total",
		"STUN Binding responses that reached the device's socket: taken (the answer to a request it sent, from where it went) or dropped (any other: a stranger's, or late).",
		[]string{"result"}, nil)
)

// mappings are the values of netsody_peer_nat_mapping's mapping label.
var mappings = []rendezvous.NATMapping{rendezvous.MappingUnknown, rendezvous.MappingIndependent, rendezvous.MappingDependent}

// pathKinds are the values of netsody_peer_path's path label.
var pathKinds = []peer.PathKind{peer.PathNone, peer.PathDirect, peer.PathRelay}

// statusCollector is a prometheus.Collector over a device's status.
type statusCollector struct {
	dev *peer.Device
}

func (statusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- superPeerUpDesc
	ch <- superPeerRTTDesc
	ch <- pathDesc
	ch <- peerRTTDesc
	ch <- refusedDesc
	ch <- mappingDesc
	ch <- stunDesc
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.dev.Status()
	for _, sp := range st.SuperPeers {
		ch <- prometheus.MustNewConstMetric(superPeerUpDesc, prometheus.GaugeValue, boolValue(sp.Connected), sp.URL)
		if sp.Connected && sp.RTTMillis > 0 {
			ch <- prometheus.MustNewConstMetric(superPeerRTTDesc, prometheus.GaugeValue, sp.RTTMillis/1e3, sp.URL, sp.Family, sp.Transport)
		}
	}
	for _, p := range st.Peers {
		for _, k := range pathKinds {
			ch <- prometheus.MustNewConstMetric(pathDesc, prometheus.GaugeValue, boolValue(p.Path == k), p.PeerID, string(k))
		}
		if p.Path == peer.PathDirect && p.RTTMillis > 0 {
			ch <- prometheus.MustNewConstMetric(peerRTTDesc, prometheus.GaugeValue, p.RTTMillis/1e3, p.PeerID)
		}
	}
	r := st.Refusals
	for reason, n := range map[string]uint64{
		"declined": r.Declined, "busy": r.Busy, "timed_out": r.TimedOut,
		"cooling": r.Cooling, "dropped": r.Dropped, "handshakes": r.Handshake,
	} {
		ch <- prometheus.MustNewConstMetric(refusedDesc, prometheus.CounterValue, float64(n), reason)
	}
	for _, m := range mappings {
		ch <- prometheus.MustNewConstMetric(mappingDesc, prometheus.GaugeValue, boolValue(st.NAT.Mapping == m.String()), m.String())
	}
	ch <- prometheus.MustNewConstMetric(stunDesc, prometheus.CounterValue, float64(st.NAT.STUNAnswers), "taken")
	ch <- prometheus.MustNewConstMetric(stunDesc, prometheus.CounterValue, float64(st.NAT.STUNDropped), "dropped")
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Interface guards
var _ prometheus.Collector = statusCollector{}
