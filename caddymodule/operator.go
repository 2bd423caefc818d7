package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

// operatorState is what the operator changes at run time through the
// admin API (admin.go) and what the metrics count of admission: it lives
// with the process's super peer (pooledSuperPeer), so a reload keeps it,
// and goes with it when the last config using the super peer stops. It is
// not written to disk: a restart forgets it.
type operatorState struct {
	deny denyList

	// draining is set while the super peer stops taking devices (a drain,
	// or Caddy stopping); the health route answers 503 then.
	draining atomic.Pointer[string]

	kicks atomic.Uint64 // devices the operator ended: kicks and denies

	decisionsMu sync.Mutex // guards decisions
	// decisions counts admission decisions by module and result; its keys
	// are the module IDs loaded in this process, so it stays small.
	decisions map[decisionKey]*atomic.Uint64
}

// decisionKey labels an admission decision in the metrics.
type decisionKey struct{ module, result string }

// Admission decision results.
const (
	resultAdmitted = "admitted"
	resultRefused  = "refused"
	resultTryLater = "try_later"
)

// decisionResult is an Admit error's result label.
func decisionResult(err error) string {
	switch {
	case err == nil:
		return resultAdmitted
	case errors.Is(err, rendezvous.ErrTryLater), errors.Is(err, context.DeadlineExceeded):
		return resultTryLater
	}
	return resultRefused
}

// decided counts one decision of module.
func (o *operatorState) decided(module string, err error) {
	k := decisionKey{module, decisionResult(err)}
	o.decisionsMu.Lock()
	n := o.decisions[k]
	if n == nil {
		if o.decisions == nil {
			o.decisions = make(map[decisionKey]*atomic.Uint64)
		}
		n = new(atomic.Uint64)
		o.decisions[k] = n
	}
	o.decisionsMu.Unlock()
	n.Add(1)
}

// decisionCounts returns the decisions counted so far.
func (o *operatorState) decisionCounts() map[decisionKey]uint64 {
	o.decisionsMu.Lock()
	defer o.decisionsMu.Unlock()
	m := make(map[decisionKey]uint64, len(o.decisions))
	for k, n := range o.decisions {
		m[k] = n.Load()
	}
	return m
}

// denyModule labels the deny list's decisions in the metrics.
const denyModule = "operator_deny"

// admit is rendezvous.Config.Admit for a config whose admission chain's
// is chain (nil: admits all): the deny list first, then the chain.
func (o *operatorState) admit(chain func(context.Context, rendezvous.AdmissionRequest) error) func(context.Context, rendezvous.AdmissionRequest) error {
	return func(ctx context.Context, req rendezvous.AdmissionRequest) error {
		if e := o.deny.match(req.Peer, req.Remote.Addr()); e != nil {
			err := fmt.Errorf("denied by the super peer's operator (%s %s)", e.Kind, e.Entry)
			o.decided(denyModule, err)
			return err
		}
		if chain == nil {
			return nil
		}
		return chain(ctx, req)
	}
}

// drain marks the super peer as draining, for reason: the health route
// answers 503 from now on. The drain (a reload that removes the super
// peer, or Caddy stopping) calls it before it tells devices to move.
func (o *operatorState) drain(reason string) { o.draining.Store(&reason) }

// drainReason is why the super peer drains, or "" while it serves.
func (o *operatorState) drainReason() string {
	if r := o.draining.Load(); r != nil {
		return *r
	}
	return ""
}

// denyList is the peer IDs and address prefixes the operator denied.
type denyList struct {
	mu      sync.Mutex // guards entries
	entries []DenyEntry
}

// DenyEntry is one entry of the deny list, as the admin API shows it.
type DenyEntry struct {
	// Kind is "peer_id" or "prefix".
	Kind string `json:"kind"`
	// Entry is the peer ID in lowercase hex, or the prefix in CIDR
	// notation (masked: 10.1.2.3/8 is 10.0.0.0/8).
	Entry string `json:"entry"`
	// Added is when the operator added it.
	Added time.Time `json:"added,omitzero"`

	peer   identity.PeerID
	prefix netip.Prefix
}

// Deny list entry kinds.
const (
	kindPeerID = "peer_id"
	kindPrefix = "prefix"
)

// parseDenyEntry reads a peer ID, or an address prefix in CIDR notation
// (a bare address is its own /32 or /128).
func parseDenyEntry(kind, s string) (DenyEntry, error) {
	s = strings.TrimSpace(s)
	switch kind {
	case kindPeerID:
		p, err := identity.ParsePeerID(s)
		if err != nil {
			return DenyEntry{}, fmt.Errorf("peer_id %q: %w", s, err)
		}
		return DenyEntry{Kind: kind, Entry: p.String(), peer: p}, nil
	case kindPrefix:
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return DenyEntry{}, fmt.Errorf("prefix %q is neither a CIDR prefix (10.0.0.0/8, 2001:db8::/32) nor an address: %w", s, err)
			}
			pfx = netip.PrefixFrom(a, a.BitLen())
		}
		if pfx.Addr().Is4In6() {
			return DenyEntry{}, fmt.Errorf("prefix %q: write an IPv4 prefix in IPv4 notation (10.0.0.0/8)", s)
		}
		pfx = pfx.Masked()
		return DenyEntry{Kind: kind, Entry: pfx.String(), prefix: pfx}, nil
	}
	return DenyEntry{}, fmt.Errorf("unknown kind %q", kind)
}

// matches reports whether a device with peer ID p at address a is denied
// by e.
func (e *DenyEntry) matches(p identity.PeerID, a netip.Addr) bool {
	if e.Kind == kindPeerID {
		return e.peer == p
	}
	return e.prefix.Contains(a.Unmap())
}

// add adds e, unless it is there already; false if the list is full.
func (l *denyList) add(e DenyEntry) (added, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if slices.ContainsFunc(l.entries, func(x DenyEntry) bool { return x.Kind == e.Kind && x.Entry == e.Entry }) {
		return false, true
	}
	if len(l.entries) >= maxDenyEntries {
		return false, false
	}
	e.Added = time.Now().UTC().Truncate(time.Second)
	l.entries = append(l.entries, e)
	return true, true
}

// remove removes the entry of kind and text entry; false if absent.
func (l *denyList) remove(e DenyEntry) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.entries)
	l.entries = slices.DeleteFunc(l.entries, func(x DenyEntry) bool { return x.Kind == e.Kind && x.Entry == e.Entry })
	return len(l.entries) < n
}

// list returns the entries, oldest first.
func (l *denyList) list() []DenyEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.entries)
}

// match returns the entry that denies a device with peer ID p at address
// a, or nil. A linear scan: the list is short (maxDenyEntries), and it
// runs once a registration's signature verified.
func (l *denyList) match(p identity.PeerID, a netip.Addr) *DenyEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.entries {
		if l.entries[i].matches(p, a) {
			e := l.entries[i]
			return &e
		}
	}
	return nil
}
