package caddymodule

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

// operatorCollector exports what an operator watches beyond collector's
// counters: devices by IP version and transport, registrations and
// introductions by result, relayed traffic by transport, admission
// decisions by module, and the operator's own actions. Like collector's,
// its labels are never devices.
type operatorCollector struct{ p *pooledSuperPeer }

var (
	descDevicesBy    = prometheus.NewDesc(ns+"_devices_by_transport", "Devices registered now, by IP version and transport.", []string{"ip_version", "transport"}, nil)
	descRegResults   = prometheus.NewDesc(ns+"_registration_results_total", "Registrations, by result.", []string{"result"}, nil)
	descIntroResults = prometheus.NewDesc(ns+"_introduction_results_total", "Connect requests, by result (consent outcomes in consent_answers_total).", []string{"result"}, nil)
	descRelayDgramBy = prometheus.NewDesc(ns+"_relay_transport_datagrams_total", "Datagrams relayed, by the transport that delivered them to the device.", []string{"transport"}, nil)
	descRelayBytesBy = prometheus.NewDesc(ns+"_relay_transport_bytes_total", "Payload bytes relayed, by the transport that delivered them to the device.", []string{"transport"}, nil)
	descRelaySess    = prometheus.NewDesc(ns+"_relay_sessions", "Relay sessions now, waiting for their counterpart or bridged.", []string{"state"}, nil)
	descDecisions    = prometheus.NewDesc(ns+"_admission_decisions_total", "Admission decisions, by module and result (allow_all is not counted; operator_deny is the admin API's deny list).", []string{"module", "result"}, nil)
	descKicks        = prometheus.NewDesc(ns+"_operator_ended_total", "Sessions the operator ended through the admin API (kick, deny).", nil, nil)
	descDenyEntries  = prometheus.NewDesc(ns+"_deny_entries", "Entries in the admin API's deny list now.", nil, nil)
	descServing      = prometheus.NewDesc(ns+"_serving", "1 while the super peer takes devices, 0 while it drains.", nil, nil)
)

func (c operatorCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDevicesBy, descRegResults, descIntroResults, descRelayDgramBy, descRelayBytesBy,
		descRelaySess, descDecisions, descKicks, descDenyEntries, descServing} {
		ch <- d
	}
}

func (c operatorCollector) Collect(ch chan<- prometheus.Metric) {
	rv := c.p.Rendezvous()
	for _, n := range rv.DeviceCounts() {
		ch <- prometheus.MustNewConstMetric(descDevicesBy, prometheus.GaugeValue, float64(n.Devices), strconv.Itoa(n.IPVersion), n.Transport)
	}
	rs := rv.Stats()
	counter := func(d *prometheus.Desc, n uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(n), labels...)
	}
	counter(descRegResults, rs.Registrations.Load(), "accepted")
	for _, r := range []struct {
		code  rendezvous.ErrorCode
		label string
	}{
		{rendezvous.ErrCodeRefused, "refused"}, {rendezvous.ErrCodeTryLater, "try_later"},
		{rendezvous.ErrCodeBadSignature, "bad_signature"}, {rendezvous.ErrCodeUpgradeRequired, "upgrade_required"},
	} {
		counter(descRegResults, rs.Refused[r.code].Load(), r.label)
	}
	counter(descIntroResults, rs.Connects.Load(), "introduced")
	counter(descIntroResults, rs.Refused[rendezvous.ErrCodePeerNotFound].Load(), "not_found")
	counter(descIntroResults, rs.Refused[rendezvous.ErrCodeRateLimited].Load(), "rate_limited")
	counter(descIntroResults, rs.Refused[rendezvous.ErrCodeBadRequest].Load(), "bad_request")

	ls := c.p.Relay().Stats()
	for _, t := range relay.Transports() {
		dgrams, bytes := ls.Delivered(t)
		counter(descRelayDgramBy, dgrams, t.String())
		counter(descRelayBytesBy, bytes, t.String())
	}
	// A bridged session is two legs; a waiting one, one.
	ch <- prometheus.MustNewConstMetric(descRelaySess, prometheus.GaugeValue, float64(ls.Waiting.Load()), "waiting")
	ch <- prometheus.MustNewConstMetric(descRelaySess, prometheus.GaugeValue, float64(ls.Active.Load()/2), "bridged")

	for k, n := range c.p.ops.decisionCounts() {
		counter(descDecisions, n, k.module, k.result)
	}
	counter(descKicks, c.p.ops.kicks.Load())
	ch <- prometheus.MustNewConstMetric(descDenyEntries, prometheus.GaugeValue, float64(len(c.p.ops.deny.list())))
	serving := 1.0
	if c.p.ops.drainReason() != "" {
		serving = 0
	}
	ch <- prometheus.MustNewConstMetric(descServing, prometheus.GaugeValue, serving)
}

// registerCollector adds c to reg (nil: none); a reload that finds it
// there already keeps the one it finds, which reads the same shared super
// peer.
func registerCollector(reg prometheus.Registerer, c prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	err := reg.Register(c)
	if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
		return nil
	}
	return err
}
