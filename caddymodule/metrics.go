package caddymodule

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/netsody/superpeer"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

// collector exports the super peer's counters as Prometheus metrics on
// Caddy's registry (served at the admin endpoint's /metrics). Labels are
// reasons and codes, never devices, so the number of series is fixed.
type collector struct{ sp *superpeer.Server }

const ns = "netsody_superpeer"

var (
	descDevices       = prometheus.NewDesc(ns+"_devices", "Devices registered now.", nil, nil)
	descSessions      = prometheus.NewDesc(ns+"_sessions", "Rendezvous sessions open now, registered or not.", nil, nil)
	descRegistrations = prometheus.NewDesc(ns+"_registrations_total", "Registrations accepted.", nil, nil)
	descConnects      = prometheus.NewDesc(ns+"_connects_total", "Connect requests answered with candidates to both devices.", nil, nil)
	descRebindings    = prometheus.NewDesc(ns+"_rebindings_total", "Devices seen at a new address on their QUIC connection (a NAT rebinding), and told so.", nil, nil)
	descRvRefused     = prometheus.NewDesc(ns+"_rendezvous_refused_total", "Rendezvous requests refused, by error.", []string{"error"}, nil)
	descSessRefused   = prometheus.NewDesc(ns+"_sessions_refused_total", "Session requests refused before the session began, by reason.", []string{"reason"}, nil)
	descRegTimeouts   = prometheus.NewDesc(ns+"_register_timeouts_total", "Sessions ended for not registering within register_timeout.", nil, nil)
	descIntroRefused  = prometheus.NewDesc(ns+"_introductions_refused_total", "Introductions a device did not get, by reason; the asker was told to retry.", []string{"reason"}, nil)
	descIntroCoalesce = prometheus.NewDesc(ns+"_introductions_coalesced_total", "Introductions that replaced the same asker's earlier one, still queued.", nil, nil)
	descAddrsLimited  = prometheus.NewDesc(ns+"_addrs_rate_limited_total", "Address announcements over the rate, ignored.", nil, nil)
	descAddrsDropped  = prometheus.NewDesc(ns+"_addrs_dropped_total", "Announced addresses of a class never handed out (multicast, broadcast, another machine's loopback).", nil, nil)
	descConsentAsked  = prometheus.NewDesc(ns+"_consent_requests_total", "Devices asked whether a peer may connect (devices that ask for consent).", nil, nil)
	descConsentEnded  = prometheus.NewDesc(ns+"_consent_answers_total", "What became of the requests, by outcome; ignored: an answer with no request waiting.", []string{"outcome"}, nil)
	descLookupsLimit  = prometheus.NewDesc(ns+"_lookups_rate_limited_total", "Connect requests over the rate per (asker, target), or with the asker's table of targets full.", nil, nil)
	descRechecks      = prometheus.NewDesc(ns+"_admission_rechecks_total", "Registered devices checked again after a reload changed admission, by outcome.", []string{"outcome"}, nil)
	descRelayActive   = prometheus.NewDesc(ns+"_relay_legs", "Relay legs bridged now (two per relayed session).", nil, nil)
	descRelayWaiting  = prometheus.NewDesc(ns+"_relay_waiting", "Relay legs waiting for their counterpart now.", nil, nil)
	descRelayPaired   = prometheus.NewDesc(ns+"_relay_paired_total", "Relay sessions bridged after both devices consented.", nil, nil)
	descRelayTimeouts = prometheus.NewDesc(ns+"_relay_pair_timeouts_total", "Relay sessions whose counterpart never came.", nil, nil)
	descRelayDgrams   = prometheus.NewDesc(ns+"_relay_datagrams_total", "Datagrams relayed.", nil, nil)
	descRelayBytes    = prometheus.NewDesc(ns+"_relay_bytes_total", "Payload bytes relayed.", nil, nil)
	descRelayDropped  = prometheus.NewDesc(ns+"_relay_dropped_total", "Datagrams dropped, by reason.", []string{"reason"}, nil)
	descRelayRefused  = prometheus.NewDesc(ns+"_relay_refused_total", "Relay requests refused, by HTTP status.", []string{"status"}, nil)
)

// The budgets (superpeer.Server.Budgets), labelled by budget: devices,
// device_sessions, device_bandwidth, total_bandwidth. Per-device budgets'
// use is the busiest device's.
var (
	descBudgetLimit = prometheus.NewDesc(ns+"_budget_limit", "Each budget's limit: sessions, or bytes per second.", []string{"budget"}, nil)
	descBudgetUse   = prometheus.NewDesc(ns+"_budget_use", "Each budget's use now, in its limit's unit; for a per-device budget, the busiest device's.", []string{"budget"}, nil)
	descBudgetHits  = prometheus.NewDesc(ns+"_budget_hits_total", "Requests refused, datagrams dropped or held back by each budget.", []string{"budget"}, nil)
)

func collectBudgets(ch chan<- prometheus.Metric, sp *superpeer.Server) {
	for _, b := range sp.Budgets() {
		ch <- prometheus.MustNewConstMetric(descBudgetLimit, prometheus.GaugeValue, b.Limit, b.Name)
		ch <- prometheus.MustNewConstMetric(descBudgetUse, prometheus.GaugeValue, b.Use, b.Name)
		ch <- prometheus.MustNewConstMetric(descBudgetHits, prometheus.CounterValue, float64(b.Hits), b.Name)
	}
}

// refusalCodes are the rendezvous errors counted as refusals.
var refusalCodes = []rendezvous.ErrorCode{
	rendezvous.ErrCodePeerNotFound, rendezvous.ErrCodeBadSignature,
	rendezvous.ErrCodeRefused, rendezvous.ErrCodeRateLimited,
	rendezvous.ErrCodeTryLater,
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDevices, descSessions, descRegistrations, descConnects, descRebindings, descRvRefused,
		descSessRefused, descRegTimeouts, descIntroRefused, descIntroCoalesce, descAddrsLimited, descAddrsDropped,
		descConsentAsked, descConsentEnded, descLookupsLimit, descRechecks,
		descRelayActive, descRelayWaiting, descRelayPaired, descRelayTimeouts, descRelayDgrams, descRelayBytes, descRelayDropped, descRelayRefused,
		descBudgetLimit, descBudgetUse, descBudgetHits} {
		ch <- d
	}
	for _, d := range fastPathDescs {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	registered, all := c.sp.Rendezvous().Sessions()
	rs := c.sp.Rendezvous().Stats()
	ch <- prometheus.MustNewConstMetric(descDevices, prometheus.GaugeValue, float64(registered))
	ch <- prometheus.MustNewConstMetric(descSessions, prometheus.GaugeValue, float64(all))
	ch <- prometheus.MustNewConstMetric(descRegistrations, prometheus.CounterValue, float64(rs.Registrations.Load()))
	ch <- prometheus.MustNewConstMetric(descConnects, prometheus.CounterValue, float64(rs.Connects.Load()))
	ch <- prometheus.MustNewConstMetric(descRebindings, prometheus.CounterValue, float64(rs.Rebindings.Load()))
	for _, code := range refusalCodes {
		ch <- prometheus.MustNewConstMetric(descRvRefused, prometheus.CounterValue, float64(rs.Refused[code].Load()), code.String())
	}
	for _, why := range rendezvous.SessionRefusals() {
		ch <- prometheus.MustNewConstMetric(descSessRefused, prometheus.CounterValue, float64(rs.SessionsRefused[why].Load()), why.String())
	}
	ch <- prometheus.MustNewConstMetric(descRegTimeouts, prometheus.CounterValue, float64(rs.RegisterTimeouts.Load()))
	ch <- prometheus.MustNewConstMetric(descIntroRefused, prometheus.CounterValue, float64(rs.IntroductionsLimited.Load()), "target_rate_limited")
	ch <- prometheus.MustNewConstMetric(descIntroRefused, prometheus.CounterValue, float64(rs.IntroductionsDropped.Load()), "queue_full")
	ch <- prometheus.MustNewConstMetric(descIntroRefused, prometheus.CounterValue, float64(rs.ConsentBusy.Load()), "pending_full")
	ch <- prometheus.MustNewConstMetric(descIntroCoalesce, prometheus.CounterValue, float64(rs.IntroductionsCoalesced.Load()))
	ch <- prometheus.MustNewConstMetric(descAddrsLimited, prometheus.CounterValue, float64(rs.AddrsLimited.Load()))
	ch <- prometheus.MustNewConstMetric(descAddrsDropped, prometheus.CounterValue, float64(rs.AddrsDropped.Load()))
	ch <- prometheus.MustNewConstMetric(descConsentAsked, prometheus.CounterValue, float64(rs.ConsentRequests.Load()))
	for _, o := range []struct {
		n    uint64
		name string
	}{
		{rs.ConsentAccepted.Load(), "accepted"}, {rs.ConsentDeclined.Load(), "declined"},
		{rs.ConsentTimeouts.Load(), "timed_out"}, {rs.ConsentIgnored.Load(), "ignored"},
	} {
		ch <- prometheus.MustNewConstMetric(descConsentEnded, prometheus.CounterValue, float64(o.n), o.name)
	}
	ch <- prometheus.MustNewConstMetric(descLookupsLimit, prometheus.CounterValue, float64(rs.LookupsLimited.Load()))
	refused := rs.RecheckRefused.Load()
	ch <- prometheus.MustNewConstMetric(descRechecks, prometheus.CounterValue, float64(rs.Rechecked.Load()-refused), "kept")
	ch <- prometheus.MustNewConstMetric(descRechecks, prometheus.CounterValue, float64(refused), "refused")
	ls := c.sp.Relay().Stats()
	ch <- prometheus.MustNewConstMetric(descRelayActive, prometheus.GaugeValue, float64(ls.Active.Load()))
	ch <- prometheus.MustNewConstMetric(descRelayWaiting, prometheus.GaugeValue, float64(ls.Waiting.Load()))
	ch <- prometheus.MustNewConstMetric(descRelayPaired, prometheus.CounterValue, float64(ls.Paired.Load()))
	ch <- prometheus.MustNewConstMetric(descRelayTimeouts, prometheus.CounterValue, float64(ls.PairTimeouts.Load()))
	ch <- prometheus.MustNewConstMetric(descRelayDgrams, prometheus.CounterValue, float64(ls.Datagrams.Load()))
	ch <- prometheus.MustNewConstMetric(descRelayBytes, prometheus.CounterValue, float64(ls.Bytes.Load()))
	for _, r := range relay.DropReasons() {
		ch <- prometheus.MustNewConstMetric(descRelayDropped, prometheus.CounterValue, float64(ls.Dropped(r)), r.String())
	}
	for status, n := range ls.Refused() {
		ch <- prometheus.MustNewConstMetric(descRelayRefused, prometheus.CounterValue, float64(n), strconv.Itoa(status))
	}
	collectBudgets(ch, c.sp)
	collectFastPath(ch, &ls.FastPath)
}

// registerMetrics adds p's collectors to reg: the app's, at every config
// load, and the admin endpoint's (AdminAPI.Provision). A reload that finds
// them there already keeps the ones it finds, which read the same shared
// super peer. Each reports only while p is the process's super peer, so a
// registry left with a super peer that went (a config without one)
// shows none.
func registerMetrics(reg prometheus.Registerer, p *pooledSuperPeer) error {
	for _, c := range []prometheus.Collector{collector{p.Server}, operatorCollector{p}, clusterCollector{p}} {
		if err := registerCollector(reg, whileRunning{p, c}); err != nil {
			return fmt.Errorf("netsody: registering metrics: %w", err)
		}
	}
	return nil
}

// whileRunning is a collector of p that reports while p is the process's
// super peer, and nothing once it has gone.
type whileRunning struct {
	p *pooledSuperPeer
	prometheus.Collector
}

func (w whileRunning) Collect(ch chan<- prometheus.Metric) {
	if runningSuperPeer() == w.p {
		w.Collector.Collect(ch)
	}
}
