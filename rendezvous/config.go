package rendezvous

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/defaults"
)

// Config tunes a Server. Zero values take the defaults in constants.go.
type Config struct {
	// KeepaliveInterval is how often the super peer pings each device.
	KeepaliveInterval time.Duration
	// SessionTimeout ends a session from which nothing has arrived for
	// this long. It must be longer than KeepaliveInterval.
	SessionTimeout time.Duration
	// WriteTimeout ends a session whose device does not take a frame
	// within this long.
	WriteTimeout time.Duration
	// MaxSessions caps concurrent sessions; more get 503.
	MaxSessions int
	// ConnectRate and ConnectBurst bound FrameConnect per session (a token
	// bucket); excess gets ErrCodeRateLimited.
	ConnectRate  float64
	ConnectBurst int
	// IntroductionRate and IntroductionBurst bound the introductions to
	// one device, from all askers together (a token bucket per device);
	// an asker over it gets ErrCodeRateLimited.
	IntroductionRate  float64
	IntroductionBurst int
	// LookupRate and LookupBurst bound failed lookups per (asker,
	// target) (a token bucket per pair, kept for maxLookupPeers targets
	// per session): a connect needs a token and takes one only if it is
	// refused; one without gets ErrCodeRateLimited. A connect while the
	// same lookup waits joins it.
	LookupRate  float64
	LookupBurst int
	// ConsentTimeout is how long a device that asks for consent
	// (CapConsent) has to answer a request; no answer is a decline.
	ConsentTimeout time.Duration
	// HidePresence answers a lookup of an offline device, and a decline,
	// like no answer: ErrCodePeerNotFound, ConsentTimeout after the
	// connect. Then a stranger cannot tell whether a device is online
	// (unless it does not ask for consent, which answers at once), and
	// every failed lookup takes ConsentTimeout.
	HidePresence bool
	// RequireConsent introduces no device that does not ask for consent
	// (no CapConsent: a device from before consent existed, or a client
	// without OnRequest): a lookup of one is answered as one of an
	// offline device, so that nobody learns its addresses without its
	// yes. Off, such a device is introduced at once, as before.
	RequireConsent bool
	// AddrsRate and AddrsBurst bound FrameAddrs per session (a token
	// bucket); excess is ignored and answered with ErrCodeRateLimited.
	AddrsRate  float64
	AddrsBurst int
	// RegisterTimeout ends a session that has not registered this long
	// after its connection began (ConnStarted, ConnContext), or, if no
	// ConnContext recorded that, after its request arrived.
	RegisterTimeout time.Duration
	// MaxUnregisteredPerPrefix caps the sessions from one source prefix
	// (an IPv4 address, an IPv6 /64) that have not registered yet; more
	// get 429.
	MaxUnregisteredPerPrefix int
	// PrefixSessionRate and PrefixSessionBurst bound new sessions per
	// source prefix (a token bucket); more get 429.
	PrefixSessionRate  float64
	PrefixSessionBurst int
	// DrainTimeout bounds a drain (Server.Drain): devices are told to
	// move their relay sessions within it, and the super peer closes at
	// its end at the latest.
	DrainTimeout time.Duration
	// Admit, if set, decides whether a device may register, once its
	// registration's signature verified (admission.go); nil admits all.
	// An error refuses it with ErrCodeRefused and the error's text, or
	// with ErrCodeTryLater if it wraps ErrTryLater. It runs on the
	// session's reader with a context that ends after RegisterTimeout,
	// and again for registered devices after Server.Recheck.
	Admit func(ctx context.Context, req AdmissionRequest) error
	// Headroom, if set, reports what the super peer's relay can still
	// take, for FrameHeadroom (headroom.go): it is called once per
	// headroomInterval, and the function it returns gives each device's
	// headroom from that one look. superpeer.New sets it from the relay's
	// budgets; without it no FrameHeadroom is sent.
	Headroom func() func(identity.PeerID) Headroom
	// STUNPort is the UDP port on which this super peer answers STUN
	// Binding requests (package stun, served by the layer4 app), named in
	// FrameRegistered to devices that announced CapMapping, so that they
	// learn their NAT's mapping behaviour; 0: no STUN here.
	STUNPort uint16
	// Logger receives the server's logs; nil discards them.
	Logger *zap.Logger

	// lowestVersion, if set, replaces MinProtocolVersion: tests refuse
	// older devices with it.
	lowestVersion uint64
}

// minVersion is the oldest protocol version the server serves.
func (c *Config) minVersion() uint64 {
	if c.lowestVersion != 0 {
		return c.lowestVersion
	}
	return MinProtocolVersion
}

func (c Config) withDefaults() Config {
	defaults.Set(&c.KeepaliveInterval, DefaultKeepaliveInterval)
	defaults.Set(&c.SessionTimeout, DefaultSessionTimeout)
	defaults.Set(&c.WriteTimeout, DefaultWriteTimeout)
	defaults.Set(&c.MaxSessions, DefaultMaxSessions)
	defaults.Set(&c.ConnectRate, DefaultConnectRate)
	defaults.Set(&c.ConnectBurst, DefaultConnectBurst)
	defaults.Set(&c.IntroductionRate, DefaultIntroductionRate)
	defaults.Set(&c.IntroductionBurst, DefaultIntroductionBurst)
	defaults.Set(&c.LookupRate, DefaultLookupRate)
	defaults.Set(&c.LookupBurst, DefaultLookupBurst)
	defaults.Set(&c.ConsentTimeout, DefaultConsentTimeout)
	defaults.Set(&c.AddrsRate, DefaultAddrsRate)
	defaults.Set(&c.AddrsBurst, DefaultAddrsBurst)
	defaults.Set(&c.RegisterTimeout, DefaultRegisterTimeout)
	defaults.Set(&c.MaxUnregisteredPerPrefix, DefaultMaxUnregisteredPerPrefix)
	defaults.Set(&c.PrefixSessionRate, DefaultPrefixSessionRate)
	defaults.Set(&c.PrefixSessionBurst, DefaultPrefixSessionBurst)
	defaults.Set(&c.DrainTimeout, DefaultDrainTimeout)
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}

// Validate reports a configuration that cannot work. Zero values take
// the defaults; negative ones are errors.
func (c Config) Validate() error {
	if c.MaxSessions < 0 || c.ConnectRate < 0 || c.ConnectBurst < 0 {
		return fmt.Errorf("max sessions, connect rate and connect burst must not be negative")
	}
	if c.IntroductionRate < 0 || c.IntroductionBurst < 0 || c.AddrsRate < 0 || c.AddrsBurst < 0 {
		return fmt.Errorf("introduction rate, introduction burst, addrs rate and addrs burst must not be negative")
	}
	if c.RegisterTimeout < 0 || c.MaxUnregisteredPerPrefix < 0 || c.PrefixSessionRate < 0 || c.PrefixSessionBurst < 0 {
		return fmt.Errorf("register timeout, max unregistered per prefix, prefix session rate and prefix session burst must not be negative")
	}
	if c.LookupRate < 0 || c.LookupBurst < 0 || c.ConsentTimeout < 0 {
		return fmt.Errorf("lookup rate, lookup burst and consent timeout must not be negative")
	}
	if c.DrainTimeout < 0 {
		return fmt.Errorf("drain timeout must not be negative")
	}
	c = c.withDefaults()
	if c.SessionTimeout <= c.KeepaliveInterval {
		return fmt.Errorf("session timeout %v must be longer than the keepalive interval %v", c.SessionTimeout, c.KeepaliveInterval)
	}
	return nil
}
