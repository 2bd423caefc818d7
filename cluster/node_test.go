package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/quic-go/quic-go/http3"
	"go.uber.org/goleak"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/natstest"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/rendezvous"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startNATS runs a real nats-server in the test's process, at port (0:
// any), until the test ends.
func startNATS(t *testing.T, port int) *natsserver.Server { return natstest.Start(t, port, testToken) }

const testToken = "s3cret-cluster-token"

// node is a super peer of the cluster: a rendezvous server behind real
// HTTP/2 and HTTP/3 servers, and its Node.
type node struct {
	*sptest.Servers
	rv   *rendezvous.Server
	node *Node
}

func startNode(t *testing.T, ns *natsserver.Server, name string, cfg rendezvous.Config) *node {
	t.Helper()
	rv := rendezvous.NewServer(cfg)
	mux := http.NewServeMux()
	mux.Handle(rendezvous.Path, rv)
	n := &node{rv: rv, Servers: sptest.Start(t, "127.0.0.1", mux, func(s *http3.Server) { s.ConnContext = rendezvous.ConnContext })}
	var err error
	n.node, err = Connect(Options{Name: name, URL: n.H2URL, Servers: []string{ns.ClientURL()}, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	n.node.Serve(rv)
	rv.SetCluster(n.node)
	t.Cleanup(func() { n.node.Close() })
	t.Cleanup(func() { rv.Close() })
	return n
}

// device is a device registered at a node; it answers requests with
// answer (nil: never).
type device struct {
	*rendezvous.Session
	id       *identity.Identity
	requests chan rendezvous.Request
	cands    chan rendezvous.Candidates
}

func (n *node) device(t *testing.T, answer *bool) *device {
	t.Helper()
	return n.deviceAs(t, sptest.NewIdentity(t), answer)
}

// deviceAs is device with identity id.
func (n *node) deviceAs(t *testing.T, id *identity.Identity, answer *bool) *device {
	t.Helper()
	d := &device{id: id, requests: make(chan rendezvous.Request, 256), cands: make(chan rendezvous.Candidates, 16)}
	ready := make(chan struct{})
	cfg := rendezvous.ClientConfig{Identity: id, URL: n.H2URL, Transport: rendezvous.TransportH2, TLSConfig: &tls.Config{RootCAs: n.Pool},
		OnCandidates: func(c rendezvous.Candidates) { d.cands <- c },
		OnRequest: func(r rendezvous.Request) {
			d.requests <- r
			if answer != nil {
				go func() { <-ready; d.Answer(r.Peer, *answer) }()
			}
		}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := rendezvous.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.Session = s
	close(ready)
	t.Cleanup(func() { s.Close() })
	return d
}

func (d *device) introduce(t *testing.T, peer identity.PeerID) (rendezvous.Candidates, *rendezvous.Error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := d.Introduce(ctx, peer, rendezvous.IntroduceOptions{})
	if err == nil {
		return c, nil
	}
	var e *rendezvous.Error
	if !errors.As(err, &e) {
		t.Fatalf("introduction to %s: %v", peer.Short(), err)
	}
	return c, e
}

// twoNodes starts NATS and two nodes of a cluster, and a device at each
// that accepts every request, both reachable through the cluster.
func twoNodes(t *testing.T) (ns *natsserver.Server, n1, n2 *node, asker, target *device) {
	t.Helper()
	ns = startNATS(t, 0)
	cfg := rendezvous.Config{ConsentTimeout: 2 * time.Second}
	n1, n2 = startNode(t, ns, "test", cfg), startNode(t, ns, "test", cfg)
	yes := true
	asker, target = n1.device(t, &yes), n2.device(t, &yes)
	waitFor(t, "both devices joined", func() bool { return n1.node.Stats().Joined.Load() == 1 && n2.node.Stats().Joined.Load() == 1 })
	// Join does not wait for the network: the subscription reaches the
	// server a moment later.
	flush(t, n1, n2)
	return ns, n1, n2, asker, target
}

// flush waits until the nodes' subscriptions have reached NATS.
func flush(t *testing.T, nodes ...*node) {
	t.Helper()
	for _, n := range nodes {
		if err := n.node.nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15s", what)
		}
	}
}

// Devices at two nodes find each other through a real NATS, with
// consent at the target's node; when NATS goes away each node serves its
// own devices, introductions across nodes fail with a clear error, and
// once NATS is back they work again with no restart.
func TestIntroductionAcrossNodes(t *testing.T) {
	ns, n1, n2, asker, target := twoNodes(t)
	yes := true

	c, e := asker.introduce(t, target.id.PeerID())
	if e != nil || c.Peer != target.id.PeerID() || c.Observed != target.Observed() || !c.Initiator {
		t.Fatalf("across nodes: %+v, %v", c, e)
	}
	select {
	case m := <-target.cands:
		if m.Peer != asker.id.PeerID() || m.Observed != asker.Observed() || m.Initiator {
			t.Errorf("the target got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the target got no candidates")
	}
	if r := <-target.requests; r.Peer != asker.id.PeerID() {
		t.Errorf("the target was asked for %s", r.Peer.Short())
	}
	if _, e := asker.introduce(t, sptest.NewIdentity(t).PeerID()); e == nil || e.Code != rendezvous.ErrCodePeerNotFound {
		t.Errorf("a device no node holds: %v", e)
	}
	if n1.node.Stats().NoResponders.Load() != 1 {
		t.Errorf("NoResponders = %d, want 1", n1.node.Stats().NoResponders.Load())
	}

	port, _ := strconv.Atoi(ns.ClientURL()[strings.LastIndex(ns.ClientURL(), ":")+1:])
	ns.Shutdown()
	ns.WaitForShutdown()
	waitFor(t, "the node noticed NATS is gone", func() bool { return !n1.node.Connected() })
	_, e = asker.introduce(t, target.id.PeerID())
	if e == nil || e.Code != rendezvous.ErrCodeRateLimited || !strings.Contains(e.Message, "cannot reach the rest of its cluster") {
		t.Errorf("with NATS down: %v", e)
	}
	local := n1.device(t, &yes)
	if _, e := asker.introduce(t, local.id.PeerID()); e != nil {
		t.Errorf("a local introduction with NATS down: %v", e)
	}

	startNATS(t, port)
	waitFor(t, "both nodes reconnected", func() bool { return n1.node.Connected() && n2.node.Connected() })
	// The subscriptions come back with the connection; the target's may
	// take a moment more to reach the server.
	waitFor(t, "an introduction across nodes again", func() bool {
		_, e := asker.introduce(t, target.id.PeerID())
		return e == nil
	})
	// Moments after the reconnect, a device nobody holds may be one whose
	// node has not resubscribed yet: retry later, not not found. Once
	// restoreGrace has passed, not found again.
	if at := time.Unix(0, n1.node.reconnectedAt.Load()); time.Since(at) < restoreGrace-time.Second {
		_, e := asker.introduce(t, sptest.NewIdentity(t).PeerID())
		if e == nil || e.Code != rendezvous.ErrCodeRateLimited || e.Message != msgRestoring {
			t.Errorf("a device nobody holds, %v after the reconnect: %v, want retry later", time.Since(at).Round(time.Millisecond), e)
		}
		if n1.node.Stats().Restoring.Load() == 0 {
			t.Error("Restoring not counted")
		}
		time.Sleep(restoreGrace - time.Since(at))
	} else {
		t.Logf("the reconnect took %v: the grace is not checked", time.Since(at))
	}
	if _, e := asker.introduce(t, sptest.NewIdentity(t).PeerID()); e == nil || e.Code != rendezvous.ErrCodePeerNotFound {
		t.Errorf("a device nobody holds, after the grace: %v", e)
	}
}

// A node holds at most maxInboundPerNode requests of one other node
// (waiting for its devices' consent), so that one node cannot take all
// of maxInbound; the rest are answered busy at once.
func TestInboundBoundedPerNode(t *testing.T) {
	ns := startNATS(t, 0)
	n := startNode(t, ns, "test", rendezvous.Config{ConsentTimeout: 10 * time.Second, IntroductionRate: 1e6, IntroductionBurst: 1e6})
	const perNode = 8
	n.node.maxPerNode = perNode
	silent := n.device(t, nil)
	waitFor(t, "the device joined", func() bool { return n.node.Stats().Joined.Load() == 1 })
	flush(t, n)

	nc, err := nats.Connect(ns.ClientURL(), nats.Token(testToken))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ask := func(nodeID string, replies chan *nats.Msg) {
		req := request{V: Version, Node: "https://other.example", NodeID: nodeID, Asker: candidates{Peer: sptest.NewIdentity(t).PeerID()}}
		data, _ := json.Marshal(&req)
		inbox := nats.NewInbox()
		sub, err := nc.ChanSubscribe(inbox, replies)
		if err != nil {
			t.Fatal(err)
		}
		sub.AutoUnsubscribe(1)
		if err := nc.PublishRequest(n.node.subject(silent.id.PeerID()), inbox, data); err != nil {
			t.Fatal(err)
		}
	}
	replies := make(chan *nats.Msg, 64)
	const sent = 3 * perNode
	for range sent {
		ask("greedy", replies)
	}
	busy := 0
	for range sent - perNode {
		select {
		case m := <-replies:
			var r reply
			if err := r.decode(m.Data); err != nil || r.Status != statusBusy {
				t.Fatalf("reply %s: %v", m.Data, err)
			}
			busy++
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d requests over the per-node bound answered busy within 5s", busy, sent-perNode)
		}
	}
	waitFor(t, "the bound's requests held", func() bool { return n.node.Stats().InboundNow.Load() == perNode })
	// Another node still gets through.
	ask("other", replies)
	waitFor(t, "another node's request held", func() bool { return n.node.Stats().InboundNow.Load() == perNode+1 })
	select {
	case m := <-replies:
		t.Errorf("a request over the bound was answered: %s", m.Data)
	case <-time.After(200 * time.Millisecond):
	}
	silent.Close() // answers the held requests: not found
	for range perNode + 1 {
		select {
		case m := <-replies:
			var r reply
			if err := r.decode(m.Data); err != nil || r.Status != statusNotFound {
				t.Errorf("reply %s: %v", m.Data, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("held requests not answered when the device left")
		}
	}
	if got := n.node.Stats().InboundNow.Load(); got != 0 {
		t.Errorf("InboundNow = %d after every request was answered", got)
	}
}

// Hostile or broken messages are answered busy and counted, never
// acted on.
func TestBadRequests(t *testing.T) {
	ns := startNATS(t, 0)
	n := startNode(t, ns, "test", rendezvous.Config{})
	d := n.device(t, nil)
	waitFor(t, "the device joined", func() bool { return n.node.Stats().Joined.Load() == 1 })
	flush(t, n)
	nc, err := nats.Connect(ns.ClientURL(), nats.Token(testToken))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	many := make([]string, rendezvous.MaxAddrs+1)
	for i := range many {
		many[i] = fmt.Sprintf("%q", net.JoinHostPort("192.0.2.1", strconv.Itoa(1000+i)))
	}
	for _, body := range []string{
		`not json`,
		`{"v":0,"node_id":"x","asker":{"peer":"` + sptest.NewIdentity(t).PeerID().String() + `"}}`,
		`{"v":1,"node_id":"","asker":{"peer":"` + sptest.NewIdentity(t).PeerID().String() + `"}}`,
		`{"v":1,"node_id":"x","asker":{"peer":"00"}}`,
		`{"v":1,"node_id":"x","asker":{"peer":"` + sptest.NewIdentity(t).PeerID().String() + `","local":[` + strings.Join(many, ",") + `]}}`,
		`{"v":1,"node_id":"x","asker":{"peer":"` + d.id.PeerID().String() + `"}}`, // the device itself
		`{"v":1,"node_id":"x","pad":"` + strings.Repeat("x", maxMessage) + `"}`,
	} {
		m, err := nc.Request(n.node.subject(d.id.PeerID()), []byte(body), 5*time.Second)
		if err != nil {
			t.Fatalf("%.40s: %v", body, err)
		}
		var r reply
		if err := r.decode(m.Data); err != nil || r.Status != statusBusy {
			t.Errorf("%.40s: answered %s", body, m.Data)
		}
	}
	if got := n.node.Stats().BadRequests.Load(); got != 6 {
		t.Errorf("BadRequests = %d, want 6", got)
	}
	select {
	case r := <-d.requests:
		t.Errorf("the device was asked for %s by a bad request", r.Peer.Short())
	default:
	}
}

// Options that cannot work are refused with a reason.
func TestOptionsValidate(t *testing.T) {
	good := Options{Name: "prod-1", URL: "https://sp-1.example.com", Servers: []string{"nats://127.0.0.1:4222"}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []func(*Options){
		func(o *Options) { o.Name = "" },
		func(o *Options) { o.Name = "a.b" },
		func(o *Options) { o.URL = "sp-1.example.com" },
		func(o *Options) { o.Servers = nil },
		func(o *Options) { o.Servers = []string{"http://x"} },
		func(o *Options) { o.Token, o.User = "t", "u" },
	} {
		o := good
		bad(&o)
		if err := o.Validate(); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}
