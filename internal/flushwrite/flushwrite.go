// Package flushwrite writes to a long-lived HTTP response — a rendezvous
// session's frames, a relay leg's capsules — so that the bytes go out now
// and a device that stops reading cannot hold the writer forever.
package flushwrite

import (
	"net/http"
	"time"
)

// Write writes b to w and flushes it, giving up after timeout; rc is w's
// ResponseController. The write deadline is set around this write only
// and cleared after it: on HTTP/2 a deadline is a timer that resets the
// stream even when no write is in flight.
func Write(w http.ResponseWriter, rc *http.ResponseController, b []byte, timeout time.Duration) error {
	_ = rc.SetWriteDeadline(time.Now().Add(timeout))
	_, err := w.Write(b)
	if err == nil {
		err = rc.Flush()
	}
	_ = rc.SetWriteDeadline(time.Time{})
	return err
}
