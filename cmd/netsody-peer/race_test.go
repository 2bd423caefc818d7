//go:build race

package main

// The binary under test is built with the race detector when the tests
// run with it.
func init() { buildFlags = append(buildFlags, "-race") }
