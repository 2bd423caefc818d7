package main

import (
	"encoding/json"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/stuntest"
	"github.com/netsody/superpeer/peer"
	"github.com/netsody/superpeer/rendezvous"
)

// netcheck names, per super peer, what it saw of the device over HTTP/3
// and over STUN, and the verdict on the mapping, as a table and as JSON;
// a super peer whose STUN sees another port than its HTTP/3 session
// makes the mapping endpoint-dependent.
func TestNetcheck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		shift uint16
		want  rendezvous.NATMapping
	}{{0, rendezvous.MappingIndependent}, {1, rendezvous.MappingDependent}} {
		port := stuntest.Serve(t, stuntest.Options{Shift: tc.shift})
		sp := startSuperPeerAt(t, "127.0.0.1:0", rendezvous.Config{STUNPort: port})
		idFile, _ := newIdentity(t)
		out, errOut, code := runPeer(t, nil, 30*time.Second, append([]string{"netcheck"}, deviceArgs(idFile, sp)...)...)
		if code != 0 {
			t.Fatalf("netcheck: exit %d: %s", code, errOut)
		}
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`(?m)^mapping +` + tc.want.String() + `$`),
			regexp.MustCompile(`(?m)^SUPER PEER +FAMILY +TRANSPORT +RTT +SEEN OVER HTTP/3 +STUN PORT +SEEN OVER STUN +STUN RTT$`),
			regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sp.URL) + ` +ipv4 +h3 +\S+ ms +127\.0\.0\.1:\d+ +` + strconv.Itoa(int(port)) + ` +127\.0\.0\.1:\d+ +\S+ ms$`),
		} {
			if !want.MatchString(out) {
				t.Errorf("netcheck lacks %s:\n%s", want, out)
			}
		}
		out, errOut, code = runPeer(t, nil, 30*time.Second, append([]string{"netcheck", "--json"}, deviceArgs(idFile, sp)...)...)
		if code != 0 {
			t.Fatalf("netcheck --json: exit %d: %s", code, errOut)
		}
		var rep struct {
			NAT        peer.MappingStatus     `json:"nat"`
			SuperPeers []peer.SuperPeerStatus `json:"super_peers"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		if rep.NAT.Mapping != tc.want.String() || len(rep.NAT.Views) != 2 || len(rep.SuperPeers) != 1 || rep.SuperPeers[0].STUNPort != port || rep.SuperPeers[0].STUNObserved == "" {
			t.Errorf("netcheck --json: %+v", rep)
		}
	}
}
