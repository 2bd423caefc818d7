package caddymodule

import "time"

// Every number that shapes the Caddy adapter's behaviour, each with its
// reason. docs/CONFIG.md's tables name these constants; keep the two in
// step.

// Admission (admission*.go).
const (
	// maxAllowlistFile bounds an allowlist file: a million peer IDs at 65
	// bytes a line, and no more read into memory at a reload.
	maxAllowlistFile = 64 << 20
	// DefaultAdmissionTimeout bounds an http admission callout, waiting
	// for a free callout included: a registration waits for it, and it
	// must end well within rendezvous.DefaultRegisterTimeout.
	DefaultAdmissionTimeout = 2 * time.Second
	// DefaultAdmissionConcurrency caps an http module's callouts at once:
	// a flood of registrations must not become a flood of requests to the
	// admission service.
	DefaultAdmissionConcurrency = 16
	// DefaultAdmissionCacheSize caps an http module's cached answers, a
	// hundred bytes each.
	DefaultAdmissionCacheSize = 4096
	// DefaultAdmissionCacheTTL is how long an answer is kept: a device
	// that reconnects within it costs no callout, and a changed answer
	// applies within it.
	DefaultAdmissionCacheTTL = time.Minute
	// maxAdmissionReason is how much of a refusing answer's body becomes
	// the device's reason: one line of it, within the error frame's
	// rendezvous.MaxErrorMessage.
	maxAdmissionReason = 128
)

// The admin API (admin.go) and the operator's deny list (operator.go).
const (
	// maxDenyEntries bounds the deny list, which every registration scans:
	// a longer list belongs in an allowlist file or a firewall.
	maxDenyEntries = 4096
	// defaultAdminPageLimit is a page of devices or relay sessions when the
	// request names no limit.
	defaultAdminPageLimit = 100
	// maxAdminPageLimit bounds a page: one answer stays under a megabyte
	// or so, however many devices there are.
	maxAdminPageLimit = 1000
	// maxAdminBody bounds a write request's JSON body, which holds one
	// peer ID or prefix.
	maxAdminBody = 4 << 10
)
