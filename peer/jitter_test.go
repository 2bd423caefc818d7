package peer

import (
	"testing"
	"time"
)

// The redial waits of a node's devices spread over [d/2, 3d/2): not one
// instant for all of them.
func TestJitterSpreadsRedials(t *testing.T) {
	if jitter(0) != 0 {
		t.Fatal("no wait became a wait")
	}
	seen := make(map[time.Duration]bool)
	lo, hi := sessionRedial, time.Duration(0)
	for range 1000 {
		w := jitter(sessionRedial)
		if w < sessionRedial/2 || w >= sessionRedial*3/2 {
			t.Fatalf("jitter(%v) = %v, outside [%v, %v)", sessionRedial, w, sessionRedial/2, sessionRedial*3/2)
		}
		seen[w] = true
		lo, hi = min(lo, w), max(hi, w)
	}
	// 1000 draws over 500 ms: all but certainly more than a quarter of it
	// apart, and many distinct.
	if hi-lo < sessionRedial/4 || len(seen) < 100 {
		t.Fatalf("1000 waits span %v..%v with %d distinct: not spread", lo, hi, len(seen))
	}
}
