package natlab

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// A delay router stands between the internet and one node (WithDelay). The
// kernel it runs on has no netem qdisc, so the delay is made in user space:
//
//	internet ──p<n>── up0 [delay router] down0 ── node
//	                          │  ▲
//	                   table 100  iif tun0 → main
//	                          ▼  │
//	                          tun0 ⇄ delayLink goroutines (hold each packet d)
//
// Policy routing sends every packet that arrives on up0 or down0 into tun0
// (rules "iif up0/down0 lookup 100", table 100 "default dev tun0"). The
// delayLink reads each packet from the TUN, holds it for d and writes it back
// into the same TUN; the kernel then sees it arrive on tun0, where the rule
// "iif tun0 lookup main" routes it on to its real destination. Packets are
// not rewritten, so the far side sees the node's real addresses and ports,
// and UDP, TCP and ICMP over IPv4 and IPv6 are delayed alike.
const (
	tunName = "tun0"

	// delayTable is the routing table that leads into the TUN.
	delayTable = "100"

	// delayQueueLen bounds the packets held at once. At 1500 bytes that is
	// 6 MB, or 240 Mbit/s at 200 ms; when the queue is full, packets are
	// dropped and counted, as a router's full queue would.
	delayQueueLen = 4096
)

// delayLink holds every packet that crosses a delay router for delay.
type delayLink struct {
	tun     *os.File
	delay   atomic.Int64 // time.Duration
	dropped atomic.Uint64
	queue   chan heldPacket // FIFO; one delay for all, so ordered by due time
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

type heldPacket struct {
	due time.Time
	b   []byte
}

// startDelayLink opens the TUN in namespace ns and starts serving it.
func startDelayLink(ns string, d time.Duration) (*delayLink, error) {
	var tun *os.File
	err := doIn(ns, func() (err error) {
		tun, err = openTUN(tunName)
		return err
	})
	if err != nil {
		return nil, err
	}
	dl := &delayLink{
		tun:   tun,
		queue: make(chan heldPacket, delayQueueLen),
		done:  make(chan struct{}),
	}
	dl.delay.Store(int64(d))
	dl.wg.Add(2)
	go dl.receive()
	go dl.send()
	return dl, nil
}

// openTUN creates TUN device name in the calling thread's namespace. The
// file is non-blocking, so Go's poller serves it and Close ends a Read.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("natlab: opening /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("natlab: TUN name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("natlab: creating TUN %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/"+name), nil
}

// receive reads packets from the TUN and queues them with their due time.
func (dl *delayLink) receive() {
	defer dl.wg.Done()
	buf := make([]byte, 1<<16)
	for {
		n, err := dl.tun.Read(buf)
		if err != nil {
			// Only Close ends the TUN; any other error would repeat.
			return
		}
		p := heldPacket{
			due: time.Now().Add(time.Duration(dl.delay.Load())),
			b:   append([]byte(nil), buf[:n]...),
		}
		select {
		case dl.queue <- p:
		default:
			dl.dropped.Add(1)
		}
	}
}

// send writes each queued packet back into the TUN once it is due.
func (dl *delayLink) send() {
	defer dl.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var p heldPacket
		select {
		case <-dl.done:
			return
		case p = <-dl.queue:
		}
		if wait := time.Until(p.due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-dl.done:
				timer.Stop()
				return
			case <-timer.C:
			}
		}
		if _, err := dl.tun.Write(p.b); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			dl.dropped.Add(1) // e.g. a packet the kernel refuses
		}
	}
}

// setDelay changes the delay of packets read from now on.
func (dl *delayLink) setDelay(d time.Duration) { dl.delay.Store(int64(d)) }

// close stops both goroutines and closes the TUN; the delay router's
// namespace can then go.
func (dl *delayLink) close() error {
	var err error
	dl.once.Do(func() {
		close(dl.done)
		err = dl.tun.Close()
		dl.wg.Wait()
	})
	if err != nil {
		return fmt.Errorf("natlab: closing TUN: %w", err)
	}
	return nil
}
