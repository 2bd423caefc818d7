#!/usr/bin/env bash
# Measures what docs/quic-go-datagram-queues.patch brings (docs/QUIC-GO.md):
# the relay benchmark (BenchmarkRelay) and netsody-peer bench, each built
# against quic-go as go.mod pins it ("base") and with the patch ("patched",
# both datagram receive queues set to QUEUE_LEN at the super peer and at the
# devices), run interleaved: base, patched, base, patched, ...
#
#   internal/bench/quicgo-queues.sh [relay|peer|both]
#
# Environment: ROUNDS (2), QUEUE_LEN (1024), RELAY_DURATION (5s),
# PEER_DURATION (8s), WORK (a new directory under /tmp), PORT (28443).
#
# Nothing in this checkout changes: quic-go and the project are copied to
# WORK, and each copy gets a go.mod replace of its own. Both quic-go copies
# also count the datagrams their receive queues drop (measurement only, not
# part of the patch): every process writes its counts to WORK/drops/<name>,
# at most every 50 ms, so the last 50 ms of drops may be missing.
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
root=$PWD
what=${1:-both}
rounds=${ROUNDS:-2}
qlen=${QUEUE_LEN:-1024}
port=${PORT:-28443}
work=${WORK:-$(mktemp -d /tmp/quicgo-queues.XXXXXX)}
mkdir -p "$work/drops"
echo "work directory: $work" >&2

qmod=github.com/quic-go/quic-go
qdir=$(go list -m -f '{{.Dir}}' $qmod)

# instrument adds the drop counters to the quic-go copy in $1.
instrument() {
	cat >"$1/debug_drops.go" <<'EOF'
package quic

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"
)

// Measurement only (netsody docs/QUIC-GO.md): DATAGRAM frames dropped
// because the connection's receive queue was full, and HTTP datagrams
// dropped because a request stream's queue was full. With QUICGO_DROPS_DIR
// set, the counts go to a file there named after the process.
var DebugDatagramDrops, DebugStreamDatagramDrops atomic.Int64

var debugDropsWritten atomic.Int64

func DebugDropped() {
	dir := os.Getenv("QUICGO_DROPS_DIR")
	now := time.Now().UnixNano()
	last := debugDropsWritten.Load()
	if dir == "" || now-last < int64(50*time.Millisecond) || !debugDropsWritten.CompareAndSwap(last, now) {
		return
	}
	name := os.Getenv("QUICGO_DROPS_NAME")
	if name == "" {
		name = filepath.Base(os.Args[0]) + "-" + strconv.Itoa(os.Getpid())
	}
	os.WriteFile(dir+"/"+name, fmt.Appendf(nil, "%d %d\n", DebugDatagramDrops.Load(), DebugStreamDatagramDrops.Load()), 0o644)
}
EOF
	sed -i 's/^\tif !queued && h.logger.Debug() {/\tif !queued {\n\t\tDebugDatagramDrops.Add(1)\n\t\tDebugDropped()\n\t}\n&/' "$1/datagram_queue.go"
	sed -i 's/^\tif len(s.queue) >= .*{$/&\n\t\tquic.DebugStreamDatagramDrops.Add(1)\n\t\tquic.DebugDropped()/' "$1/http3/state_tracking_stream.go"
	grep -q DebugDatagramDrops.Add "$1/datagram_queue.go"
	grep -q DebugStreamDatagramDrops.Add "$1/http3/state_tracking_stream.go"
}

# udpdrops prints the kernel's count of UDP datagrams dropped because a
# socket's receive buffer was full (IPv4 and IPv6, this network namespace,
# every process in it).
udpdrops() {
	awk '/^Udp:/ { if (h) n += $6; h = 1 } /^Udp6RcvbufErrors/ { n += $2 } END { print n }' /proc/net/snmp /proc/net/snmp6
}

# drops prints, and appends to $1, the drops counted since the run began.
drops() {
	local f any=
	for f in "$work/drops/"*; do
		[ -e "$f" ] || continue
		any=1
		echo "quic-go receive-queue drops (connection queue, stream queue) in $(basename "$f"): $(cat "$f")"
	done | tee -a "$1"
	[ -n "$(ls "$work/drops")" ] || echo "quic-go receive-queue drops: none in any process" | tee -a "$1"
	echo "kernel UDP receive-buffer drops on this machine: $(($(udpdrops) - udp0))" | tee -a "$1"
	rm -f "$work/drops/"*
}

# setup copies quic-go and the project for variant $1 and builds them.
setup() {
	local v=$1 q=$work/quic-go-$1 sp=$work/sp-$1
	rm -rf "$q" "$sp"
	cp -r "$qdir" "$q"
	chmod -R u+w "$q"
	mkdir -p "$sp"
	git ls-files -z | xargs -0 cp --parents -t "$sp"
	(cd "$sp" && go mod edit -replace $qmod="$q")
	if [ "$v" = patched ]; then
		patch -s -d "$q" -p1 <docs/quic-go-datagram-queues.patch
		# The super peer's HTTP/3 endpoint and the devices' rendezvous
		# connections: the two places that receive relayed datagrams.
		sed -i "s/^\(\t*\)EnableDatagrams:   true,$/&\n\1DatagramReceiveQueueLen: $qlen,/; s/^\(\t*\)EnableDatagrams: true,$/&\n\1StreamDatagramQueueLen: $qlen,/" "$sp/caddymodule/endpoint.go"
		sed -i "s/^\(\t*\)EnableDatagrams: true,$/&\n\1DatagramReceiveQueueLen: $qlen,/; s/(&http3.Transport{EnableDatagrams: true})/(\&http3.Transport{EnableDatagrams: true, StreamDatagramQueueLen: $qlen})/" "$sp/rendezvous/dial.go"
		[ "$(grep -c "QueueLen: $qlen" "$sp/caddymodule/endpoint.go" "$sp/rendezvous/dial.go" | cut -d: -f2 | paste -sd+ | bc)" = 4 ] ||
			{ echo "could not set the queue lengths in $sp" >&2; exit 1; }
	fi
	instrument "$q"
	echo "building $v" >&2
	(cd "$sp" && GOFLAGS=-mod=mod go test -c -o "$work/bench-$v.test" ./internal/bench &&
		GOFLAGS=-mod=mod go build -o "$work/caddy-$v" ./internal/caddymain &&
		GOFLAGS=-mod=mod go build -o "$work/netsody-peer-$v" ./cmd/netsody-peer)
}

# relay runs BenchmarkRelay of variant $1, round $2.
relay() {
	local v=$1 r=$2
	echo "== relay benchmark: $v, round $r" | tee -a "$work/relay.txt"
	rm -f "$work/drops/"*
	udp0=$(udpdrops)
	(cd "$work/sp-$v/internal/bench" && QUICGO_DROPS_DIR=$work/drops "$work/bench-$v.test" \
		-test.run='^$' -test.bench=Relay -test.benchtime=1x -relay-duration="${RELAY_DURATION:-5s}" 2>&1) |
		tee -a "$work/relay.txt"
	drops "$work/relay.txt"
}

# peer runs netsody-peer bench of variant $1, round $2: relayed over HTTP/3
# (--relay-only; this Caddy serves no fast path) and direct.
peer() {
	local v=$1 r=$2 d=$work/peer-$1 np=$work/netsody-peer-$1
	rm -rf "$d" "$work/drops/"*
	mkdir -p "$d"
	# The relay benchmark's site block (relayCaddyfile): its rates and
	# budgets are far above what loopback carries.
	cat >"$d/Caddyfile" <<EOF
{
	admin off
	https_port $port
	http_port $((port + 1))
	skip_install_trust
	storage file_system $d/data
}
EOF
	sed -n '/^localhost {$/,/^}$/p' internal/bench/relay_test.go >>"$d/Caddyfile"
	grep -q device_rate "$d/Caddyfile" || { echo "no relay settings in $d/Caddyfile" >&2; exit 1; }
	QUICGO_DROPS_DIR=$work/drops QUICGO_DROPS_NAME=superpeer HOME=$d XDG_DATA_HOME=$d XDG_CONFIG_HOME=$d \
		"$work/caddy-$v" run --config "$d/Caddyfile" --adapter caddyfile >"$d/caddy.log" 2>&1 &
	local caddy=$!
	local ca=$d/data/pki/authorities/local/root.crt
	for _ in $(seq 100); do
		[ -s "$ca" ] && curl -s --cacert "$ca" "https://localhost:$port/" >/dev/null && break
		sleep 0.2
	done
	local sp=https://localhost:$port
	"$np" keygen --out "$d/a.id" >"$d/a.peer"
	"$np" keygen --out "$d/b.id" >"$d/b.peer"
	for mode in relayed direct; do
		local only=()
		[ $mode = relayed ] && only=(--relay-only)
		QUICGO_DROPS_DIR=$work/drops QUICGO_DROPS_NAME=listener \
			"$np" listen --identity "$d/a.id" --super-peer $sp --ca "$ca" --allow "$(cat "$d/b.peer")" --echo "${only[@]}" >/dev/null 2>"$d/listen.log" &
		local listener=$!
		sleep 1
		udp0=$(udpdrops)
		echo "== netsody-peer bench: $v, round $r, $mode" | tee -a "$work/peer.txt"
		QUICGO_DROPS_DIR=$work/drops QUICGO_DROPS_NAME=bench \
			"$np" bench --identity "$d/b.id" --super-peer $sp --ca "$ca" --duration "${PEER_DURATION:-8s}" "${only[@]}" "$(cat "$d/a.peer")" 2>&1 |
			grep -v '^bench: *[0-9]*s ' | tee -a "$work/peer.txt" || true
		kill "$listener"
		wait "$listener" 2>/dev/null || true
		drops "$work/peer.txt"
	done
	kill "$caddy"
	wait "$caddy" 2>/dev/null || true
}

setup base
setup patched
for r in $(seq "$rounds"); do
	for v in base patched; do
		case $what in relay | both) relay $v "$r" ;; esac
		case $what in peer | both) peer $v "$r" ;; esac
	done
done
echo "results: $work/relay.txt $work/peer.txt" >&2
