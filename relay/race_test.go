//go:build race

package relay

// raceEnabled: under the race detector sync.Pool drops a share of what
// is put back (on purpose, to find misuse), so x/net's batch writes,
// which pool their message headers, allocate now and then; allocation
// counts mean nothing there.
const raceEnabled = true
