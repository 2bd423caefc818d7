package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/netsody/superpeer/relay"
)

// The relay's UDP fast path (docs/PROTOCOL.md, "Relay fast path") needs a
// UDP port of its own beside HTTPS. The app opens it on the hosts the
// super peer's sites listen on, keeps it across reloads in a
// caddy.UsagePool, as endpoint.go keeps its HTTP/3 sockets, and hands it
// to the relay; it closes when the last config with a super peer leaves.

// FastPathPort is the fast path's UDP port option: a port, or off. Its
// zero value is unset (relay.DefaultFastPathPort); JSON takes a number or
// "off", and 0 is off too.
type FastPathPort int

const fastPathOff FastPathPort = -1

// port is the port to open, or 0 for none.
func (p FastPathPort) port() int {
	switch p {
	case 0:
		return relay.DefaultFastPathPort
	case fastPathOff:
		return 0
	}
	return int(p)
}

func (p FastPathPort) String() string {
	if p == fastPathOff {
		return "off"
	}
	return strconv.Itoa(int(p))
}

// MarshalJSON writes off as "off", a port as a number.
func (p FastPathPort) MarshalJSON() ([]byte, error) {
	if p == fastPathOff {
		return []byte(`"off"`), nil
	}
	return json.Marshal(int(p))
}

// UnmarshalJSON takes a port number, or 0 or "off" for no fast path.
func (p *FastPathPort) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		return p.set(s)
	}
	var n int
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("fast_path_port must be a UDP port or \"off\", got %s", b)
	}
	return p.set(strconv.Itoa(n))
}

func (p *FastPathPort) set(s string) error {
	if s == "off" || s == "0" {
		*p = fastPathOff
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("fast_path_port must be a UDP port (1-65535), or off (or 0) for no fast path, got %q", s)
	}
	*p = FastPathPort(n)
	return nil
}

// fastPathPortArg parses `fast_path_port <port>|off`.
func fastPathPortArg(d *caddyfile.Dispenser) (FastPathPort, error) {
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	var p FastPathPort
	if err := p.set(d.Val()); err != nil {
		return 0, d.Err(err.Error())
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return p, nil
}

// fastPathPort is the merged options' fast-path port, or 0 for none.
func (o Options) fastPathPort() int {
	if o.Relay == nil {
		return relay.DefaultFastPathPort
	}
	return o.Relay.FastPathPort.port()
}

// fastPathSockets holds the fast path's socket by address across
// reloads: a config that keeps the address keeps the socket, and with it
// every validated binding.
var fastPathSockets = caddy.NewUsagePool()

// fastPathServing lets one socket at a time serve the process's relay
// (relay.Server.ServeFastPath takes one): after a reload that moved the
// port, the new socket serves once the old config's has closed.
var fastPathServing = make(chan struct{}, 1)

// fastPathSocket is the fast path's UDP socket, served by one goroutine.
type fastPathSocket struct {
	key    string
	conn   *net.UDPConn
	closed chan struct{} // closed by Destruct: stop waiting to serve
	done   chan struct{} // closed when the serving goroutine has ended
	logger *zap.Logger
}

// fastPathAddr is the UDP address the fast path listens on: the host of
// the super peer's listeners if they share one, else every address (one
// socket for IPv4 and IPv6, as Caddy binds 443), at port. ok is false
// when no listener is a TCP address.
func (a *App) fastPathAddr(port int) (network, addr string, ok bool) {
	type hostNet struct{ network, host string }
	seen := map[hostNet]bool{}
	for _, t := range a.takeovers {
		for _, l := range t.srv.Listen {
			na, err := caddy.ParseNetworkAddress(l)
			if err != nil {
				continue // joinEndpointsLocked reports it
			}
			switch na.Network {
			case "tcp", "tcp4", "tcp6":
				seen[hostNet{"udp" + na.Network[3:], na.Host}] = true
			}
		}
	}
	if len(seen) == 0 {
		return "", "", false
	}
	network, host := "udp", ""
	if len(seen) == 1 {
		for hn := range seen {
			network, host = hn.network, hn.host
		}
	}
	return network, net.JoinHostPort(host, strconv.Itoa(port)), true
}

// joinFastPathLocked opens the fast path's socket, or joins the one a
// previous config opened at the same address. A port the operator chose
// that cannot be opened fails the config; the default port, taken by
// another program, leaves the super peer without a fast path, with a
// warning: devices relay over HTTP/3 and HTTP/2 as before.
func (a *App) joinFastPathLocked() error {
	port := a.options.fastPathPort()
	if port == 0 {
		return nil
	}
	network, addr, ok := a.fastPathAddr(port)
	if !ok {
		return nil
	}
	for _, reg := range a.joined {
		if reg.ep.port == port {
			return fmt.Errorf("netsody: fast_path_port %d is a port that serves HTTP/3; choose another, or off", port)
		}
	}
	key := "netsody-fastpath/" + network + "/" + addr
	rs := a.superPeer.Relay()
	val, _, err := fastPathSockets.LoadOrNew(key, func() (caddy.Destructor, error) {
		return openFastPath(a.logger, key, network, addr, rs)
	})
	if err != nil {
		if a.options.Relay == nil || a.options.Relay.FastPathPort == 0 {
			a.logger.Warn("no relay fast path: its default port cannot be opened; devices relay over HTTP/3 and HTTP/2. Free the port, set fast_path_port, or set it off",
				zap.String("address", addr), zap.Error(err))
			return nil
		}
		return fmt.Errorf("netsody: fast_path_port %d: %w; choose another port, or off", port, err)
	}
	a.fastPath = val.(*fastPathSocket)
	return nil
}

// leaveFastPathLocked leaves the socket; the last config out closes it.
func (a *App) leaveFastPathLocked() error {
	if a.fastPath == nil {
		return nil
	}
	_, err := fastPathSockets.Delete(a.fastPath.key)
	a.fastPath = nil
	return err
}

func openFastPath(logger *zap.Logger, key, network, addr string, rs *relay.Server) (*fastPathSocket, error) {
	ua, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP(network, ua)
	if err != nil {
		return nil, err
	}
	s := &fastPathSocket{key: key, conn: conn, closed: make(chan struct{}), done: make(chan struct{}), logger: logger}
	go s.serve(rs)
	logger.Info("serving the relay's fast path", zap.String("address", conn.LocalAddr().String()))
	return s, nil
}

// serve waits for its turn, then serves the relay until the socket
// closes.
func (s *fastPathSocket) serve(rs *relay.Server) {
	defer close(s.done)
	select {
	case fastPathServing <- struct{}{}:
	case <-s.closed:
		return
	}
	defer func() { <-fastPathServing }()
	if err := rs.ServeFastPath(s.conn); err != nil && !errors.Is(err, net.ErrClosed) {
		s.logger.Error("the relay's fast path stopped", zap.String("address", s.key), zap.Error(err))
	}
}

// Destruct closes the socket: bindings validated on it stop delivering,
// and their devices fall back to their legs' HTTP transports.
func (s *fastPathSocket) Destruct() error {
	close(s.closed)
	err := s.conn.Close()
	<-s.done
	s.logger.Info("stopped serving the relay's fast path", zap.String("address", s.key))
	return err
}

// The fast path's metrics, collected with the rest (metrics.go).
var (
	descFastBindings    = prometheus.NewDesc(ns+"_fast_path_bindings", "Relay legs with a fast-path binding now.", nil, nil)
	descFastRefused     = prometheus.NewDesc(ns+"_fast_path_refused_total", "Fast-path binding requests refused (no fast path served, or too many bindings).", nil, nil)
	descFastValidations = prometheus.NewDesc(ns+"_fast_path_validations_total", "Device addresses validated on the fast path, rebindings included.", nil, nil)
	descFastRebindings  = prometheus.NewDesc(ns+"_fast_path_rebindings_total", "Validations that moved a binding to a new address (a NAT rebinding).", nil, nil)
	descFastChallenges  = prometheus.NewDesc(ns+"_fast_path_challenges_total", "CHALLENGE packets sent.", nil, nil)
	descFastDatagrams   = prometheus.NewDesc(ns+"_fast_path_datagrams_total", "Datagrams sent to devices on the fast path (counted in relay_datagrams_total too).", nil, nil)
	descFastDropped     = prometheus.NewDesc(ns+"_fast_path_dropped_total", "Fast-path packets dropped, by reason; every refusal on the fast path is a silent drop.", []string{"reason"}, nil)

	fastPathDescs = []*prometheus.Desc{descFastBindings, descFastRefused, descFastValidations, descFastRebindings, descFastChallenges, descFastDatagrams, descFastDropped}
)

// collectFastPath sends the fast path's metrics from the relay's stats.
func collectFastPath(ch chan<- prometheus.Metric, fs *relay.FastPathStats) {
	ch <- prometheus.MustNewConstMetric(descFastBindings, prometheus.GaugeValue, float64(fs.Bindings.Load()))
	for _, c := range []struct {
		d *prometheus.Desc
		n uint64
	}{
		{descFastRefused, fs.Refused.Load()}, {descFastValidations, fs.Validations.Load()},
		{descFastRebindings, fs.Rebindings.Load()}, {descFastChallenges, fs.Challenges.Load()},
		{descFastDatagrams, fs.Datagrams.Load()},
	} {
		ch <- prometheus.MustNewConstMetric(c.d, prometheus.CounterValue, float64(c.n))
	}
	for _, r := range relay.FastPathDrops() {
		ch <- prometheus.MustNewConstMetric(descFastDropped, prometheus.CounterValue, float64(fs.Dropped(r)), r.String())
	}
}

// Interface guards
var _ caddy.Destructor = (*fastPathSocket)(nil)
