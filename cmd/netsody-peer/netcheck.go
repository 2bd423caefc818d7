package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/netsody/superpeer/peer"
	"github.com/netsody/superpeer/rendezvous"
)

// netcheckReport is what netcheck prints, and its --json.
type netcheckReport struct {
	PeerID     string                 `json:"peer_id"`
	Sockets    []string               `json:"sockets"`
	NAT        peer.MappingStatus     `json:"nat"`
	Why        string                 `json:"why"`
	SuperPeers []peer.SuperPeerStatus `json:"super_peers"`
}

// runNetcheck starts a device, waits for its super peers (within
// --timeout), checks its NAT's mapping, and prints per super peer what
// it saw: "why am I relayed?" in one command.
func runNetcheck(ctx context.Context, args []string) error {
	fs := newFlagSet("netcheck", "--identity FILE --super-peer URL [--super-peer URL]... [--json] [flags]")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	df, d, err := openDevice(fs, args, true)
	if err != nil {
		return err
	}
	defer d.Close()
	checkCtx, cancel := context.WithTimeout(ctx, df.timeout)
	defer cancel()
	nat := d.CheckMapping(checkCtx)
	if ctx.Err() != nil {
		return errInterrupted
	}
	st := d.Status()
	rep := netcheckReport{PeerID: st.PeerID, Sockets: st.Sockets, NAT: nat, Why: mappingWhy(nat.Mapping), SuperPeers: st.SuperPeers}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return printNetcheck(os.Stdout, rep)
}

// mappingWhy says what a mapping means for the device's paths.
func mappingWhy(mapping string) string {
	switch mapping {
	case rendezvous.MappingIndependent.String():
		return "every destination sees this socket at one address and port: peers can punch to it, and it is direct with most"
	case rendezvous.MappingDependent.String():
		return "the NAT maps this socket per destination: a peer behind such a NAT too is reached through a relay, without punching; others may still punch to it"
	}
	return "no two destinations answered from this socket (UDP blocked, or one super peer without a STUN port): nothing is skipped, punching is tried"
}

// printNetcheck writes the report as a table.
func printNetcheck(w io.Writer, r netcheckReport) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "peer ID\t%s\n", r.PeerID)
	for _, s := range r.Sockets {
		fmt.Fprintf(tw, "socket\t%s\n", s)
	}
	fmt.Fprintf(tw, "mapping\t%s\n", r.NAT.Mapping)
	fmt.Fprintf(tw, "filtering\t%s\n", r.NAT.Filtering)
	fmt.Fprintf(tw, "why\t%s\n", r.Why)
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "SUPER PEER\tFAMILY\tTRANSPORT\tRTT\tSEEN OVER HTTP/3\tSTUN PORT\tSEEN OVER STUN\tSTUN RTT")
	for _, sp := range r.SuperPeers {
		if !sp.Connected {
			fmt.Fprintf(tw, "%s\t%s\n", sp.URL, strings.TrimSpace("not connected "+whyDown(sp)))
			continue
		}
		h3 := "-"
		if sp.Transport == string(rendezvous.TransportH3) {
			h3 = dash(sp.Observed)
		}
		port := "-"
		if sp.STUNPort != 0 {
			port = fmt.Sprint(sp.STUNPort)
		}
		stunSeen := dash(sp.STUNObserved)
		if sp.STUNPort != 0 && sp.STUNObserved == "" {
			stunSeen = "no answer"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", sp.URL, dash(sp.Family), sp.Transport, fmtMillis(sp.RTTMillis), h3, port, stunSeen, fmtMillis(sp.STUNRTTMillis))
	}
	return tw.Flush()
}
