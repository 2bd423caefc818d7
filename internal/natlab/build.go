package natlab

import (
	"fmt"
	"net/netip"
	"slices"
)

// build is one Add (or New) as a transaction: what it created is removed
// again unless it commits, so a failed Add leaves the lab as it was.
type build struct {
	l     *Lab // l.mu is held
	ns    []string
	links []*delayLink
	names []string // node names claimed by this build
	done  bool
}

// begin starts a build; l.mu must be held until commit or rollback.
func (l *Lab) begin() *build { return &build{l: l} }

// claim reserves a node name for the build.
func (b *build) claim(name string) error {
	if err := b.l.claimLocked(name); err != nil {
		return err
	}
	b.names = append(b.names, name)
	return nil
}

func (b *build) commit() {
	b.l.ns = append(b.l.ns, b.ns...)
	b.l.links = append(b.l.links, b.links...)
	b.done = true
}

// rollback undoes an uncommitted build; after commit it does nothing.
func (b *build) rollback() {
	if b.done {
		return
	}
	b.done = true
	for _, dl := range b.links {
		_ = dl.close()
	}
	_ = removeNamespaces(b.ns)
	for _, name := range b.names {
		delete(b.l.nodes, name)
	}
}

// namespace creates namespace ns with the given settings.
func (b *build) namespace(ns string, settings []sysctl) error {
	if err := createNamespace(ns); err != nil {
		return err
	}
	b.ns = append(b.ns, ns)
	if !b.l.hasIPv6() {
		settings = append(settings[:len(settings):len(settings)], noIPv6Sysctls...)
	}
	return setSysctls(ns, settings, kernelIPv6() == nil)
}

// port names the next port of the internet router.
func (b *build) port() string {
	b.l.nPort++
	return fmt.Sprintf("p%d", b.l.nPort)
}

// uplink attaches namespace ns (its interface dev, holding addrs) to the
// internet router, through a delay router of its own when o asks for one.
// The routers also route spare (addresses ns may take later) to it.
func (b *build) uplink(ns, dev string, addrs, spare []netip.Addr, o hostOptions) (*delayLink, error) {
	if !o.hasDelay {
		return nil, b.wire(wire{
			upNS: b.l.internet, upDev: b.port(), gw4: internetGW4,
			downNS: ns, downDev: dev, addrs: addrs, spare: spare,
		})
	}
	if o.delay < 0 {
		return nil, fmt.Errorf("negative delay %v", o.delay)
	}
	if b.l.nDelay >= maxNodes {
		return nil, fmt.Errorf("more than %d delay routers", maxNodes)
	}
	dr := ns + "-delay"
	self := delayAddr4(b.l.nDelay)
	b.l.nDelay++
	if err := b.namespace(dr, routerSysctls); err != nil {
		return nil, err
	}
	dl, err := startDelayLink(dr, o.delay)
	if err != nil {
		return nil, err
	}
	b.links = append(b.links, dl)
	if err := b.wire(wire{
		upNS: b.l.internet, upDev: b.port(), gw4: internetGW4,
		downNS: dr, downDev: "up0", addrs: []netip.Addr{self}, behind: append(slices.Clone(addrs), spare...),
	}); err != nil {
		return nil, err
	}
	if err := b.wire(wire{
		upNS: dr, upDev: "down0", gw4: self,
		downNS: ns, downDev: dev, addrs: addrs, spare: spare,
	}); err != nil {
		return nil, err
	}
	// The policy routing of the delay router (see delay.go).
	lines := []string{
		"link set " + tunName + " up",
		"rule add pref 100 iif " + tunName + " lookup main",
		"rule add pref 110 iif up0 lookup " + delayTable,
		"rule add pref 111 iif down0 lookup " + delayTable,
	}
	if err := runIP(dr, "", append(lines, "route add default dev "+tunName+" table "+delayTable)); err != nil {
		return nil, err
	}
	if b.l.hasIPv6() {
		if err := runIP(dr, "-6", append(lines[1:], "route add default dev "+tunName+" table "+delayTable)); err != nil {
			return nil, err
		}
	}
	return dl, nil
}

// wire is a veth link from a router (up) to a node below it (down).
type wire struct {
	upNS, upDev     string
	gw4             netip.Addr // the router's IPv4 address, the node's on-link gateway
	downNS, downDev string
	addrs           []netip.Addr // the node's addresses (/32, /128 on downDev)
	spare           []netip.Addr // IPv4 addresses routed to the node, which it does not hold yet
	behind          []netip.Addr // addresses further down, routed through the node
}

// wire creates the link: the node gets its addresses and default routes via
// the router, the router gets routes to the node's addresses and to those
// behind it.
func (b *build) wire(w wire) error {
	v6 := b.l.hasIPv6()
	down := []string{
		fmt.Sprintf("link add %s type veth peer name %s netns %s", w.downDev, w.upDev, w.upNS),
		"link set lo up",
		"link set " + w.downDev + " up",
		fmt.Sprintf("route add default via %s dev %s onlink", w.gw4, w.downDev),
	}
	up := []string{"link set " + w.upDev + " up"}
	var down6, up6 []string
	if v6 {
		down = append(down, fmt.Sprintf("addr add %s/64 dev %s nodad", linkDown6, w.downDev))
		up = append(up, fmt.Sprintf("addr add %s/64 dev %s nodad", linkUp6, w.upDev))
		down6 = append(down6, fmt.Sprintf("route add default via %s dev %s", linkUp6, w.downDev))
	}
	var next4 netip.Addr // the node's IPv4 address, next hop for behind
	for _, a := range w.addrs {
		switch {
		case a.Is4():
			down = append(down, fmt.Sprintf("addr add %s/32 dev %s", a, w.downDev))
			up = append(up, fmt.Sprintf("route add %s/32 dev %s", a, w.upDev))
			if !next4.IsValid() {
				next4 = a
			}
		case v6:
			down = append(down, fmt.Sprintf("addr add %s/128 dev %s nodad", a, w.downDev))
			up6 = append(up6, fmt.Sprintf("route add %s/128 via %s dev %s", a, linkDown6, w.upDev))
		}
	}
	for _, a := range w.spare {
		up = append(up, fmt.Sprintf("route add %s/32 dev %s", a, w.upDev))
	}
	for _, a := range w.behind {
		switch {
		case a.Is4():
			up = append(up, fmt.Sprintf("route add %s/32 via %s dev %s onlink", a, next4, w.upDev))
		case v6:
			up6 = append(up6, fmt.Sprintf("route add %s/128 via %s dev %s", a, linkDown6, w.upDev))
		}
	}
	for _, step := range []struct {
		ns, family string
		lines      []string
	}{{w.downNS, "", down}, {w.upNS, "", up}, {w.downNS, "-6", down6}, {w.upNS, "-6", up6}} {
		if err := runIP(step.ns, step.family, step.lines); err != nil {
			return err
		}
	}
	return nil
}

// natRouter builds NAT n's router: uplink, LAN bridge and ruleset.
func (b *build) natRouter(n *NAT, o hostOptions) error {
	r := n.router
	if err := b.namespace(r.ns, natSysctls); err != nil {
		return err
	}
	link, err := b.uplink(r.ns, "wan", r.addrs(), []netip.Addr{natAltAddr4(n.lan)}, o)
	if err != nil {
		return err
	}
	r.link = link
	lines := []string{
		"link add lan0 type bridge forward_delay 0",
		"link set lan0 up",
		fmt.Sprintf("addr add %s/%d dev lan0", lanRouter4(n.lan), lanBits4),
	}
	if b.l.hasIPv6() {
		lines = append(lines, fmt.Sprintf("addr add %s/%d dev lan0 nodad", lanRouter6(n.lan), lanBits6))
	}
	if err := runIP(r.ns, "", lines); err != nil {
		return err
	}
	rules, err := n.kind.rules()
	if err != nil {
		return err
	}
	return applyNFT(r.ns, rules)
}

// device builds device h, the i-th on NAT n's LAN.
func (b *build) device(n *NAT, h *Host, i int) error {
	if err := b.namespace(h.ns, hostSysctls); err != nil {
		return err
	}
	port := fmt.Sprintf("d%d", i)
	down := []string{
		fmt.Sprintf("link add eth0 type veth peer name %s netns %s", port, n.router.ns),
		"link set lo up",
		"link set eth0 up",
		fmt.Sprintf("addr add %s/%d dev eth0", h.addr4, lanBits4),
		fmt.Sprintf("route add default via %s dev eth0", lanRouter4(n.lan)),
	}
	var down6 []string
	if h.addr6.IsValid() {
		down = append(down, fmt.Sprintf("addr add %s/%d dev eth0 nodad", h.addr6, lanBits6))
		down6 = append(down6, fmt.Sprintf("route add default via %s dev eth0", lanRouter6(n.lan)))
	}
	up := []string{
		fmt.Sprintf("link set %s master lan0", port),
		fmt.Sprintf("link set %s up", port),
	}
	if err := runIP(h.ns, "", down); err != nil {
		return err
	}
	if err := runIP(n.router.ns, "", up); err != nil {
		return err
	}
	return runIP(h.ns, "-6", down6)
}
