package relay

import (
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"sync"
)

// FastPathClient is a device's end of a fast-path binding: it frames what
// the device's one socket sends to the super peer's fast-path port, and
// takes what comes from there (IsFastPath tells those packets apart). It
// does not own the socket. Safe for concurrent use.
//
// To validate: send AppendProbe's packet; Handle the CHALLENGE that comes
// back and send the ANSWER it returns; Handle the BOUND, after which Bound
// is true. Probe again if nothing comes back. A CHALLENGE may come unasked
// after the device's NAT mapping changed: Handle it the same way.
type FastPathClient struct {
	b FastPathBinding

	mu     sync.Mutex // guards the following
	mac    *macer
	cookie []byte // of the last CHALLENGE answered
	bound  bool
}

// NewFastPathClient returns the client of binding b, not yet bound.
func NewFastPathClient(b FastPathBinding) *FastPathClient {
	return &FastPathClient{b: b, mac: newMacer(b.Token[:])}
}

// Binding returns the client's binding.
func (c *FastPathClient) Binding() FastPathBinding { return c.b }

// Bound reports whether the super peer confirmed this device's address.
func (c *FastPathClient) Bound() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bound
}

// AppendProbe appends a PROBE with a fresh nonce to dst.
func (c *FastPathClient) AppendProbe(dst []byte) []byte {
	var nonce [fastPathNonceLen]byte
	rand.Read(nonce[:])
	c.mu.Lock()
	defer c.mu.Unlock()
	dst = append(appendFastPathHeader(dst, fpProbe, c.b.ID), nonce[:]...)
	return append(dst, c.mac.mac(labelProbe, c.b.ID, nonce[:])...)
}

// AppendData appends DATA carrying an HTTP datagram payload (context ID
// and UDP payload) to dst.
func (c *FastPathClient) AppendData(dst, payload []byte) []byte {
	return append(appendFastPathHeader(dst, fpData, c.b.ID), payload...)
}

var errFastPathForeign = errors.New("relay: a fast-path packet for another binding, or forged")

// Handle takes a fast-path packet from the super peer. DATA returns its
// payload (aliasing p); a CHALLENGE returns the ANSWER to send, appended
// to reply; a BOUND whose MAC holds marks the client bound and returns
// neither.
func (c *FastPathClient) Handle(p, reply []byte) (payload, answer []byte, err error) {
	pk, err := parseFastPath(p)
	if err != nil {
		return nil, nil, err
	}
	if pk.id != c.b.ID {
		return nil, nil, errFastPathForeign
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch pk.typ {
	case fpData:
		return pk.body, nil, nil
	case fpChallenge:
		c.cookie = append(c.cookie[:0], pk.body[fastPathNonceLen:fastPathNonceLen+fastPathMACLen]...)
		reply = append(appendFastPathHeader(reply, fpAnswer, c.b.ID), c.cookie...)
		return nil, append(reply, c.mac.mac(labelAnswer, c.b.ID, c.cookie)...), nil
	case fpBound:
		if c.cookie == nil || !hmac.Equal(pk.body[:fastPathMACLen], c.mac.mac(labelBound, c.b.ID, c.cookie)) {
			return nil, nil, errFastPathForeign
		}
		c.bound = true
		return nil, nil, nil
	}
	return nil, nil, errFastPathMalformed
}
