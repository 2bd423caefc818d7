package l4stun_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/rendezvous"
)

// stunPortOf registers a device with c and returns the STUN port the
// super peer named.
func stunPortOf(t *testing.T, c *testcaddy.Caddy) uint16 {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := rendezvous.Dial(ctx, c.ClientConfig(id, "127.0.0.1", rendezvous.TransportH3))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	return s.STUNPort()
}

// The netsody app finds the port its layer4 app answers STUN on, and
// names it to devices at registration; without netsody_stun in a route,
// it names none.
func TestRegisteredNamesSTUNPort(t *testing.T) {
	c, port := startSTUN(t, 5*time.Second)
	if got := stunPortOf(t, c); got != uint16(port) {
		t.Fatalf("registered names STUN port %d, want %d", got, port)
	}
	echoOnly := strings.NewReplacer("{LISTEN}", "udp/127.0.0.1:"+strconv.Itoa(testcaddy.FreePort(t)), "{IDLE}", "2s",
		"\t\t\troute {\n\t\t\t\tnetsody_stun\n\t\t\t}\n", "\t\t\troute {\n\t\t\t\techo\n\t\t\t}\n").Replace(stunCaddyfile)
	if got := stunPortOf(t, testcaddy.Start(t, echoOnly)); got != 0 {
		t.Fatalf("a layer4 app without netsody_stun: STUN port %d named", got)
	}
}
