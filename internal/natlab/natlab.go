// Package natlab builds a small internet out of Linux network namespaces so
// that tests can run a real super peer and real devices across real NATs.
//
// A Lab has one "internet" namespace: a router that holds no hosts of its own
// and forwards between everything attached to it. Attached to it are
//
//   - public hosts (AddPublicHost): a namespace with public IPv4 and IPv6
//     addresses and no NAT, for super peers and for devices that are
//     reachable from anywhere;
//   - NAT routers (AddNAT): a namespace with a public WAN address, an
//     nftables ruleset that implements one NAT behaviour (see NATKind), and
//     a LAN bridge; devices (NAT.AddDevice) are namespaces on that LAN.
//
// Any attachment can be given a one-way delay (WithDelay): its uplink then
// runs through a delay router whose TUN device is served by a goroutine in
// the test process, because the kernel this lab runs on has no netem qdisc.
//
// Code runs "on" a host in two ways. Host.Do runs a function on an OS thread
// switched into the host's namespace; sockets created there stay in that
// namespace and may be used from any goroutine afterwards, so one test
// process can hold a super peer, several devices and the probes between them.
// Host.Command runs a binary (a Caddy build, a device CLI) in the namespace.
//
// Namespaces are named after the owning process (pid and start time) and a
// per-process counter. They are removed by Lab.Close, by a failed New or Add,
// by a SIGINT or SIGTERM handler that is installed while a lab exists, and,
// for processes that died without any of these (SIGKILL, a test timeout), by
// the next New, which removes namespaces whose owner is gone.
//
// Building needs root, iproute2 (ip) and nftables (nft); Available says what
// is missing and Require turns that into a skip or, under NETSODY_NATLAB=1, a
// failure. docs/NAT.md describes the NAT behaviours and what a device does
// about each.
package natlab

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures a Lab.
type Options struct {
	// Name is a short tag (letters and digits, up to 8) put into the names of
	// the lab's namespaces, so that `ip netns list` shows which test built
	// them. Default "lab".
	Name string

	// DisableIPv6 builds an IPv4-only lab. By default every host, NAT and
	// device also gets an IPv6 address when the kernel supports IPv6.
	DisableIPv6 bool
}

// Lab is one network of namespaces. Its methods are safe for concurrent use.
type Lab struct {
	prefix   string // namespace name prefix, "nl-<pid>-<start>-<seq>-<name>-"
	internet string // namespace name of the internet router
	ipv6Err  error  // why the lab has no IPv6; nil when it has

	mu        sync.Mutex // guards the following
	closed    bool
	nodes     map[string]bool // node names in use
	ns        []string        // namespaces in creation order
	links     []*delayLink
	nPublic   int // public hosts built (address index)
	nNAT      int // NAT routers built (address and LAN index)
	nDelay    int // delay routers built (address index)
	nPort     int // internet ports built (interface index)
	closeOnce sync.Once
	closeErr  error
}

// internetName is the node name of the internet router, which no host may
// take.
const internetName = "internet"

var (
	labSeq   atomic.Uint64
	nameRule = regexp.MustCompile(`^[A-Za-z0-9]{1,16}$`)
	tagRule  = regexp.MustCompile(`^[A-Za-z0-9]{1,8}$`)
)

// New builds an empty lab: the internet router and nothing attached to it.
// It first removes namespaces left behind by processes that no longer exist.
// The caller must Close the lab.
func New(opts Options) (*Lab, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	tag := opts.Name
	if tag == "" {
		tag = "lab"
	}
	if !tagRule.MatchString(tag) {
		return nil, fmt.Errorf("natlab: lab name %q: use 1 to 8 letters or digits", tag)
	}
	// Stale namespaces only cost memory: a failure to remove them must not
	// stop this lab, whose names cannot collide with theirs.
	_, _ = RemoveStale()

	owner, err := selfOwner()
	if err != nil {
		return nil, err
	}
	l := &Lab{
		prefix: fmt.Sprintf("%s%s-%d-%s-", nsPrefix, owner, labSeq.Add(1), tag),
		nodes:  map[string]bool{internetName: true},
	}
	l.internet = l.prefix + internetName
	switch {
	case opts.DisableIPv6:
		l.ipv6Err = errors.New("natlab: IPv6 disabled by Options.DisableIPv6")
	default:
		l.ipv6Err = kernelIPv6()
	}

	register(l)
	if err := l.buildInternet(); err != nil {
		unregister(l)
		return nil, fmt.Errorf("natlab: building the internet router: %w", err)
	}
	return l, nil
}

// buildInternet creates the internet router: a namespace with forwarding on
// and the gateway address every uplink points at.
func (l *Lab) buildInternet() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.begin()
	defer b.rollback()
	if err := b.namespace(l.internet, routerSysctls); err != nil {
		return err
	}
	lines := []string{
		"link set lo up",
		"addr add " + internetGW4.String() + "/32 dev lo",
	}
	if err := runIP(l.internet, "", lines); err != nil {
		return err
	}
	b.commit()
	return nil
}

// IPv6 reports whether the lab's hosts have IPv6 addresses. When they do
// not, the error says why.
func (l *Lab) IPv6() (bool, error) {
	return l.ipv6Err == nil, l.ipv6Err
}

// Namespaces returns the names of the lab's namespaces, as `ip netns list`
// shows them.
func (l *Lab) Namespaces() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.ns...)
}

// Close stops the delay goroutines, kills any process still running in the
// lab's namespaces and removes the namespaces. It is safe to call more than
// once and from several goroutines.
func (l *Lab) Close() error {
	err := l.teardown()
	unregister(l)
	return err
}

// teardown is Close without leaving the signal registry, so that the signal
// handler can call it.
func (l *Lab) teardown() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		links, ns := l.links, l.ns
		l.links, l.ns = nil, nil
		l.mu.Unlock()

		var errs []error
		for _, d := range links {
			errs = append(errs, d.close())
		}
		if err := removeNamespaces(ns); err != nil {
			errs = append(errs, fmt.Errorf("natlab: removing namespaces: %w", err))
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// hostOptions is what HostOptions set.
type hostOptions struct {
	delay    time.Duration
	hasDelay bool
}

// A HostOption changes how AddPublicHost or AddNAT attaches a node to the
// internet.
type HostOption func(*hostOptions)

// WithDelay routes the node's uplink through a delay router that holds every
// IP packet (UDP, TCP, ICMP; IPv4 and IPv6) for d in each direction, so a
// round trip to the node takes at least 2·d longer. The far side still sees
// the node's real addresses and ports. SetDelay changes d later; WithDelay(0)
// builds the delay router without delay, for a test that adds it later.
func WithDelay(d time.Duration) HostOption {
	return func(o *hostOptions) { o.delay, o.hasDelay = d, true }
}

// AddPublicHost attaches a host with public addresses and no NAT, for a super
// peer or a device that is reachable from anywhere. Names are letters and
// digits, unique within the lab.
func (l *Lab) AddPublicHost(name string, opts ...HostOption) (*Host, error) {
	var o hostOptions
	for _, opt := range opts {
		opt(&o)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.nPublic >= maxNodes {
		return nil, fmt.Errorf("natlab: more than %d public hosts", maxNodes)
	}
	b := l.begin()
	defer b.rollback()
	if err := b.claim(name); err != nil {
		return nil, err
	}
	h := &Host{lab: l, name: name, ns: l.prefix + name, addr4: publicAddr4(l.nPublic)}
	if l.hasIPv6() {
		h.addr6 = publicAddr6(l.nPublic)
	}
	l.nPublic++
	if err := b.namespace(h.ns, hostSysctls); err != nil {
		return nil, fmt.Errorf("natlab: adding public host %s: %w", name, err)
	}
	link, err := b.uplink(h.ns, "eth0", h.addrs(), nil, o)
	if err != nil {
		return nil, fmt.Errorf("natlab: adding public host %s: %w", name, err)
	}
	h.link = link
	b.commit()
	return h, nil
}

// AddNAT attaches a NAT router of the given kind with a public WAN address
// and an empty LAN; NAT.AddDevice puts devices on the LAN.
func (l *Lab) AddNAT(name string, kind NATKind, opts ...HostOption) (*NAT, error) {
	if _, err := kind.rules(); err != nil {
		return nil, err
	}
	var o hostOptions
	for _, opt := range opts {
		opt(&o)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.nNAT >= maxNodes {
		return nil, fmt.Errorf("natlab: more than %d NAT routers", maxNodes)
	}
	b := l.begin()
	defer b.rollback()
	if err := b.claim(name); err != nil {
		return nil, err
	}
	n := &NAT{kind: kind, lan: l.nNAT}
	n.router = &Host{lab: l, name: name, ns: l.prefix + name, addr4: natWANAddr4(l.nNAT)}
	if l.hasIPv6() {
		n.router.addr6 = natWANAddr6(l.nNAT)
	}
	l.nNAT++
	if err := b.natRouter(n, o); err != nil {
		return nil, fmt.Errorf("natlab: adding %s NAT %s: %w", kind, name, err)
	}
	b.commit()
	return n, nil
}

// claimLocked reserves a node name.
func (l *Lab) claimLocked(name string) error {
	if l.closed {
		return errors.New("natlab: lab is closed")
	}
	if !nameRule.MatchString(name) {
		return fmt.Errorf("natlab: node name %q: use 1 to 16 letters or digits", name)
	}
	if l.nodes[name] {
		return fmt.Errorf("natlab: node name %q is already used in this lab", name)
	}
	l.nodes[name] = true
	return nil
}

// hasIPv6 reports whether the lab builds IPv6.
func (l *Lab) hasIPv6() bool { return l.ipv6Err == nil }

// validAddrs returns the valid addresses among addrs.
func validAddrs(addrs ...netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}
