package abuse_test

// Attack a: a stranger looks a device up, and asks to relay to it, to
// learn where it is or whether it is there.

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

const (
	// presenceConsentTimeout and presencePairTimeout are cut short so
	// that answers that wait for them come quickly.
	presenceConsentTimeout = 800 * time.Millisecond
	presencePairTimeout    = 500 * time.Millisecond
	// presenceSlack is how much later than its deadline an answer may
	// come on a loaded machine and still count as "alike in timing".
	presenceSlack = 1500 * time.Millisecond
)

// dialRelay opens d's relay session towards peer on d's own connection.
func dialRelay(ctx context.Context, d *dev, peer identity.PeerID) (net.PacketConn, error) {
	if d.s.Transport() == rendezvous.TransportH3 {
		if c, err := relay.DialH3(ctx, d.s.HTTP3(), d.s.Authority(), peer); err != nil {
			return nil, err // not a typed nil
		} else {
			return c, nil
		}
	}
	if c, err := relay.DialH2(ctx, d.s.HTTP2(), d.s.Authority(), peer); err != nil {
		return nil, err
	} else {
		return c, nil
	}
}

// answer is what a stranger gets when it asks for a peer: the lookup's
// and the relay's refusal, peer IDs taken out, and how long each took.
type answer struct {
	lookup, relay           string
	lookupTook, relayTook   time.Duration
	lookupCands, relayConns int
}

// probe has stranger look peer up and ask to relay to it.
func probe(t *testing.T, stranger *dev, peer identity.PeerID) answer {
	t.Helper()
	var a answer
	c, err, took := introduce(t, stranger, peer, rendezvous.IntroduceOptions{Relay: true})
	var rerr *rendezvous.Error
	if !errors.As(err, &rerr) {
		t.Fatalf("lookup of %s: %v, want a refusal", peer.Short(), err)
	}
	a.lookup, a.lookupTook, a.lookupCands = anonymous(rerr.Code.String()+": "+rerr.Message, peer), took, len(c.All())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	conn, err := dialRelay(ctx, stranger, peer)
	a.relayTook = time.Since(start)
	if conn != nil {
		a.relayConns++
		conn.Close()
	}
	var ref *relay.RefusedError
	if !errors.As(err, &ref) {
		t.Fatalf("relay to %s: %v, want a refusal", peer.Short(), err)
	}
	a.relay = anonymous(strconv.Itoa(ref.Status)+" "+ref.Reason, peer)
	return a
}

// A stranger learns no address of a consenting device that declines or
// does not answer: its lookup and its relay request get what they get for
// an offline device, the same code and message, and no candidate. With
// hide_presence the answers come alike in time too, after the consent
// (pair) timeout; without it, the measurement below tells a silent device
// from an offline one, which shows it would catch a leak in time.
func TestStrangerLearnsNoAddress(t *testing.T) {
	for _, hide := range []bool{true, false} {
		name := "hide_presence"
		if !hide {
			name = "presence_shown"
		}
		t.Run(name, func(t *testing.T) {
			opts := "consent_timeout " + presenceConsentTimeout.String() + "\nrelay {\n\tpair_timeout " + presencePairTimeout.String() + "\n}"
			if hide {
				opts += "\nhide_presence"
			}
			c := start(t, opts)
			no := false
			declining := joinConsenting(t, c, "127.0.0.1", rendezvous.TransportH2, &no)
			silent := joinConsenting(t, c, "127.0.0.1", rendezvous.TransportH3, nil)
			stranger := join(t, c, "127.0.0.1", rendezvous.TransportH3)
			offline := probe(t, stranger, newID(t).PeerID())
			for _, tc := range []struct {
				name string
				d    *dev
			}{{"declining", declining}, {"silent", silent}} {
				got := probe(t, stranger, tc.d.peer())
				t.Logf("%s: lookup %q after %v, relay %q after %v; offline: %v, %v", tc.name, got.lookup, got.lookupTook.Round(time.Millisecond), got.relay, got.relayTook.Round(time.Millisecond), offline.lookupTook.Round(time.Millisecond), offline.relayTook.Round(time.Millisecond))
				if got.lookupCands+got.relayConns > 0 {
					t.Errorf("%s: the stranger got %d candidates and %d relay sessions", tc.name, got.lookupCands, got.relayConns)
				}
				for _, leak := range []string{tc.d.s.Observed().String(), tc.d.s.Observed().Addr().String()} {
					if strings.Contains(got.lookup+got.relay, leak) {
						t.Errorf("%s: an answer names the device's address %s: %q %q", tc.name, leak, got.lookup, got.relay)
					}
				}
				if got.lookup != offline.lookup {
					t.Errorf("%s: lookup refused with %q, offline with %q", tc.name, got.lookup, offline.lookup)
				}
				if hide {
					if got.relay != offline.relay {
						t.Errorf("%s: relay refused with %q, offline with %q", tc.name, got.relay, offline.relay)
					}
					alike(t, tc.name+" lookup", got.lookupTook, offline.lookupTook, presenceConsentTimeout)
					alike(t, tc.name+" relay", got.relayTook, offline.relayTook, presencePairTimeout)
				}
			}
			if !hide {
				// A silent device is told from an offline one by time:
				// the measurement sees what hide_presence hides.
				silentTook := probe(t, stranger, silent.peer()).lookupTook
				if silentTook < presenceConsentTimeout || offline.lookupTook > presenceConsentTimeout/2 {
					t.Errorf("without hide_presence, silent answered after %v and offline after %v: the timing check would see no leak", silentTook, offline.lookupTook)
				}
			}
		})
	}
}

// alike checks that two answers both came after deadline and within
// presenceSlack of it.
func alike(t *testing.T, what string, a, b, deadline time.Duration) {
	t.Helper()
	for _, took := range []time.Duration{a, b} {
		if took < deadline || took > deadline+presenceSlack {
			t.Errorf("%s: answered after %v and %v (offline), want both within %v after %v", what, a, b, presenceSlack, deadline)
		}
	}
}

// Without hide_presence, a relay request towards an offline device is
// refused at once (404): it tells a stranger who is online. Its failed
// lookups are charged to the same per-(asker, target) limit as the
// rendezvous's (rendezvous.DefaultLookupRate, DefaultLookupBurst), so a
// stranger scanning through the relay is refused with 429 after the
// burst.
func TestRelayLookupsLimited(t *testing.T) {
	c := start(t, "")
	stranger := join(t, c, "127.0.0.1", rendezvous.TransportH2)
	offline := newID(t).PeerID()
	var statuses []int
	for range rendezvous.DefaultLookupBurst + 2 {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		conn, err := dialRelay(ctx, stranger, offline)
		cancel()
		if conn != nil {
			conn.Close()
		}
		var ref *relay.RefusedError
		if !errors.As(err, &ref) {
			t.Fatalf("relay to an offline device: %v, want a refusal", err)
		}
		statuses = append(statuses, ref.Status)
	}
	t.Logf("statuses: %v", statuses)
	if last := statuses[len(statuses)-1]; last != http.StatusTooManyRequests {
		t.Errorf("after %d failed relay lookups of one device within a second: %d, want 429", len(statuses)-1, last)
	}
}

// A device that does not ask for consent (as devices from before consent
// did) is introduced at once, its address included, to a stranger; with
// require_consent the stranger gets what it gets for an offline device.
// The first sub-test shows what the option closes.
func TestRequireConsentHidesOldDevices(t *testing.T) {
	for _, require := range []bool{false, true} {
		name := "introduced_at_once"
		if require {
			name = "require_consent"
		}
		t.Run(name, func(t *testing.T) {
			opts := ""
			if require {
				opts = "require_consent"
			}
			c := start(t, opts)
			old := join(t, c, "127.0.0.1", rendezvous.TransportH2) // no OnRequest: no CapConsent
			stranger := join(t, c, "127.0.0.1", rendezvous.TransportH3)
			_, offline, _ := introduce(t, stranger, newID(t).PeerID(), rendezvous.IntroduceOptions{})
			cands, err, _ := introduce(t, stranger, old.peer(), rendezvous.IntroduceOptions{})
			t.Logf("the stranger got %v, %v (offline: %v)", cands.Observed, err, offline)
			if !require {
				if err != nil || cands.Observed != old.s.Observed() {
					t.Errorf("without require_consent: %v, %v; want the device's address %v", cands.Observed, err, old.s.Observed())
				}
				return
			}
			if cands.Observed.IsValid() || len(cands.LocalAddrs) > 0 {
				t.Errorf("the stranger got the device's addresses: %+v", cands)
			}
			var rerr, roff *rendezvous.Error
			if !errors.As(err, &rerr) || !errors.As(offline, &roff) || rerr.Code != roff.Code || rerr.Message != roff.Message {
				t.Errorf("a device without consent: %v; an offline one: %v", err, offline)
			}
		})
	}
}
