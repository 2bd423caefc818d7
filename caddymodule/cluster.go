package caddymodule

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/netsody/superpeer/cluster"
	"github.com/netsody/superpeer/internal/secret"
	"github.com/netsody/superpeer/rendezvous"
)

// ClusterOptions make this super peer a node of a cluster: many super
// peers behind one name that share their devices through NATS
// (docs/CLUSTER.md). Without them (the default) the super peer is a
// single node, with no NATS anywhere.
type ClusterOptions struct {
	// Name is the cluster's name, the same on every node: letters,
	// digits, '-' and '_', at most 64.
	Name string `json:"name,omitempty"`
	// URL is this node's own public URL (https://sp-3.example.com),
	// which it names to the other nodes.
	URL string `json:"url,omitempty"`
	// NATS are the URLs of the NATS servers (nats:// or tls://).
	NATS []string `json:"nats,omitempty"`
	// NATSCreds is a NATS credentials file (a user JWT and its seed).
	NATSCreds string `json:"nats_creds,omitempty"`
	// NATSUser and NATSPassword authenticate with a user and password.
	NATSUser     string `json:"nats_user,omitempty"`
	NATSPassword string `json:"nats_password,omitempty"`
	// NATSToken authenticates with a token.
	NATSToken string `json:"nats_token,omitempty"`
	// NATSTLSCA is a PEM file of the CAs that NATS servers' certificates
	// are checked against; the system's roots by default. Setting it
	// (or a client certificate) makes the connection use TLS.
	NATSTLSCA string `json:"nats_tls_ca,omitempty"`
	// NATSTLSCert and NATSTLSKey are PEM files of a client certificate
	// and its key, for NATS servers that verify clients.
	NATSTLSCert string `json:"nats_tls_cert,omitempty"`
	NATSTLSKey  string `json:"nats_tls_key,omitempty"`
}

// options returns the cluster package's options, reading the TLS files.
func (o *ClusterOptions) options(logger *zap.Logger) (cluster.Options, error) {
	opts := cluster.Options{Name: o.Name, URL: o.URL, Servers: o.NATS, Credentials: o.NATSCreds,
		User: o.NATSUser, Password: o.NATSPassword, Token: o.NATSToken, Logger: logger}
	if o.NATSTLSCA == "" && o.NATSTLSCert == "" {
		return opts, nil
	}
	opts.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	if o.NATSTLSCA != "" {
		pem, err := os.ReadFile(o.NATSTLSCA)
		if err != nil {
			return opts, fmt.Errorf("cluster: nats_tls_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return opts, fmt.Errorf("cluster: nats_tls_ca %s holds no PEM certificate", o.NATSTLSCA)
		}
		opts.TLS.RootCAs = pool
	}
	if o.NATSTLSCert != "" {
		cert, err := tls.LoadX509KeyPair(o.NATSTLSCert, o.NATSTLSKey)
		if err != nil {
			return opts, fmt.Errorf("cluster: nats_tls_cert and nats_tls_key: %w", err)
		}
		opts.TLS.Certificates = []tls.Certificate{cert}
	}
	return opts, nil
}

// validate checks the options alone, saying what to fix.
func (o *ClusterOptions) validate() error {
	if (o.NATSTLSCert == "") != (o.NATSTLSKey == "") {
		return errors.New("cluster: nats_tls_cert and nats_tls_key go together")
	}
	if o.NATSUser == "" && o.NATSPassword != "" {
		return errors.New("cluster: nats_password needs nats_user")
	}
	opts, _ := (&ClusterOptions{Name: o.Name, URL: o.URL, NATS: o.NATS, NATSCreds: o.NATSCreds, NATSUser: o.NATSUser, NATSToken: o.NATSToken}).options(nil)
	return opts.Validate()
}

// expandSecrets replaces the placeholders ({env.NATS_TOKEN}) in the
// options that hold secrets, so that they need not be in the JSON.
func (o *ClusterOptions) expandSecrets() error {
	return secret.Expand("cluster: ", secret.Field{Name: "nats_user", Value: &o.NATSUser},
		secret.Field{Name: "nats_password", Value: &o.NATSPassword}, secret.Field{Name: "nats_token", Value: &o.NATSToken})
}

// clusterNodes holds each cluster connection in use, by its options: a
// reload that leaves them unchanged keeps the connection, and with it
// every device's subscription.
var clusterNodes = caddy.NewUsagePool()

// pooledNode is a cluster connection in the pool.
type pooledNode struct{ *cluster.Node }

// Destruct implements caddy.Destructor: the last config that uses the
// connection closes it.
func (p *pooledNode) Destruct() error { return p.Close() }

// clusterKey is the pool key of o.
func clusterKey(o *ClusterOptions) string {
	b, _ := json.Marshal(o)
	return "cluster:" + string(b)
}

// joinCluster connects this config to its cluster, or joins the
// connection a running config holds with the same options.
func (a *App) joinCluster() error {
	if a.Cluster == nil {
		return nil
	}
	if err := a.Cluster.expandSecrets(); err != nil {
		return fmt.Errorf("netsody: %w", err)
	}
	key := clusterKey(a.Cluster)
	val, _, err := clusterNodes.LoadOrNew(key, func() (caddy.Destructor, error) {
		opts, err := a.Cluster.options(a.logger.Named("cluster"))
		if err != nil {
			return nil, err
		}
		n, err := cluster.Connect(opts)
		if err != nil {
			return nil, err
		}
		return &pooledNode{n}, nil
	})
	if err != nil {
		return fmt.Errorf("netsody: %w", err)
	}
	a.clusterKey, a.clusterNode = key, val.(*pooledNode)
	return nil
}

// leaveCluster leaves this config's cluster connection; the last config
// out closes it.
func (a *App) leaveCluster() error {
	if a.clusterNode == nil {
		return nil
	}
	a.clusterNode = nil
	_, err := clusterNodes.Delete(a.clusterKey)
	return err
}

// cluster returns this config's cluster for the rendezvous server, or
// nil: never a nil *cluster.Node in an interface.
func (a *App) cluster() rendezvous.Cluster {
	if a.clusterNode == nil {
		return nil
	}
	a.clusterNode.Serve(a.superPeer.Rendezvous())
	return a.clusterNode.Node
}

// unmarshalCluster parses the global option's cluster block:
//
//	cluster {
//		name          <name>
//		url           <this node's https URL>
//		nats          <nats_url>...
//		nats_creds    <file>
//		nats_user     <user> <password>
//		nats_token    <token>
//		nats_tls_ca   <file>
//		nats_tls_cert <cert_file> <key_file>
//	}
func (a *App) unmarshalCluster(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	if a.Cluster != nil {
		return d.Err("cluster may appear only once")
	}
	o := new(ClusterOptions)
	err := eachOption(d, func(opt string) error {
		args := d.RemainingArgs()
		one := func(to *string) error {
			if len(args) != 1 {
				return d.ArgErr()
			}
			*to = args[0]
			return nil
		}
		switch opt {
		case "name":
			return one(&o.Name)
		case "url":
			return one(&o.URL)
		case "nats":
			if len(args) == 0 {
				return d.ArgErr()
			}
			o.NATS = append(o.NATS, args...)
			return nil
		case "nats_creds":
			return one(&o.NATSCreds)
		case "nats_user":
			if len(args) != 2 {
				return d.ArgErr()
			}
			o.NATSUser, o.NATSPassword = args[0], args[1]
			return nil
		case "nats_token":
			return one(&o.NATSToken)
		case "nats_tls_ca":
			return one(&o.NATSTLSCA)
		case "nats_tls_cert":
			if len(args) != 2 {
				return d.ArgErr()
			}
			o.NATSTLSCert, o.NATSTLSKey = args[0], args[1]
			return nil
		}
		return d.Errf("unknown cluster option %q", opt)
	})
	if err != nil {
		return err
	}
	a.Cluster = o
	return nil
}

// clusterCollector exports the cluster's counters: the rendezvous
// server's introductions across nodes, and the connection's.
type clusterCollector struct{ sp *pooledSuperPeer }

var (
	descClusterConnected = prometheus.NewDesc(ns+"_cluster_connected", "1 while this node's connection to NATS is up, 0 while it is down; absent without a cluster.", nil, nil)
	descClusterDevices   = prometheus.NewDesc(ns+"_cluster_devices", "Devices this node makes reachable through the cluster now.", nil, nil)
	descClusterAsked     = prometheus.NewDesc(ns+"_cluster_introductions_total", "Introductions this node asked of other nodes, by result.", []string{"result"}, nil)
	descClusterServed    = prometheus.NewDesc(ns+"_cluster_served_total", "Introduction requests of other nodes, by result.", []string{"result"}, nil)
	descClusterInbound   = prometheus.NewDesc(ns+"_cluster_inbound", "Requests of other nodes held now, waiting for a device's consent.", nil, nil)
	descClusterSpent     = prometheus.NewDesc(ns+"_cluster_spent_total", "Introductions of devices held at several nodes, spent at one and told the others: heard from other nodes, or not told (NATS down).", []string{"result"}, nil)
)

func (c clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descClusterConnected, descClusterDevices, descClusterAsked, descClusterServed, descClusterInbound, descClusterSpent} {
		ch <- d
	}
}

func (c clusterCollector) Collect(ch chan<- prometheus.Metric) {
	n, _ := c.sp.Rendezvous().Cluster().(*cluster.Node)
	if n == nil {
		return
	}
	rv, st := c.sp.Rendezvous().Stats(), n.Stats()
	up := 0.0
	if n.Connected() {
		up = 1
	}
	counter := func(d *prometheus.Desc, v uint64, label string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), label)
	}
	ch <- prometheus.MustNewConstMetric(descClusterConnected, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(descClusterDevices, prometheus.GaugeValue, float64(st.Joined.Load()))
	ch <- prometheus.MustNewConstMetric(descClusterInbound, prometheus.GaugeValue, float64(st.InboundNow.Load()))
	counter(descClusterAsked, rv.ClusterAsked.Load(), "asked")
	counter(descClusterAsked, rv.ClusterUnavailable.Load(), "unavailable")
	counter(descClusterAsked, rv.ClusterTimeouts.Load(), "timeout")
	counter(descClusterAsked, rv.ClusterBusy.Load(), "busy")
	counter(descClusterAsked, st.NoResponders.Load(), "no_responders")
	counter(descClusterAsked, st.Restoring.Load(), "restoring")
	counter(descClusterAsked, st.BadReplies.Load(), "bad_reply")
	counter(descClusterServed, st.Served.Load(), "served")
	counter(descClusterServed, st.Refused.Load(), "refused")
	counter(descClusterServed, st.BadRequests.Load(), "bad_request")
	counter(descClusterServed, st.SlowConsumer.Load(), "dropped")
	counter(descClusterSpent, st.SpentHeard.Load(), "heard")
	counter(descClusterSpent, st.SpentLost.Load(), "lost")
}

// Interface guards
var (
	_ caddy.Destructor     = (*pooledNode)(nil)
	_ prometheus.Collector = clusterCollector{}
)
