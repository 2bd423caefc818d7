package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	stdlog "log"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/peer"
)

// deviceFlags are the flags of the commands that run a device: listen,
// connect and bench.
type deviceFlags struct {
	cmd        string
	identity   string
	superPeers stringList
	ca         string
	listen     string
	relayOnly  bool
	status     string
	timeout    time.Duration // connect and bench only
	verbose    bool
	dials      bool // connect and bench
}

func (f *deviceFlags) register(fs *flag.FlagSet, dials bool) {
	f.cmd, f.dials = fs.Name(), dials
	fs.StringVar(&f.identity, "identity", "", "identity `file` (make one with 'netsody-peer keygen')")
	fs.Var(&f.superPeers, "super-peer", "super peer `URL`, https://host[:port]; repeat for more than one")
	fs.StringVar(&f.ca, "ca", "", "PEM `file` of a root CA to trust for the super peers, besides the system's (Caddy's local CA, say)")
	fs.StringVar(&f.listen, "listen", "", "UDP `address` of the device's socket (default: one socket for IPv4 and one for IPv6)")
	fs.BoolVar(&f.relayOnly, "relay-only", false, "never punch: reach peers only through a super peer's relay")
	fs.StringVar(&f.status, "status", "", "serve GET /status (JSON) and /metrics (Prometheus) on this TCP `address`, without authentication: loopback, say 127.0.0.1:9000")
	fs.BoolVar(&f.verbose, "verbose", false, "debug logs on stderr")
	if dials {
		fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "give up when no connection is up after this long")
	}
}

// check reports what is missing from the flags.
func (f *deviceFlags) check() error {
	if f.identity == "" {
		return usagef(f.cmd, "--identity is required")
	}
	if len(f.superPeers) == 0 {
		return usagef(f.cmd, "--super-peer is required")
	}
	if f.dials && f.timeout <= 0 {
		return usagef(f.cmd, "--timeout must be positive")
	}
	return nil
}

// device is a running device and what the command line adds to it.
type device struct {
	*peer.Device
	paths  *pathReporter
	status *statusServer // nil without --status
}

// open loads the identity, starts the device and, with --status, the
// status server. Path changes to the peer reportFor are reported on
// stderr; to every peer if reportFor is zero.
func (f *deviceFlags) open(reportFor identity.PeerID) (*device, error) {
	id, err := identity.Load(f.identity)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w; make one with 'netsody-peer keygen --out %s'", err, f.identity)
	}
	if err != nil {
		return nil, err
	}
	var roots *x509.CertPool
	if f.ca != "" {
		if roots, err = loadCA(f.ca); err != nil {
			return nil, err
		}
	}
	log := zap.NewNop()
	if f.verbose {
		log = newLogger()
	} else {
		// quic-go and masque-go write to the standard logger: quic-go that
		// it cannot size the receive buffer of the device's socket (not a
		// *net.UDPConn as it sees it), masque-go that it skips a capsule
		// type it does not know. Quiet means quiet; --verbose shows them.
		stdlog.SetOutput(io.Discard)
	}
	paths := newPathReporter(reportFor)
	d, err := peer.New(peer.Config{
		Identity:     id,
		SuperPeers:   f.superPeers,
		RootCAs:      roots,
		ListenAddr:   f.listen,
		RelayOnly:    f.relayOnly,
		OnPathChange: paths.changed,
		Logger:       log,
	})
	if err != nil {
		return nil, err
	}
	paths.start(d)
	dev := &device{Device: d, paths: paths}
	if f.status != "" {
		if dev.status, err = serveStatus(f.status, d); err != nil {
			dev.Close()
			return nil, err
		}
		fmt.Fprintf(os.Stderr, "status: http://%s/status\n", dev.status.Addr())
	}
	return dev, nil
}

// Close stops the status server, the path reports and the device. The
// reports stop first: paths that end because the device closes are not
// news.
func (d *device) Close() error {
	if d.status != nil {
		d.status.Close()
	}
	d.paths.stop()
	return d.Device.Close()
}

// loadCA reads a PEM file of root certificates and adds them to the
// system's.
func loadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca: %s holds no PEM certificate", path)
	}
	return pool, nil
}

// newLogger logs everything, human-readable, to stderr.
func newLogger() *zap.Logger {
	enc := zap.NewDevelopmentEncoderConfig()
	enc.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.Lock(os.Stderr), zap.DebugLevel)
	return zap.New(core)
}

// parsePeerID parses the PEERID argument of connect and bench.
func parsePeerID(cmd string, pos []string) (identity.PeerID, error) {
	switch len(pos) {
	case 0:
		return identity.PeerID{}, usagef(cmd, "missing PEERID, the peer's 64-hex-digit ID")
	case 1:
	default:
		return identity.PeerID{}, usagef(cmd, "unexpected argument %q after PEERID", pos[1])
	}
	id, err := identity.ParsePeerID(pos[0])
	if err != nil {
		return id, usagef(cmd, "PEERID %q: %s", pos[0], strings.TrimPrefix(err.Error(), "identity: "))
	}
	return id, nil
}

// connectTo is what connect and bench share: parse PEERID, open the
// device, connect within the timeout, and start reporting path changes.
// The caller closes both.
func (f *deviceFlags) connectTo(ctx context.Context, cmd string, pos []string) (*device, *peer.Conn, error) {
	to, err := parsePeerID(cmd, pos)
	if err != nil {
		return nil, nil, err
	}
	d, err := f.open(to)
	if err != nil {
		return nil, nil, err
	}
	c, err := d.dial(ctx, to, f.timeout)
	if err != nil {
		d.Close()
		return nil, nil, err
	}
	d.paths.report()
	return d, c, nil
}

// dial connects to a peer within timeout: it waits for a super peer,
// then for the connection.
func (d *device) dial(ctx context.Context, to identity.PeerID, timeout time.Duration) (*peer.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := d.waitSuperPeer(ctx, timeout); err != nil {
		return nil, err
	}
	c, err := d.Dial(ctx, to)
	switch {
	case err == nil:
		return c, nil
	case ctx.Err() == context.Canceled:
		return nil, errInterrupted
	case ctx.Err() == context.DeadlineExceeded:
		return nil, fmt.Errorf("no connection to %s within %v: %w", to.Short(), timeout, err)
	}
	return nil, err
}

// waitSuperPeer waits until a session with any super peer is up.
func (d *device) waitSuperPeer(ctx context.Context, timeout time.Duration) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		st := d.Status()
		for _, sp := range st.SuperPeers {
			if sp.Connected {
				return nil
			}
		}
		select {
		case <-tick.C:
			continue
		case <-ctx.Done():
		}
		if ctx.Err() == context.Canceled {
			return errInterrupted
		}
		var why []string
		for _, sp := range st.SuperPeers {
			reason := sp.Error
			if reason == "" {
				reason = "no answer"
			}
			why = append(why, sp.URL+": "+reason)
		}
		what := "super peer"
		if len(why) > 1 {
			what = "any super peer"
		}
		return fmt.Errorf("cannot reach %s within %v: %s", what, timeout, strings.Join(why, "; "))
	}
}

// watchSuperPeers reports on stderr when a super peer cannot be reached,
// when it is reached, and when it sees the device at a new address (the
// NAT rebound): once each time its state changes, however often the
// device retries in between. It returns when ctx is done.
func (d *device) watchSuperPeers(ctx context.Context) {
	up := make(map[string]bool)
	type view struct{ transport, seenAs string }
	seen := make(map[string]view)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, sp := range d.Status().SuperPeers {
			was, known := up[sp.URL]
			switch {
			case sp.Connected && (!known || !was):
				fmt.Fprintf(os.Stderr, "super peer %s: connected over %s (%s), seen as %s\n", sp.URL, sp.Transport, sp.Family, sp.Observed)
				up[sp.URL], seen[sp.URL] = true, view{sp.Transport, sp.Observed}
			case sp.Connected && sp.Transport != seen[sp.URL].transport:
				fmt.Fprintf(os.Stderr, "super peer %s: now over %s, seen as %s\n", sp.URL, sp.Transport, sp.Observed)
				seen[sp.URL] = view{sp.Transport, sp.Observed}
			case sp.Connected && sp.Observed != seen[sp.URL].seenAs:
				fmt.Fprintf(os.Stderr, "super peer %s: now sees this device as %s (its NAT mapping changed)\n", sp.URL, sp.Observed)
				seen[sp.URL] = view{sp.Transport, sp.Observed}
			case !sp.Connected && sp.Error != "" && (!known || was):
				what := "cannot reach"
				if was {
					what = "lost"
				}
				fmt.Fprintf(os.Stderr, "netsody-peer: %s super peer %s: %s; still trying\n", what, sp.URL, oneLine(sp.Error))
				up[sp.URL] = false
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// pathReporter prints a line on stderr when the path to a peer changes.
//
// The device calls OnPathChange on a new goroutine for each change, so
// two quick changes may arrive in either order. The reporter therefore
// takes a call only as a hint and prints the path the device's status
// shows at that moment, if it differs from the last one printed.
type pathReporter struct {
	only   identity.PeerID // if not zero, report this peer alone, as "path: ..."
	dev    *peer.Device
	kick   chan struct{}
	done   chan struct{}
	exited chan struct{}

	mu   sync.Mutex // guards last
	last map[string]string
}

func newPathReporter(only identity.PeerID) *pathReporter {
	return &pathReporter{
		only:   only,
		kick:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		exited: make(chan struct{}),
		last:   make(map[string]string),
	}
}

// changed is the device's OnPathChange.
func (r *pathReporter) changed(identity.PeerID, peer.Path) {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *pathReporter) start(d *peer.Device) {
	r.dev = d
	go func() {
		defer close(r.exited)
		for {
			select {
			case <-r.kick:
				r.report()
			case <-r.done:
				return
			}
		}
	}()
}

func (r *pathReporter) stop() {
	close(r.done)
	<-r.exited
}

// report prints every path that changed since the last report.
func (r *pathReporter) report() {
	r.mu.Lock() // held across Status, so that reports come out in order
	defer r.mu.Unlock()
	st := r.dev.Status()
	for _, p := range st.Peers {
		if !r.only.IsZero() && p.PeerID != r.only.String() {
			continue
		}
		now, was := pathString(p), r.last[p.PeerID]
		if now == was || (was == "" && p.Path == string(peer.PathNone)) {
			continue
		}
		r.last[p.PeerID] = now
		if r.only.IsZero() {
			fmt.Fprintf(os.Stderr, "peer %s: path %s\n", shortID(p.PeerID), now)
		} else {
			fmt.Fprintf(os.Stderr, "path: %s\n", now)
		}
	}
}

// pathString writes a path as peer.Path's String does.
func pathString(p peer.PeerStatus) string {
	switch peer.PathKind(p.Path) {
	case peer.PathDirect:
		return "direct " + p.Addr
	case peer.PathRelay:
		return fmt.Sprintf("relay via %s (%s)", p.SuperPeer, p.Transport)
	}
	return p.Path
}

// shortID is a peer ID's short form, as identity.PeerID.Short.
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
