package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/netsody/superpeer/peer"
)

// shutdownGrace bounds how long listen waits for its connections to wind
// down after a signal.
const shutdownGrace = 5 * time.Second

// runListen keeps the device reachable through its super peers and serves
// every incoming connection until a signal ends it.
func runListen(ctx context.Context, args []string) error {
	fs := newFlagSet("listen", "--identity FILE --super-peer URL [--super-peer URL]... (--allow PEERID [--allow PEERID]... | --allow-any) [flags]")
	echo := fs.Bool("echo", false, "echo every byte back on every stream, instead of printing what arrives on stdout")
	_, d, err := openDevice(fs, args, false)
	if err != nil {
		return err
	}
	defer d.Close()
	fmt.Fprintf(os.Stderr, "listening as %s\n", d.PeerID())
	d.report.start()

	srv := &server{echo: *echo, out: &lockedWriter{w: os.Stdout}, conns: make(map[*peer.Conn]struct{})}
	defer srv.shutdown()
	for {
		c, err := d.Accept(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, quic.ErrServerClosed):
			return err
		case err != nil:
			// One bad incoming connection; the next may be fine.
			fmt.Fprintf(os.Stderr, "netsody-peer: refused a connection: %s\n", oneLine(err.Error()))
			continue
		}
		srv.serve(ctx, c)
	}
}

// server serves the connections that peers open.
type server struct {
	echo bool
	out  io.Writer
	wg   sync.WaitGroup

	mu    sync.Mutex // guards conns
	conns map[*peer.Conn]struct{}
}

func (s *server) serve(ctx context.Context, c *peer.Conn) {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	fmt.Fprintf(os.Stderr, "peer %s: connected\n", c.Peer().Short())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
		for {
			str, err := c.AcceptStream(ctx)
			if err != nil {
				fmt.Fprintf(os.Stderr, "peer %s: %s\n", c.Peer().Short(), closeReason(err))
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.handle(str)
			}()
		}
	}()
}

// handle serves one stream: its bytes come back (--echo) or go to stdout.
// Either way, this side of the stream ends when the peer's side does.
func (s *server) handle(str *quic.Stream) {
	if s.echo {
		io.Copy(str, str)
	} else {
		io.Copy(s.out, str)
	}
	str.Close()
}

// shutdown closes every connection and waits, a bounded time, for their
// streams to end.
func (s *server) shutdown() {
	s.mu.Lock()
	for c := range s.conns {
		c.CloseWithError(0, "shutting down")
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(shutdownGrace):
	}
}

// closeReason says why a connection ended, for a person.
func closeReason(err error) string {
	var aerr *quic.ApplicationError
	switch {
	case errors.As(err, &aerr) && aerr.Remote && aerr.ErrorCode == 0:
		return "closed"
	case errors.As(err, &aerr) && !aerr.Remote:
		return "closed by this side"
	case errors.Is(err, context.Canceled):
		return "closed by this side"
	}
	return "gone: " + oneLine(err.Error())
}

// lockedWriter serializes the writes of concurrent streams.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
