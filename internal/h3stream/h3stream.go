// Package h3stream finds the HTTP/3 stream behind a response writer.
package h3stream

import (
	"net/http"

	"github.com/quic-go/quic-go/http3"
)

// Of returns the http3.HTTPStreamer behind w, unwrapping the response
// writers that servers (Caddy, say) wrap around quic-go's, or nil for a
// response that is not HTTP/3. masque-go's own proxy type-asserts without
// unwrapping, which is why this exists.
func Of(w http.ResponseWriter) http3.HTTPStreamer {
	for {
		if s, ok := w.(http3.HTTPStreamer); ok {
			return s
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil
		}
		w = u.Unwrap()
	}
}
