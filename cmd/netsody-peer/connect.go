package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/quic-go/quic-go"

	"github.com/netsody/superpeer/identity"
)

// runConnect connects to a peer and pipes stdin to it and its bytes to
// stdout, over one stream. It succeeds once stdin has ended and so has
// the peer's side of the stream.
func runConnect(ctx context.Context, args []string) error {
	fs := newFlagSet("connect", "--identity FILE --super-peer URL [--super-peer URL]... [flags] PEERID")
	df, pos, err := parseDeviceFlags(fs, args, true)
	if err != nil {
		return err
	}
	d, c, err := df.connectTo(ctx, "connect", pos)
	if err != nil {
		return err
	}
	defer d.Close()
	defer c.CloseWithError(0, "")

	str, err := c.OpenStreamSync(ctx)
	if err != nil {
		return streamError(ctx, c.Peer(), err)
	}
	sent := make(chan error, 1)
	go func() {
		if _, err := io.Copy(str, os.Stdin); err != nil {
			str.CancelWrite(0)
			sent <- err
			return
		}
		sent <- str.Close()
	}()
	received := make(chan error, 1)
	go func() {
		_, err := io.Copy(os.Stdout, str)
		received <- err
	}()
	for range 2 {
		select {
		case err := <-sent:
			if err != nil {
				return streamError(ctx, c.Peer(), fmt.Errorf("sending: %w", err))
			}
		case err := <-received:
			if err != nil {
				return streamError(ctx, c.Peer(), fmt.Errorf("receiving: %w", err))
			}
		case <-ctx.Done():
			return errInterrupted
		}
	}
	return nil
}

// streamError says what went wrong with the connection to a peer.
func streamError(ctx context.Context, to identity.PeerID, err error) error {
	if ctx.Err() != nil {
		return errInterrupted
	}
	var aerr *quic.ApplicationError
	if errors.As(err, &aerr) && aerr.Remote {
		return fmt.Errorf("peer %s closed the connection (%q)", to.Short(), aerr.ErrorMessage)
	}
	return fmt.Errorf("peer %s: %w", to.Short(), err)
}
