package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/netsody/superpeer/internal/sptest"
	"github.com/netsody/superpeer/rendezvous"
)

// Within restoreGrace of a reconnect, a device that declines is answered
// as one that no node holds, as at any other time (rendezvous: "a
// decline ... answered as an offline B is"): the grace must not tell a
// stranger which devices are registered. The reconnect is set, not
// made, so that the lookups surely fall within the grace
// (TestIntroductionAcrossNodes makes a real one).
func TestRestoreGraceHidesDecline(t *testing.T) {
	ns := startNATS(t, 0)
	cfg := rendezvous.Config{ConsentTimeout: 2 * time.Second}
	n1, n2 := startNode(t, ns, "test", cfg), startNode(t, ns, "test", cfg)
	yes, no := true, false
	asker, decliner := n1.device(t, &yes), n2.device(t, &no)
	waitFor(t, "both devices joined", func() bool { return n1.node.Stats().Joined.Load() == 1 && n2.node.Stats().Joined.Load() == 1 })
	flush(t, n1, n2)

	_, declined := asker.introduce(t, decliner.id.PeerID())
	_, offline := asker.introduce(t, sptest.NewIdentity(t).PeerID())
	if declined == nil || offline == nil || declined.Code != offline.Code || declined.Message != offline.Message {
		t.Fatalf("before any reconnect: a decline %v, an offline device %v", declined, offline)
	}

	n1.node.reconnectedAt.Store(time.Now().UnixNano())
	_, declined = asker.introduce(t, decliner.id.PeerID())
	_, offline = asker.introduce(t, sptest.NewIdentity(t).PeerID())
	if time.Since(time.Unix(0, n1.node.reconnectedAt.Load())) >= restoreGrace {
		t.Skip("the lookups outlasted the grace")
	}
	if offline == nil || offline.Code != rendezvous.ErrCodeRateLimited || offline.Message != msgRestoring {
		t.Errorf("within the grace, a device no node holds: %v, want retry later", offline)
	}
	if declined == nil || offline == nil || declined.Code != offline.Code || declined.Message != offline.Message {
		t.Errorf("within the grace: a decline is answered %v, a device no node holds %v: a stranger tells a registered device from an absent one", declined, offline)
	}
	// Each is a failed lookup still: a stranger pestering the decliner
	// meets the pair's LookupBurst (3) within the grace as at any time.
	limited := false
	for range 3 {
		_, e := asker.introduce(t, decliner.id.PeerID())
		limited = limited || e != nil && strings.Contains(e.Message, "too many connect requests for this peer")
	}
	if time.Since(time.Unix(0, n1.node.reconnectedAt.Load())) < restoreGrace && !limited {
		t.Error("within the grace, lookups of a declining device are not limited per pair")
	}
}
