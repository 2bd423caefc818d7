// Package dns01test proves the DNS-01 wiring that Caddyfile.example and the
// README show (`tls { dns cloudflare {env.CF_API_TOKEN} }`) end to end, with
// the real Caddy binary and no network beyond loopback: Debian's pebble as
// the ACME server, pebble-challtestsrv holding the TXT records, a small DNS
// server of the test's own in front of it (challtestsrv cannot answer SOA,
// and Caddy needs SOA to find the zone), and a fake Cloudflare API reached
// through a CONNECT proxy, since libdns/cloudflare's API URL is a constant.
//
// The package has tests only; this file exists for the package comment.
package dns01test
