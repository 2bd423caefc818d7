package peer

import (
	"context"
	"net"
	"sync"

	"go.uber.org/zap"

	"github.com/netsody/superpeer/identity"
)

// A device publishes its changes as events: a path to a peer changed
// (PathEvent), or a super peer's session did (SuperPeerEvent). Any number
// of Watchers see them, each in the order they happened. Publishing never
// waits for a reader: each Watcher holds up to maxUnread events, and for a
// reader that falls further behind, the events of each peer and super
// peer coalesce to the latest, so it loses intermediate states, never the
// latest (unless more than maxUnread distinct ones changed meanwhile).
// Watchers own no goroutine: a reader calls Next, and Close (or the
// device's) ends the watch.
//
// Config.OnPathChange and Config.OnSuperPeer are served by a Watcher of
// the device's own, read by the goroutine startCallbacks starts.

// Event is a change a Watcher delivers: a PathEvent or a SuperPeerEvent.
type Event interface {
	// subject names what changed; an event of a subject may replace an
	// older unread one of the same subject.
	subject() subject
}

type subject struct {
	peer      identity.PeerID
	superPeer string
}

// PathEvent: the path to Peer is now Path.
type PathEvent struct {
	Peer identity.PeerID
	Path Path
}

// SuperPeerEvent: a session with a super peer came up, ended or changed
// transport, the super peer sees this device at a new address (its NAT
// rebound), or an attempt to reach it failed. Status is the super peer's
// status then.
type SuperPeerEvent struct {
	Status SuperPeerStatus
}

func (e PathEvent) subject() subject      { return subject{peer: e.Peer} }
func (e SuperPeerEvent) subject() subject { return subject{superPeer: e.Status.URL} }

// Watcher receives a device's events from the moment Watch made it.
type Watcher struct {
	dev   *Device
	ready chan struct{} // holds a token while unread is not empty, or when closed

	mu     sync.Mutex // guards the following
	unread []Event    // oldest first
	closed bool
}

// hub is the device's set of Watchers.
type hub struct {
	mu       sync.Mutex // guards watchers; taken before Watcher.mu
	watchers map[*Watcher]struct{}
}

// Watch starts a Watcher of the device's events. Its reader calls Next;
// Close ends it.
func (d *Device) Watch() *Watcher {
	w := &Watcher{dev: d, ready: make(chan struct{}, 1)}
	d.events.mu.Lock()
	defer d.events.mu.Unlock()
	if d.events.watchers == nil {
		d.events.watchers = make(map[*Watcher]struct{})
	}
	d.events.watchers[w] = struct{}{}
	return w
}

// Next returns the oldest unread event. When there is none, it waits for
// one until ctx is done (ctx.Err()), or the Watcher or the device is
// closed (net.ErrClosed); an event that came before either is still
// returned first.
func (w *Watcher) Next(ctx context.Context) (Event, error) {
	for {
		w.mu.Lock()
		if len(w.unread) > 0 {
			ev := w.unread[0]
			w.unread[0] = nil
			w.unread = w.unread[1:]
			w.mu.Unlock()
			return ev, nil
		}
		closed := w.closed
		w.mu.Unlock()
		if closed {
			return nil, net.ErrClosed
		}
		select {
		case <-w.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-w.dev.closed:
			w.Close() // the events published before the close are unread still
		}
	}
}

// Close ends the watch: Next returns the unread events, then
// net.ErrClosed.
func (w *Watcher) Close() {
	h := &w.dev.events
	h.mu.Lock()
	delete(h.watchers, w)
	h.mu.Unlock()
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.signal()
}

func (w *Watcher) signal() {
	select {
	case w.ready <- struct{}{}:
	default:
	}
}

// push queues an event. When the queue is full, it keeps only the latest
// event of each subject, in order; if every subject has one event only,
// the oldest goes.
func (w *Watcher) push(ev Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.signal()
	if len(w.unread) < maxUnread {
		w.unread = append(w.unread, ev)
		return
	}
	w.dev.log.Debug("events coalesced: a Watcher's reader is behind", zap.Int("unread", maxUnread))
	w.unread = append(w.unread, ev)
	latest := make(map[subject]int, len(w.unread))
	for i, e := range w.unread {
		latest[e.subject()] = i
	}
	kept := w.unread[:0]
	for i, e := range w.unread {
		if latest[e.subject()] == i {
			kept = append(kept, e)
		}
	}
	clear(w.unread[len(kept):])
	w.unread = kept
	if len(w.unread) > maxUnread {
		w.unread = append(w.unread[:0], w.unread[1:]...)
	}
}

// publish hands an event to every Watcher. It may be called with a
// peerState's or superPeer's mu held, and never blocks on a reader.
func (d *Device) publish(ev Event) {
	d.events.mu.Lock()
	defer d.events.mu.Unlock()
	for w := range d.events.watchers {
		w.push(ev)
	}
}

// startCallbacks serves Config.OnPathChange and Config.OnSuperPeer, if
// either is set, from a Watcher of the device's own, on one goroutine
// that stops when the device closes.
func (d *Device) startCallbacks() {
	onPath, onSuperPeer := d.cfg.OnPathChange, d.cfg.OnSuperPeer
	if onPath == nil && onSuperPeer == nil {
		return
	}
	w := d.Watch()
	d.goRun(func() {
		defer w.Close()
		for {
			ev, err := w.Next(d.ctx)
			if err != nil {
				return
			}
			switch ev := ev.(type) {
			case PathEvent:
				if onPath != nil {
					onPath(ev.Peer, ev.Path)
				}
			case SuperPeerEvent:
				if onSuperPeer != nil {
					onSuperPeer(ev.Status)
				}
			}
		}
	})
}

// WaitSuperPeer waits until the device has a session with some super
// peer, so that it can dial and be dialled. Its error, when ctx ends
// first, says for each super peer why it is not connected.
func (d *Device) WaitSuperPeer(ctx context.Context) error {
	_, err := d.anySuperPeer(ctx)
	return err
}
