package l4stun

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/mholt/caddy-l4/layer4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/netsody/superpeer/stun"
)

func init() {
	caddy.RegisterModule(&Handler{})
	caddy.RegisterModule(&MatchSTUN{})
}

// Handler answers STUN Binding requests (RFC 8489, RFC 5389, RFC 3489) on
// a caddy-l4 UDP listener with the address and port they came from; see
// package stun for what it answers and ignores. It is a terminal handler:
// it reads every datagram of its client until caddy-l4's idle_timeout.
type Handler struct {
	// SourceRate is the responses per second one source prefix (an IPv4
	// address or an IPv6 /64) gets after its burst. Default 50.
	SourceRate float64 `json:"source_rate,omitempty"`
	// SourceBurst is the responses one source prefix gets at once.
	// Default 200.
	SourceBurst int `json:"source_burst,omitempty"`

	cfg       stun.Config
	responder *pooledResponder
	logger    *zap.Logger
	app       *layer4.App // whose STUN ports it noted (ports.go)
}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "layer4.handlers.netsody_stun",
		New: func() caddy.Module { return new(Handler) },
	}
}

// responders holds the process's one responder, whose table of source
// prefixes and counters a reload keeps: a reload gives no source a
// fresh burst.
var responders = caddy.NewUsagePool()

const responderKey = "netsody_stun"

type pooledResponder struct{ stun.Responder }

func (*pooledResponder) Destruct() error { return nil }

// Provision sets the defaults and joins the process's responder.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.app = noteApp(ctx)
	h.cfg = stun.Config{SourceRate: h.SourceRate, SourceBurst: h.SourceBurst}
	if err := h.cfg.Validate(); err != nil {
		return err
	}
	h.cfg.SetDefaults()
	v, _, err := responders.LoadOrNew(responderKey, func() (caddy.Destructor, error) {
		return new(pooledResponder), nil
	})
	if err != nil {
		return err
	}
	h.responder = v.(*pooledResponder)
	return registerMetrics(ctx.GetMetricsRegistry(), &h.responder.Responder)
}

// Cleanup leaves the responder, and forgets its app's STUN ports.
func (h *Handler) Cleanup() error {
	forgetApp(h.app)
	h.app = nil
	if h.responder != nil {
		_, err := responders.Delete(responderKey)
		return err
	}
	return nil
}

// Handle answers cx's datagrams until caddy-l4 ends cx.
func (h *Handler) Handle(cx *layer4.Connection, _ layer4.Handler) error {
	udp, ok := cx.RemoteAddr().(*net.UDPAddr)
	if !ok || !isPacket(cx) {
		return fmt.Errorf("netsody_stun answers STUN over UDP only, and %s came over %s: use it in a layer4 server that listens on udp/",
			cx.RemoteAddr(), cx.LocalAddr().Network())
	}
	from := udp.AddrPort()
	in := make([]byte, readBufSize)
	out := make([]byte, 0, stun.MaxResponseSize)
	var r io.Reader = cx
	ended := false
	for {
		n, err := r.Read(in)
		if err != nil {
			// The first io.EOF is caddy-l4's idle timeout, told to us
			// before caddy-l4 has taken the client out of its table:
			// datagrams may still reach our queue until it has, and a
			// full queue would stop the listener. The second read ends
			// when caddy-l4 closes the queue.
			if !ended && errors.Is(err, io.EOF) {
				ended = true
				continue
			}
			return nil
		}
		if n == 0 {
			// An empty datagram, or caddy-l4's matching buffer holding
			// part of a datagram too large for it, which cx.Read would
			// return as nothing forever: read the socket's queue directly.
			r = cx.Conn
		}
		resp, why := h.responder.Respond(out, in[:n], from, &h.cfg, time.Now())
		if why != stun.DropNone {
			if ce := h.logger.Check(zapcore.DebugLevel, "STUN datagram dropped"); ce != nil {
				ce.Write(zap.Stringer("from", from), zap.Stringer("reason", why), zap.Int("bytes", n))
			}
			continue
		}
		if _, err := cx.Write(resp); err != nil {
			if ce := h.logger.Check(zapcore.DebugLevel, "STUN response not sent"); ce != nil {
				ce.Write(zap.Stringer("to", from), zap.Error(err))
			}
		}
	}
}

// isPacket reports whether cx is a datagram "connection" of caddy-l4.
func isPacket(cx *layer4.Connection) bool {
	return strings.HasPrefix(cx.LocalAddr().Network(), "udp")
}

// Interface guards
var (
	_ caddy.Provisioner  = (*Handler)(nil)
	_ caddy.CleanerUpper = (*Handler)(nil)
	_ layer4.NextHandler = (*Handler)(nil)
)
