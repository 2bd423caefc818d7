package relay

import (
	"sync/atomic"
	"testing"
)

// A datagram sent at once, past the queue (takeIdle), counts towards the
// same bounds as a queued one while it is in flight: the server's total
// (Config.MaxQueuedBytes) refuses it, and while it is in flight nothing
// else is sent past the queue, which holds what comes meanwhile.
func TestTakeIdleBounded(t *testing.T) {
	cfg := Config{MaxQueuedBytes: 4 * pooledDatagram}.withDefaults()
	var total atomic.Int64
	q := newQueue(&cfg, &total)

	total.Store(cfg.MaxQueuedBytes - pooledDatagram + 1) // other legs' bytes
	if q.takeIdle(pooledDatagram) {
		t.Fatal("sent past the queue over the server's total")
	}
	if total.Load() != cfg.MaxQueuedBytes-pooledDatagram+1 {
		t.Fatalf("a refused datagram left %d bytes counted", total.Load())
	}
	total.Store(0)

	if !q.takeIdle(pooledDatagram) {
		t.Fatal("an idle queue refused")
	}
	if total.Load() != pooledDatagram {
		t.Fatalf("%d bytes counted in flight, want %d", total.Load(), pooledDatagram)
	}
	if q.takeIdle(pooledDatagram) {
		t.Fatal("sent past the queue while another datagram was in flight")
	}
	if q.push(item{b: newDatagram(100)}) != pushed {
		t.Fatal("not queued meanwhile")
	}
	q.release(pooledDatagram)
	if q.takeIdle(pooledDatagram) {
		t.Fatal("sent past a queued datagram")
	}
	it, _ := q.next()
	q.release(cap(it.b))
	q.close()
	if q.takeIdle(pooledDatagram) || total.Load() != 0 {
		t.Fatalf("closed queue: %d bytes counted", total.Load())
	}
}
