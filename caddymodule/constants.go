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

// The HTTP/3 endpoint's steering through a reload (steer.go).
const (
	// connIDLen is the endpoint's connection IDs' length: a 2-byte
	// marker and 6 random bytes, as unguessable as quic-go's default 4.
	connIDLen = 8
	// maxReusePortSockets bounds the probing for the endpoint's index in
	// its SO_REUSEPORT group: Caddy puts one socket per config there, and
	// a reload overlaps two configs.
	maxReusePortSockets = 8
	// steerProbeWait is how long a probe over loopback may take to
	// arrive: far longer than it does, even under load, and short enough
	// that a probe that went to another socket delays the drain little.
	steerProbeWait = 100 * time.Millisecond
	// probesPerIndex is how many probes an index gets before the next:
	// a probe is lost only when the socket's queue overflows.
	probesPerIndex = 2
	// probeNonceLen makes a probe the endpoint's own, not a packet a
	// stranger sent.
	probeNonceLen = 16
)
