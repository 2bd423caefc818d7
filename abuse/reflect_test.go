package abuse_test

// Attack b: a stranger announces a victim's addresses as its own local
// addresses, so that the devices it asks for punch the victim.

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/peer"
	"github.com/netsody/superpeer/rendezvous"
)

// The device's pacing, as docs/DEVICE.md states it: pings to addresses
// that never answered, per second (peer.DefaultPunchRate) and at once
// (peer's punchBurst, unexported) for the whole device, and per address
// and introduction (peer.DefaultPunchTries).
const (
	punchRate  = peer.DefaultPunchRate
	punchBurst = 10
	punchTries = peer.DefaultPunchTries
	// punchWindow is how long the sinks count: the fast punching of an
	// introduction (peer.DefaultFastPunchFor).
	punchWindow = peer.DefaultFastPunchFor
)

// announce has a fresh stranger, registered from loopback, announce addrs
// as its local addresses and ask to be introduced to victim.
func announce(t *testing.T, c *testcaddy.Caddy, addrs []netip.AddrPort, victim *peer.Device) error {
	t.Helper()
	s := join(t, c, "127.0.0.1", rendezvous.TransportH3, func(cfg *rendezvous.ClientConfig) { cfg.LocalAddrs = addrs })
	_, err, _ := introduce(t, s, victim.PeerID(), rendezvous.IntroduceOptions{})
	return err
}

// A device with the default policy sends nothing to the addresses a
// stranger announces: the stranger is not introduced, and no sink hears
// a packet.
func TestDefaultPolicyPunchesNoStranger(t *testing.T) {
	c := start(t, "")
	d := newDevice(t, c)
	sk := newSinks(t, rendezvous.MaxAddrs)
	var rerr *rendezvous.Error
	if err := announce(t, c, sk.Addrs(0, rendezvous.MaxAddrs), d); !errors.As(err, &rerr) || rerr.Code != rendezvous.ErrCodePeerNotFound {
		t.Fatalf("the stranger's introduction: %v, want peer not found", err)
	}
	time.Sleep(punchWindow / 3) // the first tries go at once
	if sum, _ := sk.Total(); sum > 0 {
		t.Fatalf("%d packets to the stranger's addresses, want none", sum)
	}
}

// hostAddr is an IPv4 address of this host that is not loopback, or
// none.
func hostAddr() (netip.Addr, bool) {
	as, _ := net.InterfaceAddrs()
	for _, a := range as {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP.To4()); ok && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
				return ip, true
			}
		}
	}
	return netip.Addr{}, false
}

// A device that accepts anyone (AllowAny), whose super peer it reaches
// over the host's own address (not loopback), gets three strangers'
// worth of announced sinks: those on the host's address get at most the
// paced budget in all and punchTries each; those on loopback, a class it
// never punches from there (another machine's loopback is the victim's
// own), get nothing.
func TestAllowAnyPacedAndClassed(t *testing.T) {
	host, ok := hostAddr()
	if !ok {
		t.Skip("no IPv4 address but loopback: the device cannot reach its super peer off loopback")
	}
	c := testcaddy.Start(t, testcaddy.Global+"localhost, "+host.String()+" {\n\tnetsody_superpeer\n\trespond \"x\"\n}\n")
	d := newDevice(t, c, func(cfg *peer.Config) {
		cfg.AllowAny = true
		cfg.SuperPeers = []string{"https://" + netip.AddrPortFrom(host, uint16(c.Port)).String()}
		cfg.ListenAddr = "0.0.0.0:0"
	})
	const strangers, global, loop = 3, rendezvous.MaxAddrs - 4, 2
	victims := newSinksOn(t, host, strangers*global)
	loopback := newSinks(t, strangers*loop)
	start := time.Now()
	for i := range strangers {
		addrs := append(victims.Addrs(i*global, (i+1)*global), loopback.Addrs(i*loop, (i+1)*loop)...)
		if err := announce(t, c, addrs, d); err != nil {
			t.Fatalf("stranger %d not introduced to a device that accepts anyone: %v", i, err)
		}
	}
	time.Sleep(punchWindow - time.Since(start))
	elapsed := time.Since(start)
	sum, most := victims.Total()
	budget := int64(punchBurst + punchRate*elapsed.Seconds() + 1)
	t.Logf("%d packets to %d announced addresses on %v in %v (budget %d), at most %d to one", sum, strangers*global, host, elapsed.Round(time.Millisecond), budget, most)
	if sum > budget || most > punchTries {
		t.Errorf("%d packets in %v, %d to one address; want at most %d, and %d per address", sum, elapsed, most, budget, punchTries)
	}
	if sum == 0 {
		t.Error("no packet at all to the global addresses: the test measures nothing")
	}
	if n, _ := loopback.Total(); n > 0 {
		t.Errorf("%d packets to loopback addresses, from a device that is not on loopback", n)
	}
}
