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
	dials      bool       // connect and bench
	allow      peerIDList // listen only
	allowAny   bool       // listen only
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
	} else {
		fs.Var(&f.allow, "allow", "accept connections from this `PEERID`; repeat for more than one")
		fs.BoolVar(&f.allowAny, "allow-any", false, "accept connections from any peer: anyone who knows this device's peer ID learns its addresses")
	}
}

// parseDeviceFlags parses the arguments of a command that runs a device:
// the device's flags (register; dials as there) and the command's own,
// registered on fs before, and checks the device's. It returns the
// positional arguments.
func parseDeviceFlags(fs *flagSet, args []string, dials bool) (*deviceFlags, []string, error) {
	df := &deviceFlags{}
	df.register(fs.FlagSet, dials)
	pos, err := fs.parse(args)
	if err != nil {
		return nil, nil, err
	}
	if err := df.check(); err != nil {
		return nil, nil, err
	}
	return df, pos, nil
}

// openDevice parses the arguments of a command that runs a device and
// takes no positional argument (parseDeviceFlags), and opens its device.
func openDevice(fs *flagSet, args []string, dials bool) (*deviceFlags, *device, error) {
	df, pos, err := parseDeviceFlags(fs, args, dials)
	if err != nil {
		return nil, nil, err
	}
	if len(pos) > 0 {
		return nil, nil, usagef(fs.Name(), "unexpected argument %q", pos[0])
	}
	d, err := df.open(identity.PeerID{})
	if err != nil {
		return nil, nil, err
	}
	return df, d, nil
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
	if !f.dials && len(f.allow) == 0 && !f.allowAny {
		return usagef(f.cmd, "say who may connect: --allow PEERID (repeatable) or --allow-any")
	}
	return nil
}

// device is a running device and what the command line adds to it.
type device struct {
	*peer.Device
	report *reporter
	status *statusServer // nil without --status
}

// open loads the identity, starts the device and, with --status, the
// status server. Once the caller starts d.report, path changes to the
// peer reportFor are reported on stderr; if reportFor is zero (listen),
// those to every peer and the changes of every super peer.
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
	cfg := peer.Config{
		Identity:   id,
		SuperPeers: f.superPeers,
		RootCAs:    roots,
		ListenAddr: f.listen,
		RelayOnly:  f.relayOnly,
		Allow:      f.allow,
		AllowAny:   f.allowAny,
		Logger:     log,
	}
	if !f.dials { // listen says whom it refuses; connect and bench accept only the peer they dial
		cfg.Accept = refuse
	}
	d, err := peer.New(cfg)
	if err != nil {
		return nil, err
	}
	dev := &device{Device: d, report: newReporter(d, reportFor)}
	if f.status != "" {
		if dev.status, err = serveStatus(f.status, d); err != nil {
			dev.Close()
			return nil, err
		}
		fmt.Fprintf(os.Stderr, "status: http://%s/status\n", dev.status.Addr())
	}
	return dev, nil
}

// refuse is listen's answer to a peer it was not told to allow: no, and
// what to do about it (once per peer: the device remembers the answer).
func refuse(_ context.Context, p identity.PeerID, _ bool) bool {
	fmt.Fprintf(os.Stderr, "peer %s is not allowed: run listen with --allow %s or --allow-any\n", p, p)
	return false
}

// Close stops the status server, the reports and the device. The reports
// stop first: paths that end because the device closes are not news.
func (d *device) Close() error {
	if d.status != nil {
		d.status.Close()
	}
	d.report.Close()
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
// device (which reports the path to the peer), and connect within the
// timeout. The caller closes both.
func (f *deviceFlags) connectTo(ctx context.Context, cmd string, pos []string) (*device, *peer.Conn, error) {
	to, err := parsePeerID(cmd, pos)
	if err != nil {
		return nil, nil, err
	}
	d, err := f.open(to)
	if err != nil {
		return nil, nil, err
	}
	d.report.start()
	c, err := d.dial(ctx, to, f.timeout)
	if err != nil {
		d.Close()
		return nil, nil, err
	}
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
	case errors.Is(err, peer.ErrUnavailable):
		return nil, fmt.Errorf("peer %s is unavailable: it is offline, or does not accept this device; there, run listen with --allow %s or --allow-any", to.Short(), d.PeerID())
	case ctx.Err() == context.Canceled:
		return nil, errInterrupted
	case ctx.Err() == context.DeadlineExceeded:
		return nil, fmt.Errorf("no connection to %s within %v: %w", to.Short(), timeout, err)
	}
	return nil, err
}

// waitSuperPeer waits until a session with any super peer is up, and
// says, if none comes up within timeout, why for each.
func (d *device) waitSuperPeer(ctx context.Context, timeout time.Duration) error {
	err := d.WaitSuperPeer(ctx)
	switch {
	case err == nil:
		return nil
	case ctx.Err() == context.Canceled:
		return errInterrupted
	}
	var why []string
	for _, sp := range d.Status().SuperPeers {
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
