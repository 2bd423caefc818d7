#!/usr/bin/env bash
# Measures netsody-peer bench, direct and over the relay's fast path, for
# one or more commits of this repository, interleaved as issue 12 asks
# (internal/bench/README.md, "Relayed speed as a user sees it"):
#
#   internal/bench/peer-rtt.sh [COMMIT]...     (default: HEAD)
#
# Each commit is built (Caddy with the plugin, netsody-peer) from a copy
# under WORK; nothing in this checkout changes. Per commit one Caddy runs
# on loopback with the fast path and the relay's rates lifted (the relay
# benchmark's site block), and one `netsody-peer listen --echo`. Then
# ROUNDS rounds of, per commit: `bench` direct (the path goes direct on
# loopback), then `bench --relay-only` (the fast path). Each line is
# what bench printed, the kernel's UDP RcvbufErrors during the run and
# the load average after it; `uptime` before and after.
#
# Environment: ROUNDS (2), DURATION (8s), PORT (29443; each commit takes
# ten ports from there), WORK (a new directory under /tmp).
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
rounds=${ROUNDS:-2}
port=${PORT:-29443}
work=${WORK:-$(mktemp -d /tmp/peer-rtt.XXXXXX)}
echo "work directory: $work" >&2
[ $# -gt 0 ] || set -- HEAD

udpdrops() { awk '/^Udp:/ { if (h) n += $6; h = 1 } END { print n }' /proc/net/snmp; }

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
declare -A sp ca peer
i=0
for rev in "$@"; do
	name=$(git rev-parse --short "$rev")
	d=$work/$name
	mkdir -p "$d/src"
	git archive "$rev" | tar -x -C "$d/src"
	echo "building $name" >&2
	(cd "$d/src" && go build -o "$d/caddy" ./internal/caddymain && go build -o "$d/netsody-peer" ./cmd/netsody-peer)
	p=$((port + 10 * i))
	cat >"$d/Caddyfile" <<EOF
{
	admin off
	https_port $p
	http_port $((p + 1))
	skip_install_trust
	storage file_system $d/data
}
EOF
	sed -n '/^localhost {$/,/^}$/p' internal/bench/relay_test.go | sed "s/FAST_PORT/$((p + 2))/" >>"$d/Caddyfile"
	grep -q "fast_path_port $((p + 2))" "$d/Caddyfile" || { echo "no relay settings in $d/Caddyfile" >&2; exit 1; }
	HOME=$d XDG_DATA_HOME=$d XDG_CONFIG_HOME=$d "$d/caddy" run --config "$d/Caddyfile" --adapter caddyfile >"$d/caddy.log" 2>&1 &
	pids+=($!)
	sp[$name]=https://localhost:$p
	ca[$name]=$d/data/pki/authorities/local/root.crt
	for _ in $(seq 100); do
		[ -s "${ca[$name]}" ] && curl -s --cacert "${ca[$name]}" "${sp[$name]}/" >/dev/null && break
		sleep 0.2
	done
	"$d/netsody-peer" keygen --out "$d/a.id" >"$d/a.peer"
	"$d/netsody-peer" keygen --out "$d/b.id" >"$d/b.peer"
	"$d/netsody-peer" listen --identity "$d/a.id" --super-peer "${sp[$name]}" --ca "${ca[$name]}" --allow-any --echo --listen 127.0.0.1:0 >/dev/null 2>"$d/listen.log" &
	pids+=($!)
	peer[$name]=$(cat "$d/a.peer")
	i=$((i + 1))
done
sleep 2
echo "start $(date -u +%H:%M:%S) $(uptime)"
for r in $(seq "$rounds"); do
	for rev in "$@"; do
		name=$(git rev-parse --short "$rev")
		d=$work/$name
		for mode in direct fast; do
			only=()
			[ $mode = fast ] && only=(--relay-only)
			u0=$(udpdrops)
			out=$("$d/netsody-peer" bench --identity "$d/b.id" --super-peer "${sp[$name]}" --ca "${ca[$name]}" --listen 127.0.0.1:0 \
				--duration "${DURATION:-8s}" "${only[@]}" "${peer[$name]}" 2>"$d/bench.$r.$mode.log") || out="failed: $(tail -1 "$d/bench.$r.$mode.log")"
			echo "round $r $name $mode: $out; rcvbuferrors $(($(udpdrops) - u0)); load $(cut -d' ' -f1 /proc/loadavg)"
		done
	done
done
echo "end $(date -u +%H:%M:%S) $(uptime)"
