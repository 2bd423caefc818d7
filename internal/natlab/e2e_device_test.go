package natlab

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/peer"
)

// A device in the end-to-end tests is a process of its own: this test
// binary, started in the device's namespace with `ip netns exec` and told
// by the environment (envDevice) to run one device (TestLabDeviceHelper)
// instead of the tests. The whole process then lives in the namespace, as
// a real device's agent does. peer.New could be run in process through
// Host.Do, which puts the device's UDP socket in the namespace; but a
// device whose UDP is blocked falls back to HTTP/2, and that TCP
// connection is dialed later, from whichever thread the library's
// goroutine runs on, which is in the test's own namespace (peer.Config
// has no dialer to inject). A process per device keeps every socket where
// it belongs.
//
// The helper speaks to the test in JSON lines on stdout, each prefixed
// with eventPrefix; everything else it prints (its debug log on stderr,
// the testing package's PASS) is kept for the failure report.
//
//	echo role:  accepts any peer (listen --allow-any).
//	            ready (registered, with its peer ID) → stream (each stream
//	            it echoed: bytes, SHA-256 of what arrived, its path then)
//	            … until its stdin is closed.
//	            Each change of a super peer's status (its observed
//	            address, say) is a superpeer event.
//	dial role:  ready → result (timings, path timeline, checksums), exit.
//	soak role:  ready → direct (once the path is direct; Wall is when the
//	            dial began) → result, once the path is direct to another
//	            address than the first, or after Hold.
//	stream role: ready → one stream to Peer carrying Size bytes every
//	            StreamEvery, echoed back, with a progress event (Bytes
//	            echoed so far) every streamProgressEvery, until its stdin
//	            is closed → result (the one transfer's checksums).
//	Every role: each change of the path to a peer is a path event (Wall
//	            is when it changed).

// envDevice carries a helper's e2eDeviceConfig as JSON.
const envDevice = "NETSODY_E2E_DEVICE"

// eventPrefix marks a helper's event lines on stdout.
const eventPrefix = "netsody-e2e-event "

// e2eDeviceConfig tells a helper what to be.
type e2eDeviceConfig struct {
	Role       string   `json:"role"`             // "echo", "dial" or "soak"
	Listen     string   `json:"listen,omitempty"` // the device's socket; default "0.0.0.0:0"
	SuperPeers []string `json:"super_peers"`
	RootCAs    []string `json:"root_cas"` // PEM files
	// Hosts, if set, resolve the super peers' names (peer.Config's
	// LookupNetIP): name → addresses, in order. The lab has no DNS.
	Hosts map[string][]netip.Addr `json:"hosts,omitempty"`

	// The dial role's work: connect to Peer, echo Size bytes through it at
	// once (the first transfer, which measures the first byte), wait up to
	// Within after the dial for a path of kind Want and until Settle after
	// it, then echo Size bytes again over the path reached.
	Peer   string        `json:"peer,omitempty"`
	Size   int           `json:"size,omitempty"`
	Want   string        `json:"want,omitempty"`
	Within time.Duration `json:"within,omitempty"`
	Settle time.Duration `json:"settle,omitempty"`

	// The soak role's: connect to Peer, wait up to Within for a direct
	// path, then echo Size bytes again and again until the path is direct
	// to another address than the first and one more transfer went over
	// it, or until Hold.
	Hold time.Duration `json:"hold,omitempty"`

	// The stream role's pace: Size bytes every StreamEvery
	// (e2e_transport_test.go).
	StreamEvery time.Duration `json:"stream_every,omitempty"`
}

// e2ePath is a peer.Path as events carry it.
type e2ePath struct {
	Kind      string `json:"kind"`
	Addr      string `json:"addr,omitempty"`
	SuperPeer string `json:"super_peer,omitempty"`
	Transport string `json:"transport,omitempty"`
	Relay     string `json:"relay,omitempty"` // how relayed packets travel: fast, h3 or h2
	Reason    string `json:"reason,omitempty"`
	Why       string `json:"why,omitempty"` // why not a better transport (peer.Path.Why)
}

func pathOf(p peer.Path) e2ePath {
	e := e2ePath{Kind: string(p.Kind), SuperPeer: p.SuperPeer, Transport: string(p.Transport), Relay: string(p.Relay), Reason: p.Reason, Why: p.Why}
	if p.Addr.IsValid() {
		e.Addr = p.Addr.String()
	}
	return e
}

func (p e2ePath) String() string {
	switch p.Kind {
	case string(peer.PathDirect):
		return "direct " + p.Addr
	case string(peer.PathRelay):
		s := fmt.Sprintf("relay %s via %s", p.Transport, strings.TrimPrefix(p.SuperPeer, "https://"))
		switch {
		case p.Relay == string(peer.RelayFast):
			s += " (fast)"
		case p.Why != "":
			s += fmt.Sprintf(" (%s: %s)", p.Relay, p.Why)
		}
		if p.Reason == peer.PathReasonBothDependent {
			s += ", no punching"
		}
		return s
	}
	return p.Kind
}

// e2eStep is one path change, at a time after the dial began.
type e2eStep struct {
	At   time.Duration `json:"at"`
	Path e2ePath       `json:"path"`
}

// e2eTransfer is one echoed transfer as the dialer saw it.
type e2eTransfer struct {
	Start     time.Duration `json:"start"`      // after the dial began
	FirstByte time.Duration `json:"first_byte"` // after the dial began: the first echoed byte back
	Took      time.Duration `json:"took"`       // from Start to the last echoed byte
	Sent      string        `json:"sent"`       // SHA-256 of what was sent
	Echoed    string        `json:"echoed"`     // SHA-256 of what came back
	Bytes     int           `json:"bytes"`      // how many came back
}

// e2eEvent is one line from a helper.
type e2eEvent struct {
	Type  string `json:"type"` // ready, stream, result, error
	Error string `json:"error,omitempty"`

	// ready
	PeerID     string                 `json:"peer_id,omitempty"`
	Registered time.Duration          `json:"registered,omitempty"` // process start to registered with every super peer
	SuperPeers []peer.SuperPeerStatus `json:"super_peers,omitempty"`
	NAT        peer.MappingStatus     `json:"nat"` // the mapping, checked once registered

	// stream (echo role): what arrived on one stream, the path after it
	Bytes  int     `json:"bytes,omitempty"`
	SHA256 string  `json:"sha256,omitempty"`
	Path   e2ePath `json:"path"`

	// result (dial role)
	Dialed    time.Duration `json:"dialed,omitempty"` // Dial returned
	Transfers []e2eTransfer `json:"transfers,omitempty"`
	Timeline  []e2eStep     `json:"timeline,omitempty"`

	// direct (soak role): when the dial began; path: when it changed
	Wall time.Time `json:"wall,omitzero"`
}

// TestLabDeviceHelper is not a test: it is the device process that the
// end-to-end tests start in a namespace (see envDevice).
func TestLabDeviceHelper(t *testing.T) {
	raw := os.Getenv(envDevice)
	if raw == "" {
		t.Skip("runs only as a device process of TestE2E")
	}
	start := time.Now()
	out := &eventWriter{w: os.Stdout}
	if err := runDeviceHelper(raw, start, out); err != nil {
		out.emit(e2eEvent{Type: "error", Error: err.Error()})
		t.Fatal(err)
	}
}

type eventWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (e *eventWriter) emit(ev e2eEvent) {
	b, _ := json.Marshal(ev)
	e.mu.Lock()
	defer e.mu.Unlock()
	fmt.Fprintf(e.w, "%s%s\n", eventPrefix, b)
}

func runDeviceHelper(raw string, start time.Time, out *eventWriter) error {
	var cfg e2eDeviceConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return fmt.Errorf("%s: %w", envDevice, err)
	}
	roots := x509.NewCertPool()
	for _, f := range cfg.RootCAs {
		pem, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if !roots.AppendCertsFromPEM(pem) {
			return errors.New("no certificate in " + f)
		}
	}
	id, err := identity.Generate()
	if err != nil {
		return err
	}
	// The debug log (punches, paths, relays) goes to stderr, which the
	// test shows when a row fails.
	logger := zap.New(zapcore.NewCore(
		zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.Lock(os.Stderr), zap.DebugLevel))
	defer logger.Sync()
	var lookup func(context.Context, string) ([]netip.Addr, error)
	if cfg.Hosts != nil {
		lookup = func(_ context.Context, host string) ([]netip.Addr, error) {
			if a := cfg.Hosts[host]; len(a) > 0 {
				return a, nil
			}
			return nil, errors.New("no such host " + host)
		}
	}
	dev, err := peer.New(peer.Config{
		LookupNetIP: lookup,
		Identity:    id,
		SuperPeers:  cfg.SuperPeers,
		RootCAs:     roots,
		ListenAddr:  cmp.Or(cfg.Listen, "0.0.0.0:0"),
		// The echo role is `listen --allow-any`: it accepts the dialer
		// (whose peer ID it cannot know beforehand) at once, as --allow
		// would; the dialers accept the peer they dial.
		AllowAny: cfg.Role == "echo",
		Logger:   logger,
		OnSuperPeer: func(st peer.SuperPeerStatus) {
			out.emit(e2eEvent{Type: "superpeer", SuperPeers: []peer.SuperPeerStatus{st}})
		},
		OnPathChange: func(_ identity.PeerID, p peer.Path) {
			out.emit(e2eEvent{Type: "path", Path: pathOf(p), Wall: time.Now()})
		},
	})
	if err != nil {
		return err
	}
	defer dev.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	if err := waitRegistered(ctx, dev); err != nil {
		return err
	}
	registered := time.Since(start)
	// The mapping, learned and told to the super peers before the test
	// goes on, as a device that has run a while has it: an introduction
	// carries what the super peer knows then.
	checkCtx, cancelCheck := context.WithTimeout(ctx, 10*time.Second)
	nat := dev.CheckMapping(checkCtx)
	cancelCheck()
	out.emit(e2eEvent{Type: "ready", PeerID: dev.PeerID().String(), Registered: registered, SuperPeers: dev.Status().SuperPeers, NAT: nat})

	switch cfg.Role {
	case "echo":
		// Serve until the test closes stdin.
		go func() {
			io.Copy(io.Discard, os.Stdin)
			cancel()
		}()
		return serveEcho(ctx, dev, out)
	case "dial":
		res, err := dialAndTransfer(ctx, dev, cfg)
		if err != nil {
			return err
		}
		out.emit(res)
		return nil
	case "soak":
		res, err := dialAndSoak(ctx, dev, cfg, out)
		if err != nil {
			return err
		}
		out.emit(res)
		return nil
	case "stream":
		res, err := dialAndStream(ctx, dev, cfg, out)
		if err != nil {
			return err
		}
		out.emit(res)
		return nil
	}
	return fmt.Errorf("unknown role %q", cfg.Role)
}

// waitRegistered waits until the device has a session with every super
// peer.
func waitRegistered(ctx context.Context, dev *peer.Device) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		all := true
		for _, sp := range dev.Status().SuperPeers {
			all = all && sp.Connected
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not registered with every super peer within 15s: %+v", dev.Status().SuperPeers)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// serveEcho echoes every stream of every connection, reporting for each
// stream what arrived and the connection's path after it.
func serveEcho(ctx context.Context, dev *peer.Device, out *eventWriter) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := dev.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.CloseWithError(0, "")
			for {
				str, err := c.AcceptStream(ctx)
				if err != nil {
					return
				}
				wg.Add(1)
				go func(str *quic.Stream) {
					defer wg.Done()
					h := sha256.New()
					n, err := io.Copy(str, io.TeeReader(str, h))
					str.Close()
					ev := e2eEvent{Type: "stream", Bytes: int(n), SHA256: hex.EncodeToString(h.Sum(nil)), Path: pathOf(c.Path())}
					if err != nil {
						ev.Error = err.Error()
					}
					out.emit(ev)
				}(str)
			}
		}()
	}
}

// dialAndTransfer is the dial role.
func dialAndTransfer(ctx context.Context, dev *peer.Device, cfg e2eDeviceConfig) (e2eEvent, error) {
	res := e2eEvent{Type: "result"}
	c, t0, timeline, err := dialWatched(ctx, dev, cfg.Peer)
	if err != nil {
		return res, err
	}
	defer timeline()
	defer c.CloseWithError(0, "")
	res.Dialed = time.Since(t0)

	first, err := echoOnce(ctx, c, cfg.Size, t0)
	if err != nil {
		return res, fmt.Errorf("first transfer: %w", err)
	}
	res.Transfers = append(res.Transfers, first)

	// Wait for the path asked for (bounded), and until the settle time.
	for deadline := t0.Add(cfg.Within); string(c.Path().Kind) != cfg.Want && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if wait := time.Until(t0.Add(cfg.Settle)); wait > 0 {
		time.Sleep(wait)
	}

	second, err := echoOnce(ctx, c, cfg.Size, t0)
	if err != nil {
		return res, fmt.Errorf("second transfer: %w", err)
	}
	res.Transfers = append(res.Transfers, second)
	res.Path = pathOf(c.Path())
	res.Timeline = timeline()
	res.SuperPeers = dev.Status().SuperPeers
	return res, nil
}

// dialWatched dials peerID with the path to it watched from t0, the
// moment the dial begins; timeline stops the watch and returns the path
// changes.
func dialWatched(ctx context.Context, dev *peer.Device, peerID string) (c *peer.Conn, t0 time.Time, timeline func() []e2eStep, err error) {
	pid, err := identity.ParsePeerID(peerID)
	if err != nil {
		return nil, t0, nil, err
	}
	t0 = time.Now()
	timeline = watchPath(ctx, dev, peerID, t0)
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if c, err = dev.Dial(dctx, pid); err != nil {
		timeline()
		return nil, t0, nil, err
	}
	return c, t0, timeline, nil
}

// watchPath records the path to peer from t0 on, polling every 2 ms, until
// the returned function is called; it returns the path changes.
func watchPath(ctx context.Context, dev *peer.Device, peerID string, t0 time.Time) (stop func() []e2eStep) {
	var timeline []e2eStep
	watchCtx, cancel := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		var last e2ePath
		for {
			cur := e2ePath{Kind: string(peer.PathNone)}
			for _, ps := range dev.Status().Peers {
				if ps.PeerID == peerID {
					cur = e2ePath{Kind: string(ps.Path), Addr: ps.Addr, SuperPeer: ps.SuperPeer, Transport: ps.Transport}
				}
			}
			if cur != last {
				timeline = append(timeline, e2eStep{At: time.Since(t0), Path: cur})
				last = cur
			}
			select {
			case <-watchCtx.Done():
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return func() []e2eStep {
		cancel()
		<-watched
		return timeline
	}
}

// dialAndSoak is the soak role: a connection that keeps carrying data
// while the test rebinds a NAT under it.
func dialAndSoak(ctx context.Context, dev *peer.Device, cfg e2eDeviceConfig, out *eventWriter) (e2eEvent, error) {
	res := e2eEvent{Type: "result"}
	c, t0, timeline, err := dialWatched(ctx, dev, cfg.Peer)
	if err != nil {
		return res, err
	}
	defer timeline()
	defer c.CloseWithError(0, "")
	res.Dialed = time.Since(t0)
	for deadline := t0.Add(cfg.Within); c.Path().Kind != peer.PathDirect; {
		if time.Now().After(deadline) {
			return res, fmt.Errorf("no direct path within %v: %s", cfg.Within, c.Path())
		}
		time.Sleep(5 * time.Millisecond)
	}
	first := c.Path().Addr
	out.emit(e2eEvent{Type: "direct", Path: pathOf(c.Path()), Wall: t0})

	for end := time.Now().Add(cfg.Hold); time.Now().Before(end); {
		moved := c.Path().Kind == peer.PathDirect && c.Path().Addr != first
		tr, err := echoOnce(ctx, c, cfg.Size, t0)
		if err != nil {
			return res, fmt.Errorf("transfer %d: %w", len(res.Transfers)+1, err)
		}
		res.Transfers = append(res.Transfers, tr)
		if moved {
			break // one whole transfer over the new direct path
		}
	}
	res.Path = pathOf(c.Path())
	res.Timeline = timeline()
	res.SuperPeers = dev.Status().SuperPeers
	return res, nil
}

// echoOnce sends size random bytes on a new stream and reads the echo.
func echoOnce(ctx context.Context, c *peer.Conn, size int, t0 time.Time) (e2eTransfer, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tr := e2eTransfer{Start: time.Since(t0)}
	data := make([]byte, size)
	rand.Read(data)
	sent := sha256.Sum256(data)
	tr.Sent = hex.EncodeToString(sent[:])
	str, err := c.OpenStreamSync(ctx)
	if err != nil {
		return tr, err
	}
	defer str.CancelRead(0)
	stop := context.AfterFunc(ctx, func() { str.CancelRead(1); str.CancelWrite(1) })
	defer stop()
	wrote := make(chan error, 1)
	go func() {
		_, err := str.Write(data)
		str.Close()
		wrote <- err
	}()
	h := sha256.New()
	buf := make([]byte, 32<<10)
	for {
		n, err := str.Read(buf)
		if n > 0 && tr.Bytes == 0 {
			tr.FirstByte = time.Since(t0)
		}
		h.Write(buf[:n])
		tr.Bytes += n
		if err == io.EOF {
			break
		}
		if err != nil {
			<-wrote
			return tr, err
		}
	}
	tr.Took = time.Since(t0) - tr.Start
	tr.Echoed = hex.EncodeToString(h.Sum(nil))
	return tr, <-wrote
}

// labDevice is a device process on a lab host, as the test sees it.
type labDevice struct {
	host  *Host
	role  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	logs  *testcaddy.SyncBuffer // stderr and stdout lines that are not events

	mu     sync.Mutex // guards events and notify
	events []e2eEvent
	notify chan struct{} // closed and replaced when an event arrives

	done chan struct{} // closed when the process has been waited for
	err  error
}

// startDevice runs a device helper on host. It is stopped (stdin closed,
// then killed after 10 s) by t.Cleanup.
func startDevice(t testing.TB, host *Host, cfg e2eDeviceConfig) *labDevice {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	d := &labDevice{host: host, role: cfg.Role, logs: &testcaddy.SyncBuffer{}, notify: make(chan struct{}), done: make(chan struct{})}
	d.cmd = host.Command(exe, "-test.run=^TestLabDeviceHelper$", "-test.count=1", "-test.timeout=3m")
	// Under -race the helper would sleep a second at exit (the race
	// detector's atexit_sleep_ms) for reports that are printed anyway.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	d.cmd.Env = append(os.Environ(), envDevice+"="+string(raw), "GORACE="+gorace)
	d.cmd.Stdout = &lineWriter{line: d.line}
	d.cmd.Stderr = d.logs
	if d.stdin, err = d.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting device on %s: %v", host.Name(), err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		if err := d.stop(); err != nil {
			t.Errorf("%s device on %s: %v", cfg.Role, host.Name(), err)
		}
		if t.Failed() {
			t.Logf("%s device on %s, its log:\n%s", cfg.Role, host.Name(), d.logs.String())
		}
	})
	return d
}

// line takes one line of the helper's stdout.
func (d *labDevice) line(s string) {
	rest, ok := strings.CutPrefix(s, eventPrefix)
	if !ok {
		d.logs.Write([]byte(s + "\n"))
		return
	}
	var ev e2eEvent
	if err := json.Unmarshal([]byte(rest), &ev); err != nil {
		ev = e2eEvent{Type: "error", Error: "bad event: " + err.Error()}
	}
	d.mu.Lock()
	d.events = append(d.events, ev)
	close(d.notify)
	d.notify = make(chan struct{})
	d.mu.Unlock()
}

// wait returns the n-th (from 0) event of type typ, waiting up to
// timeout for it. An error event, or the process's exit, ends the wait.
func (d *labDevice) wait(typ string, n int, timeout time.Duration) (e2eEvent, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		d.mu.Lock()
		ev, err := d.findLocked(typ, n)
		notify, done := d.notify, d.done
		d.mu.Unlock()
		if err != nil || ev.Type != "" {
			return ev, err
		}
		select {
		case <-notify:
		case <-done:
			// Wait returns only after stdout has been copied: every
			// event the helper wrote is in by now.
			d.mu.Lock()
			ev, err := d.findLocked(typ, n)
			d.mu.Unlock()
			if err == nil && ev.Type == "" {
				err = fmt.Errorf("%s device on %s exited (%v) without a %s event", d.role, d.host.Name(), d.err, typ)
			}
			return ev, err
		case <-deadline.C:
			return e2eEvent{}, fmt.Errorf("%s device on %s: no %s event within %v", d.role, d.host.Name(), typ, timeout)
		}
	}
}

// findLocked returns the n-th event of type typ, a zero event if it has
// not arrived, or an error if the helper reported one.
func (d *labDevice) findLocked(typ string, n int) (e2eEvent, error) {
	seen := 0
	for _, ev := range d.events {
		switch {
		case ev.Type == "error":
			return ev, fmt.Errorf("%s device on %s: %s", d.role, d.host.Name(), ev.Error)
		case ev.Type == typ && seen == n:
			return ev, nil
		case ev.Type == typ:
			seen++
		}
	}
	return e2eEvent{}, nil
}

// stop closes the helper's stdin (an echo device ends on that; a dialer
// has ended by itself) and waits 10 s for it to exit, then kills it. A
// helper that failed, leaked goroutines included (its TestMain runs
// goleak), is an error.
func (d *labDevice) stop() error {
	d.stdin.Close()
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		return errors.New("did not exit within 10s; killed")
	}
	if d.err != nil {
		return fmt.Errorf("exited: %v", d.err)
	}
	return nil
}

// lineWriter calls line for each complete line written to it.
type lineWriter struct {
	buf  bytes.Buffer
	line func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	for {
		i := bytes.IndexByte(w.buf.Bytes(), '\n')
		if i < 0 {
			return len(p), nil
		}
		w.line(string(w.buf.Next(i + 1)[:i]))
	}
}

// echoLab is the set-up of the single-row NAT lab tests: one Caddy super
// peer on a public host, two devices' hosts behind NATs of tc's types,
// and B running the echo role, ready. A is for the test to start.
type echoLab struct {
	sp         *labSuperPeer
	spHost     *Host
	ha         *Host
	natA, natB *NAT
	sps, roots []string
	b          *labDevice
	readyB     e2eEvent
}

// newEchoLab builds an echoLab in a lab named name, over IPv4.
func newEchoLab(t *testing.T, name string, tc e2eCase) *echoLab {
	t.Helper()
	lab := NewForTest(t, Options{Name: name, DisableIPv6: true})
	bin := e2eCaddyBinary(t, t.TempDir())
	spHost, err := lab.AddPublicHost("sp")
	if err != nil {
		t.Fatal(err)
	}
	sp := startSuperPeer(t, bin, spHost)
	ha, hb, natA, natB := buildE2ECase(t, lab, 0, tc)
	l := &echoLab{sp: sp, spHost: spHost, ha: ha, natA: natA, natB: natB, sps: []string{sp.url}, roots: []string{sp.rootFile()}}
	l.b = startDevice(t, hb, e2eDeviceConfig{Role: "echo", SuperPeers: l.sps, RootCAs: l.roots})
	if l.readyB, err = l.b.wait("ready", 0, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return l
}
