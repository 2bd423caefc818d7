package abuse_test

// Attack g: keys that are no keys. ed25519.Verify accepts a small-order
// public key with a signature anyone can write; a non-canonical encoding
// is a second name for a point.

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netsody/superpeer/identity"
	"github.com/netsody/superpeer/internal/testcaddy"
	"github.com/netsody/superpeer/relay"
	"github.com/netsody/superpeer/rendezvous"
)

// noKeys are peer IDs that identity.PeerID.Validate refuses: the 8
// points of small order (identity's key_test.go) and non-canonical
// encodings. The first, the identity point, "signs" every message with
// the signature forged below.
var noKeys = func() []identity.PeerID {
	ff := strings.Repeat("ff", 30)
	var ps []identity.PeerID
	for _, h := range []string{
		"01" + strings.Repeat("00", 31), // order 1, the identity
		"ec" + ff + "7f",                // order 2
		strings.Repeat("00", 32),        // order 4
		strings.Repeat("00", 31) + "80", // order 4, x negated
		"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
		"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
		"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
		"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
		"ee" + ff + "7f",                       // y = p+1, the identity again: non-canonical
		"f0" + ff + "7f",                       // y = p+3, non-canonical, of large order
		"01" + strings.Repeat("00", 30) + "80", // the identity with the sign bit
	} {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != identity.PeerIDLen {
			panic("bad test vector " + h)
		}
		ps = append(ps, identity.PeerID(b))
	}
	return ps
}()

// forgedRegister is a register frame (rendezvous/frame.go) for peer with
// the signature that verifies for the identity point on any message:
// R = the identity, S = 0. Protocol version 1: no extensions.
func forgedRegister(peer identity.PeerID) []byte {
	p := append([]byte{}, peer[:]...)
	sig := make([]byte, 64)
	sig[0] = 1
	p = append(p, sig...)
	p = binary.BigEndian.AppendUint32(p, 0) // proof of work
	p = append(p, 0)                        // no local addresses
	return append(binary.BigEndian.AppendUint16([]byte{byte(rendezvous.FrameRegister)}, uint16(len(p))), p...)
}

// rawRegister sends frame as the first frame of a new session over
// HTTP/2 and returns the type and payload of the super peer's first
// frame.
func rawRegister(t *testing.T, c *testcaddy.Caddy, frame []byte) (rendezvous.FrameType, []byte) {
	t.Helper()
	var p http.Protocols
	p.SetHTTP2(true)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.Roots, ServerName: "localhost"}, Protocols: &p}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://127.0.0.1:"+strconv.Itoa(c.Port)+rendezvous.Path, pr)
	req.Host = "localhost"
	req.Header.Set("Content-Type", rendezvous.ContentType)
	go pw.Write(frame)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("session request: %s", resp.Status)
	}
	hdr := make([]byte, 3)
	if _, err := io.ReadFull(resp.Body, hdr); err != nil {
		t.Fatalf("no answer to the register frame: %v", err)
	}
	payload := make([]byte, binary.BigEndian.Uint16(hdr[1:]))
	if _, err := io.ReadFull(resp.Body, payload); err != nil {
		t.Fatal(err)
	}
	return rendezvous.FrameType(hdr[0]), payload
}

// No key that is no key registers, is introduced, or is relayed to,
// through Caddy. Without the check, the identity point registers with
// the forged signature (checked by disabling Validate).
func TestNoKeysRefused(t *testing.T) {
	c := start(t, "")
	asker := join(t, c, "127.0.0.1", rendezvous.TransportH3)
	for _, p := range noKeys {
		// The zero ID is refused by the signature check: frames use it
		// for "no peer", so the decoder lets it through, and nobody can
		// hold it; the others by the decoder.
		want := rendezvous.ErrCodeMalformedFrame
		if p == (identity.PeerID{}) {
			want = rendezvous.ErrCodeBadSignature
		}
		typ, payload := rawRegister(t, c, forgedRegister(p))
		if typ != rendezvous.FrameError || len(payload) < 2 || rendezvous.ErrorCode(binary.BigEndian.Uint16(payload)) != want {
			t.Errorf("register %s: answered %v %q, want error %v", hex.EncodeToString(p[:]), typ, payload, want)
		}

		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		conn, err := dialRelay(ctx, asker, p)
		cancel()
		var ref *relay.RefusedError
		if conn != nil {
			conn.Close()
		}
		if !errors.As(err, &ref) || ref.Status != http.StatusForbidden || !strings.Contains(ref.Reason, "Ed25519") && !strings.Contains(ref.Reason, "small order") {
			t.Errorf("relay to %s: %v, want 403 saying it is no key", hex.EncodeToString(p[:]), err)
		}

		// A registered device asking for it: its session ends, as with
		// any frame that does not decode. (Nobody registers as the zero
		// ID, so a lookup of it finds nobody.)
		if p == (identity.PeerID{}) {
			continue
		}
		d := join(t, c, "127.0.0.1", rendezvous.TransportH2)
		_, err, _ = introduce(t, d, p, rendezvous.IntroduceOptions{})
		var rerr *rendezvous.Error
		if !errors.As(err, &rerr) || rerr.Code != rendezvous.ErrCodeMalformedFrame {
			t.Errorf("introduce %s: %v, want a malformed-frame error", hex.EncodeToString(p[:]), err)
		}
	}
	if err := asker.s.Err(); err != nil {
		t.Errorf("the asker's session ended: %v", err)
	}
}
