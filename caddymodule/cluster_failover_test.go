package caddymodule_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/peer"
)

// failoverDevice starts a device of the cluster's one name, resolved from
// the node at first on, accepting allow; relayOnly cuts its direct paths.
func failoverDevice(t *testing.T, c *testcaddy.Caddy, hosts []netip.Addr, first int, id *identity.Identity, allow identity.PeerID, relayOnly bool) *peer.Device {
	t.Helper()
	d, err := peer.New(peer.Config{
		Identity: id, SuperPeers: []string{"https://" + clusterName + ":" + strconv.Itoa(c.Port)},
		RootCAs: c.Roots, ListenAddr: "127.0.0.1:0", Allow: []identity.PeerID{allow},
		LookupNetIP: roundRobin(hosts, first), RelayOnly: relayOnly,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	waitFor(t, 15*time.Second, "a session with the cluster", func() bool {
		st := d.Status().SuperPeers
		return len(st) > 0 && st[0].Connected
	})
	return d
}

// waitFor polls cond every 20 ms for up to limit, failing with what.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, limit)
		}
	}
}

// waitClusterConnected waits for every node's NATS connection.
func waitClusterConnected(t *testing.T, nodes []*testcaddy.Caddy) {
	t.Helper()
	for i, n := range nodes {
		waitFor(t, 15*time.Second, "NATS connection at node "+strconv.Itoa(i+1), func() bool {
			return n.Metrics(t)["netsody_superpeer_cluster_connected"] == 1
		})
	}
}

// echoPair connects a to b, whose side echoes every stream, and returns
// a's connection.
func echoPair(t *testing.T, a, b *peer.Device) *peer.Conn {
	t.Helper()
	acceptEcho(t, b)
	dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer dcancel()
	conn, err := a.Dial(dctx, b.PeerID())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	return conn
}

// acceptEcho echoes every stream of b's first incoming connection until
// the test ends.
func acceptEcho(t *testing.T, b *peer.Device) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Go(func() {
		bc, err := b.Accept(ctx)
		if err != nil {
			return
		}
		defer bc.CloseWithError(0, "")
		for {
			str, err := bc.AcceptStream(ctx)
			if err != nil {
				return
			}
			wg.Go(func() { io.Copy(str, str); str.Close() })
		}
	})
}

// pathTo is a's path to p now.
func pathTo(a *peer.Device, p identity.PeerID) peer.PathKind {
	for _, st := range a.Status().Peers {
		if st.PeerID == p.String() {
			return st.Path
		}
	}
	return ""
}

// stallEcho sends size random bytes on a new stream of conn and checks
// the echo's SHA-256; once half has come back it calls midway, and it
// returns how long after that call the echo's longest pause ended (the
// bytes flowing again), or 0 if it never paused for longer than a
// second. It may run off the test's goroutine.
func stallEcho(conn *peer.Conn, size int, midway func()) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return 0, err
	}
	context.AfterFunc(ctx, func() { str.CancelRead(0); str.CancelWrite(0) })
	sent := sha256.New()
	errc := make(chan error, 1)
	go func() {
		src := rand.NewChaCha8([32]byte{byte(size >> 20)})
		buf := make([]byte, 32<<10)
		for n := 0; n < size; n += len(buf) {
			src.Read(buf)
			sent.Write(buf)
			if _, err := str.Write(buf); err != nil {
				errc <- err
				return
			}
		}
		errc <- str.Close()
	}()
	got := sha256.New()
	buf := make([]byte, 32<<10)
	var read int
	var called, last time.Time
	var longest, resumedAfter time.Duration
	for read < size {
		n, err := str.Read(buf)
		now := time.Now()
		got.Write(buf[:n])
		read += n
		if n > 0 {
			if !called.IsZero() && now.Sub(last) > longest {
				longest, resumedAfter = now.Sub(last), now.Sub(called)
			}
			last = now
		}
		if called.IsZero() && read >= size/2 && midway != nil {
			midway()
			called, last = time.Now(), time.Now()
		}
		if err != nil && (err != io.EOF || read != size) {
			return 0, fmt.Errorf("echo after %d of %d bytes: %w", read, size, err)
		}
	}
	if err := <-errc; err != nil {
		return 0, err
	}
	if string(got.Sum(nil)) != string(sent.Sum(nil)) {
		return 0, errors.New("the echo's SHA-256 differs from what was sent")
	}
	if longest < time.Second {
		return 0, nil
	}
	return resumedAfter, nil
}

// A node killed mid-transfer (kill -9: no drain, no goodbye): two devices
// relayed through it notice within seconds, register again at a survivor
// through the cluster's one name (not the dead address first), their
// relay moves there, and the transfer completes intact over the same
// end-to-end connection. A direct pair registered at the same node goes
// on untouched.
func TestClusterNodeKilledMidTransfer(t *testing.T) {
	ns := startNATS(t, 0)
	nodes, hosts := startCluster(t, ns)
	checkNodeKilledMidTransfer(t, nodes, hosts)
}

// The same with a NATS server embedded in each node: the killed node's
// NATS server dies with it, and the survivors' servers, routed to each
// other, carry on.
func TestClusterNodeKilledMidTransferEmbeddedNATS(t *testing.T) {
	nodes, hosts := startEmbeddedCluster(t)
	checkNodeKilledMidTransfer(t, nodes, hosts)
}

// checkNodeKilledMidTransfer kills node 1 while a relayed pair and a
// direct pair, all four devices at node 1, transfer.
func checkNodeKilledMidTransfer(t *testing.T, nodes []*testcaddy.Caddy, hosts []netip.Addr) {
	t.Helper()
	waitClusterConnected(t, nodes)

	// All four devices resolve node 1 first: they all register there.
	idA, idB, idC, idD := sptest.NewIdentity(t), sptest.NewIdentity(t), sptest.NewIdentity(t), sptest.NewIdentity(t)
	a := failoverDevice(t, nodes[0], hosts, 0, idA, idB.PeerID(), true)
	b := failoverDevice(t, nodes[0], hosts, 0, idB, idA.PeerID(), true)
	c := failoverDevice(t, nodes[0], hosts, 0, idC, idD.PeerID(), false)
	d := failoverDevice(t, nodes[0], hosts, 0, idD, idC.PeerID(), false)
	if n := devicesAt(t, nodes[0]); n != 4 {
		t.Fatalf("%d devices at node 1, want 4", n)
	}
	relayed := echoPair(t, a, b)
	waitFor(t, 15*time.Second, "relay path", func() bool { return pathTo(a, b.PeerID()) == peer.PathRelay })
	direct := echoPair(t, c, d)
	waitFor(t, 15*time.Second, "direct path", func() bool { return directTo(c, d.PeerID()) })

	// The direct pair transfers throughout, and stays direct.
	type result struct {
		pause time.Duration // the transfers done, on success
		err   error
	}
	directDone := make(chan result, 1)
	notDirect := make(chan struct{}, 1)
	stopWatch := make(chan struct{})
	go func() {
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if !directTo(c, d.PeerID()) {
				select {
				case notDirect <- struct{}{}:
				default:
				}
			}
		}
	}()
	go func() { // transfers until the relayed one is done
		var r result
		for n := 0; r.err == nil; n++ {
			select {
			case <-stopWatch:
				r.pause = time.Duration(n)
				directDone <- r
				return
			default:
			}
			_, r.err = stallEcho(direct, 4<<20, nil)
		}
		directDone <- r
	}()

	var killed time.Time
	resumed, err := stallEcho(relayed, 24<<20, func() {
		killed = time.Now()
		if err := syscall.Kill(nodes[0].Pid(), syscall.SIGKILL); err != nil {
			t.Errorf("kill node 1: %v", err)
		}
	})
	if err != nil {
		t.Fatalf("relayed transfer: %v", err)
	}
	t.Logf("relayed transfer: node killed, bytes flowing again %v later (the longest pause's end; 0: no pause over 1s)", resumed.Round(time.Millisecond))
	if resumed > 25*time.Second {
		t.Errorf("bytes flowed again only %v after the kill", resumed)
	}
	close(stopWatch)
	if dr := <-directDone; dr.err != nil {
		t.Errorf("direct transfer: %v", dr.err)
	} else {
		t.Logf("direct pair: %d transfers of 4 MiB intact across the kill", int(dr.pause))
	}
	select {
	case <-notDirect:
		t.Error("the direct pair left its direct path when the node died")
	default:
	}

	// The relay went to a survivor, and every device registered at one.
	for _, dev := range []*peer.Device{a, b} {
		st := dev.Status()
		if len(st.SuperPeers) != 1 || !st.SuperPeers[0].Connected {
			t.Errorf("super peers after the kill: %+v", st.SuperPeers)
		}
	}
	if p := pathTo(a, b.PeerID()); p != peer.PathRelay {
		t.Errorf("path after the kill %q, want relay", p)
	}
	waitFor(t, 30*time.Second, "all four devices at the survivors", func() bool {
		return devicesAt(t, nodes[1])+devicesAt(t, nodes[2]) == 4
	})
	t.Logf("kill to all four registered at survivors: %v", time.Since(killed).Round(time.Millisecond))
}

// NATS stopped and started again under three Caddy processes: during the
// outage each node serves its own devices (two devices at node 1
// introduce and connect), an introduction across nodes fails with the
// clear "cannot reach the rest of its cluster" and counts as
// unavailable; a dial across nodes begun during the outage retries its
// "retry later" answers within its context and connects once NATS is
// back, without a restart of Caddy.
func TestClusterNATSOutage(t *testing.T) {
	natsPort := testcaddy.FreePort(t)
	ns := startNATS(t, natsPort)
	nodes, hosts := startCluster(t, ns)
	waitClusterConnected(t, nodes)

	idA, idB, idC := sptest.NewIdentity(t), sptest.NewIdentity(t), sptest.NewIdentity(t)
	a, err := peer.New(peer.Config{
		Identity: idA, SuperPeers: []string{"https://" + clusterName + ":" + strconv.Itoa(nodes[0].Port)},
		RootCAs: nodes[0].Roots, ListenAddr: "127.0.0.1:0", Allow: []identity.PeerID{idB.PeerID(), idC.PeerID()},
		LookupNetIP: roundRobin(hosts, 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	waitFor(t, 15*time.Second, "a's session", func() bool { st := a.Status().SuperPeers; return len(st) > 0 && st[0].Connected })
	b := failoverDevice(t, nodes[0], hosts, 0, idB, idA.PeerID(), false)
	c := failoverDevice(t, nodes[0], hosts, 1, idC, idA.PeerID(), false)
	if devicesAt(t, nodes[0]) != 2 || devicesAt(t, nodes[1]) != 1 {
		t.Fatalf("devices at nodes 1 and 2: %d, %d; want 2, 1", devicesAt(t, nodes[0]), devicesAt(t, nodes[1]))
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	waitFor(t, 15*time.Second, "disconnect from NATS at node 1", func() bool {
		return nodes[0].Metrics(t)["netsody_superpeer_cluster_connected"] == 0
	})

	// Local service goes on.
	conn := echoPair(t, a, b)
	if _, err := stallEcho(conn, 1<<20, nil); err != nil {
		t.Fatalf("transfer at one node during the outage: %v", err)
	}

	// Across nodes: the clear error, counted.
	const unavailable = `netsody_superpeer_cluster_introductions_total{result="unavailable"}`
	before := nodes[0].Metrics(t)[unavailable]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err = a.Dial(ctx, c.PeerID())
	cancel()
	if err == nil || !strings.Contains(err.Error(), "cannot reach the rest of its cluster") {
		t.Fatalf("dial across nodes during the outage: %v; want the cluster unavailable", err)
	}
	t.Logf("dial across nodes during the outage: %v", err)
	if got := nodes[0].Metrics(t)[unavailable]; got <= before {
		t.Errorf("%s = %v, was %v: the refusal was not counted", unavailable, got, before)
	}

	// A dial begun now connects once NATS is back.
	acceptEcho(t, c)
	type result struct {
		conn *peer.Conn
		err  error
	}
	dialled := make(chan result, 1)
	dctx, dcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer dcancel()
	var restartedAt atomic.Int64 // unix nanoseconds; 0 until NATS is back
	go func() {
		for {
			conn, err := a.Dial(dctx, c.PeerID())
			// Right after NATS is back, the node holding c may not have
			// restored its subscriptions yet (each node reconnects on its
			// own, within about cluster.reconnectWait and its dial): a
			// lookup then finds nobody, and the device's application
			// dials again. Beyond that window "unavailable" is a failure.
			if r := restartedAt.Load(); errors.Is(err, peer.ErrUnavailable) && r != 0 && time.Since(time.Unix(0, r)) < 10*time.Second {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			dialled <- result{conn, err}
			return
		}
	}()
	time.Sleep(time.Second) // some tries refused first; not an assertion
	startNATS(t, natsPort)
	restarted := time.Now()
	restartedAt.Store(restarted.UnixNano())
	r := <-dialled
	if r.err != nil {
		t.Fatalf("dial across nodes begun during the outage: %v", r.err)
	}
	defer r.conn.CloseWithError(0, "")
	t.Logf("NATS restarted: the waiting dial across nodes connected %v later", time.Since(restarted).Round(time.Millisecond))
	if _, err := stallEcho(r.conn, 1<<20, nil); err != nil {
		t.Fatalf("transfer across nodes after the outage: %v", err)
	}
	waitClusterConnected(t, nodes) // each node reconnects on its own (cluster.reconnectWait)
}

// An idle relay through a node that is killed ends within seconds (its
// open legs keep the session measured), not at QUIC's idle timeout, and
// comes back through a survivor, carrying the same connection.
func TestClusterNodeKilledIdleRelay(t *testing.T) {
	ns := startNATS(t, 0)
	nodes, hosts := startCluster(t, ns)
	waitClusterConnected(t, nodes)
	idA, idB := sptest.NewIdentity(t), sptest.NewIdentity(t)
	a := failoverDevice(t, nodes[0], hosts, 0, idA, idB.PeerID(), true)
	b := failoverDevice(t, nodes[0], hosts, 0, idB, idA.PeerID(), true)
	conn := echoPair(t, a, b)
	waitFor(t, 15*time.Second, "relay path", func() bool { return pathTo(a, b.PeerID()) == peer.PathRelay })
	time.Sleep(2 * time.Second) // idle: the dial's packets are long gone

	killed := time.Now()
	if err := syscall.Kill(nodes[0].Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 25*time.Second, "end of the relay through the dead node", func() bool { return pathTo(a, b.PeerID()) != peer.PathRelay })
	ended := time.Since(killed)
	waitFor(t, 25*time.Second, "relay through a survivor", func() bool {
		return pathTo(a, b.PeerID()) == peer.PathRelay && devicesAt(t, nodes[1])+devicesAt(t, nodes[2]) == 2
	})
	t.Logf("idle relay: ended %v after the kill, relayed through a survivor %v after it",
		ended.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	if _, err := stallEcho(conn, 1<<20, nil); err != nil {
		t.Fatalf("transfer after the move: %v", err)
	}
}
