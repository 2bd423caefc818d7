package peer

import (
	"net/netip"
	"testing"

	"github.com/netsody/superpeer/identity"
)

type discardWriter struct{}

func (discardWriter) writeUDP(b []byte, _ netip.AddrPort) (int, error) { return len(b), nil }

// FuzzPunch feeds arbitrary datagrams to the punch decoder and to the
// device's read path (sock.demux: punch or QUIC, then handlePunch), with
// one peer known to the device: nothing panics, and what decodes is
// what was signed.
func FuzzPunch(f *testing.F) {
	me, err := identity.Generate()
	if err != nil {
		f.Fatal(err)
	}
	known, err := identity.Generate()
	if err != nil {
		f.Fatal(err)
	}
	stranger, err := identity.Generate()
	if err != nil {
		f.Fatal(err)
	}
	ping := (&punch{typ: punchPing, sender: known.PeerID(), receiver: me.PeerID(), nonce: 7}).encode(known)
	f.Add(ping)
	f.Add((&punch{typ: punchPong, sender: known.PeerID(), receiver: me.PeerID(), nonce: 7}).encode(known))
	f.Add((&punch{typ: punchPing, sender: stranger.PeerID(), receiver: me.PeerID(), nonce: 1}).encode(stranger))
	f.Add((&punch{typ: 3, sender: known.PeerID(), receiver: me.PeerID()}).encode(known))
	f.Add((&punch{typ: punchPing, sender: me.PeerID(), receiver: me.PeerID()}).encode(me))
	f.Add(ping[:punchLen-1])
	f.Add(append([]byte{0xc0, 0, 0, 0, 1}, make([]byte, 40)...)) // a QUIC long header
	f.Add([]byte{})

	d := &Device{cfg: Config{Identity: me}.withDefaults(), id: me.PeerID(), closed: make(chan struct{}),
		peers: make(map[identity.PeerID]*peerState)}
	d.log = d.cfg.Logger
	d.guard.init(d.cfg)
	d.policy.init(d.cfg)
	d.sock = newSock(nil, d)
	d.Allow(known.PeerID())
	p := d.peer(known.PeerID(), true)
	p.out = discardWriter{}
	from := netip.MustParseAddrPort("192.0.2.1:4000")
	f.Cleanup(func() {
		close(d.closed)
		d.wg.Wait()
	})

	f.Fuzz(func(t *testing.T, b []byte) {
		pn, err := decodePunch(b, d.id)
		if err == nil {
			if pn.sender != known.PeerID() && pn.sender != stranger.PeerID() {
				t.Fatalf("a punch from %s decoded: a forged signature passed", pn.sender.Short())
			}
			if !isPunch(b) || pn.receiver != d.id || (pn.typ != punchPing && pn.typ != punchPong) {
				t.Fatalf("decoded a malformed punch %+v", pn)
			}
		}
		d.sock.demux(b, from)
		select { // QUIC's queue: drain it, as the transport would
		case <-d.sock.in:
		default:
		}
	})
}
