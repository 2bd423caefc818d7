package caddymodule_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/peer"
)

// A node that hangs (SIGSTOP: its process alive, its sockets open, nothing
// answered) is noticed within seconds (docs/CLUSTER.md, "Failure
// modes"): an introduction asked of it meanwhile fails within the request
// timeout, not never; NATS drops its connection and so its devices'
// interest after its pings go unanswered; its devices find their
// sessions unanswered, register at a survivor, and are reachable there.
func TestClusterNodeHangs(t *testing.T) {
	ns := startNATS(t, 0)
	nodes, hosts := startCluster(t, ns)
	waitClusterConnected(t, nodes)
	idA, idB := sptest.NewIdentity(t), sptest.NewIdentity(t)
	a := failoverDevice(t, nodes[0], hosts, 0, idA, idB.PeerID(), false)
	b := failoverDevice(t, nodes[1], hosts, 1, idB, idA.PeerID(), false)
	if devicesAt(t, nodes[0]) != 1 || devicesAt(t, nodes[1]) != 1 {
		t.Fatalf("devices at nodes 1 and 2: %d, %d; want 1, 1", devicesAt(t, nodes[0]), devicesAt(t, nodes[1]))
	}
	clients := ns.NumClients()

	pid := nodes[1].Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	hung := time.Now()
	dropped := make(chan time.Duration, 1) // when NATS dropped the node
	go func() {
		for deadline := hung.Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if ns.NumClients() < clients {
				dropped <- time.Since(hung)
				return
			}
		}
		close(dropped)
	}()

	// An introduction for B now goes to the hung node, which holds B's
	// subscription until NATS drops it: it ends within the consent
	// timeout and the reply margin (12 s), as unavailable.
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	_, err := a.Dial(ctx, b.PeerID())
	cancel()
	took := time.Since(hung)
	switch {
	case err == nil:
		// B's device may have failed over already and been found at a
		// survivor: also a node noticed, and no hang.
		t.Logf("dial right after the hang connected, %v after it", took.Round(time.Millisecond))
	case errors.Is(err, peer.ErrUnavailable):
		t.Logf("dial right after the hang: unavailable %v after it (%v)", took.Round(time.Millisecond), err)
	default:
		t.Fatalf("dial right after the hang: %v after %v, want unavailable or connected", err, took)
	}
	if took > 30*time.Second {
		t.Errorf("the dial took %v: a hung node held it", took)
	}

	d, ok := <-dropped
	if !ok {
		t.Fatal("NATS did not drop the hung node's connection within 30s")
	}
	t.Logf("hang to NATS dropping the node's connection and interest: %v", d.Round(time.Millisecond))

	// B's session to the hung node goes unanswered (its next keepalive,
	// within 15 s, and 3 s; then HTTP/2 at most fallDialTimeout): B
	// registers at a survivor.
	waitFor(t, 40*time.Second, "B registered at a survivor", func() bool {
		return devicesAt(t, nodes[0])+devicesAt(t, nodes[2]) == 2
	})
	t.Logf("hang to B registered at a survivor: %v", time.Since(hung).Round(time.Millisecond))

	conn := echoPair(t, a, b)
	if _, err := stallEcho(conn, 1<<20, nil); err != nil {
		t.Fatalf("echo after the failover: %v", err)
	}
	t.Logf("hang to A and B connected again: %v", time.Since(hung).Round(time.Millisecond))
}
