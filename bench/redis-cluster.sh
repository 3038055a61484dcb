#!/usr/bin/env bash
# One Redis against a 3-primary Redis Cluster, in one run, against the
# same fast upstream as bench/run.sh (a plain nginx answering a fixed
# chat completion):
#   proxy          wrk -> nginx proxy_pass -> upstream (the yardstick)
#   quota-single   the gateway with auth and quotas on, llm_redis on one
#                  Redis
#   quota-cluster  the same, llm_redis redis-cluster:// on 3 primaries
#   hit-single     auth and the cache on, every request a hit, one Redis
#   hit-cluster    the same on the cluster
# Each server runs one worker.  The targets take turns, round after
# round; each keeps its median round.  Results:
# bench/results/redis-cluster.md
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)

die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

eval "$(sed -n '/^redis_key() {/,/^}/p' "$ROOT/config.sh")"
declare -F redis_key >/dev/null || die "config.sh has no redis_key()"

MODULE=${LLM_MODULE:-$ROOT/build/modules/ngx_http_llm_module.so}
DUR=${BENCH_DURATION:-5s}
CONNS=${BENCH_CONNECTIONS:-64}
ROUNDS=${BENCH_ROUNDS:-3}
W=$(mktemp -d /tmp/llm-bench-cluster.XXXXXX)
RPORTS=()

port() { perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(LocalAddr=>"127.0.0.1:0",Listen=>1)->sockport'; }

cleanup() {
    for f in "$W"/*/nginx.pid; do [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null || true; done
    for p in "${RPORTS[@]}"; do
        redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
    done
    sleep 0.5
    rm -rf "$W"
}
trap cleanup EXIT

USER_LINE=""; ((EUID == 0)) && USER_LINE="user root;"
JSON='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}'

conf() {   # name body [main]
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
    keepalive_requests 100000;
    $2
}
EOC
    /usr/sbin/nginx -p "$W/$1" -c "$W/$1/nginx.conf" -e "$W/$1/logs/error.log"
}

redis() {   # port [args]
    local p=$1; shift
    mkdir -p "$W/redis-$p"
    redis-server --bind 127.0.0.1 --port "$p" --save '' --appendonly no \
        --daemonize yes --dir "$W/redis-$p" --logfile "$W/redis-$p/log" \
        "$@" >/dev/null
    RPORTS+=("$p")
}

UP=$(port); PROXY=$(port); GWS=$(port); GWC=$(port); RS=$(port)
redis "$RS"
CP=()
for _ in 1 2 3; do
    p=$(port); b=$(port)
    redis "$p" --cluster-enabled yes --cluster-port "$b" \
        --cluster-config-file "$W/redis-$p/nodes.conf" --cluster-node-timeout 2000
    CP+=("127.0.0.1:$p")
done
sleep 0.5
redis-cli --cluster create "${CP[@]}" --cluster-yes >/dev/null \
    || die "redis-cli --cluster create failed"
for _ in $(seq 50); do
    ok=1
    for a in "${CP[@]}"; do
        redis-cli -p "${a#*:}" CLUSTER INFO | grep -q cluster_state:ok || ok=0
    done
    ((ok)) && break
    sleep 0.2
done
((ok)) || die "the cluster did not form"

KEY=sk-bench-key
HASH=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
for cli in "-p $RS" "-c -p ${CP[0]#*:}"; do
    # shellcheck disable=SC2086
    redis-cli $cli HSET "$(redis_key API_KEY "$HASH")" tenant bench revoked 0 >/dev/null
    # shellcheck disable=SC2086
    redis-cli $cli HSET "$(redis_key TENANT bench)" created 1 rpm 100000000 \
        tpm 1000000000000 budget_day_usd 100000000 >/dev/null
done

conf upstream "server { listen 127.0.0.1:$UP;
    location /json/ { default_type application/json; return 200 '$JSON'; }
}"
conf proxy "upstream up { server 127.0.0.1:$UP; keepalive 64; }
server { listen 127.0.0.1:$PROXY;
    location / { proxy_pass http://up; proxy_http_version 1.1;
                 proxy_set_header Connection \"\"; proxy_buffering off; }
}"
gw() {   # name port redis
    conf "$1" "llm_redis $3;
llm_model bench-json { backend http://127.0.0.1:$UP/json/v1 price=0.60/0.60; }
server { listen 127.0.0.1:$2;
    location /q/v1/ { llm_gateway; llm_auth on; llm_quota on; }
    location /c/v1/ { llm_gateway; llm_auth on; llm_cache on; }
}" "load_module $MODULE;"
}
gw gw-single "$GWS" "127.0.0.1:$RS"
gw gw-cluster "$GWC" "redis-cluster://${CP[0]},${CP[1]}"
sleep 0.5

L=$W/json.lua
cat >"$L" <<EOL
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
wrk.body = '{"model":"bench-json","stream":false,"max_tokens":16,"temperature":0,"messages":[{"role":"user","content":"Hello there, how are you?"}]}'
EOL
BODY=$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$L")
for p in "$GWS" "$GWC"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" \
        -H 'Content-Type: application/json' -d "$BODY" "http://127.0.0.1:$p/c/v1/chat/completions")
    [[ $code == 200 ]] || die "gateway on $p answered $code"
done
sleep 0.2

once() {   # url -> "rps p50 p99"
    local out errs
    out=$(wrk -t1 -c"$CONNS" -d"$DUR" --latency -s "$L" "$1")
    errs=$(grep -E "Non-2xx|Socket errors" <<<"$out" || true)
    [[ -z $errs ]] || echo "  $1: $errs" >&2
    awk '/^Requests\/sec/ {r = $2} $1 == "50%" {a = $2} $1 == "99%" {b = $2}
         END {print r, a, b}' <<<"$out"
}

declare -A URL=(
    [proxy]="http://127.0.0.1:$PROXY/json/v1/chat/completions"
    [quota-single]="http://127.0.0.1:$GWS/q/v1/chat/completions"
    [quota-cluster]="http://127.0.0.1:$GWC/q/v1/chat/completions"
    [hit-single]="http://127.0.0.1:$GWS/c/v1/chat/completions"
    [hit-cluster]="http://127.0.0.1:$GWC/c/v1/chat/completions"
)
TARGETS=(proxy quota-single quota-cluster hit-single hit-cluster)
declare -A runs=() RPS P50 P99
echo "== wrk -t1 -c$CONNS -d$DUR, median of $ROUNDS rounds" >&2
for ((round = 0; round < ROUNDS; round++)); do
    for t in "${TARGETS[@]}"; do
        runs[$t]+="$(once "${URL[$t]}")"$'\n'
    done
done
for t in "${TARGETS[@]}"; do
    read -r r a b < <(sort -n <<<"${runs[$t]}" | grep . | awk -v m=$(((ROUNDS + 1) / 2)) 'NR == m')
    RPS[$t]=$r; P50[$t]=$a; P99[$t]=$b
    printf '  %-14s %10s req/s  p50 %-8s p99 %-8s (rounds: %s)\n' "$t" "$r" "$a" "$b" \
        "$(awk '{printf "%s ", $1}' <<<"${runs[$t]}")" >&2
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
OUT=$ROOT/bench/results/redis-cluster.md
{
    echo "# One Redis against a 3-primary cluster, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "\`bench/redis-cluster.sh\`: wrk -t1 -c$CONNS -d$DUR, median of $ROUNDS interleaved rounds, one nginx worker each, $(nproc) cores, loopback; the cluster's three primaries and the single Redis on the same machine."
    echo
    echo "| target | req/s | p50 | p99 | vs proxy_pass | cluster vs one Redis |"
    echo "|---|---:|---:|---:|---:|---:|"
    for t in "${TARGETS[@]}"; do
        vs=""
        case $t in
            *-cluster) vs=$(ratio "${RPS[$t]}" "${RPS[${t%-cluster}-single]}") ;;
        esac
        echo "| $t | ${RPS[$t]} | ${P50[$t]} | ${P99[$t]} | $(ratio "${RPS[$t]}" "${RPS[proxy]}") | $vs |"
    done
} >"$OUT"
cat "$OUT"
