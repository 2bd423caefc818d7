// Command netsody-peer is a Netsody device on the command line: it makes
// identities, stays reachable through super peers, connects to peers
// (directly when it can, through a super peer's relay when it must),
// measures the connection, and shows a device's status.
//
//	netsody-peer keygen --out FILE [--pow BITS]
//	netsody-peer listen --identity FILE --super-peer URL... (--allow PEERID... | --allow-any) [--echo] [--status ADDR]
//	netsody-peer connect --identity FILE --super-peer URL... [--relay-only] PEERID
//	netsody-peer bench --identity FILE --super-peer URL... [--duration D] PEERID
//	netsody-peer status ADDR
//	netsody-peer netcheck --identity FILE --super-peer URL... [--json]
//
// Messages for people go to stderr, one line each; data goes to stdout.
// Exit status: 0 on success, 1 on failure, 2 for a mistake on the command
// line, 130 when a signal cut a connect short.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/netsody/superpeer/identity"
)

const usage = `usage: netsody-peer <command> [flags] [args]

commands:
  keygen   --out FILE [--pow BITS]            make an identity, print its peer ID
  listen   --identity FILE --super-peer URL (--allow PEERID | --allow-any)
                                              stay reachable, serve the peers allowed
  connect  --identity FILE --super-peer URL PEERID
                                              pipe stdin and stdout to a peer
  bench    --identity FILE --super-peer URL PEERID
                                              measure throughput and RTT to a peer
  status   ADDR                               show the status a device serves
  netcheck --identity FILE --super-peer URL [--json]
                                              what each super peer sees of this device,
                                              and its NAT's mapping: why am I relayed?

Run 'netsody-peer <command> -h' for a command's flags.
`

// Exit statuses.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitInterrupted = 130
)

// commands maps a subcommand to its function. Each parses its own flags
// and returns the error to report, if any.
var commands = map[string]func(ctx context.Context, args []string) error{
	"keygen":  runKeygen,
	"listen":  runListen,
	"connect": runConnect,
	"bench":   runBench,
	"status":  runStatus,

	"netcheck": runNetcheck,
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(os.Stdout, usage)
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "netsody-peer: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}

	// The first SIGINT or SIGTERM asks the command to finish cleanly; a
	// second one kills the process.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()

	err := cmd(ctx, args[1:])
	var uerr *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errInterrupted):
		return exitInterrupted
	case errors.As(err, &uerr):
		fmt.Fprintf(os.Stderr, "netsody-peer %s: %s; see 'netsody-peer %s -h'\n", uerr.cmd, oneLine(uerr.msg), uerr.cmd)
		return exitUsage
	}
	fmt.Fprintf(os.Stderr, "netsody-peer: %s\n", oneLine(err.Error()))
	return exitFailure
}

// errInterrupted ends a command that a signal cut short.
var errInterrupted = errors.New("interrupted")

// usageError is a mistake on the command line.
type usageError struct {
	cmd, msg string
}

func (e *usageError) Error() string { return e.cmd + ": " + e.msg }

func usagef(cmd, format string, args ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, args...)}
}

// oneLine folds a multi-line message (errors.Join makes them) into one.
func oneLine(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }), "; ")
}

// flagSet is a command's flags. It reports its errors instead of printing
// them and exiting.
type flagSet struct {
	*flag.FlagSet
	synopsis string // what follows "netsody-peer CMD" in the help
}

func newFlagSet(cmd, synopsis string) *flagSet {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {} // parse prints the help asked for; errors are one line
	return &flagSet{FlagSet: fs, synopsis: synopsis}
}

// parse parses args, with flags before, between or after the positional
// arguments, and returns the positional ones.
func (fs *flagSet) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.help()
				return nil, err
			}
			return nil, usagef(fs.Name(), "%s", err)
		}
		rest := fs.Args()
		// Parse stops after "--" or at the first positional argument.
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// help prints the command's help on stdout.
func (fs *flagSet) help() {
	fmt.Fprintf(os.Stdout, "usage: netsody-peer %s %s\n\nflags:\n", fs.Name(), fs.synopsis)
	fs.SetOutput(os.Stdout)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// peerIDList is a flag of peer IDs that may be given more than once.
type peerIDList []identity.PeerID

func (l *peerIDList) String() string {
	s := make([]string, len(*l))
	for i, p := range *l {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

func (l *peerIDList) Set(s string) error {
	p, err := identity.ParsePeerID(s)
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "identity: "))
	}
	*l = append(*l, p)
	return nil
}

// stringList is a flag that may be given more than once.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ", ") }

func (l *stringList) Set(s string) error {
	*l = append(*l, s)
	return nil
}
