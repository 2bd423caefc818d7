package dns01test

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// soaServer is the DNS server Caddy's `resolvers` points at. It answers SOA
// queries itself (the zone's apex has one; names below it have none), which
// is how Caddy finds the zone to hand to the DNS provider; every other query
// it relays to challtestsrv, which holds the TXT records the fake Cloudflare
// API published. Queries are answered one at a time: Caddy sends a few.
type soaServer struct {
	Addr     string
	zone     dnsmessage.Name // absolute, lowercase
	upstream string
	conn     net.PacketConn
	done     chan struct{}
}

func startSOAServer(t *testing.T, zone, upstream string) *soaServer {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &soaServer{
		Addr:     conn.LocalAddr().String(),
		zone:     dnsmessage.MustNewName(strings.ToLower(zone) + "."),
		upstream: upstream,
		conn:     conn,
		done:     make(chan struct{}),
	}
	// The serving goroutine is the server's; closing conn stops it.
	go s.serve(t)
	t.Cleanup(func() { conn.Close(); <-s.done })
	return s
}

func (s *soaServer) serve(t *testing.T) {
	defer close(s.done)
	buf := make([]byte, dnsMaxUDP)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		reply, err := s.answer(buf[:n])
		if err != nil {
			t.Logf("dns: %v", err)
			continue
		}
		s.conn.WriteTo(reply, from)
	}
}

// answer builds the reply to one query.
func (s *soaServer) answer(query []byte) ([]byte, error) {
	var p dnsmessage.Parser
	hdr, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	if q.Type != dnsmessage.TypeSOA {
		return s.relay(query)
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{
		ID: hdr.ID, Response: true, Authoritative: true, RecursionDesired: hdr.RecursionDesired,
	})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	// Below the apex: NOERROR without an answer, so the search for the
	// zone goes on one label up, as it does against a real server.
	if strings.EqualFold(q.Name.String(), s.zone.String()) {
		if err := b.StartAnswers(); err != nil {
			return nil, err
		}
		err := b.SOAResource(dnsmessage.ResourceHeader{Name: s.zone, Class: dnsmessage.ClassINET, TTL: dnsTTL},
			dnsmessage.SOAResource{
				NS:      dnsmessage.MustNewName("ns." + s.zone.String()),
				MBox:    dnsmessage.MustNewName("hostmaster." + s.zone.String()),
				Serial:  1,
				Refresh: dnsTTL, Retry: dnsTTL, Expire: dnsTTL, MinTTL: dnsTTL,
			})
		if err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// relay passes a query to challtestsrv and returns its reply.
func (s *soaServer) relay(query []byte) ([]byte, error) {
	c, err := net.Dial("udp", s.upstream)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(dnsRelayTimeout))
	if _, err := c.Write(query); err != nil {
		return nil, err
	}
	buf := make([]byte, dnsMaxUDP)
	n, err := c.Read(buf)
	if err != nil {
		return nil, errors.Join(errors.New("relaying to challtestsrv"), err)
	}
	return buf[:n], nil
}
