package l4stun_test

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	pion "github.com/pion/stun/v3"

	"github.com/netsody/superpeer/internal/testcaddy"
)

// stunCaddyfile is a super peer with a layer4 server answering STUN on
// {LISTEN}, behind the stun matcher, with a short idle_timeout ({IDLE})
// as in Caddyfile.example.
const stunCaddyfile = `{
	admin {ADMIN}
	https_port {PORT}
	http_port {HTTP_PORT}
	skip_install_trust
	storage file_system {DIR}/data
	layer4 {
		{LISTEN} {
			idle_timeout {IDLE}
			@stun stun
			route @stun {
				netsody_stun
			}
		}
	}
}

localhost {
	netsody_superpeer
}
`

// startSTUN runs Caddy with stunCaddyfile and returns it and the STUN
// port.
func startSTUN(t *testing.T, idle time.Duration) (*testcaddy.Caddy, int) {
	t.Helper()
	port := testcaddy.FreePort(t)
	// All addresses, as in Caddyfile.example: one dual-stack socket,
	// which sees IPv4 clients as IPv4-mapped IPv6 addresses.
	listen := "udp/:" + strconv.Itoa(port)
	cf := strings.NewReplacer("{LISTEN}", listen, "{IDLE}", idle.String()).Replace(stunCaddyfile)
	return testcaddy.Start(t, cf), port
}

func hasIPv6Loopback() bool {
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		return false
	}
	pc.Close()
	return true
}

// bindingRequest returns an RFC 5389 Binding request with a fresh ID.
func bindingRequest(t testing.TB) *pion.Message {
	t.Helper()
	m, err := pion.Build(pion.TransactionID, pion.BindingRequest)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ask sends an RFC 5389 Binding request from pc to server, retrying as a
// STUN client does, and returns the XOR-MAPPED-ADDRESS of the answer.
func ask(t testing.TB, pc net.PacketConn, server netip.AddrPort, tries int, rto time.Duration) (netip.AddrPort, bool) {
	t.Helper()
	req := bindingRequest(t)
	buf := make([]byte, 1500)
	for range tries {
		if _, err := pc.WriteTo(req.Raw, net.UDPAddrFromAddrPort(server)); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(rto))
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				break
			}
			m := &pion.Message{Raw: append([]byte(nil), buf[:n]...)}
			var xa pion.XORMappedAddress
			if m.Decode() != nil || m.TransactionID != req.TransactionID || xa.GetFrom(m) != nil {
				continue
			}
			ip, _ := netip.AddrFromSlice(xa.IP)
			return netip.AddrPortFrom(ip.Unmap(), uint16(xa.Port)), true
		}
	}
	return netip.AddrPort{}, false
}

// A Go client (pion's codec) learns its exact address over IPv4 and IPv6.
func TestMappedAddress(t *testing.T) {
	_, port := startSTUN(t, 2*time.Second)
	nets := []string{"127.0.0.1"}
	if hasIPv6Loopback() {
		nets = append(nets, "::1")
	}
	for _, host := range nets {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		server := netip.AddrPortFrom(netip.MustParseAddr(host), uint16(port))
		got, ok := ask(t, pc, server, 5, time.Second)
		want := pc.LocalAddr().(*net.UDPAddr).AddrPort()
		if !ok || got != want {
			t.Errorf("%s: mapped %v (answered %v), want %v", host, got, ok, want)
		}
	}
}
