package caddymodule_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/netsody/superpeer/internal/sptest"
)

// The embedded NATS servers with `tls` (docs/CLUSTER.md, "NATS sizing"):
// routes and clients encrypted and verified against one CA. The three
// nodes share their devices over it as without TLS, and a NATS client
// that does not speak TLS, token and all, is refused.
func TestClusterEmbeddedNATSOverTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := natsTLSFiles(t, dir)
	nodes, hosts, natsPort, routePort := embeddedCluster(t, &natsTLS{caFile, certFile, keyFile})
	checkAcrossNodes(t, nodes, hosts)

	// Routes are up between the nodes over TLS: a route that failed its
	// handshake would leave a node without its siblings' interest, and
	// checkAcrossNodes would not have found the peer (it did not, before
	// routes verified each other against tls's CA).
	// A NATS client without the CA is refused on the client port.
	plain := "nats://" + hosts[0].String() + ":" + natsPort
	if nc, err := nats.Connect(plain, nats.Token(natsToken), nats.Timeout(2*time.Second), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatalf("a NATS client without the CA connected to %s", plain)
	} else {
		t.Logf("client without the CA refused: %v", err)
	}
	// The route port says nothing in the clear (a route without TLS
	// greets with its INFO at once), and one that speaks TLS without a
	// certificate of the CA is refused.
	route := hosts[0].String() + ":" + routePort
	c, err := net.DialTimeout("tcp", route, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4096)
	if n, _ := c.Read(buf); n > 0 {
		t.Fatalf("the route port greeted a plain TCP client with %q", buf[:n])
	}
	c.Close()
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(caFile)
	if err != nil || !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("CA: %v", err)
	}
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", route, &tls.Config{RootCAs: pool, ServerName: hosts[0].String()})
	if err == nil {
		tc.SetDeadline(time.Now().Add(3 * time.Second))
		_, err = tc.Read(buf) // TLS 1.3: the server's refusal of no certificate comes here
		tc.Close()
	}
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a route without a client certificate was not refused (%v)", err)
	}
	t.Logf("route without a client certificate refused: %v", err)
}

// natsTLSFiles writes a CA and one certificate for the nodes' addresses,
// usable as server and client (routes verify each other), as PEM files.
func natsTLSFiles(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	c := sptest.NewCA(t, dir, "netsody test NATS CA")
	var names []string
	for _, h := range clusterHosts {
		names = append(names, h.String())
	}
	cert, key = filepath.Join(dir, "node.pem"), filepath.Join(dir, "node.key")
	sptest.WriteLeaf(t, c.Leaf(t, names...), cert, key)
	return c.File, cert, key
}
