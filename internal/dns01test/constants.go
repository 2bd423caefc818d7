package dns01test

import "time"

// The test's numbers, each with its reason. The package has tests only;
// these are here so that they are named once.
const (
	// issueTimeout bounds the whole DNS-01 issuance, from Caddy's start to
	// a certificate on its port: account, order, TXT record, Caddy's first
	// propagation check (2s after creating the record), pebble's
	// validation and finalisation take a few seconds on loopback.
	issueTimeout = 45 * time.Second
	// propagationTimeout is Caddy's limit on seeing the TXT record at the
	// resolver; it must end before issueTimeout so that its error, not the
	// test's, is what a failure shows.
	propagationTimeout = 30 * time.Second
	// helperTimeout bounds each start of pebble or challtestsrv and each
	// call to their APIs.
	helperTimeout = 10 * time.Second
	// pollInterval is how often the test looks again while it waits.
	pollInterval = 100 * time.Millisecond
	// bodyLimit bounds every HTTP body the test and its fakes read.
	bodyLimit = 1 << 20
	// dnsMaxUDP is the largest DNS message over UDP without EDNS0 plus room
	// for EDNS0's usual 1232 bytes.
	dnsMaxUDP = 4096
	// dnsTTL is the SOA's TTL and timers: short, nothing caches for long.
	dnsTTL = 60
	// dnsRelayTimeout bounds one query relayed to challtestsrv.
	dnsRelayTimeout = 2 * time.Second
)
