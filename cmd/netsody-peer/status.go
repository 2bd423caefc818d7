package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/peer"
)

// Status HTTP endpoints, served with --status ADDR.
const (
	statusPath  = "/status"  // GET: peer.Status as JSON
	metricsPath = "/metrics" // GET: Prometheus text format
)

// statusTimeout bounds a status request, both ways.
const statusTimeout = 5 * time.Second

// statusServer serves a device's status and metrics over plain HTTP. It
// is meant for loopback or a trusted network: it has no authentication.
type statusServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

func serveStatus(addr string, d *peer.Device) (*statusServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(statusCollector{d})
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+statusPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(d.Status())
	})
	mux.Handle("GET "+metricsPath, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s := &statusServer{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: statusTimeout,
			WriteTimeout:      statusTimeout,
		},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return s, nil
}

// Addr is the address the server listens on, with the port it got.
func (s *statusServer) Addr() string { return s.ln.Addr().String() }

func (s *statusServer) Close() {
	s.srv.Close()
	<-s.done
}

// runStatus fetches the status a device serves with --status and prints
// it as two tables: super peers and peers.
func runStatus(ctx context.Context, args []string) error {
	fs := newFlagSet("status", "[--json] ADDR")
	raw := fs.Bool("json", false, "print the JSON as served")
	pos, err := fs.parse(args)
	if err != nil {
		return err
	}
	switch len(pos) {
	case 0:
		return usagef("status", "missing ADDR, the address the device serves --status on")
	case 1:
	default:
		return usagef("status", "unexpected argument %q", pos[1])
	}
	url := pos[0]
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	url = strings.TrimSuffix(strings.TrimSuffix(url, "/"), statusPath) + statusPath

	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return usagef("status", "ADDR %q: %s", pos[0], err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return errInterrupted
		}
		return fmt.Errorf("status: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("status: reading %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status: %s answered %s", url, resp.Status)
	}
	if *raw {
		_, err := os.Stdout.Write(body)
		return err
	}
	var st peer.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("status: %s is not a device's status: %w", url, err)
	}
	return printStatus(os.Stdout, st)
}

// printStatus writes a device's status as tables.
func printStatus(w io.Writer, st peer.Status) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "peer ID\t%s\n", st.PeerID)
	fmt.Fprintf(tw, "socket\t%s\n", st.LocalAddr)
	fmt.Fprintf(tw, "NAT mapping\t%s\n", dash(st.NAT.Mapping))
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "SUPER PEER\tCONNECTED\tRTT\tFAMILY\tTRANSPORT\tSEEN AS")
	for _, sp := range st.SuperPeers {
		name := sp.URL
		if sp.Temporary { // a relay node, held for relays to these peers
			name += fmt.Sprintf(" (relay node for %d peers)", strings.Count(sp.ForPeers, ",")+1)
		}
		if !sp.Connected {
			fmt.Fprintf(tw, "%s\tno\t-\t-\t-\t%s\n", name, dash(whyDown(sp)))
			continue
		}
		transport := sp.Transport
		if sp.TransportReason != "" {
			transport += " (" + sp.TransportReason + ")"
		}
		fmt.Fprintf(tw, "%s\tyes\t%s\t%s\t%s\t%s\n", name, fmtMillis(sp.RTTMillis), sp.Family, transport, dash(sp.Observed))
	}
	fmt.Fprintln(tw)
	if len(st.Peers) == 0 {
		fmt.Fprintln(tw, "no peers")
		return tw.Flush()
	}
	fmt.Fprintln(tw, "PEER\tPATH\tVIA\tRTT")
	for _, p := range st.Peers {
		via := "-"
		switch p.Path {
		case peer.PathDirect:
			via = p.Addr
		case peer.PathRelay:
			how := cmp.Or(string(p.RelayTransport), p.Transport)
			if p.RelayReason != "" {
				how += ": " + p.RelayReason // why not a better transport
			}
			via = fmt.Sprintf("%s (%s)", p.SuperPeer, how)
		}
		id := p.PeerID
		if pid, err := identity.ParsePeerID(id); err == nil {
			id = pid.Short()
		}
		if p.Reason != "" {
			via += ": " + p.Reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", id, p.Path, via, fmtMillis(p.RTTMillis))
	}
	return tw.Flush()
}

// fmtMillis writes a duration in milliseconds with two or three
// significant digits; "-" for none.
func fmtMillis(ms float64) string {
	switch {
	case ms <= 0:
		return "-"
	case ms < 1:
		return fmt.Sprintf("%.2f ms", ms)
	case ms < 100:
		return fmt.Sprintf("%.1f ms", ms)
	}
	return fmt.Sprintf("%.0f ms", ms)
}

// whyDown is why a super peer is not connected, in parentheses on one
// line, or "" if no attempt failed yet.
func whyDown(sp peer.SuperPeerStatus) string {
	if sp.Error == "" {
		return ""
	}
	return "(" + oneLine(sp.Error) + ")"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
