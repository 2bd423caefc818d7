package natlab

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// While any lab exists, a watcher goroutine catches SIGINT and SIGTERM,
// removes every lab's namespaces and raises the signal again, so a test run
// stopped with ^C or by a CI timeout leaves nothing behind. It stops when the
// last lab closes (tests check for leaked goroutines).
var registry struct {
	mu   sync.Mutex // guards the following
	labs map[*Lab]struct{}
	stop chan struct{} // closed to stop the watcher
	done chan struct{} // closed when the watcher has stopped
}

// register adds l to the labs the watcher tears down, starting the watcher
// for the first lab.
func register(l *Lab) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if registry.labs == nil {
		registry.labs = make(map[*Lab]struct{})
	}
	if len(registry.labs) == 0 {
		sigc := make(chan os.Signal, 1)
		signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
		registry.stop = make(chan struct{})
		registry.done = make(chan struct{})
		go watchSignals(sigc, registry.stop, registry.done)
	}
	registry.labs[l] = struct{}{}
}

// unregister removes l, and stops the watcher after the last lab.
func unregister(l *Lab) {
	registry.mu.Lock()
	if _, ok := registry.labs[l]; !ok {
		registry.mu.Unlock()
		return
	}
	delete(registry.labs, l)
	if len(registry.labs) > 0 {
		registry.mu.Unlock()
		return
	}
	stop, done := registry.stop, registry.done
	registry.stop, registry.done = nil, nil
	registry.mu.Unlock()
	close(stop)
	<-done
}

func watchSignals(sigc chan os.Signal, stop, done chan struct{}) {
	defer close(done)
	defer signal.Stop(sigc)
	select {
	case <-stop:
		return
	case sig := <-sigc:
		registry.mu.Lock()
		labs := make([]*Lab, 0, len(registry.labs))
		for l := range registry.labs {
			labs = append(labs, l)
		}
		registry.mu.Unlock()
		for _, l := range labs {
			_ = l.teardown()
		}
		// Raise the signal again with our handler gone: the process ends
		// as it would have without the lab, or a handler of its own runs.
		signal.Stop(sigc)
		if s, ok := sig.(syscall.Signal); ok {
			_ = syscall.Kill(os.Getpid(), s)
		}
	}
}
