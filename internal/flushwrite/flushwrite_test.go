package flushwrite

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Each write reaches the client at once, and the deadline of one write
// does not outlive it: a write after the first one's deadline has passed
// still goes through on HTTP/2, where a deadline left set would reset the
// stream.
func TestWrite(t *testing.T) {
	const timeout = 50 * time.Millisecond
	next := make(chan struct{})
	errs := make(chan error, 2)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		errs <- Write(w, rc, []byte("one\n"), timeout)
		<-next
		errs <- Write(w, rc, []byte("two\n"), timeout)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	c := srv.Client()
	defer c.CloseIdleConnections()
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("%s, want HTTP/2", resp.Proto)
	}
	lines := bufio.NewReader(resp.Body)
	if line, err := lines.ReadString('\n'); line != "one\n" || err != nil {
		t.Fatalf("first line %q, %v: not flushed", line, err)
	}
	time.Sleep(3 * timeout) // past the first write's deadline
	close(next)
	if line, err := lines.ReadString('\n'); line != "two\n" || err != nil {
		t.Fatalf("second line %q, %v", line, err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
