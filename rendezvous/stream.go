package rendezvous

import (
	"io"
	"net/http"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/netsody/superpeer/internal/flushwrite"
)

// stream is a session's two frame streams: the request body in, the
// response body out.
type stream interface {
	io.Reader
	// write writes b to the device within timeout and flushes it.
	write(b []byte, timeout time.Duration) error
	// closeRead unblocks a pending Read; it may be called from any
	// goroutine.
	closeRead()
	// finish ends the response once the session is over.
	finish()
}

// httpStream is a session on a request handled the usual way: the
// handler's goroutine stays in ServeHTTP for the session's life.
type httpStream struct {
	body io.ReadCloser
	w    http.ResponseWriter
	rc   *http.ResponseController
}

func (s *httpStream) Read(b []byte) (int, error) { return s.body.Read(b) }

func (s *httpStream) write(b []byte, timeout time.Duration) error {
	return flushwrite.Write(s.w, s.rc, b, timeout)
}

func (s *httpStream) closeRead() { s.body.Close() }
func (s *httpStream) finish()    {}

// h3Stream is a session on an HTTP/3 request stream taken over from the
// HTTP server (http3.HTTPStreamer), so that ServeHTTP returns and the
// server's handler chain — Caddy's, with its deep stack and per-request
// state — is not held for the session's life.
type h3Stream struct{ str *http3.Stream }

func (s *h3Stream) Read(b []byte) (int, error) { return s.str.Read(b) }

func (s *h3Stream) write(b []byte, timeout time.Duration) error {
	_ = s.str.SetWriteDeadline(time.Now().Add(timeout))
	_, err := s.str.Write(b)
	_ = s.str.SetWriteDeadline(time.Time{})
	return err
}

func (s *h3Stream) closeRead() { s.str.CancelRead(quic.StreamErrorCode(http3.ErrCodeNoError)) }
func (s *h3Stream) finish()    { s.str.Close() }
