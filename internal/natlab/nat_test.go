package natlab

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// TestNATBehaviour checks each NAT kind's mapping and filtering the way RFC
// 5780 §4.3 and §4.4 do, and a public device as the baseline. The device
// sends from one socket to s1:3478, s2:3478 and s2:3479; each server reports
// the source it saw (the mapping). Then two endpoints the device never sent
// to try to reach that mapping: s3:3478 (another address) and s1:3479 (the
// same address as a contacted one, another port).
func TestNATBehaviour(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name           string
		kind           NATKind // 0: a public device, no NAT
		sameMapping    bool    // endpoint-independent mapping
		otherAddrGetIn bool    // endpoint-independent filtering
		otherPortGetIn bool    // not port-dependent filtering
	}{
		{"public", 0, true, true, true},
		{"endpoint-independent", EndpointIndependent, true, true, true},
		{"port-dependent-filtering", PortDependentFiltering, true, false, false},
		{"symmetric", Symmetric, false, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lab := NewForTest(t, Options{})
			s1 := mustPublic(t, lab, "s1")
			s2 := mustPublic(t, lab, "s2")
			s3 := mustPublic(t, lab, "s3")
			var dev *Host
			var public func(v6 bool) netip.Addr
			if tc.kind == 0 {
				dev = mustPublic(t, lab, "dev")
				public = func(v6 bool) netip.Addr { return ip(dev, v6) }
			} else {
				nat := mustNAT(t, lab, "nat", tc.kind)
				dev = mustDevice(t, nat, "dev")
				public = func(v6 bool) netip.Addr { return ip(nat.Router(), v6) }
			}
			for _, v6 := range families(t, lab) {
				t.Run(familyName(v6), func(t *testing.T) {
					d := udpOn(t, dev, v6, 0)
					s1a, s1b := serverOn(t, s1, v6, 3478), serverOn(t, s1, v6, 3479)
					s2a, s2b := serverOn(t, s2, v6, 3478), serverOn(t, s2, v6, 3479)
					s3a := serverOn(t, s3, v6, 3478)

					var mapped []netip.AddrPort
					for _, s := range []endpoint{s1a, s2a, s2b} {
						m, err := send(d, s.conn, s.addr)
						if err != nil {
							t.Fatalf("mapping probe to %v: %v", s.addr, err)
						}
						if m.Addr() != public(v6) {
							t.Errorf("%v saw source %v, want the public address %v", s.addr, m, public(v6))
						}
						mapped = append(mapped, m)
					}
					t.Logf("%s %s: mappings towards s1:3478, s2:3478, s2:3479: %v", tc.name, familyName(v6), mapped)
					same := mapped[0] == mapped[1] && mapped[1] == mapped[2]
					if tc.sameMapping && !same {
						t.Errorf("mapping differs per destination %v, want endpoint-independent", mapped)
					}
					if !tc.sameMapping && same {
						t.Errorf("mapping %v is the same for three destinations, want endpoint-dependent", mapped[0])
					}

					target := mapped[0] // the mapping towards s1:3478
					if got := !silent(s3a.conn, d, target); got != tc.otherAddrGetIn {
						t.Errorf("s3 (never contacted) reaches %v: %v, want %v", target, got, tc.otherAddrGetIn)
					}
					if got := !silent(s1b.conn, d, target); got != tc.otherPortGetIn {
						t.Errorf("s1:3479 (contacted address, other port) reaches %v: %v, want %v", target, got, tc.otherPortGetIn)
					}
					// The contacted endpoint itself always gets back in.
					if _, err := send(s1a.conn, d, target); err != nil {
						t.Errorf("s1:3478 cannot answer the device: %v", err)
					}
				})
			}
		})
	}
}

// TestRebind checks that NAT.Rebind gives a device a new mapping: its
// packets leave from the NAT's other address, the old mapping no longer
// reaches it, the new one does, and a second Rebind goes back.
func TestRebind(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		kind NATKind
		opts []HostOption
	}{
		{"port-dependent-filtering", PortDependentFiltering, nil},
		{"endpoint-independent", EndpointIndependent, nil},
		{"behind a delay router", PortDependentFiltering, []HostOption{WithDelay(0)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lab := NewForTest(t, Options{Name: "rebind", DisableIPv6: true})
			s := serverOn(t, mustPublic(t, lab, "s"), false, 3478)
			nat := mustNAT(t, lab, "nat", tc.kind, tc.opts...)
			d := udpOn(t, mustDevice(t, nat, "dev"), false, 0)

			first := nat.Addr()
			before, err := send(d, s.conn, s.addr)
			if err != nil {
				t.Fatal(err)
			}
			if before.Addr() != first {
				t.Fatalf("mapping %v, want on the NAT's address %v", before, first)
			}
			for round, want := range []netip.Addr{natAltAddr4(0), first} {
				old := before
				got, err := nat.Rebind()
				if err != nil {
					t.Fatal(err)
				}
				if got != want || nat.Addr() != want || nat.Router().Addr() != want {
					t.Fatalf("rebind %d: moved to %v (Addr %v), want %v", round+1, got, nat.Addr(), want)
				}
				// The kernel drops the old mappings from a work queue:
				// the device's next packets may still leave on them.
				var now netip.AddrPort
				for deadline := time.Now().Add(3 * time.Second); ; {
					if now, err = send(d, s.conn, s.addr); err != nil {
						t.Fatal(err)
					}
					if now.Addr() == want || time.Now().After(deadline) {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if now.Addr() != want {
					t.Fatalf("rebind %d: the device's packets still come from %v, want %v", round+1, now, want)
				}
				if !silent(s.conn, d, old) {
					t.Errorf("rebind %d: the old mapping %v still reaches the device", round+1, old)
				}
				if _, err := send(s.conn, d, now); err != nil {
					t.Errorf("rebind %d: the new mapping %v does not reach the device: %v", round+1, now, err)
				}
				t.Logf("rebind %d: %v → %v", round+1, old, now)
				before = now
			}
		})
	}
}

// TestUDPBlocked checks that a UDPBlocked NAT drops UDP and passes TCP to
// port 443 only.
func TestUDPBlocked(t *testing.T) {
	t.Parallel()
	lab := NewForTest(t, Options{})
	s1 := mustPublic(t, lab, "s1")
	nat := mustNAT(t, lab, "nat", UDPBlocked)
	dev := mustDevice(t, nat, "dev")
	for _, v6 := range families(t, lab) {
		t.Run(familyName(v6), func(t *testing.T) {
			d := udpOn(t, dev, v6, 0)
			s := serverOn(t, s1, v6, 443)
			if !silent(d, s.conn, s.addr) {
				t.Errorf("UDP from the device reached %v", s.addr)
			}

			network := "tcp4"
			if v6 {
				network = "tcp6"
			}
			ln443, err := s1.Listen(network, net.JoinHostPort(ip(s1, v6).String(), "443"))
			if err != nil {
				t.Fatal(err)
			}
			defer ln443.Close()
			ln8443, err := s1.Listen(network, net.JoinHostPort(ip(s1, v6).String(), "8443"))
			if err != nil {
				t.Fatal(err)
			}
			defer ln8443.Close()

			if _, err := tcpConnect(dev, netip.AddrPortFrom(ip(s1, v6), 443), 3*time.Second); err != nil {
				t.Fatalf("TCP to port 443: %v", err)
			}
			ln443.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Second))
			c, err := ln443.Accept()
			if err != nil {
				t.Fatalf("accepting on 443: %v", err)
			}
			c.Close()
			src := netip.MustParseAddrPort(c.RemoteAddr().String())
			if src.Addr().Unmap() != ip(nat.Router(), v6) {
				t.Errorf("443 saw source %v, want the NAT's address %v", src, ip(nat.Router(), v6))
			}

			_, err = tcpConnect(dev, netip.AddrPortFrom(ip(s1, v6), 8443), 500*time.Millisecond)
			if err == nil {
				t.Errorf("TCP to port 8443 connected, want it dropped")
			} else if !isTimeout(err) {
				t.Errorf("TCP to port 8443: %v, want a timeout (silent drop)", err)
			}
		})
	}
}

// TestSameNAT checks that two devices behind one PortDependentFiltering NAT
// reach each other over their LAN addresses, untranslated, and share the
// NAT's public address towards the internet.
func TestSameNAT(t *testing.T) {
	t.Parallel()
	lab := NewForTest(t, Options{})
	s1 := mustPublic(t, lab, "s1")
	nat := mustNAT(t, lab, "nat", PortDependentFiltering)
	a := mustDevice(t, nat, "a")
	b := mustDevice(t, nat, "b")
	for _, v6 := range families(t, lab) {
		t.Run(familyName(v6), func(t *testing.T) {
			ca, cb := udpOn(t, a, v6, 4000), udpOn(t, b, v6, 4000)
			for _, dir := range []struct {
				from, to *net.UDPConn
				fromH    *Host
				toH      *Host
			}{{ca, cb, a, b}, {cb, ca, b, a}} {
				src, err := send(dir.from, dir.to, netip.AddrPortFrom(ip(dir.toH, v6), 4000))
				if err != nil {
					t.Fatalf("%s to %s over the LAN: %v", dir.fromH.Name(), dir.toH.Name(), err)
				}
				if want := netip.AddrPortFrom(ip(dir.fromH, v6), 4000); src != want {
					t.Errorf("%s saw %v, want the LAN address %v", dir.toH.Name(), src, want)
				}
			}
			s := serverOn(t, s1, v6, 3478)
			ma, err := send(ca, s.conn, s.addr)
			if err != nil {
				t.Fatal(err)
			}
			mb, err := send(cb, s.conn, s.addr)
			if err != nil {
				t.Fatal(err)
			}
			if ma.Addr() != ip(nat.Router(), v6) || mb.Addr() != ip(nat.Router(), v6) {
				t.Errorf("public sources %v and %v, want both at %v", ma, mb, ip(nat.Router(), v6))
			}
			if ma == mb {
				t.Errorf("both devices mapped to %v", ma)
			}
			// No hairpinning: the NAT's public address leads nowhere from
			// inside, which is why neighbours must use LAN addresses.
			if !silent(ca, cb, mb) {
				t.Errorf("a reached b through the NAT's public mapping %v (hairpinning)", mb)
			}
		})
	}
}

// TestEndpointIndependentHoldsOneDevice checks that a second device behind an
// EndpointIndependent NAT is refused and leaves nothing behind.
func TestEndpointIndependentHoldsOneDevice(t *testing.T) {
	t.Parallel()
	lab := NewForTest(t, Options{})
	nat := mustNAT(t, lab, "nat", EndpointIndependent)
	mustDevice(t, nat, "a")
	before := lab.Namespaces()
	if _, err := nat.AddDevice("b"); err == nil {
		t.Fatal("second device behind an EndpointIndependent NAT was accepted")
	}
	if _, err := lab.AddPublicHost("a"); err == nil {
		t.Error("a second node named a was accepted")
	}
	for _, bad := range []string{"bad-name", "internet", ""} {
		if _, err := lab.AddPublicHost(bad); err == nil {
			t.Errorf("node name %q was accepted", bad)
		}
	}
	if got := lab.Namespaces(); len(got) != len(before) {
		t.Errorf("namespaces %v after failed adds, want %v", got, before)
	}
	// A failed build releases its name.
	if _, err := lab.AddPublicHost("b"); err != nil {
		t.Errorf("adding b after the refused device b: %v", err)
	}
}

// TestIPv4Only checks a lab built with DisableIPv6.
func TestIPv4Only(t *testing.T) {
	t.Parallel()
	lab := NewForTest(t, Options{DisableIPv6: true})
	if ok, err := lab.IPv6(); ok || err == nil {
		t.Errorf("IPv6() = %v, %v; want false and a reason", ok, err)
	}
	s1 := mustPublic(t, lab, "s1", WithDelay(0))
	nat := mustNAT(t, lab, "nat", EndpointIndependent)
	dev := mustDevice(t, nat, "dev")
	for _, h := range []*Host{s1, nat.Router(), dev} {
		if h.Addr6().IsValid() {
			t.Errorf("%s has IPv6 address %v", h.Name(), h.Addr6())
		}
	}
	s := serverOn(t, s1, false, 3478)
	m, err := send(udpOn(t, dev, false, 0), s.conn, s.addr)
	if err != nil {
		t.Fatal(err)
	}
	if m.Addr() != nat.Addr() {
		t.Errorf("s1 saw %v, want the NAT's address %v", m, nat.Addr())
	}
}

// TestDo checks that Do switches the thread into the namespace and back,
// that sockets made there stay there, and that Command runs in it.
func TestDo(t *testing.T) {
	t.Parallel()
	lab := NewForTest(t, Options{})
	h := mustPublic(t, lab, "h")

	var want, inside, outside os.FileInfo
	var err error
	if want, err = os.Stat(nsPath(h.Namespace())); err != nil {
		t.Fatal(err)
	}
	if err := h.Do(func() (err error) {
		inside, err = os.Stat("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(want, inside) {
		t.Error("Do did not run in the host's namespace")
	}
	// Threads that ran Do go back to the pool; none may still be inside.
	for range 20 {
		if outside, err = statThreadNetns(); err != nil {
			t.Fatal(err)
		}
		if !os.SameFile(initialNetns, outside) {
			t.Fatal("a thread was left in a lab namespace")
		}
	}

	func() {
		defer func() {
			if recover() == nil {
				t.Error("a panic in Do was not passed on")
			}
		}()
		_ = h.Do(func() error { panic("boom") })
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := h.CommandContext(ctx, "ip", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr in the namespace: %v: %s", err, out)
	}
	if !strings.Contains(string(out), h.Addr().String()+"/32") {
		t.Errorf("ip addr in the namespace shows %q, want %v", out, h.Addr())
	}
	if err := h.SetDelay(time.Millisecond); err == nil {
		t.Error("SetDelay on a host without WithDelay succeeded")
	}
}

// statThreadNetns stats the network namespace of a fresh goroutine's thread.
func statThreadNetns() (os.FileInfo, error) {
	type result struct {
		fi  os.FileInfo
		err error
	}
	c := make(chan result, 1)
	go func() {
		fi, err := os.Stat("/proc/thread-self/ns/net")
		c <- result{fi, err}
	}()
	r := <-c
	return r.fi, r.err
}

func mustPublic(t *testing.T, l *Lab, name string, opts ...HostOption) *Host {
	t.Helper()
	h, err := l.AddPublicHost(name, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func mustNAT(t *testing.T, l *Lab, name string, kind NATKind, opts ...HostOption) *NAT {
	t.Helper()
	n, err := l.AddNAT(name, kind, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustDevice(t *testing.T, n *NAT, name string) *Host {
	t.Helper()
	h, err := n.AddDevice(name)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
