#!/usr/bin/env bash
# Benchmarks, all in one run against the same fast upstream (a plain nginx
# answering a fixed chat completion, JSON or SSE):
#   direct      wrk -> upstream
#   proxy       wrk -> nginx proxy_pass (keepalive upstream) -> upstream
#   gateway     wrk -> nginx + this module -> upstream (metrics on, as in
#               production: every request updates the shared counters)
#   gateway+q   the same with API-key auth and quotas on (Redis)
#   cache-hit   the gateway with auth and the response cache on, every
#               request a hit (the entry is primed first): no upstream,
#               one Redis GET per request
#   cache-local the same on a gateway with llm_cache_local: hits from the
#               worker's copy, no Redis round trip
# Each server runs one worker process.  Results: bench/results/latest.md
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)

die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# the Redis key names: config.sh's redis_key, on the list in redis/keys
eval "$(sed -n '/^redis_key() {/,/^}/p' "$ROOT/config.sh")"
declare -F redis_key >/dev/null || die "config.sh has no redis_key()"

MODULE=${LLM_MODULE:-$ROOT/build/modules/ngx_http_llm_module.so}
DUR=${BENCH_DURATION:-5s}
# BENCH_PIN=1: the servers under test and the upstream on CPU 0, wrk and
# Redis on CPU 1, so Redis does not take the gateway's core, as a Redis
# host shared by several gateway nodes would not
PIN=${BENCH_PIN:-0}
CONNS=${BENCH_CONNECTIONS:-64}
W=$(mktemp -d /tmp/llm-bench.XXXXXX)
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for f in "$W"/*/nginx.pid; do [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null || true; done
    redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || true
    sleep 0.5
    rm -rf "$W"
}
trap cleanup EXIT
[[ -n ${BENCH_HOLD:-} ]] && trap - EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(LocalAddr=>"127.0.0.1:0",Listen=>1)->sockport'; }

UP=$(port); PROXY=$(port); GW=$(port); RPORT=$(port); GWL=$(port)
SRV=""; CLI=""; PINNOTE=""
if [[ $PIN == 1 ]]; then
    SRV="taskset -c 0"; CLI="taskset -c 1"
    PINNOTE=", BENCH_PIN=1 (servers on CPU 0, wrk and Redis on CPU 1)"
fi
USER_LINE=""; ((EUID == 0)) && USER_LINE="user root;"

JSON='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}'
SSE=""
for w in Hello! How can I help you today; do
    SSE+="data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"$w \"},\"finish_reason\":null}]}\n\n"
done
SSE+="data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
SSE+="data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":7,\"total_tokens\":19}}\n\ndata: [DONE]\n\n"

conf() {   # name body
    mkdir -p "$W/$1/logs" "$W/$1/tmp"
    cat >"$W/$1/nginx.conf" <<EOC
${3:-}
$USER_LINE
worker_processes 1;
pid $W/$1/nginx.pid;
error_log $W/$1/logs/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $W/$1/tmp;
    proxy_temp_path $W/$1/tmp;
    fastcgi_temp_path $W/$1/tmp;
    uwsgi_temp_path $W/$1/tmp;
    scgi_temp_path $W/$1/tmp;
    keepalive_requests 100000;
    $2
}
EOC
    $SRV /usr/sbin/nginx -p "$W/$1" -c "$W/$1/nginx.conf" -e "$W/$1/logs/error.log"
}

conf upstream "server { listen 127.0.0.1:$UP;
    location /json/ { default_type application/json; return 200 '$JSON'; }
    location /sse/ { default_type text/event-stream; return 200 '$(printf '%s' "$SSE" | sed 's/\\n/\n/g')'; }
}"
conf proxy "upstream up { server 127.0.0.1:$UP; keepalive 64; }
server { listen 127.0.0.1:$PROXY;
    location / { proxy_pass http://up; proxy_http_version 1.1;
                 proxy_set_header Connection \"\"; proxy_buffering off; }
}"
$CLI redis-server --bind 127.0.0.1 --port "$RPORT" --save '' --appendonly no --daemonize yes \
    --dir "$W" --logfile "$W/redis.log" >/dev/null
KEY=sk-bench-key
HASH=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
redis-cli -p "$RPORT" HSET "$(redis_key API_KEY "$HASH")" tenant bench \
    revoked 0 >/dev/null
redis-cli -p "$RPORT" HSET "$(redis_key TENANT bench)" created 1 rpm 100000000 \
    tpm 1000000000000 \
    budget_day_usd 100000000 >/dev/null
conf gateway "llm_redis 127.0.0.1:$RPORT;
llm_model bench-json { backend http://127.0.0.1:$UP/json/v1 price=0.60/0.60; }
llm_model bench-sse { backend http://127.0.0.1:$UP/sse/v1 price=0.60/0.60; }
server { listen 127.0.0.1:$GW;
    location /v1/ { llm_gateway; }
    location /q/v1/ { llm_gateway; llm_auth on; llm_quota on; }
    location /c/v1/ { llm_gateway; llm_auth on; llm_cache on; }
    location = /metrics { llm_metrics; }
}" "load_module $MODULE;"
conf gateway-local "llm_redis 127.0.0.1:$RPORT;
llm_cache_local 64m;
llm_model bench-json { backend http://127.0.0.1:$UP/json/v1 price=0.60/0.60; }
llm_model bench-sse { backend http://127.0.0.1:$UP/sse/v1 price=0.60/0.60; }
server { listen 127.0.0.1:$GWL;
    location /c/v1/ { llm_gateway; llm_auth on; llm_cache on; }
}" "load_module $MODULE;"
sleep 0.5

lua() {   # model stream
    cat >"$W/$1-$2.lua" <<EOL
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
wrk.body = '{"model":"$1","stream":$2,"max_tokens":16,"temperature":0,"messages":[{"role":"user","content":"Hello there, how are you?"}]}'
EOL
    echo "$W/$1-$2.lua"
}

declare -A RPS P50 P99 CPU SYS QCOST
ROUNDS=${BENCH_ROUNDS:-3}

# the one worker of the nginx whose prefix is $W/$1
worker_of() { pgrep -P "$(cat "$W/$1/nginx.pid")" | head -1; }

# nanoseconds the process has run, user and system (schedstat's first field)
cpu_ns() { awk '{print $1}' "/proc/$1/schedstat"; }

PERF=0
perf stat -e raw_syscalls:sys_enter -x, -- true >/dev/null 2>&1 && PERF=1

once() {   # url lua server -> "rps p50 p99 cpu_us_per_req syscalls_per_req"
    local out errs pid c0 c1 sys=- pstat=$W/perf.$$
    pid=$(worker_of "$3")
    c0=$(cpu_ns "$pid")
    if ((PERF)); then
        # counts the worker's system calls for as long as wrk runs
        perf stat -e raw_syscalls:sys_enter -x, -o "$pstat" -p "$pid" &
        local perf_pid=$!
    fi
    out=$($CLI wrk -t1 -c"$CONNS" -d"$DUR" --latency -s "$2" "$1")
    c1=$(cpu_ns "$pid")
    if ((PERF)); then
        kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
        sys=$(awk -F, '/raw_syscalls/ {print $1}' "$pstat")
    fi
    # a target that answered errors measured the errors: say so, and fail
    errs=$(grep -E "Non-2xx|Socket errors" <<<"$out" || true)
    if [[ -n $errs ]]; then
        echo "  $1: $errs" >&2
        echo "$1: $errs" >>"$W/errors"
    fi
    awk -v c="$((c1 - c0))" -v s="$sys" '
        /requests in/ {n = $1}
        /^Requests\/sec/ {r = $2} $1 == "50%" {a = $2} $1 == "99%" {b = $2}
        END {printf "%s %s %s %.1f %s\n", r, a, b, c / 1000 / n,
                    s == "-" ? "-" : sprintf("%.2f", s / n)}' <<<"$out"
}

# The targets take turns, round after round, and each keeps its median
# round: on 2 shared cores a single run of each moves by 15% or more.
for mode in json sse; do
    stream=false; [[ $mode == sse ]] && stream=true
    L=$(lua "bench-$mode" $stream)
    # the entry the cache-hit target replays
    curl -s -o /dev/null -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        -d "$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$L")" "http://127.0.0.1:$GW/c/v1/chat/completions"
    sleep 0.2
    echo "== $mode (stream: $stream), wrk -t1 -c$CONNS -d$DUR, median of $ROUNDS rounds" >&2
    declare -A runs=()
    for ((round = 0; round < ROUNDS; round++)); do
        runs[direct]+="$(once "http://127.0.0.1:$UP/$mode/v1/chat/completions" "$L" upstream)"$'\n'
        runs[proxy]+="$(once "http://127.0.0.1:$PROXY/$mode/v1/chat/completions" "$L" proxy)"$'\n'
        runs[gateway]+="$(once "http://127.0.0.1:$GW/v1/chat/completions" "$L" gateway)"$'\n'
        runs[gateway+quota]+="$(once "http://127.0.0.1:$GW/q/v1/chat/completions" "$L" gateway)"$'\n'
        runs[cache-hit]+="$(once "http://127.0.0.1:$GW/c/v1/chat/completions" "$L" gateway)"$'\n'
        runs[cache-local]+="$(once "http://127.0.0.1:$GWL/c/v1/chat/completions" "$L" gateway-local)"$'\n'
    done
    for t in direct proxy gateway gateway+quota cache-hit cache-local; do
        read -r r a b c y < <(sort -n <<<"${runs[$t]}" | grep . | awk -v m=$(((ROUNDS + 1) / 2)) 'NR == m')
        RPS[$t-$mode]=$r; P50[$t-$mode]=$a; P99[$t-$mode]=$b
        CPU[$t-$mode]=$c; SYS[$t-$mode]=$y
        printf '  %-22s %10s req/s  p50 %-8s p99 %-8s  %6s us %5s sys/req  (rounds: %s)\n' \
            "$t-$mode" "$r" "$a" "$b" "$c" "$y" \
            "$(awk '{printf "%s ", $1}' <<<"${runs[$t]}")" >&2
    done
    # the quota's cost round by round: adjacent runs share the machine's mood
    QCOST[$mode]=$(paste <(awk '{print $1}' <<<"${runs[gateway]}" | grep .) \
                         <(awk '{print $1}' <<<"${runs[gateway+quota]}" | grep .) \
        | awk '{printf "%.1f\n", (1 - $2 / $1) * 100}' | sort -n \
        | awk -v m=$(((ROUNDS + 1) / 2)) '{v[NR] = $1} END {printf "%s%% (rounds:", v[m];
              for (i = 1; i <= NR; i++) printf " %s%%", v[i]; printf ")"}')
    unset runs
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
OUT=$ROOT/bench/results/latest.md
{
    echo "# Benchmark run $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "\`bench/run.sh\`: wrk -t1 -c$CONNS -d$DUR, median of $ROUNDS interleaved rounds, one nginx worker each, $(nproc) cores, loopback$PINNOTE."
    echo
    echo "| mode | target | req/s | p50 | p99 | vs proxy_pass | worker CPU µs/req | syscalls/req |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    for mode in json sse; do
        for t in direct proxy gateway gateway+quota cache-hit cache-local; do
            k=$t-$mode
            echo "| $mode | $t | ${RPS[$k]} | ${P50[$k]} | ${P99[$k]} | $(ratio "${RPS[$k]}" "${RPS[proxy-$mode]}") | ${CPU[$k]} | ${SYS[$k]} |"
        done
    done
    echo
    echo "CPU and system calls are the server's worker process's alone (for direct, the upstream's), from /proc/PID/schedstat and \`perf stat -e raw_syscalls:sys_enter\`, over the median round; Redis's and wrk's are not in them."
    echo
    echo "Auth + quota cost, median of the per-round costs: ${QCOST[json]} (JSON), ${QCOST[sse]} (SSE)."
    echo
    echo "Auth + quota cost from the median rounds: $(awk -v a="${RPS[gateway+quota-json]}" -v b="${RPS[gateway-json]}" 'BEGIN { printf "%.1f%%", (1 - a / b) * 100 }') of gateway throughput (JSON), $(awk -v a="${RPS[gateway+quota-sse]}" -v b="${RPS[gateway-sse]}" 'BEGIN { printf "%.1f%%", (1 - a / b) * 100 }') (SSE)."
} >"$OUT"
# the plot's data: target, then each mode's ratio to proxy_pass
DAT=$ROOT/bench/results/latest.dat
{
    echo "# target json_ratio sse_ratio json_cpu_us sse_cpu_us (bench/run.sh)"
    for t in proxy gateway gateway+quota cache-hit cache-local; do
        echo "$t $(ratio "${RPS[$t-json]}" "${RPS[proxy-json]}") $(ratio "${RPS[$t-sse]}" "${RPS[proxy-sse]}") ${CPU[$t-json]} ${CPU[$t-sse]}"
    done
} >"$DAT"
if command -v gnuplot >/dev/null; then
    gnuplot -e "dat='$DAT'; out='$ROOT/bench/results/latest.svg'" "$ROOT/bench/plot.gp"
fi
if [[ -s $W/errors ]]; then
    {
        echo
        echo "**Errors: these figures measured failing requests.**"
        sed 's/^/    /' "$W/errors"
    } >>"$OUT"
    cat "$OUT"
    die "some targets answered errors (see $OUT)"
fi
cat "$OUT"
