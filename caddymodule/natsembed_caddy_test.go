package caddymodule_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/rendezvous"
)

// An embedded NATS server that cannot start (its port is taken) fails
// the reload with a reason, and never exits the process: nats-server's
// own logger would call os.Exit on that fatal error. The running config
// and its sessions go on.
func TestEmbeddedNATSFatalDoesNotExit(t *testing.T) {
	bin := testcaddy.BinaryWithTags(t, "netsody_natsembed")
	c := testcaddy.StartBinary(t, bin, testcaddy.Global+"localhost {\n\tnetsody_superpeer\n}\n")
	d := register(t, c, "127.0.0.1", rendezvous.TransportH3)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	global := strings.Replace(testcaddy.Global, "{\n", "{\n\tnetsody_nats {\n\t\tlisten "+busy.Addr().String()+"\n\t}\n", 1)
	err = c.TryReload(t, global+"localhost {\n\tnetsody_superpeer\n}\n")
	if err == nil || !strings.Contains(err.Error(), "netsody_nats: the server is not ready") {
		t.Fatalf("reload with the NATS port taken: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := c.WaitLog(ctx, "fatal (the process goes on)"); err != nil {
		t.Errorf("the NATS server's fatal error was not logged through Caddy: %v", err)
	}
	if err := d.s.Err(); err != nil {
		t.Fatalf("the session ended: %v", err)
	}
	other := register(t, c, "127.0.0.1", rendezvous.TransportH2)
	lookup(t, d, other)
}
