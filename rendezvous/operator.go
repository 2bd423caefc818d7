package rendezvous

import (
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/netsody/superpeer/identity"
)

// The operator's view: what an embedder (caddymodule's admin API) shows
// of the sessions, and how it ends them. Nothing here is on a device's
// path; each call walks the sessions once, so it costs O(sessions).

// SessionInfo is one session as the operator sees it.
type SessionInfo struct {
	// Peer is the device's peer ID; zero until it registered.
	Peer identity.PeerID
	// Registered is set once the device registered (and until its
	// session ends or a newer one replaces it).
	Registered bool
	// RelayOnly says that the registration is for relays only (a relay
	// node's session, Register.RelayOnly), beside any ordinary one.
	RelayOnly bool
	// Remote is the device's address as the super peer sees it now.
	Remote netip.AddrPort
	// Transport is "h3" or "h2".
	Transport string
	// Connected is when the session's connection began (ConnStarted), or
	// its request; RegisteredAt when it registered (zero before).
	Connected    time.Time
	RegisteredAt time.Time
}

// SessionList returns every session, registered or not, oldest
// connection first (then by peer ID), so that an embedder can page
// through it.
func (s *Server) SessionList() []SessionInfo {
	s.mu.Lock()
	all := slices.Collect(maps.Keys(s.sessions))
	// The fields a registration sets may be read once srv.mu showed the
	// session in byPeer (see session); the others' are the reader's.
	registered := make(map[*session]*Registration, len(s.byPeer)+len(s.relayOnly))
	for _, sess := range s.registeredLocked(nil) {
		registered[sess] = sess.reg
	}
	s.mu.Unlock()
	list := make([]SessionInfo, 0, len(all))
	for _, sess := range all {
		info := SessionInfo{Remote: sess.observed(), Transport: sess.transport, Connected: sess.connStart}
		if reg := registered[sess]; reg != nil && sess.live() {
			info.Peer, info.Registered, info.RegisteredAt, info.RelayOnly = reg.peer, true, reg.since, sess.relayOnly
		}
		list = append(list, info)
	}
	slices.SortFunc(list, func(a, b SessionInfo) int {
		if c := a.Connected.Compare(b.Connected); c != 0 {
			return c
		}
		return slices.Compare(a.Peer[:], b.Peer[:])
	})
	return list
}

// DeviceCount is how many registered devices use one IP version and
// transport.
type DeviceCount struct {
	IPVersion int    // 4 or 6
	Transport string // "h3" or "h2"
	Devices   int
}

// DeviceCounts returns the registered devices by IP version and
// transport, in a fixed order, every combination present (for metrics);
// a device's session for relays only counts apart from its ordinary one.
func (s *Server) DeviceCounts() []DeviceCount {
	counts := []DeviceCount{{4, "h2", 0}, {4, "h3", 0}, {6, "h2", 0}, {6, "h3", 0}}
	s.mu.Lock()
	regs := s.registeredLocked(nil)
	s.mu.Unlock()
	for _, sess := range regs {
		i := slices.IndexFunc(counts, func(c DeviceCount) bool {
			return c.IPVersion == IPVersion(sess.observed().Addr()) && c.Transport == sess.transport
		})
		if i >= 0 {
			counts[i].Devices++
		}
	}
	return counts
}

// IPVersion is 4 for an IPv4 (or IPv4-mapped) address, else 6.
func IPVersion(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 4
	}
	return 6
}

// EndRegistered ends every registered session for which match is true
// with ErrCodeEndedByOperator and message, and returns how many it
// ended (a device's session for relays only counts apart from its
// ordinary one). What the registrations vouched for (relay sessions) ends with
// them. A device whose session ended may register again, unless
// admission now refuses it.
func (s *Server) EndRegistered(match func(peer identity.PeerID, remote netip.AddrPort) bool, message string) int {
	s.mu.Lock()
	regs := s.registeredLocked(nil)
	s.mu.Unlock()
	n := 0
	for _, sess := range regs {
		if p := sess.peer; sess.live() && match(p, sess.observed()) {
			sess.end(&Error{Code: ErrCodeEndedByOperator, Peer: p, Message: message})
			n++
		}
	}
	return n
}

// Config returns the configuration in force, defaults filled in.
func (s *Server) Config() Config { return *s.config() }
