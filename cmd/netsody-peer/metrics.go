package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/netsody/superpeer/peer"
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
)

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
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Interface guards
var _ prometheus.Collector = statusCollector{}
