package l4stun

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/netsody/superpeer/stun"
)

// collector exports the responder's counters on Caddy's registry. Labels
// are forms and reasons, so the number of series is fixed.
type collector struct{ r *stun.Responder }

const ns = "netsody_superpeer_stun"

var (
	descAnswered = prometheus.NewDesc(ns+"_answered_total", "STUN Binding requests answered, by form (rfc5389: with the magic cookie, RFC 5389/8489; rfc3489: without).", []string{"form"}, nil)
	descDropped  = prometheus.NewDesc(ns+"_dropped_total", "Datagrams on a netsody_stun route not answered, by reason.", []string{"reason"}, nil)
	descSources  = prometheus.NewDesc(ns+"_sources", "Source prefixes (IPv4 addresses, IPv6 /64s) in the responder's table now.", nil, nil)
)

func (collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descAnswered
	ch <- descDropped
	ch <- descSources
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, f := range stun.Forms() {
		ch <- prometheus.MustNewConstMetric(descAnswered, prometheus.CounterValue, float64(c.r.Answered(f)), f.String())
	}
	for _, why := range stun.DropReasons() {
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(c.r.Dropped(why)), why.String())
	}
	ch <- prometheus.MustNewConstMetric(descSources, prometheus.GaugeValue, float64(c.r.Sources()))
}

// registerMetrics adds r's collector to reg (nil: none); a second
// handler of the same config finds it there and keeps it: both read the
// process's one responder.
func registerMetrics(reg prometheus.Registerer, r *stun.Responder) error {
	if reg == nil {
		return nil
	}
	err := reg.Register(collector{r})
	if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
		return nil
	}
	return err
}
