package main

import (
	"context"
	"fmt"
	"os"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/peer"
)

// reporter prints on stderr, one line each, what the device's events
// say: the path to one peer (connect, bench: "path: ..."), or the path to
// every peer and each super peer's state changes (listen). A super peer
// that the device keeps failing to reach is reported once, not at each
// retry. It watches the device's events from newReporter on; its
// goroutine prints them from start to Close.
type reporter struct {
	only identity.PeerID // if not zero, report this peer alone
	w    *peer.Watcher
	stop context.CancelFunc // nil before start
	done chan struct{}

	// Owned by the goroutine: what was printed last.
	paths      map[identity.PeerID]string
	superPeers map[string]superPeerSeen
}

// superPeerSeen is a super peer's state as last printed.
type superPeerSeen struct {
	up                  bool
	transport, observed string
}

func newReporter(d *peer.Device, only identity.PeerID) *reporter {
	return &reporter{
		only:       only,
		w:          d.Watch(),
		done:       make(chan struct{}),
		paths:      make(map[identity.PeerID]string),
		superPeers: make(map[string]superPeerSeen),
	}
}

// start prints, from now on, the events since newReporter.
func (r *reporter) start() {
	var ctx context.Context
	ctx, r.stop = context.WithCancel(context.Background())
	go r.run(ctx)
}

// Close prints what happened before it, and stops.
func (r *reporter) Close() {
	if r.stop == nil {
		r.w.Close()
		return
	}
	r.stop()
	<-r.done
}

func (r *reporter) run(ctx context.Context) {
	defer close(r.done)
	defer r.w.Close()
	for {
		ev, err := r.w.Next(ctx) // the events before ctx ended come first
		if err != nil {
			return
		}
		switch ev := ev.(type) {
		case peer.PathEvent:
			r.path(ev.Peer, ev.Path)
		case peer.SuperPeerEvent:
			if r.only.IsZero() {
				r.superPeer(ev.Status)
			}
		}
	}
}

// path reports a peer's new path; a first path of none is no news.
func (r *reporter) path(id identity.PeerID, p peer.Path) {
	if !r.only.IsZero() && id != r.only {
		return
	}
	now, was := p.String(), r.paths[id]
	if now == was || (was == "" && p.Kind == peer.PathNone) {
		return
	}
	r.paths[id] = now
	if r.only.IsZero() {
		fmt.Fprintf(os.Stderr, "peer %s: path %s\n", id.Short(), now)
	} else {
		fmt.Fprintf(os.Stderr, "path: %s\n", now)
	}
}

// superPeer reports when a super peer is reached, when its transport or
// the address it sees this device at (the NAT rebound) changes, and when
// it cannot be reached: the first failure after it was up, or before it
// ever was.
func (r *reporter) superPeer(sp peer.SuperPeerStatus) {
	was, known := r.superPeers[sp.URL]
	switch {
	case sp.Connected && !was.up:
		fmt.Fprintf(os.Stderr, "super peer %s: connected over %s (%s), seen as %s\n", sp.URL, sp.Transport, sp.Family, sp.Observed)
	case sp.Connected && sp.Transport != was.transport && sp.TransportReason != "":
		fmt.Fprintf(os.Stderr, "super peer %s: now over %s (%s), seen as %s\n", sp.URL, sp.Transport, sp.TransportReason, sp.Observed)
	case sp.Connected && sp.Transport != was.transport:
		fmt.Fprintf(os.Stderr, "super peer %s: now over %s, seen as %s\n", sp.URL, sp.Transport, sp.Observed)
	case sp.Connected && sp.Observed != was.observed:
		fmt.Fprintf(os.Stderr, "super peer %s: now sees this device as %s (its NAT mapping changed)\n", sp.URL, sp.Observed)
	case !sp.Connected && sp.Error != "" && (!known || was.up):
		what := "cannot reach"
		if was.up {
			what = "lost"
		}
		fmt.Fprintf(os.Stderr, "netsody-peer: %s super peer %s: %s; still trying\n", what, sp.URL, oneLine(sp.Error))
	default:
		return
	}
	r.superPeers[sp.URL] = superPeerSeen{up: sp.Connected, transport: sp.Transport, observed: sp.Observed}
}
