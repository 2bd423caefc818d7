package relay

import (
	"maps"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/netsody/superpeer/identity"
)

// The operator's view: relayed traffic by transport, for metrics, and the
// relay sessions now, for an embedder's admin API (caddymodule). Nothing
// here is on a datagram's path but the two counters deliver adds to.

// Transport is how the relay delivered datagrams to a device; it labels
// metrics and the admin API's relay sessions.
type Transport int

const (
	// TransportH3: QUIC datagrams beside an HTTP/3 extended CONNECT.
	TransportH3 Transport = iota
	// TransportH3Capsule: DATAGRAM capsules in a streamed POST on HTTP/3.
	TransportH3Capsule
	// TransportH2: DATAGRAM capsules on HTTP/2 (extended CONNECT or POST).
	TransportH2
	// TransportFastPath: the fast path's UDP packets (fastpath.go).
	TransportFastPath
	numTransports
)

// String returns the transport as a metric label.
func (t Transport) String() string {
	switch t {
	case TransportH3:
		return "h3"
	case TransportH3Capsule:
		return "h3_capsule"
	case TransportH2:
		return "h2"
	case TransportFastPath:
		return "fast_path"
	}
	return "unknown"
}

// Transports lists every transport, for metrics.
func Transports() []Transport {
	ts := make([]Transport, numTransports)
	for i := range ts {
		ts[i] = Transport(i)
	}
	return ts
}

// legTransport is the transport of a leg of kind k on request r.
func legTransport(k legKind, r *http.Request) Transport {
	switch {
	case k == kindDatagram:
		return TransportH3
	case r.ProtoMajor == 3:
		return TransportH3Capsule
	}
	return TransportH2
}

// traffic counts datagrams and their payload bytes.
type traffic struct {
	datagrams atomic.Uint64
	bytes     atomic.Uint64
}

func (t *traffic) add(n int) {
	t.datagrams.Add(1)
	t.bytes.Add(uint64(n))
}

// Delivered returns the datagrams, and their payload bytes, the relay
// delivered to devices over transport t.
func (s *Stats) Delivered(t Transport) (datagrams, bytes uint64) {
	return s.byTransport[t].datagrams.Load(), s.byTransport[t].bytes.Load()
}

// delivered counts a datagram of n payload bytes delivered to l's device
// over t: in the totals, by transport, and in the leg's own count.
func (l *leg) delivered(t Transport, n int) {
	l.stats.Datagrams.Add(1)
	l.stats.Bytes.Add(uint64(n))
	l.stats.byTransport[t].add(n)
	l.got.add(n)
}

// LegInfo is one device's half of a relay session.
type LegInfo struct {
	Peer      identity.PeerID
	Transport Transport
	// FastPath is set while the leg's device takes its datagrams on the
	// fast path.
	FastPath bool
	// Datagrams and Bytes (payload) the relay delivered to this device.
	Datagrams, Bytes uint64
}

// SessionInfo is one relay session: A's leg, and B's once bridged. A
// waiting session has only A's, with B the peer it waits for.
type SessionInfo struct {
	Bridged bool
	A       LegInfo
	B       LegInfo // only B.Peer while waiting
	// Started is when the older leg's request came.
	Started time.Time
}

// SessionList returns the relay sessions, oldest first: bridged ones once
// (the two legs together) and waiting ones. It walks the legs once.
func (s *Server) SessionList() []SessionInfo {
	s.mu.Lock()
	legs := slices.Collect(maps.Keys(s.legs))
	s.mu.Unlock()
	type key struct{ from, to identity.PeerID }
	bridged := make(map[key]*leg)
	var list []SessionInfo
	for _, l := range legs {
		l.mu.Lock()
		paired, ended := l.q != nil, l.why != ""
		l.mu.Unlock()
		switch {
		case ended:
		case !paired:
			list = append(list, SessionInfo{A: l.info(), B: LegInfo{Peer: l.target}, Started: l.started})
		default:
			bridged[key{l.peer, l.target}] = l
		}
	}
	for k, l := range bridged {
		other := bridged[key{k.to, k.from}]
		if other == nil || slices.Compare(k.from[:], k.to[:]) > 0 {
			continue // its counterpart is ending, or the pair is listed from the other side
		}
		started := l.started
		if other.started.Before(started) {
			started = other.started
		}
		list = append(list, SessionInfo{Bridged: true, A: l.info(), B: other.info(), Started: started})
	}
	slices.SortFunc(list, func(a, b SessionInfo) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return slices.Compare(a.A.Peer[:], b.A.Peer[:])
	})
	return list
}

func (l *leg) info() LegInfo {
	fast := false
	if b := l.fast.Load(); b != nil {
		fast = b.to(time.Now().UnixNano()) != nil
	}
	return LegInfo{Peer: l.peer, Transport: l.transport, FastPath: fast, Datagrams: l.got.datagrams.Load(), Bytes: l.got.bytes.Load()}
}

// Config returns the configuration in force, defaults filled in.
func (s *Server) Config() Config { return *s.config() }
