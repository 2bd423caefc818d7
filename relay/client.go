package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dunglas/httpsfv"
	"github.com/quic-go/masque-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/quicvarint"
	"github.com/yosida95/uritemplate/v3"

	"github.com/netsody/superpeer/identity"
)

// DialH3 opens a relay session towards peer over an HTTP/3 connection on
// which this device registered, with masque-go's standard CONNECT-UDP
// client. authority is the super peer's host[:port] as in its URL. The
// session is bridged once peer opens its side; until then DialH3 waits,
// and the super peer answers 504 after its pair timeout.
func DialH3(ctx context.Context, cc *http3.ClientConn, authority string, peer identity.PeerID) (*masque.Conn, error) {
	tmpl, err := uritemplate.New(Template(authority))
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	req, err := masque.NewRequest(ctx, tmpl, peer.String()+":"+TargetPort)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	conn, resp, err := masque.NewClientConn(cc).Dial(req)
	if err != nil {
		if resp != nil {
			return nil, refusedError(resp)
		}
		return nil, fmt.Errorf("relay: %w", err)
	}
	return conn, nil
}

// RefusedError is a relay request the super peer refused.
type RefusedError struct {
	Status      int
	ProxyStatus string // the Proxy-Status header (RFC 9209)
	Reason      string
	// RetryAfter is the Retry-After of a 429 or 503, in whole seconds;
	// zero if none.
	RetryAfter time.Duration
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("relay: super peer refused: %d %s: %s", e.Status, http.StatusText(e.Status), e.Reason)
}

// refusedError takes the reason from the Proxy-Status details (RFC 9209
// section 2.1.6), or else from the body.
func refusedError(resp *http.Response) error {
	e := &RefusedError{Status: resp.StatusCode, ProxyStatus: resp.Header.Get("Proxy-Status")}
	if sec, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && sec > 0 {
		e.RetryAfter = time.Duration(sec) * time.Second
	}
	if l, err := httpsfv.UnmarshalList(resp.Header.Values("Proxy-Status")); err == nil && len(l) > 0 {
		if item, ok := l[0].(httpsfv.Item); ok {
			if d, ok := item.Params.Get("details"); ok {
				e.Reason, _ = d.(string)
			}
		}
	}
	if resp.Body != nil {
		if e.Reason == "" {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, maxRefusalBody))
			e.Reason = strings.TrimSpace(strings.TrimPrefix(string(b), "netsody relay: "))
		}
		resp.Body.Close()
	}
	if e.Reason == "" {
		e.Reason = http.StatusText(resp.StatusCode)
	}
	return e
}

// DialH2 opens a relay session towards peer over an HTTP/2 connection (a
// RoundTripper bound to one connection) on which this device registered,
// as a streamed POST carrying RFC 9297 DATAGRAM capsules: what works
// through any HTTP/2 server, Caddy as shipped included. See DialH3 for the
// rest.
func DialH2(ctx context.Context, cc http.RoundTripper, authority string, peer identity.PeerID) (*StreamConn, error) {
	return dialStream(ctx, cc, authority, peer, false)
}

// DialH2Connect is DialH2 with an RFC 8441 extended CONNECT
// (:protocol connect-udp) instead of a POST, for super peers whose
// process enables it (Go's HTTP/2 server needs GODEBUG=http2xconnect=1).
// net/http's client refuses the :protocol pseudo-header; use a connection
// from golang.org/x/net/http2 (see rendezvous.ClientConfig.NewH2Conn).
func DialH2Connect(ctx context.Context, cc http.RoundTripper, authority string, peer identity.PeerID) (*StreamConn, error) {
	return dialStream(ctx, cc, authority, peer, true)
}

func dialStream(ctx context.Context, cc http.RoundTripper, authority string, peer identity.PeerID, extendedConnect bool) (*StreamConn, error) {
	out := newStreamBody()
	reqCtx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, cancel)
	u, err := url.Parse(relayURL(authority, peer))
	if err != nil {
		cancel()
		stop()
		return nil, fmt.Errorf("relay: %w", err)
	}
	req := (&http.Request{
		Method:        http.MethodPost,
		URL:           u,
		Host:          authority,
		Header:        http.Header{http3.CapsuleProtocolHeader: {"?1"}},
		Body:          out,
		ContentLength: -1,
	}).WithContext(reqCtx)
	if extendedConnect {
		req.Method = http.MethodConnect
		req.Header.Set(":protocol", "connect-udp")
	}
	resp, err := cc.RoundTrip(req)
	stopped := stop()
	if err != nil {
		cancel()
		out.closeWrite()
		if !stopped {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("relay: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		out.closeWrite()
		return nil, refusedError(resp)
	}
	return &StreamConn{
		body:        resp.Body,
		capsules:    newCapsuleReader(resp.Body),
		out:         out,
		cancel:      cancel,
		sessionEnds: sessionEnds{remote: relayAddr(peer.String())},
		fast:        newFastPathAsk(),
	}, nil
}

// relayURL is the URL of a relay session towards peer, for clients that
// do not expand Template.
func relayURL(authority string, peer identity.PeerID) string {
	return (&url.URL{Scheme: "https", Host: authority, Path: PathPrefix + peer.String() + "/" + TargetPort + "/"}).String()
}

// relayAddr names the peer at the far end of a relay session.
type relayAddr string

func (a relayAddr) Network() string { return "netsody-relay" }
func (a relayAddr) String() string  { return string(a) }

// StreamConn is a relay session over an HTTP/2 stream, as a
// net.PacketConn whose every packet goes to and comes from the one peer.
//
// It has no deadlines: a read waits in the HTTP/2 response body, which
// nothing but closing interrupts, so the Set*Deadline methods return
// errors.ErrUnsupported. Close the conn to end a pending read. (masque-go's
// Conn, over HTTP/3, can: QUIC datagrams are received with a context.)
type StreamConn struct {
	body     io.ReadCloser
	capsules *capsuleReader
	out      *streamBody // the request body
	cancel   context.CancelFunc
	sessionEnds
	fast fastPathAsk // answered while ReadFrom reads

	rmu sync.Mutex // serialises reads
	buf []byte

	closeOnce sync.Once
}

// ReadFrom reads the next packet from the peer. When the super peer ends
// the session it returns a *ClosedError with the reason.
func (c *StreamConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		n, ok, err := c.capsules.readUDP(b, maxStreamDatagram)
		if err != nil {
			return 0, nil, err
		}
		if ok {
			if n < 0 {
				continue // another context, or too large: skip
			}
			return n, c.remote, nil
		}
		d, err := c.capsules.readDatagram(c.buf, maxStreamDatagram, c.fast.take)
		if errors.Is(err, errCapsuleTooLarge) {
			continue
		}
		if err != nil {
			return 0, nil, err
		}
		c.buf = d
		id, n, err := quicvarint.Parse(d)
		if err != nil || id != 0 {
			continue // not a UDP payload (RFC 9298 §4): skip
		}
		return copy(b, d[n:]), c.remote, nil
	}
}

// WriteTo sends a packet to the peer; addr is ignored. Packets queue for
// the HTTP/2 stream, and go out together (streamBody); a write waits
// while maxStreamPending bytes are queued.
func (c *StreamConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	if err := c.out.writePacket(p); err != nil {
		return 0, fmt.Errorf("relay: %w", err)
	}
	return len(p), nil
}

// Close ends the session.
func (c *StreamConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.fast.closed)
		c.out.closeWrite()
		c.body.Close()
		c.cancel()
	})
	return nil
}

// sessionEnds is the part of net.PacketConn that the device's relay
// sessions share: their addresses, and no deadlines (a read waits in a
// response body or a stream, which only closing interrupts).
type sessionEnds struct{ remote net.Addr }

func (e sessionEnds) LocalAddr() net.Addr              { return relayAddr("local") }
func (e sessionEnds) RemoteAddr() net.Addr             { return e.remote }
func (e sessionEnds) SetDeadline(time.Time) error      { return errors.ErrUnsupported }
func (e sessionEnds) SetReadDeadline(time.Time) error  { return errors.ErrUnsupported }
func (e sessionEnds) SetWriteDeadline(time.Time) error { return errors.ErrUnsupported }

var _ net.PacketConn = (*StreamConn)(nil)
