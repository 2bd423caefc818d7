package relay

// Drain refuses new relay sessions from now on (refuseDraining: 503 with
// Retry-After), keeps those that run, and returns a channel closed once
// none is left: their devices moved them to other super peers, or they
// ended. The super peer drains so (superpeer.Server.Drain), then closes.
// Later calls return the same channel.
func (s *Server) Drain() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drained == nil {
		s.drained = make(chan struct{})
		s.closeIfDrainedLocked()
	}
	return s.drained
}

// closeIfDrainedLocked closes drained once a drain has begun and no leg
// is left.
func (s *Server) closeIfDrainedLocked() {
	if s.drained != nil && len(s.legs) == 0 && !s.drainedClosed {
		s.drainedClosed = true
		close(s.drained)
	}
}
