package peer

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netsody/superpeer"
	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

// recorder keeps every byte the relay handler reads from and writes to
// its legs.
type recorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recorder) add(b []byte) {
	r.mu.Lock()
	r.buf.Write(b)
	r.mu.Unlock()
}

type recBody struct {
	io.ReadCloser
	rec *recorder
}

func (b recBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.rec.add(p[:n])
	return n, err
}

type recWriter struct {
	http.ResponseWriter
	rec *recorder
}

func (w recWriter) Write(p []byte) (int, error) {
	w.rec.add(p)
	return w.ResponseWriter.Write(p)
}

func (w recWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// The super peer relays only ciphertext: a marker sent through a relayed
// connection never appears in the bytes it handled.
func TestRelaySeesOnlyCiphertext(t *testing.T) {
	sp := superpeer.New(superpeer.Config{})
	rec := &recorder{}
	s := sptest.Start(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, relay.PathPrefix) {
			r.Body = recBody{r.Body, rec}
			w = recWriter{w, rec}
		}
		sp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { sp.Close() })
	// Both devices without UDP to the super peer: HTTP/2 legs, whose every
	// byte passes the recorder.
	blocked := "https://" + sptest.UDPBlocked(t, addrOf(s.H2URL)).String()
	h2Only := func(c *Config) { c.SuperPeers = []string{blocked}; c.RelayOnly = true }
	a, b := newDevice(t, s, h2Only), newDevice(t, s, h2Only)
	echo(t, b)
	c := dial(t, a, b)
	const marker = "NETSODY-PLAINTEXT-MARKER-7f3a9c"
	msg := strings.Repeat(marker, 2000) // 62 kB
	roundTrip(t, c, msg)
	if p := c.Path(); p.Kind != PathRelay || p.Transport != rendezvous.TransportH2 {
		t.Fatalf("path %s, want a relay over HTTP/2", p)
	}
	time.Sleep(100 * time.Millisecond)
	rec.mu.Lock()
	seen := rec.buf.Len()
	found := bytes.Contains(rec.buf.Bytes(), []byte(marker)) || bytes.Contains(rec.buf.Bytes(), []byte(marker[:12]))
	rec.mu.Unlock()
	if seen < 2*len(msg) {
		t.Fatalf("the recorder saw %d bytes, less than the %d sent both ways: it is not on the path", seen, 2*len(msg))
	}
	if found {
		t.Fatal("the marker appears in the bytes the super peer relayed")
	}
	t.Logf("the relay handled %d bytes; the marker is not among them", seen)
}
