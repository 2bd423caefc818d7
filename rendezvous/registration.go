package rendezvous

import (
	"context"
	"errors"
	"time"

	"github.com/netsody/superpeer/identity"
)

// Registration is a device's registration on one connection: the proof,
// checked once by FrameRegister's signature over that connection's TLS
// exporter, that requests on the connection come from the device. Other
// services of the super peer (the relay) take it from
// Server.Authenticate and end what they serve the device when it ends:
// the device's session expired, was replaced by a newer one, or left.
type Registration struct {
	peer   identity.PeerID
	since  time.Time
	sess   *session // whose lookups Server.LookUp charges
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func newRegistration(s *session) *Registration {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &Registration{peer: s.peer, since: time.Now(), sess: s, ctx: ctx, cancel: cancel}
}

// PeerID is the registered device.
func (r *Registration) PeerID() identity.PeerID { return r.peer }

// Done is closed when the registration ends.
func (r *Registration) Done() <-chan struct{} { return r.ctx.Done() }

// Context ends with the registration, so that what depends on it can be
// tied to it without a goroutine (context.AfterFunc).
func (r *Registration) Context() context.Context { return r.ctx }

// EndReason says why the registration ended, in words for the device's
// peers; it is empty while the registration lasts.
func (r *Registration) EndReason() string {
	if r.ctx.Err() == nil {
		return ""
	}
	return context.Cause(r.ctx).Error()
}

// end ends the registration with reason; later calls do nothing.
func (r *Registration) end(reason string) { r.cancel(errors.New(reason)) }
