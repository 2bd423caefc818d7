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
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: Validate() = %v", tc.cfg, err)
		}
	}
	if got := (Config{}).withDefaults().WriteTimeout; got != DefaultWriteTimeout {
		t.Errorf("default write timeout %v, want %v", got, DefaultWriteTimeout)
	}
}
