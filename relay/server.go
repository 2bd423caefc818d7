package relay

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/defaults"
	"github.com/netsody/superpeer/rendezvous"
)

// Config tunes a Server. Zero values take the defaults in constants.go.
type Config struct {
	// Auth tells which device's registration a request's connection
	// carries, and whether a target is registered; a relay session ends
	// with the registration that authenticated it. Required: a
	// *rendezvous.Server.
	Auth Authenticator
	// PairTimeout is how long a session waits for its counterpart.
	PairTimeout time.Duration
	// WriteTimeout ends a leg that carries capsules (HTTP/2, or a POST on
	// HTTP/3) whose device does not take a write within this long.
	WriteTimeout time.Duration
	// MaxSessionsPerDevice caps a device's relay sessions, waiting or
	// bridged; more get 429.
	MaxSessionsPerDevice int
	// Rate (bytes per second) and Burst (bytes) are each leg's token bucket
	// for the traffic it sends.
	Rate  float64
	Burst int
	// DeviceRate and DeviceBurst are each device's bandwidth budget: one
	// token bucket for what it sends on all its legs and their fast
	// paths. TotalRate and TotalBurst are the super peer's, for what all
	// devices send. Capsule legs wait for them, HTTP/3 datagrams and
	// fast-path DATA over them are dropped (budget.go). SetConfig applies
	// them, and Rate and Burst, to the sessions that run.
	DeviceRate  float64
	DeviceBurst int
	TotalRate   float64
	TotalBurst  int
	// MaxDatagramSize is the largest HTTP datagram payload relayed.
	MaxDatagramSize int
	// QueueLen bounds the datagrams queued towards each leg's device, and
	// QueueBytes their bytes; the queue is made when the leg is paired.
	QueueLen   int
	QueueBytes int
	// MaxQueuedBytes bounds the bytes queued across all legs; datagrams
	// over it are dropped.
	MaxQueuedBytes int64
	// StallTimeout ends a leg whose queue is full and whose device has not
	// taken the write in flight for this long.
	StallTimeout time.Duration
	// MaxWaiting caps the legs waiting for their counterpart,
	// MaxWaitingPerDevice a device's, and MaxWaitingPerPrefix those from
	// one source prefix (rendezvous.SourcePrefix); more get 503, 429 and
	// 429.
	MaxWaiting          int
	MaxWaitingPerDevice int
	MaxWaitingPerPrefix int
	// HidePresence answers a request towards an unregistered device as
	// one towards a device that never opens its side: it waits
	// PairTimeout (holding a waiting slot, within its device's and its
	// network's share) and gets the pair timeout's 504, rather than a 404
	// at once; so a stranger cannot tell whether a device is online
	// (rendezvous.Config.HidePresence).
	HidePresence bool
	// MaxFastPathBindings caps the fast path's bindings across the server
	// (one per leg whose device asked); more are refused and those devices
	// stay on their legs' HTTP transports.
	MaxFastPathBindings int
	// Logger receives the relay's logs; nil discards them.
	Logger *zap.Logger
}

func (c Config) withDefaults() Config {
	defaults.Set(&c.PairTimeout, DefaultPairTimeout)
	defaults.Set(&c.WriteTimeout, DefaultWriteTimeout)
	defaults.Set(&c.MaxSessionsPerDevice, DefaultMaxSessionsPerDevice)
	defaults.Set(&c.Rate, DefaultRate)
	defaults.Set(&c.Burst, DefaultBurst)
	defaults.Set(&c.DeviceRate, DefaultDeviceRate)
	defaults.Set(&c.DeviceBurst, DefaultDeviceBurst)
	defaults.Set(&c.TotalRate, DefaultTotalRate)
	defaults.Set(&c.TotalBurst, DefaultTotalBurst)
	defaults.Set(&c.MaxDatagramSize, DefaultMaxDatagramSize)
	defaults.Set(&c.QueueLen, DefaultQueueLen)
	defaults.Set(&c.QueueBytes, DefaultQueueBytes)
	defaults.Set(&c.MaxQueuedBytes, DefaultMaxQueuedBytes)
	defaults.Set(&c.StallTimeout, DefaultStallTimeout)
	defaults.Set(&c.MaxWaiting, DefaultMaxWaiting)
	defaults.Set(&c.MaxWaitingPerDevice, DefaultMaxWaitingPerDevice)
	defaults.Set(&c.MaxWaitingPerPrefix, DefaultMaxWaitingPerPrefix)
	defaults.Set(&c.MaxFastPathBindings, DefaultMaxFastPathBindings)
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}

// Validate reports a configuration that cannot work. Zero values take
// the defaults; negative ones are errors.
func (c Config) Validate() error {
	if c.PairTimeout < 0 || c.WriteTimeout < 0 || c.MaxSessionsPerDevice < 0 || c.Rate < 0 || c.Burst < 0 || c.MaxDatagramSize < 0 || c.QueueLen < 0 ||
		c.QueueBytes < 0 || c.MaxQueuedBytes < 0 || c.StallTimeout < 0 || c.MaxWaiting < 0 || c.MaxWaitingPerDevice < 0 || c.MaxWaitingPerPrefix < 0 ||
		c.MaxFastPathBindings < 0 || c.DeviceRate < 0 || c.DeviceBurst < 0 || c.TotalRate < 0 || c.TotalBurst < 0 {
		return fmt.Errorf("relay options must not be negative")
	}
	c = c.withDefaults()
	// A datagram larger than a bucket could never pass it.
	for _, b := range []struct {
		name string
		n    int
	}{{"burst", c.Burst}, {"device burst", c.DeviceBurst}, {"total burst", c.TotalBurst}} {
		if b.n < c.MaxDatagramSize {
			return fmt.Errorf("relay %s %d bytes must be at least the maximum datagram size %d", b.name, b.n, c.MaxDatagramSize)
		}
	}
	// Room for a datagram queued beside the one being written.
	if c.QueueBytes < 2*c.MaxDatagramSize || c.MaxQueuedBytes < int64(c.QueueBytes) {
		return fmt.Errorf("relay queue bytes %d must be at least twice the maximum datagram size %d and at most the max queued bytes %d", c.QueueBytes, c.MaxDatagramSize, c.MaxQueuedBytes)
	}
	return nil
}

// Authenticator is what the relay needs of the rendezvous server: relay
// requests are authenticated by the registration on their connection
// (docs/PROTOCOL.md), and go only to registered devices. A relay request
// is a lookup of its target as a connect is, and is limited with it:
// LookUp refuses one over the per-(asker, target) limit with a
// *rendezvous.LookupLimitedError, and LookupFailed charges one that
// failed (see rendezvous.Server.LookUp).
type Authenticator interface {
	Authenticate(r *http.Request) (*rendezvous.Registration, bool)
	LookUp(asker *rendezvous.Registration, target identity.PeerID) (found bool, err error)
	LookupFailed(asker *rendezvous.Registration, target identity.PeerID)
}

// Server relays between consenting devices. Mount it at PathPrefix on
// the super peer's HTTP/3 and HTTP/2 servers.
type Server struct {
	cfg atomic.Pointer[Config]

	mu        sync.Mutex // guards the following
	waiting   map[pairKey]*leg
	legs      map[*leg]struct{}
	byDevice  map[identity.PeerID]int // sessions per device
	waitingBy map[identity.PeerID]int // sessions per device not yet paired
	waitingAt map[netip.Prefix]int    // sessions per source prefix not yet paired
	nWaiting  int                     // sessions not yet paired
	closed    bool
	// drained, once Drain made it, is closed (drainedClosed) when no leg
	// is left (drain.go).
	drained       chan struct{}
	drainedClosed bool

	handlers sync.WaitGroup
	stats    Stats
	budgets  *budgets
	fast     atomic.Pointer[fastPath] // while ServeFastPath runs
}

type pairKey struct{ from, to identity.PeerID }

// NewServer returns a relay Server. cfg.Auth must be set.
func NewServer(cfg Config) *Server {
	s := &Server{
		waiting:   make(map[pairKey]*leg),
		legs:      make(map[*leg]struct{}),
		byDevice:  make(map[identity.PeerID]int),
		waitingBy: make(map[identity.PeerID]int),
		waitingAt: make(map[netip.Prefix]int),
	}
	cfg = cfg.withDefaults()
	s.budgets = newBudgets(&cfg)
	s.SetConfig(cfg)
	return s
}

// SetConfig replaces the configuration for new sessions, and applies its
// bandwidth limits (Rate, Burst and the budgets) to those that run.
func (s *Server) SetConfig(cfg Config) {
	cfg = cfg.withDefaults()
	s.cfg.Store(&cfg)
	s.budgets.set(&cfg)
	s.mu.Lock()
	defer s.mu.Unlock()
	for l := range s.legs {
		l.account.buckets[0].set(cfg.Rate, cfg.Burst)
	}
}

func (s *Server) config() *Config { return s.cfg.Load() }

// Stats returns the relay's counters.
func (s *Server) Stats() *Stats { return &s.stats }

// ServeHTTP serves one leg of a relay session until it ends.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cfg := s.config()
	l, ref := s.accept(w, r, cfg)
	if ref != nil {
		s.stats.countRefusal(ref)
		ref.write(w)
		return
	}
	defer s.release(l)
	other, ref := s.pair(r.Context(), l, cfg)
	if ref != nil {
		l.end(ref.details) // nobody holds l now; should that change, it learns why
		s.stats.countRefusal(ref)
		ref.write(w)
		return
	}
	l.run(other)
}

// accept checks a relay request and builds its leg, or refuses it.
func (s *Server) accept(w http.ResponseWriter, r *http.Request, cfg *Config) (*leg, *refusal) {
	kind, ref := kindOf(r)
	if ref != nil {
		return nil, ref
	}
	if r.TLS == nil {
		return nil, refuseNotHTTPS
	}
	if !r.TLS.HandshakeComplete {
		return nil, refuseTooEarly
	}
	target, ref := parseTarget(r.URL.Path)
	if ref != nil {
		return nil, ref
	}
	reg, ok := cfg.Auth.Authenticate(r)
	if !ok {
		return nil, refuseNoRegistration
	}
	testHook("authenticated")
	peer := reg.PeerID()
	if target == peer {
		return nil, refuseSelf
	}
	// With HidePresence, a request towards an offline device waits as
	// one towards a device that never opens its side, under the same
	// bounds, and is charged when it times out (pair): it must not differ
	// in anything the asker sees.
	found, err := cfg.Auth.LookUp(reg, target)
	if lim := (*rendezvous.LookupLimitedError)(nil); errors.As(err, &lim) {
		return nil, refuseLookupLimited.with(lim.Reason).after(lim.RetryAfter)
	} else if err != nil {
		return nil, refuseInternal.with(err)
	}
	if !found && !cfg.HidePresence {
		cfg.Auth.LookupFailed(reg, target)
		return nil, refuseNotFound.with(target)
	}
	l, err := newLeg(kind, w, r, peer, target, cfg, &s.stats)
	if err != nil {
		return nil, refuseInternal.with(err)
	}
	l.fastPaths = &s.fast
	l.reg, l.prefix = reg, sourcePrefix(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, refuseShuttingDown
	}
	if s.drained != nil {
		return nil, refuseDraining.with().after(retryAfterDraining)
	}
	if s.byDevice[peer] >= cfg.MaxSessionsPerDevice {
		return nil, refuseTooMany.with(cfg.MaxSessionsPerDevice).after(cfg.PairTimeout)
	}
	if s.waitingBy[peer] >= cfg.MaxWaitingPerDevice {
		return nil, refuseTooManyWaiting.with(cfg.MaxWaitingPerDevice).after(cfg.PairTimeout)
	}
	if s.waitingAt[l.prefix] >= cfg.MaxWaitingPerPrefix {
		return nil, refuseTooManyWaitingPrefix.with(cfg.MaxWaitingPerPrefix, l.prefix).after(cfg.PairTimeout)
	}
	if s.nWaiting >= cfg.MaxWaiting {
		return nil, refuseBusy.with(cfg.MaxWaiting).after(cfg.PairTimeout)
	}
	// Authenticate refuses an ending registration, but it may have ended
	// since; if it ends after this, the AfterFunc below ends the leg at
	// once, and pair refuses it.
	if reg.Context().Err() != nil {
		return nil, refuseRegistrationEnded.with(reg.EndReason())
	}
	s.byDevice[peer]++
	s.waitingBy[peer]++
	s.waitingAt[l.prefix]++
	s.nWaiting++
	s.stats.Waiting.Add(1)
	s.legs[l] = struct{}{}
	l.account.buckets[1], l.account.buckets[2] = s.budgets.acquire(peer, cfg), s.budgets.total
	s.handlers.Add(1)
	// The session ends with the registration: the device expired, was
	// replaced or left.
	l.unwatch = context.AfterFunc(reg.Context(), func() { l.end(reg.EndReason()) })
	return l, nil
}

// paired uncounts l as waiting: pair has returned.
func (s *Server) paired(l *leg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waitingBy[l.peer]--; s.waitingBy[l.peer] <= 0 {
		delete(s.waitingBy, l.peer)
	}
	if s.waitingAt[l.prefix]--; s.waitingAt[l.prefix] <= 0 {
		delete(s.waitingAt, l.prefix)
	}
	s.nWaiting--
	s.stats.Waiting.Add(-1)
}

// pair waits for the counterpart of l: the session from l's target
// towards l's device. The first of the two to arrive waits; the second
// completes the pair, and hands itself to the first under the lock, so
// that the first, whatever woke it, finds it there: the two are paired,
// or neither is.
func (s *Server) pair(ctx context.Context, l *leg, cfg *Config) (*leg, *refusal) {
	defer s.paired(l)
	mine := pairKey{from: l.peer, to: l.target}
	theirs := pairKey{from: l.target, to: l.peer}
	s.mu.Lock()
	if reason := l.reason(); reason != "" { // its registration ended
		s.mu.Unlock()
		return nil, refuseSuperseded.with(reason)
	}
	if other := s.waiting[theirs]; other != nil && other.reason() == "" {
		delete(s.waiting, theirs)
		other.paired <- l // never blocks: one slot, and only the one who deleted other sends
		s.mu.Unlock()
		testHook("paired")
		s.stats.Paired.Add(1)
		return other, nil
	}
	if old := s.waiting[mine]; old != nil {
		old.end("superseded by a newer relay session towards the same peer")
	}
	s.waiting[mine] = l
	s.mu.Unlock()

	timer := time.NewTimer(cfg.PairTimeout)
	defer timer.Stop()
	select {
	case other := <-l.paired:
		return other, nil
	case <-timer.C:
	case <-ctx.Done():
	case <-l.done:
	}
	s.mu.Lock()
	if s.waiting[mine] == l {
		delete(s.waiting, mine)
	}
	s.mu.Unlock()
	// The counterpart may have taken l just now: it did so under the lock.
	select {
	case other := <-l.paired:
		return other, nil
	default:
	}
	if reason := l.reason(); reason != "" {
		return nil, refuseSuperseded.with(reason)
	}
	if ctx.Err() != nil {
		return nil, refuseCanceled
	}
	s.stats.PairTimeouts.Add(1)
	cfg.Auth.LookupFailed(l.reg, l.target) // the target never came: a failed lookup
	return nil, refusePairTimeout.with(l.target, cfg.PairTimeout)
}

// sourcePrefix is the source prefix r came from (rendezvous.SourcePrefix),
// by which waiting legs are bounded; an unparsable address (none, behind
// a front end that sets none) counts in the zero prefix.
func sourcePrefix(r *http.Request) netip.Prefix {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Prefix{}
	}
	return rendezvous.SourcePrefix(ap.Addr())
}

// testHookFn, when a test sets it, is called at the points where two
// legs' goroutines race, so that the test can force an order.
var testHookFn atomic.Pointer[func(point string)]

func testHook(point string) {
	if f := testHookFn.Load(); f != nil {
		(*f)(point)
	}
}

// sessions returns how many relay sessions a device holds.
func (s *Server) sessions(peer identity.PeerID) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byDevice[peer]
}

func (s *Server) release(l *leg) {
	s.mu.Lock()
	if s.byDevice[l.peer]--; s.byDevice[l.peer] <= 0 {
		delete(s.byDevice, l.peer)
	}
	delete(s.legs, l)
	s.budgets.release(l.peer)
	if s.waiting[pairKey{l.peer, l.target}] == l {
		delete(s.waiting, pairKey{l.peer, l.target})
	}
	s.closeIfDrainedLocked()
	s.mu.Unlock()
	l.unwatch()
	s.handlers.Done()
}

// Close ends every session, refuses new ones, and waits for the handlers.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	legs := make([]*leg, 0, len(s.legs))
	for l := range s.legs {
		legs = append(legs, l)
	}
	s.mu.Unlock()
	for _, l := range legs {
		l.end("the super peer is shutting down")
	}
	s.handlers.Wait()
	return nil
}
