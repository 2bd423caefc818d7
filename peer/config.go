package peer

import (
	"context"
	"crypto/x509"
	"net"
	"net/netip"
	"time"

	"go.uber.org/zap"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/defaults"
)

// Config configures a Device. Zero durations take the Default* constants
// (constants.go).
type Config struct {
	// Identity is the device's key pair. Required.
	Identity *identity.Identity
	// SuperPeers are the super peers' URLs, "https://host[:port]".
	SuperPeers []string
	// RootCAs verifies the super peers' certificates; nil uses the
	// system's.
	RootCAs *x509.CertPool
	// ListenAddr is the UDP address of the device's socket; default
	// "0.0.0.0:0". With neither ListenAddr nor ListenAddr6 set, the device
	// also opens "[::]:0" when the host has IPv6: one socket per address
	// family.
	ListenAddr string
	// ListenAddr6 is the address of a second socket, of the other family
	// than ListenAddr's.
	ListenAddr6 string
	// ListenAddr6Optional lets New go on with ListenAddr's socket alone
	// when ListenAddr6 cannot be opened (a host without IPv6). The
	// default, with neither address set, is "0.0.0.0:0" and, optionally,
	// "[::]:0".
	ListenAddr6Optional bool
	// DialTCP dials super peers for the HTTP/2 fallback; nil uses
	// net.Dialer. (A test lab passes one that dials from the device's
	// network namespace.)
	DialTCP func(ctx context.Context, network, addr string) (net.Conn, error)
	// LookupNetIP resolves a super peer's host name to its addresses;
	// nil uses net.DefaultResolver. A session tries one of them; when it
	// fails, the next try takes the next address, so that a device fails
	// over between the nodes of a cluster behind one name
	// (docs/CLUSTER.md). A test resolves a name of its own with it.
	LookupNetIP func(ctx context.Context, host string) ([]netip.Addr, error)
	// LocalAddrs returns the addresses to announce as local candidates;
	// nil announces the socket's port on every interface address of its
	// family.
	LocalAddrs func(port uint16) []netip.AddrPort
	// Allow lists the peers the device accepts from the start: it answers
	// their super peers' requests yes, punches their candidates, and takes
	// their handshakes. A peer the application dials is allowed too,
	// while the dial runs, and for good once it connects.
	// Nobody else learns the device's addresses or connects to it, unless
	// AllowAny or Accept says so (docs/DEVICE.md, "Accept policy").
	Allow []identity.PeerID
	// AllowAny accepts every peer: anyone who knows the device's peer ID
	// learns its addresses and may connect.
	AllowAny bool
	// Accept, if set, decides about a peer that is neither allowed nor
	// revoked (Allow, Revoke), when a super peer asks whether it may
	// introduce it (relay says whether it asks for a relay). It runs on a
	// goroutine of its own, with a context that ends after AcceptTimeout:
	// no answer by then declines this request, and the peer is declined
	// without asking for a while (acceptCooldown; a late yes still
	// counts). A yes, and a no given in time, are remembered for the
	// device's lifetime. At most a few calls run at once, one per peer
	// (maxAccepting, counting calls that ignore their context); beyond,
	// requests wait for a slot within their deadline, in a short queue
	// (acceptQueue), and beyond that are declined. A panic declines.
	Accept func(ctx context.Context, peer identity.PeerID, relay bool) bool
	// AcceptTimeout bounds an Accept call; default 8s, below the super
	// peer's wait for the answer (rendezvous.DefaultConsentTimeout).
	AcceptTimeout time.Duration
	// RelayOnly never punches: every peer is reached through a relay.
	RelayOnly bool
	// H3HeadStart is how long a super peer gets to answer over HTTP/3
	// before the device tries HTTP/2 alongside; default 500ms.
	H3HeadStart time.Duration
	// H3RetryInterval is how often a session over HTTP/2 tries HTTP/3
	// again; default 1m. After HTTP/3 stopped answering (a fall,
	// transport.go), the first retry comes sooner, backing off to this.
	H3RetryInterval time.Duration
	// PunchInterval is the keepalive of a direct path; default 1s.
	PunchInterval time.Duration
	// FastPunchInterval spaces a candidate's first two tries (later ones
	// twice as far each time); with FastPunchFor, addresses that answered
	// are pinged this often for this long after an introduction or a lost
	// direct path; defaults 50ms and 3s.
	FastPunchInterval time.Duration
	FastPunchFor      time.Duration
	// DirectTimeout drops a direct path that has not answered for this
	// long; default 3.5s.
	DirectTimeout time.Duration
	// RelayDialTimeout bounds opening a relay session; default 15s.
	RelayDialTimeout time.Duration
	// RelayCheckInterval is how often a relay is checked against nearer
	// super peers; default 10s.
	RelayCheckInterval time.Duration
	// PeerIdleTimeout forgets a peer this long after its last connection
	// ended (or after an introduction that led to none): its punching
	// stops and its relay closes; default 1m.
	PeerIdleTimeout time.Duration
	// MaxPeers bounds the peers the device keeps state for; default
	// 1024. When an introduction names a new peer and the table is full,
	// the peer idle longest (no connection) is forgotten; with none idle,
	// the introduction is dropped. Dial and Accept are not refused.
	MaxPeers int
	// IntroductionRate is how many introductions of new peers (peers the
	// device has no state for) it takes per second; more are dropped;
	// default 20.
	IntroductionRate int
	// PunchRate is how many pings a second the device sends, in all, to
	// addresses that have never answered it, however many peers and
	// candidates name them (above a burst of 10), so that a stranger
	// announcing a victim's addresses gets the victim no more; default
	// 20. Addresses that answered are kept alive outside it.
	PunchRate int
	// PunchTries is how many pings an address that has never answered
	// gets per introduction; default 5.
	PunchTries int
	// AddrCheckInterval is how often the device looks for changed local
	// addresses (another network, a new DHCP lease) and, when they
	// changed, announces them to its super peers and connected peers;
	// default 5s.
	AddrCheckInterval time.Duration
	// OnPathChange, if set, is called when the path to a peer changes.
	// Calls come on one goroutine of the device's, in the order of the
	// changes, as a Watcher's events do (Device.Watch): a slow consumer
	// loses intermediate paths rather than holding the device.
	OnPathChange func(identity.PeerID, Path)
	// OnSuperPeer, if set, is called when a session with a super peer
	// comes up, ends or changes transport, when the super peer sees this
	// device at a new address (its NAT rebound), and when an attempt to
	// reach it fails, with the super peer's status then; on the same
	// goroutine as OnPathChange, in order with its calls.
	OnSuperPeer func(SuperPeerStatus)
	// Logger receives the device's logs; nil discards them.
	Logger *zap.Logger

	// cutDirect, if set and true, drops all punch traffic: the package's
	// tests' way to cut direct paths. cutFast drops fast-path packets at
	// the socket, both ways; fastPathVia changes the super peer's
	// fast-path address (to put a NAT in front of it).
	cutDirect   func() bool
	cutFast     func() bool
	fastPathVia func(netip.AddrPort) netip.AddrPort
}

func (c *Config) blockDirect() bool { return c.cutDirect != nil && c.cutDirect() }
func (c *Config) blockFast() bool   { return c.cutFast != nil && c.cutFast() }

func (c Config) withDefaults() Config {
	defaults.Set(&c.H3HeadStart, DefaultH3HeadStart)
	defaults.Set(&c.H3RetryInterval, DefaultH3RetryInterval)
	defaults.Set(&c.PunchInterval, DefaultPunchInterval)
	defaults.Set(&c.FastPunchInterval, DefaultFastPunchInterval)
	defaults.Set(&c.FastPunchFor, DefaultFastPunchFor)
	defaults.Set(&c.DirectTimeout, DefaultDirectTimeout)
	defaults.Set(&c.RelayDialTimeout, DefaultRelayDialTimeout)
	defaults.Set(&c.RelayCheckInterval, DefaultRelayCheckInterval)
	defaults.Set(&c.PeerIdleTimeout, DefaultPeerIdleTimeout)
	defaults.Set(&c.AddrCheckInterval, DefaultAddrCheckInterval)
	defaults.Set(&c.AcceptTimeout, DefaultAcceptTimeout)
	defaults.Set(&c.MaxPeers, DefaultMaxPeers)
	defaults.Set(&c.IntroductionRate, DefaultIntroductionRate)
	defaults.Set(&c.PunchRate, DefaultPunchRate)
	defaults.Set(&c.PunchTries, DefaultPunchTries)
	if c.ListenAddr == "" && c.ListenAddr6 == "" {
		c.ListenAddr, c.ListenAddr6, c.ListenAddr6Optional = "0.0.0.0:0", "[::]:0", true
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return c
}
