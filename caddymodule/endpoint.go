package caddymodule

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	h3qlog "github.com/quic-go/quic-go/http3/qlog"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/netsody/superpeer"
)

// endpoints holds one HTTP/3 endpoint per UDP address, across config
// reloads: a new config joins the endpoint before the old one leaves it,
// so the socket and its QUIC connections live on.
var endpoints = caddy.NewUsagePool()

const (
	// handshakesPerSecond is the rate above which new QUIC clients must
	// prove their source address with a Retry, as Caddy's own HTTP/3
	// listener does.
	handshakesPerSecond = 1000
	// initialPacketSize is quic-go's default and the IPv6 minimum MTU.
	initialPacketSize = 1280
	// shutdownTimeout bounds how long closing an endpoint waits for
	// requests to finish.
	shutdownTimeout = 5 * time.Second
)

// endpoint serves HTTP/3 with datagrams on one UDP socket, handing every
// request to the Caddy server of the newest config that joined it.
type endpoint struct {
	key    string
	port   int
	pc     net.PacketConn // Caddy's; closing it releases Caddy's reference
	tr     *quic.Transport
	ln     *quic.EarlyListener
	h3     *http3.Server
	logger *zap.Logger

	// Steering through a reload (steer.go).
	network string
	sock    *net.UDPConn // the socket, if it is a UDP one
	cids    markedCIDs
	steerMu sync.Mutex // guards steered and the group's program
	steered bool

	mu   sync.RWMutex    // guards the following
	regs []*registration // joined configs; the last one serves
}

// registration is one config's use of an endpoint.
type registration struct {
	ep     *endpoint
	srv    *caddyhttp.Server
	tlsCfg *tls.Config
}

// joinEndpoint opens the endpoint for na (at port offset off) or joins the
// one a previous config opened, and makes srv the server it serves.
func joinEndpoint(ctx caddy.Context, logger *zap.Logger, na caddy.NetworkAddress, off uint, srv *caddyhttp.Server, tlsCfg *tls.Config) (*registration, error) {
	key := "netsody-h3/" + na.Network + "/" + na.JoinHostPort(off)
	val, _, err := endpoints.LoadOrNew(key, func() (caddy.Destructor, error) {
		return openEndpoint(ctx, logger, key, na, off, srv)
	})
	if err != nil {
		return nil, fmt.Errorf("netsody: HTTP/3 on %s: %w", na.JoinHostPort(off), err)
	}
	ep := val.(*endpoint)
	reg := &registration{ep: ep, srv: srv, tlsCfg: tlsCfg}
	ep.mu.Lock()
	ep.regs = append(ep.regs, reg)
	ep.mu.Unlock()
	return reg, nil
}

func openEndpoint(ctx caddy.Context, logger *zap.Logger, key string, na caddy.NetworkAddress, off uint, srv *caddyhttp.Server) (*endpoint, error) {
	lnAny, err := na.Listen(ctx, off, net.ListenConfig{})
	if err != nil {
		return nil, err
	}
	pc, ok := lnAny.(net.PacketConn)
	if !ok {
		return nil, fmt.Errorf("network %q is not a packet network", na.Network)
	}
	// Hand quic-go the real socket, as Caddy does, so that it can use GSO
	// and ECN.
	raw := pc
	for {
		u, ok := raw.(interface{ Unwrap() net.PacketConn })
		if !ok {
			break
		}
		raw = u.Unwrap()
	}
	ep := &endpoint{key: key, pc: pc, logger: logger, network: na.Network}
	if udp, ok := raw.LocalAddr().(*net.UDPAddr); ok {
		ep.port = udp.Port
	}
	ep.sock, _ = raw.(*net.UDPConn)
	if ep.cids, err = newMarkedCIDs(); err != nil {
		pc.Close()
		return nil, err
	}
	limiter := rate.NewLimiter(handshakesPerSecond, handshakesPerSecond)
	ep.tr = &quic.Transport{
		Conn:                  raw,
		ConnectionIDGenerator: ep.cids,
		VerifySourceAddress:   func(net.Addr) bool { return !limiter.Allow() },
	}
	allow0RTT := true
	if srv.Allow0RTT != nil {
		allow0RTT = *srv.Allow0RTT
	}
	ep.ln, err = ep.tr.ListenEarly(
		http3.ConfigureTLSConfig(&tls.Config{
			GetConfigForClient:          ep.getConfigForClient,
			GetEncryptedClientHelloKeys: ep.getECHKeys,
		}),
		&quic.Config{
			// Caddy starts at 1200 bytes; the relay needs room for a
			// device's 1200-byte packet plus its MASQUE framing from the
			// first packet on, before path MTU discovery grows it.
			InitialPacketSize: initialPacketSize,
			Allow0RTT:         allow0RTT,
			EnableDatagrams:   true,
			Tracer:            h3qlog.DefaultConnectionTracer,
		})
	if err != nil {
		ep.tr.Close()
		pc.Close()
		return nil, err
	}
	ep.h3 = &http3.Server{
		Handler:         ep,
		EnableDatagrams: true,
		ConnContext:     superpeer.ConnContext, // sessions follow NAT rebindings
		MaxHeaderBytes:  srv.MaxHeaderBytes,
		IdleTimeout:     time.Duration(srv.IdleTimeout),
	}
	go ep.h3.ServeListener(ep.ln)
	logger.Info("serving HTTP/3 with datagrams", zap.String("address", pc.LocalAddr().String()))
	ep.steerOrWarn()
	return ep, nil
}

func (ep *endpoint) current() *registration {
	ep.mu.RLock()
	defer ep.mu.RUnlock()
	if len(ep.regs) == 0 {
		return nil
	}
	return ep.regs[len(ep.regs)-1]
}

// ServeHTTP hands an HTTP/3 request to the current Caddy server.
func (ep *endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reg := ep.current()
	if reg == nil {
		http.Error(w, "server is shutting down", http.StatusServiceUnavailable)
		return
	}
	reg.srv.ServeHTTP(w, r)
}

func (ep *endpoint) getConfigForClient(ch *tls.ClientHelloInfo) (*tls.Config, error) {
	reg := ep.current()
	if reg == nil {
		return nil, fmt.Errorf("netsody: no TLS configuration for %s", ep.key)
	}
	if reg.tlsCfg.GetConfigForClient == nil {
		return reg.tlsCfg, nil
	}
	cfg, err := reg.tlsCfg.GetConfigForClient(ch)
	if cfg == nil && err == nil {
		cfg = reg.tlsCfg
	}
	return cfg, err
}

func (ep *endpoint) getECHKeys(ch *tls.ClientHelloInfo) ([]tls.EncryptedClientHelloKey, error) {
	reg := ep.current()
	if reg == nil || reg.tlsCfg.GetEncryptedClientHelloKeys == nil {
		return nil, nil
	}
	return reg.tlsCfg.GetEncryptedClientHelloKeys(ch)
}

// steerOrWarn steers (steer.go), and says what failing to costs.
func (ep *endpoint) steerOrWarn() {
	err := ep.steer()
	if errors.Is(err, errNoSteering) {
		ep.logger.Debug("HTTP/3 packets are not steered", zap.String("address", ep.key), zap.Error(err))
	} else if err != nil {
		ep.logger.Warn("HTTP/3 packets of this endpoint's connections may go to another socket on the port during a reload; a drain may then wait for its timeout", zap.String("address", ep.key), zap.Error(err))
	}
}

// leave removes this config from its endpoint; the last one out closes it.
func (reg *registration) leave() error {
	ep := reg.ep
	ep.mu.Lock()
	for i, r := range ep.regs {
		if r == reg {
			ep.regs = append(ep.regs[:i:i], ep.regs[i+1:]...)
			break
		}
	}
	ep.mu.Unlock()
	_, err := endpoints.Delete(ep.key)
	return err
}

// Destruct closes the endpoint: it takes no new connection (the
// listener is the endpoint's, so http3.Server.Shutdown would not close
// it, and a device re-dialling meanwhile would hold the shutdown for its
// whole wait), tells clients to go away (GOAWAY), waits a bounded time
// for their requests to end, then takes its steering off the port
// (steer.go) and closes the socket.
func (ep *endpoint) Destruct() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	ep.ln.Close()
	if err := ep.h3.Shutdown(ctx); err != nil {
		ep.h3.Close()
	}
	ep.release()
	ep.tr.Close()
	err := ep.pc.Close()
	ep.logger.Info("stopped serving HTTP/3", zap.String("address", ep.key))
	return err
}

// Interface guards
var _ caddy.Destructor = (*endpoint)(nil)
