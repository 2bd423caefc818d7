package caddymodule

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

func init() {
	caddy.RegisterModule(new(HTTPAdmission))
}

// HTTPAdmission asks an admission service: it POSTs the device's peer ID
// to URL and admits it on a 2xx answer. Another 1xx-4xx answer refuses
// it, with the first line of the answer's body (if text) as the reason.
// A 5xx answer, no answer within Timeout, or an unreachable service
// admits the device if FailOpen is set, and otherwise tells it to retry
// later (fail closed). Answers are cached by peer ID. The request body is
//
//	{"peer_id": "<64 hex>", "proof_of_work": <nonce>, "remote": "<ip:port>", "recheck": <bool>}
//
// with Content-Type application/json.
type HTTPAdmission struct {
	// URL is the admission service's http or https URL.
	URL string `json:"url,omitempty"`
	// Timeout bounds a callout, the wait for a free one included.
	// Default: caddymodule.DefaultAdmissionTimeout (2s).
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// MaxConcurrent caps the callouts at once; a device that finds none
	// free within Timeout is told to retry later, whatever FailOpen says.
	// Default: caddymodule.DefaultAdmissionConcurrency (16).
	MaxConcurrent int `json:"max_concurrent,omitempty"`
	// CacheSize caps the cached answers.
	// Default: caddymodule.DefaultAdmissionCacheSize (4096).
	CacheSize int `json:"cache_size,omitempty"`
	// CacheTTL is how long an answer is kept.
	// Default: caddymodule.DefaultAdmissionCacheTTL (1m).
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`
	// FailOpen admits devices while the service fails (5xx, timeout,
	// unreachable). Default: false (fail closed: they retry later).
	FailOpen bool `json:"fail_open,omitempty"`

	logger *zap.Logger
	client *http.Client
	slots  chan struct{} // one per callout running
	cache  admissionCache
}

// CaddyModule returns the Caddy module information.
func (*HTTPAdmission) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "netsody.admission.http", New: func() caddy.Module { return new(HTTPAdmission) }}
}

// Provision sets defaults and makes the client.
func (h *HTTPAdmission) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.Timeout == 0 {
		h.Timeout = caddy.Duration(DefaultAdmissionTimeout)
	}
	if h.MaxConcurrent == 0 {
		h.MaxConcurrent = DefaultAdmissionConcurrency
	}
	if h.CacheSize == 0 {
		h.CacheSize = DefaultAdmissionCacheSize
	}
	if h.CacheTTL == 0 {
		h.CacheTTL = caddy.Duration(DefaultAdmissionCacheTTL)
	}
	h.client = &http.Client{
		Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxConnsPerHost: max(h.MaxConcurrent, 1)},
		// The answer is the status: a redirect is not followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	h.slots = make(chan struct{}, max(h.MaxConcurrent, 1))
	h.cache.init(max(h.CacheSize, 1), time.Duration(h.CacheTTL))
	return nil
}

// Validate checks the configuration.
func (h *HTTPAdmission) Validate() error {
	u, err := url.Parse(h.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("http admission: url must be an absolute http or https URL, got %q", h.URL)
	}
	if h.Timeout < 0 || h.MaxConcurrent < 0 || h.CacheSize < 0 || h.CacheTTL < 0 {
		return errors.New("http admission: timeout, max_concurrent, cache_size and cache_ttl must not be negative")
	}
	return nil
}

// Cleanup closes the client's idle connections.
func (h *HTTPAdmission) Cleanup() error {
	if h.client != nil {
		h.client.CloseIdleConnections()
	}
	return nil
}

// Admit asks the cache, then the service.
func (h *HTTPAdmission) Admit(ctx context.Context, req rendezvous.AdmissionRequest) error {
	now := time.Now()
	if err, ok := h.cache.get(req.Peer, now); ok {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(h.Timeout))
	defer cancel()
	select {
	case h.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: all %d admission callouts are busy", rendezvous.ErrTryLater, cap(h.slots))
	}
	refusal, err := h.ask(ctx, req)
	<-h.slots
	if err != nil {
		if h.FailOpen {
			h.logger.Warn("admission service failed; admitting (fail_open)", zap.String("peer", req.Peer.Short()), zap.Error(err))
			return nil
		}
		return fmt.Errorf("%w: the admission service failed: %v", rendezvous.ErrTryLater, err)
	}
	h.cache.put(req.Peer, refusal, time.Now())
	return refusal
}

// ask makes one callout: a nil refusal admits; err is a failure of the
// service, not an answer.
func (h *HTTPAdmission) ask(ctx context.Context, req rendezvous.AdmissionRequest) (refusal, err error) {
	body, _ := json.Marshal(map[string]any{
		"peer_id": req.Peer.String(), "proof_of_work": req.ProofOfWork,
		"remote": req.Remote.String(), "recheck": req.Recheck,
	})
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	r.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(r)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	reason := firstLine(io.LimitReader(resp.Body, maxAdmissionReason))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil, nil
	case resp.StatusCode >= 500:
		return nil, fmt.Errorf("it answered %s", resp.Status)
	case reason != "":
		return fmt.Errorf("the admission service refused this peer ID (%s): %s", resp.Status, reason), nil
	}
	return fmt.Errorf("the admission service refused this peer ID (%s)", resp.Status), nil
}

// firstLine returns the first line of r if it is printable text.
func firstLine(r io.Reader) string {
	line, _ := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	if strings.ContainsFunc(line, func(c rune) bool { return !unicode.IsPrint(c) }) {
		return ""
	}
	return line
}

// UnmarshalCaddyfile sets up the module from Caddyfile tokens. Syntax:
//
//	http <url> {
//		timeout        <duration>
//		max_concurrent <count>
//		cache_size     <count>
//		cache_ttl      <duration>
//		fail_open
//	}
func (h *HTTPAdmission) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if !d.AllArgs(&h.URL) {
		return d.ArgErr()
	}
	return eachOption(d, func(opt string) (err error) {
		switch opt {
		case "timeout":
			h.Timeout, err = durationArg(d)
		case "max_concurrent":
			h.MaxConcurrent, err = countArg(d)
		case "cache_size":
			h.CacheSize, err = countArg(d)
		case "cache_ttl":
			h.CacheTTL, err = durationArg(d)
		case "fail_open":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.FailOpen = true
		default:
			err = d.Errf("unknown http admission option %q", opt)
		}
		return err
	})
}

// admissionCache holds the service's answers by peer ID, at most size of
// them, each for ttl.
type admissionCache struct {
	size int
	ttl  time.Duration

	mu      sync.Mutex // guards entries
	entries map[identity.PeerID]cachedAnswer
}

type cachedAnswer struct {
	refusal error // nil: admitted
	until   time.Time
}

func (c *admissionCache) init(size int, ttl time.Duration) {
	c.size, c.ttl, c.entries = size, ttl, make(map[identity.PeerID]cachedAnswer)
}

func (c *admissionCache) get(p identity.PeerID, now time.Time) (error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[p]
	if !ok || now.After(e.until) {
		return nil, false
	}
	return e.refusal, true
}

// put keeps an answer; a full cache first drops what expired, then, if
// nothing had, one entry (Go's map order picks it).
func (c *admissionCache) put(p identity.PeerID, refusal error, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[p]; !ok && len(c.entries) >= c.size {
		for q, e := range c.entries {
			if now.After(e.until) {
				delete(c.entries, q)
			}
		}
		for q := range c.entries {
			if len(c.entries) < c.size {
				break
			}
			delete(c.entries, q)
		}
	}
	c.entries[p] = cachedAnswer{refusal: refusal, until: now.Add(c.ttl)}
}

// len is the number of cached answers, for tests.
func (c *admissionCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Interface guards
var (
	_ Admitter              = (*HTTPAdmission)(nil)
	_ caddy.Provisioner     = (*HTTPAdmission)(nil)
	_ caddy.Validator       = (*HTTPAdmission)(nil)
	_ caddy.CleanerUpper    = (*HTTPAdmission)(nil)
	_ caddyfile.Unmarshaler = (*HTTPAdmission)(nil)
)
