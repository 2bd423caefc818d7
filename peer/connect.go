package peer

// Connections: Dial, with the introductions it asks for, and Accept.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/rendezvous"
)

// Conn is an end-to-end QUIC connection to a peer.
type Conn struct {
	*quic.Conn
	peer identity.PeerID
	ps   *peerState
}

// Peer is the peer ID at the other end, checked against its key.
func (c *Conn) Peer() identity.PeerID { return c.peer }

// Path is how the connection's packets travel now.
func (c *Conn) Path() Path { return c.ps.path() }

// Dial connects to a peer: it asks every super peer to introduce the two
// devices, opens the relay at once, punches in parallel, and returns the
// QUIC connection as soon as the handshake is done over whichever path
// works first. The other side's key must be peer. Dialling a peer allows
// it while the dial runs, and for good once it connects (as Allow). A
// peer that is offline, or does not accept this device, gives
// ErrUnavailable.
func (d *Device) Dial(ctx context.Context, peer identity.PeerID) (*Conn, error) {
	if peer == d.id {
		return nil, errors.New("peer: cannot connect to oneself")
	}
	done := d.policy.allowDial(peer)
	p := d.peer(peer, true)
	qc, err := d.dial(ctx, p)
	if !done(err == nil) {
		// No dial connected and nothing else allows the peer: nothing of
		// the dial stays, as for a stranger.
		d.forget(p)
	}
	if err != nil {
		return nil, err
	}
	p.track(qc)
	return &Conn{Conn: qc, peer: peer, ps: p}, nil
}

// dial introduces the devices and makes the QUIC connection to p.
func (d *Device) dial(ctx context.Context, p *peerState) (*quic.Conn, error) {
	if err := d.introduce(ctx, p.id); err != nil {
		return nil, err
	}
	d.goRun(func() { d.ensureRelay(p) })
	qc, err := d.tr.Dial(ctx, net.UDPAddrFromAddrPort(p.virt), tlsConfig(d.cert, p.id), quicConfig())
	if err != nil {
		return nil, fmt.Errorf("peer: connecting to %s: %w", p.id.Short(), err)
	}
	return qc, nil
}

// introduce asks the connected super peers, all at once, for peer, for
// candidates to punch. It waits for a super peer only while none is
// connected, and returns as soon as one knows the peer; a super peer that
// is down does not hold it up. The relay is asked for separately, at one
// super peer (ensureRelay).
func (d *Device) introduce(ctx context.Context, peer identity.PeerID) error {
	if len(d.sps) == 0 {
		return errors.New("peer: no super peers configured")
	}
	var sessions []*rendezvous.Session
	for _, sp := range d.sps {
		if sess := sp.session(); sess != nil {
			sessions = append(sessions, sess)
		}
	}
	if len(sessions) == 0 {
		sess, err := d.anySuperPeer(ctx)
		if err != nil {
			return err
		}
		sessions = append(sessions, sess)
	}
	results := make(chan error, len(sessions))
	for _, sess := range sessions {
		go func() {
			err := introduceRetrying(ctx, sess, peer)
			if err != nil {
				err = fmt.Errorf("%s: %w", sess.Authority(), err)
			}
			results <- err
		}()
	}
	var errs []error
	for range sessions {
		if err := <-results; err != nil {
			errs = append(errs, err)
			continue
		}
		return nil // the others answer in their own time
	}
	err := errors.Join(errs...)
	if rerr := (*rendezvous.Error)(nil); errors.As(err, &rerr) && rerr.Code == rendezvous.ErrCodePeerNotFound {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, peer.Short(), err)
	}
	return fmt.Errorf("peer: no super peer could introduce %s: %w", peer.Short(), err)
}

// introduceRetrying asks sess to introduce peer, again while the super
// peer answers "retry later" (ErrCodeRateLimited: its limits, or a
// cluster node that cannot reach the rest of its cluster yet, at its
// start or in a NATS outage), after a wait that doubles from
// introduceRetryMin to introduceRetryMax, within ctx. When ctx ends
// first, the super peer's last answer is the error, with ctx's.
func introduceRetrying(ctx context.Context, sess *rendezvous.Session, peer identity.PeerID) error {
	for wait := introduceRetryMin; ; wait = min(2*wait, introduceRetryMax) {
		_, err := sess.Introduce(ctx, peer, rendezvous.IntroduceOptions{})
		if rerr := (*rendezvous.Error)(nil); !errors.As(err, &rerr) || rerr.Code != rendezvous.ErrCodeRateLimited {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-t.C:
		}
	}
}

// anySuperPeer waits until some super peer is connected.
func (d *Device) anySuperPeer(ctx context.Context) (*rendezvous.Session, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan *rendezvous.Session, len(d.sps))
	var errs []error
	errCh := make(chan error, len(d.sps))
	for _, sp := range d.sps {
		go func() {
			sess, err := sp.wait(ctx)
			if err != nil {
				errCh <- fmt.Errorf("%s: %w", sp.url, err)
				return
			}
			got <- sess
		}()
	}
	for range d.sps {
		select {
		case sess := <-got:
			return sess, nil
		case err := <-errCh:
			errs = append(errs, err)
		}
	}
	return nil, fmt.Errorf("peer: no super peer reachable: %w", errors.Join(errs...))
}

// Accept waits for a peer's connection. A connection whose peer was
// revoked after the listener admitted its handshake is closed, and Accept
// waits for the next.
func (d *Device) Accept(ctx context.Context) (*Conn, error) {
	for {
		qc, err := d.ln.Accept(ctx)
		if err != nil {
			return nil, err
		}
		certs := qc.ConnectionState().TLS.PeerCertificates
		if len(certs) == 0 {
			qc.CloseWithError(1, "no certificate")
			return nil, errors.New("peer: incoming connection without a certificate")
		}
		id, err := peerIDOf([][]byte{certs[0].Raw})
		if err != nil {
			qc.CloseWithError(1, "bad certificate")
			return nil, err
		}
		d.hook(hookAdmitted, id)
		p := d.peer(id, true)
		p.track(qc)
		// Revoke changes the policy before it looks for the peer's
		// connections: one that came after this check finds qc tracked
		// and closes it; one that came before is seen here.
		if !d.policy.accepts(id) {
			qc.CloseWithError(errCodeRevoked, "revoked")
			d.forget(p)
			continue
		}
		return &Conn{Conn: qc, peer: id, ps: p}, nil
	}
}
