package natlab

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"sync"
	"time"
)

// Host is one namespace of a lab: a public host, a NAT router (NAT.Router)
// or a device on a NAT's LAN.
type Host struct {
	lab   *Lab
	name  string
	ns    string
	mu    sync.Mutex // guards addr4, which NAT.Rebind changes
	addr4 netip.Addr
	addr6 netip.Addr // invalid in a lab without IPv6
	link  *delayLink // nil unless built WithDelay
}

// Name returns the name the host was added with.
func (h *Host) Name() string { return h.name }

// Namespace returns the name of the host's network namespace, for `ip netns
// exec` and `ip -n`.
func (h *Host) Namespace() string { return h.ns }

// Addr returns the host's IPv4 address: public for a public host, the WAN
// address for a NAT router, the LAN address for a device.
func (h *Host) Addr() netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.addr4
}

// Addr6 returns the host's IPv6 address, or the zero Addr in a lab without
// IPv6 (see Lab.IPv6).
func (h *Host) Addr6() netip.Addr { return h.addr6 }

func (h *Host) addrs() []netip.Addr { return validAddrs(h.Addr(), h.addr6) }

// Do runs fn on an OS thread switched into the host's namespace and switches
// back afterwards. Sockets that fn creates belong to the namespace for their
// whole life and may be used from any goroutine once Do returns. Goroutines
// that fn starts do not run in the namespace. fn runs on a goroutine of its
// own, so it must report failure by returning an error, not with t.Fatal.
func (h *Host) Do(fn func() error) error { return doIn(h.ns, fn) }

// Command returns a command that runs the named program in the host's
// namespace (through `ip netns exec`, which execs the program in its own
// place, so Process is the program itself). Lab.Close kills what is still
// running.
func (h *Host) Command(name string, arg ...string) *exec.Cmd {
	return h.CommandContext(context.Background(), name, arg...)
}

// CommandContext is Command with a context, as exec.CommandContext.
func (h *Host) CommandContext(ctx context.Context, name string, arg ...string) *exec.Cmd {
	ip := "ip"
	if t, err := lookTools(); err == nil {
		ip = t.ip
	}
	return exec.CommandContext(ctx, ip, append([]string{"netns", "exec", h.ns, name}, arg...)...)
}

// ListenPacket is net.ListenPacket in the host's namespace.
func (h *Host) ListenPacket(network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := h.Do(func() (err error) {
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}

// Listen is net.Listen in the host's namespace.
func (h *Host) Listen(network, address string) (net.Listener, error) {
	var ln net.Listener
	err := h.Do(func() (err error) {
		ln, err = net.Listen(network, address)
		return err
	})
	return ln, err
}

// DialContext dials from the host's namespace. address must hold an IP
// address, not a name: the lab has no DNS.
func (h *Host) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// SetDelay changes the one-way delay of a host built WithDelay (a public
// host, or a NAT router and so its whole LAN). Packets already held keep
// their delay.
func (h *Host) SetDelay(d time.Duration) error {
	if h.link == nil {
		return errors.New("natlab: " + h.name + " was not built WithDelay")
	}
	if d < 0 {
		return errors.New("natlab: negative delay")
	}
	h.link.setDelay(d)
	return nil
}

// Delay returns the one-way delay of the host's uplink; zero without
// WithDelay.
func (h *Host) Delay() time.Duration {
	if h.link == nil {
		return 0
	}
	return time.Duration(h.link.delay.Load())
}

// DelayDropped returns how many packets the host's delay router dropped
// because its queue was full.
func (h *Host) DelayDropped() uint64 {
	if h.link == nil {
		return 0
	}
	return h.link.dropped.Load()
}
