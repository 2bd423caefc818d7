package relay

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"unicode/utf8"

	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/quicvarint"
)

// Capsules (RFC 9297 section 3.2) on a relay stream:
//
//	+-----------------+-------------------+------------------+
//	| type (varint)   | length (varint)   | value (length)   |
//	+-----------------+-------------------+------------------+
//
// Over HTTP/2 every relayed packet is a DATAGRAM capsule whose value is
// the HTTP datagram payload: context ID (varint, 0 for UDP payloads, RFC
// 9298 section 4) then the UDP payload. Over HTTP/3 packets travel as
// QUIC datagrams instead, and the stream carries capsules only for
// control. When the relay ends a session it first sends, on HTTP/2 legs,
// a CLOSE capsule whose value is the reason, UTF-8; receivers that do not
// know it skip it, as RFC 9297 requires for unknown capsule types. HTTP/3
// legs learn the end from their stream.
const (
	// CapsuleDatagram is RFC 9297's DATAGRAM capsule.
	CapsuleDatagram http3.CapsuleType = 0x00
	// CapsuleClose carries the reason a relay session ended. Its type is
	// an unregistered value from the registry's First Come First Served
	// range (RFC 9297 section 5.4), not of the reserved greasing form
	// 0x29 * N + 0x17.
	CapsuleClose http3.CapsuleType = 0x4e455453 // "NETS"
	// maxCloseReason bounds a CLOSE capsule's value, in bytes: a sentence
	// for a person, not a log.
	maxCloseReason = 256
)

// errCapsuleTooLarge is returned for a DATAGRAM capsule over the size
// limit; its contents have been discarded.
var errCapsuleTooLarge = errors.New("relay: datagram capsule over the size limit")

// capsuleReader reads the capsules of a buffered stream.
type capsuleReader struct {
	br *bufio.Reader
	p  *http3.CapsuleParser // for capsules other than DATAGRAM
}

func newCapsuleReader(r io.Reader) *capsuleReader {
	br := bufio.NewReaderSize(r, capsuleReadBuffer)
	return &capsuleReader{br: br, p: http3.NewCapsuleParser(br)}
}

// readDatagram reads capsules until a DATAGRAM capsule and returns its
// value in buf (reused when large enough). A CLOSE capsule's reason is
// returned as a *ClosedError. A DATAGRAM over limit bytes is discarded
// and reported as errCapsuleTooLarge, so the caller can count it and go
// on. Any other capsule is passed to onCapsule, if set, which may read
// its value (a fast-path request or answer); what it leaves is skipped.
// An error from onCapsule ends the read.
//
// A DATAGRAM capsule (its type in one byte, as every sender writes it) is
// read straight from the buffered stream, the one copy, allocating
// nothing: http3.CapsuleParser allocates for every capsule.
func (c *capsuleReader) readDatagram(buf []byte, limit int, onCapsule func(t http3.CapsuleType, r http3.CapsuleReader) error) ([]byte, error) {
	for {
		if n, ok := c.peekDatagram(); ok {
			if n > uint64(limit) {
				if _, err := c.br.Discard(int(min(n, math.MaxInt))); err != nil {
					return nil, err
				}
				return nil, errCapsuleTooLarge
			}
			return readFull(c.br, buf, int(n))
		}
		t, r, err := c.p.Next()
		if err != nil {
			return nil, err
		}
		switch t {
		case CapsuleDatagram:
			n := r.Remaining()
			if n > int64(limit) {
				if err := r.Discard(); err != nil {
					return nil, err
				}
				return nil, errCapsuleTooLarge
			}
			return readFull(r, buf, int(n))
		case CapsuleClose:
			if r.Remaining() > maxCloseReason {
				return nil, fmt.Errorf("relay: close capsule of %d bytes", r.Remaining())
			}
			reason, err := io.ReadAll(r)
			if err != nil {
				return nil, err
			}
			return nil, &ClosedError{Reason: string(reason)}
		default:
			if onCapsule != nil {
				if err := onCapsule(t, r); err != nil {
					return nil, err
				}
			}
			if err := r.Discard(); err != nil {
				return nil, err
			}
		}
	}
}

// peekDatagram consumes the header of a DATAGRAM capsule at the head of
// the stream and returns its value's length; ok is false, with nothing
// consumed, for another capsule, a type not in one byte, or a header that
// the stream ends in (the parser reports that).
func (c *capsuleReader) peekDatagram() (n uint64, ok bool) {
	b, _ := c.br.Peek(2)
	if len(b) < 2 || b[0] != byte(CapsuleDatagram) {
		return 0, false
	}
	hlen := 1 + 1<<(b[1]>>6) // type, then the length's varint
	if b, _ = c.br.Peek(hlen); len(b) < hlen {
		return 0, false
	}
	n, _, err := quicvarint.Parse(b[1:])
	if err != nil {
		return 0, false
	}
	c.br.Discard(hlen) // buffered: cannot fail
	return n, true
}

// readUDP reads the next DATAGRAM capsule's UDP payload (context ID 0,
// RFC 9298 section 4) straight into b, cut to len(b) as a UDP read is.
// ok is false, with nothing read, when the next capsule is not a DATAGRAM
// whose type is in one byte: readDatagram reads that. A DATAGRAM of
// another context, or over limit bytes, is skipped: n is -1.
func (c *capsuleReader) readUDP(b []byte, limit int) (n int, ok bool, err error) {
	size, ok := c.peekDatagram()
	if !ok {
		return 0, false, nil
	}
	rest, n := int(min(size, math.MaxInt)), -1
	if size <= uint64(limit) && rest > 0 {
		h, _ := c.br.Peek(1)
		if len(h) == 1 {
			idLen := 1 << (h[0] >> 6)
			h, _ = c.br.Peek(idLen)
			if id, _, perr := quicvarint.Parse(h); perr == nil && id == 0 && idLen <= rest {
				c.br.Discard(idLen) // buffered: cannot fail
				rest -= idLen
				n, err = io.ReadFull(c.br, b[:min(len(b), rest)])
				rest -= n
			}
		}
	}
	if err == nil {
		_, err = c.br.Discard(rest)
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, true, err
}

// readFull reads n bytes from r into buf, reused when large enough. It
// calls Read itself: io.ReadFull would take r as an interface, which
// costs an allocation for http3.CapsuleReader.
func readFull[R io.Reader](r R, buf []byte, n int) ([]byte, error) {
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	for off := 0; off < n; {
		m, err := r.Read(buf[off:])
		off += m
		if err != nil && off < n {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return buf, nil
}

// appendCapsule appends a capsule of type t whose value is the parts one
// after the other, so that a caller need not join them first.
func appendCapsule(b []byte, t http3.CapsuleType, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	b = quicvarint.Append(b, uint64(t))
	b = quicvarint.Append(b, uint64(n))
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// closeCapsule encodes a CLOSE capsule. A reason over maxCloseReason is
// cut at a rune boundary, so that it stays UTF-8.
func closeCapsule(reason string) []byte {
	if len(reason) > maxCloseReason {
		cut := maxCloseReason
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	return appendCapsule(nil, CapsuleClose, []byte(reason))
}

// ClosedError is how a relay connection reports that the super peer ended
// the session, and why.
type ClosedError struct{ Reason string }

func (e *ClosedError) Error() string { return "relay: session ended by the super peer: " + e.Reason }

// contextIDZero prefixes UDP payloads in HTTP datagrams (RFC 9298 §4).
var contextIDZero = []byte{0}
