//go:build !race

package natlab

// e2eRace says, in the recorded results, whether the race detector ran.
const e2eRace = false
