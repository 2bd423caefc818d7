// Command udpforward is the yardstick of the relay throughput benchmark: a
// plain Go UDP forwarder, one net.UDPConn and one read/write loop, that
// forwards every datagram from one fixed client address to the other and
// back, and drops the rest. It does no more per datagram than a relay
// must: one read and one write.
//
//	udpforward -a 127.0.0.1:PORT -b 127.0.0.1:PORT
//
// It listens on a loopback port, prints
//
//	udp 127.0.0.1:PORT
//
// and runs until its standard input ends, so that it never outlives the
// benchmark that started it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
)

// socketBuffer is asked for as the socket's receive and send buffers, as
// the benchmark asks for its own sockets; Linux caps it at
// net.core.rmem_max and wmem_max.
const socketBuffer = 4 << 20

func main() {
	log.SetFlags(0)
	log.SetPrefix("udpforward: ")
	a := flag.String("a", "", "one client's address, host:port")
	b := flag.String("b", "", "the other client's address, host:port")
	flag.Parse()
	pa, err := netip.ParseAddrPort(*a)
	if err != nil {
		log.Fatalf("-a: %v", err)
	}
	pb, err := netip.ParseAddrPort(*b)
	if err != nil {
		log.Fatalf("-b: %v", err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		log.Fatal(err)
	}
	conn.SetReadBuffer(socketBuffer)
	conn.SetWriteBuffer(socketBuffer)
	fmt.Printf("udp %s\n", conn.LocalAddr())

	go func() {
		io.Copy(io.Discard, os.Stdin)
		conn.Close() // ends the loop
	}()
	forward(conn, pa, pb)
}

// forward relays between a and b until conn is closed. A failed read or
// write drops the datagram, as a relay would.
func forward(conn *net.UDPConn, a, b netip.AddrPort) {
	buf := make([]byte, 64<<10)
	for {
		n, src, err := conn.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		var dst netip.AddrPort
		switch netip.AddrPortFrom(src.Addr().Unmap(), src.Port()) {
		case a:
			dst = b
		case b:
			dst = a
		default:
			continue
		}
		conn.WriteToUDPAddrPort(buf[:n], dst)
	}
}
