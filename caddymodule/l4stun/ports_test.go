package l4stun_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/testcaddy"
)

// A STUN port another program holds stops Caddy at start with an error
// that names the address, instead of a super peer without STUN.
func TestPortTakenFailsAtStart(t *testing.T) {
	holder, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	addr := holder.LocalAddr().String()
	dir := t.TempDir()
	cf := strings.NewReplacer("{LISTEN}", "udp/"+addr, "{IDLE}", "5s",
		"admin {ADMIN}", "admin off", "{PORT}", strconv.Itoa(testcaddy.FreePort(t)),
		"{HTTP_PORT}", "0", "{DIR}", dir).Replace(stunCaddyfile)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(cf), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testcaddy.Binary(t), "run", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil || err == nil {
		t.Fatalf("caddy did not stop at start with the STUN port taken: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), addr) || !strings.Contains(string(out), "address already in use") {
		t.Errorf("the error does not name %s as taken:\n%s", addr, out)
	}
}

// One port carries STUN next to another layer4 route: the stun matcher
// sends Binding requests to netsody_stun and everything else on (here to
// caddy-l4's echo handler); datagrams that match but do not parse are
// dropped by reason.
func TestMatcherBesideOtherRoutes(t *testing.T) {
	port := testcaddy.FreePort(t)
	cf := strings.NewReplacer("{LISTEN}", "udp/127.0.0.1:"+strconv.Itoa(port), "{IDLE}", "2s",
		"\t\t\t}\n\t\t}\n\t}\n}", "\t\t\t}\n\t\t\troute {\n\t\t\t\techo\n\t\t\t}\n\t\t}\n\t}\n}").Replace(stunCaddyfile)
	c := testcaddy.Start(t, cf)
	server := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if got, ok := ask(t, pc, server, 5, time.Second); !ok || got != pc.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Fatalf("STUN beside echo: %v, %v", got, ok)
	}

	other, err := net.ListenPacket("udp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	hello := []byte("hello, echo")
	other.WriteTo(hello, net.UDPAddrFromAddrPort(server))
	other.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	if n, _, err := other.ReadFrom(buf); err != nil || string(buf[:n]) != string(hello) {
		t.Fatalf("a datagram that is not STUN did not reach the echo route: %q, %v", buf[:n], err)
	}

	// A Binding request header with a wrong FINGERPRINT matches, and is
	// dropped by the handler as bad_fingerprint.
	bad := bindingRequest(t)
	bad.Raw = append(bad.Raw[:2:2], 0, 8)
	bad.Raw = append(bad.Raw, bindingRequest(t).Raw[4:]...)
	bad.Raw = append(bad.Raw, 0x80, 0x28, 0, 4, 1, 2, 3, 4)
	third, err := net.ListenPacket("udp", "127.0.0.3:0")
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	third.WriteTo(bad.Raw, net.UDPAddrFromAddrPort(server))
	deadline := time.Now().Add(5 * time.Second)
	for c.Metrics(t)[`netsody_superpeer_stun_dropped_total{reason="bad_fingerprint"}`] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("bad FINGERPRINT not counted: %v", c.Metrics(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
