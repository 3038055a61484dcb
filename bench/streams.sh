#!/usr/bin/env bash
# Many concurrent streams on one gateway worker, over repeated waves, and
# what each costs in memory.  A slow SSE mock (streams-mock.js) holds every
# stream open for BENCH_STREAMS_HOLD seconds; a node client
# (streams-client.js) opens BENCH_STREAMS concurrent streams through the
# gateway, BENCH_STREAMS_WAVES times, and reads the worker's VmRSS, RssAnon
# and RssShmem at the start, when a wave's streams are all open, and after
# it.  Each stream takes two of the worker's descriptors (client and
# upstream), so the process's descriptor limit bounds the count: with this
# machine's 20,000, 9,000 streams.  Results: bench/results/streams-latest.md
# and .dat.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

MODULE=${LLM_MODULE:-$ROOT/build/modules/ngx_http_llm_module.so}
N=${BENCH_STREAMS:-9000}
WAVES=${BENCH_STREAMS_WAVES:-6}
HOLD=${BENCH_STREAMS_HOLD:-15}
[[ -f $MODULE ]] || die "no module at $MODULE: ./config.sh build"
export NODE_PATH=${NODE_PATH:-$ROOT/node_modules}

LIMIT=$(ulimit -Hn)
ulimit -n "$LIMIT"
need=$((2 * N + 64))
((LIMIT >= need)) || die "$N streams need $need descriptors, the limit is $LIMIT"

W=$(mktemp -d /tmp/llm-streams.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ -f $W/nginx.pid ]] && kill "$(cat "$W/nginx.pid")" 2>/dev/null || true
    sleep 0.5
    rm -rf "$W"
}
trap cleanup EXIT

port() { perl -MIO::Socket::INET -e \
    'print IO::Socket::INET->new(LocalAddr=>"127.0.0.1:0",Listen=>1)->sockport'; }
MOCK=$(port); GW=$(port)
USER_LINE=""; ((EUID == 0)) && USER_LINE="user root;"

node "$ROOT/bench/streams-mock.js" "$MOCK" "$HOLD" &
PIDS+=($!)

mkdir -p "$W/logs" "$W/tmp"
cat >"$W/nginx.conf" <<EOC
load_module $MODULE;
$USER_LINE
worker_processes 1;
worker_rlimit_nofile $LIMIT;
pid $W/nginx.pid;
error_log $W/logs/error.log warn;
events { worker_connections $LIMIT; }
http {
    access_log off;
    client_body_temp_path $W/tmp;
    proxy_temp_path $W/tmp;
    fastcgi_temp_path $W/tmp;
    uwsgi_temp_path $W/tmp;
    scgi_temp_path $W/tmp;
    llm_model bench-streams {
        backend http://127.0.0.1:$MOCK/v1 price=0.60/0.60;
    }
    server {
        listen 127.0.0.1:$GW backlog=16384;
        location /v1/ { llm_gateway; }
    }
}
EOC
/usr/sbin/nginx -p "$W" -c "$W/nginx.conf" -e "$W/logs/error.log"
for _ in $(seq 50); do [[ -s $W/nginx.pid ]] && break; sleep 0.1; done
sleep 0.5
WORKER=$(pgrep -P "$(cat "$W/nginx.pid")" | head -1)
[[ -n $WORKER ]] || die "the gateway has no worker"

echo "== $N streams x $WAVES waves, each held ${HOLD}s, one worker (pid $WORKER), descriptor limit $LIMIT" >&2
node "$ROOT/bench/streams-client.js" \
    "http://127.0.0.1:$GW/v1/chat/completions" "$N" "$WAVES" "$WORKER" \
    | tee "$W/samples" >&2

DAT=$ROOT/bench/results/streams-latest.dat
OUT=$ROOT/bench/results/streams-latest.md
{
    echo "# wave phase open ok failed VmRSS_kB RssAnon_kB RssShmem_kB (bench/streams.sh, $N streams)"
    tr '\t' ' ' <"$W/samples"
} >"$DAT"
base=$(awk '$2 == "baseline" {print $6}' "$W/samples")
{
    echo "# Concurrent streams on one worker"
    echo
    echo "\`bench/streams.sh\`: $N concurrent SSE streams through one gateway worker, $WAVES waves, each stream held ${HOLD} s by a slow mock upstream (a chunk a second), node client and mock on loopback, descriptor limit $LIMIT (each stream takes two of the worker's), $(nproc) cores."
    echo
    echo "| wave | streams open at peak | completed | failed | worker RSS at peak | RSS after the wave | growth per open stream |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
    awk -v b="$base" -v n="$N" '
        $2 == "baseline" { printf "| start | | | | %.1f MiB | | |\n", $6 / 1024 }
        $2 == "peak" { w = $1; open[w] = $3; peak[w] = $6 }
        $2 == "after" { printf "| %d | %d | %d | %d | %.1f MiB | %.1f MiB | %.1f KiB |\n",
                        $1, open[$1], $4, $5, peak[$1] / 1024, $6 / 1024,
                        (peak[$1] - b) / n }' "$W/samples"
    echo
    echo "Growth per open stream: (RSS at the wave's peak - RSS at the start) / $N. RSS is the worker's VmRSS (anonymous plus shared memory it touched), read from /proc."
} >"$OUT"
failed=$(awk '$2 == "after" {f += $5} END {print f + 0}' "$W/samples")
cat "$OUT"
((failed == 0)) || die "$failed streams failed"
