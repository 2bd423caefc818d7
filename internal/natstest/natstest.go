// Package natstest runs a real nats-server, from its Go module, in a
// test's process: the external NATS of a cluster's tests.
package natstest

import (
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// Start runs a nats-server on 127.0.0.1 at port (0: any) that takes
// clients with token, pinging them every second (a hung client is
// dropped within a few), until the test ends.
func Start(t testing.TB, port int, token string) *natsserver.Server {
	t.Helper()
	if port == 0 {
		port = -1
	}
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true,
		Authorization: token, PingInterval: time.Second, MaxPingsOut: 2})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready within 10s")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}
