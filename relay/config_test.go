package relay

import (
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{}, true},
		{Config{WriteTimeout: time.Second, PairTimeout: time.Second}, true},
		{Config{WriteTimeout: -1}, false},
		{Config{PairTimeout: -1}, false},
		{Config{QueueLen: -1}, false},
		{Config{Burst: 100, MaxDatagramSize: 1500}, false},
		{Config{MaxWaiting: -1}, false},
		{Config{QueueBytes: 2000}, false},                             // not two full datagrams
		{Config{QueueBytes: 1 << 20, MaxQueuedBytes: 1 << 19}, false}, // one queue over the total
		{Config{QueueBytes: 4000, MaxQueuedBytes: 1 << 20, StallTimeout: time.Second}, true},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: Validate() = %v", tc.cfg, err)
		}
	}
	if got := (Config{}).withDefaults().WriteTimeout; got != DefaultWriteTimeout {
		t.Errorf("default write timeout %v, want %v", got, DefaultWriteTimeout)
	}
}
