package rendezvous

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/sptest"
)

// stalledSuperPeer registers every device, then never reads from it
// again: a hostile super peer that lets the device's writes pile up.
func stalledSuperPeer(t *testing.T) *sptest.Servers {
	mux := http.NewServeMux()
	mux.HandleFunc(Path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(VersionHeader, strconv.FormatUint(ProtocolVersion, 10))
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		rc.Flush()
		var hdr [frameHeaderLen]byte
		if _, err := readFrame(r.Body, &hdr); err != nil {
			return
		}
		w.Write((&Registered{Observed: netip.MustParseAddrPort("192.0.2.1:1"), Protocol: ours}).frame())
		rc.Flush()
		<-r.Context().Done()
	})
	return sptest.Start(t, "127.0.0.1", mux)
}

// A super peer that takes no frame ends the session after the write
// deadline (clientWriteTimeout), over either transport: the device's
// writers, which wait for each other, are not held, and the device dials
// again.
func TestStalledSuperPeerEndsSession(t *testing.T) {
	s := stalledSuperPeer(t)
	const timeout = 300 * time.Millisecond
	for _, tr := range []Transport{TransportH3, TransportH2} {
		t.Run(string(tr), func(t *testing.T) {
			url := s.H3URL
			if tr == TransportH2 {
				url = s.H2URL
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			sess, err := Dial(ctx, ClientConfig{Identity: newIdentity(t), URL: url, Transport: tr, TLSConfig: &tls.Config{RootCAs: s.Pool}, writeTimeout: timeout})
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			big := appendFrame(nil, FramePing, make([]byte, MaxPayload))
			done := make(chan error, 1)
			go func() {
				for range 1 << 16 { // 64 MiB: far more than any flow-control window
					if err := sess.writeFrame(big); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			select {
			case err := <-done:
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("writes ended with %v, want a deadline exceeded", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("a write to a super peer that reads nothing still blocks after 10 s")
			}
			select {
			case <-sess.Done():
			case <-time.After(time.Second):
				t.Fatal("the session did not end after its write timed out")
			}
			if err := sess.Answer(newIdentity(t).PeerID(), true); err == nil {
				t.Error("an answer on the ended session was written")
			}
		})
	}
}
