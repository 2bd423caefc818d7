// Package defaults fills a configuration's zero values: the packages'
// Config types take a zero (or negative, which Validate refuses) field to
// mean "the default".
package defaults

import "cmp"

// Set sets *v to d when *v is zero or less.
func Set[T cmp.Ordered](v *T, d T) {
	var zero T
	if *v <= zero {
		*v = d
	}
}
