package rendezvous

import "time"

// wakeups multiplexes a session's one timer over its two deadlines: the
// next keepalive ping, and the latest look at the device's address that a
// frame asked for (see session.heardFrom). One timer, not two, keeps an
// idle session small. The session's mu guards it.
type wakeups struct {
	timer   *time.Timer
	at      time.Time // when timer fires
	ping    time.Time // when the next keepalive ping is due
	follow  time.Time // the latest look asked for
	stopped bool      // the session ended: the timer is not armed again
}

// start arms the timer to call f at once, with a ping due: the first
// keepalive goes at registration.
func (w *wakeups) start(now time.Time, f func()) {
	if w.stopped {
		return
	}
	w.ping, w.at = now, now
	w.timer = time.AfterFunc(0, f)
}

// pingDue reports whether the keepalive ping is due at now.
func (w *wakeups) pingDue(now time.Time) bool { return !now.Before(w.ping) }

// pingAt sets when the next ping is due; next arms the timer for it.
func (w *wakeups) pingAt(t time.Time) { w.ping = t }

// followAt asks for a wake-up at t to look at the device's address. A
// later look supersedes a pending earlier one, which then wakes the timer
// only to re-arm it (next).
func (w *wakeups) followAt(now, t time.Time) {
	if w.timer == nil {
		return
	}
	if t.After(w.follow) {
		w.follow = t
	}
	if t.Before(w.at) {
		w.arm(now, t)
	}
}

// next arms the timer, which fired at now, for the earlier of the next
// ping and a look still pending.
func (w *wakeups) next(now time.Time) {
	at := w.ping
	if now.Before(w.follow) && w.follow.Before(at) {
		at = w.follow
	}
	w.arm(now, at)
}

func (w *wakeups) arm(now, at time.Time) {
	if w.stopped {
		return
	}
	w.timer.Reset(at.Sub(now))
	w.at = at
}

func (w *wakeups) stop() {
	w.stopped = true
	if w.timer != nil {
		w.timer.Stop()
	}
}
