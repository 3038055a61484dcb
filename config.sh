#!/usr/bin/env bash
# nginx-llm-gateway: the one entry script.
#
#   ./config.sh deps      install what the build, the gateway and the tests need
#   ./config.sh build     build build/modules/ngx_http_llm_module.so
#                         (SANITIZE=1: ASan+UBSan into build-asan/; NGINX_SRC=dir:
#                         another nginx source tree)
#   ./config.sh worker    build llama-server and generate the two tiny models
#   ./config.sh run       start redis, two llama.cpp workers and the gateway
#   ./config.sh stop      stop what run started
#   ./config.sh test      run the whole test suite (the layers check, plain,
#                         fuzz targets 30 s each, then sanitizers)
#   ./config.sh bench     run the benchmarks in bench/
#   ./config.sh fuzz [SECONDS] [TARGET]  build the libFuzzer targets of
#                         t/fuzz/ (clang, ASan+UBSan, into build-fuzz/) and
#                         run each for SECONDS (default 60; FUZZ_RUNS=N:
#                         N executions instead); non-zero exit on a crash
#   ./config.sh route-eval [args] [set.tsv]  the hand-weighted score's offline
#                         evaluation on bench/routing/prompts.tsv or another set
#   ./config.sh route-train [-s SEED] [-q LOSS%] [-o MODEL] [FILE...]  train the
#                         learned router on bench/routing/ (or FILEs) into
#                         bench/routing/router.model, report its test split
#                         and plot its curve (bench/route-train.c)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${LLM_CACHE_DIR:-$HOME/.cache/nginx-llm-gateway}
STATE=${LLM_STATE_DIR:-$ROOT/.run}
NODE_DIR=$ROOT/node_modules

APT_PACKAGES=(nginx nginx-dev libcurl4-openssl-dev libcjson-dev libhiredis-dev
    libssl-dev redis-server redis-tools wrk cmake g++ gcc make pkg-config git
    perl libjson-pp-perl curl ca-certificates procps openssl
    clang libclang-rt-14-dev gnuplot-nox
    chromium fonts-liberation)
# chromium: the status page's browser test (t/browser/status.js, through
# playwright-core); text renders without fonts-liberation too (DejaVu comes
# with fontconfig), but chromium-common recommends it, and its Arial- and
# Times-metric fonts make the screenshots look as on a desktop

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'config.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- deps
deps() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
            || missing+=("$p")
    done
    # the machine's own Node.js may not come from apt: only fill a gap
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # Debian's nginx package starts a server on :80 we do not want.
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now nginx >/dev/null 2>&1 || true
    fi
    if [[ ! -f $NODE_DIR/.installed ]] \
        || [[ $ROOT/package-lock.json -nt $NODE_DIR/.installed ]]; then
        say "installing node packages (node-llama-cpp, openai, playwright-core)"
        (cd "$ROOT" && npm install --ignore-scripts --omit=optional --no-audit --no-fund \
            --loglevel=error)
        touch "$NODE_DIR/.installed"
    fi
}

# ---------------------------------------------------------------- build
build() {
    local src=${NGINX_SRC:-/usr/share/nginx/src} out=$ROOT/build cc_opt ld_opt
    cc_opt="-g -O2 -fPIC -Werror -Wall"
    ld_opt="-fPIC"
    if [[ ${SANITIZE:-0} == 1 ]]; then
        out=$ROOT/build-asan
        cc_opt="-g -O1 -fPIC -Werror -fsanitize=address,undefined"
        cc_opt+=" -fno-omit-frame-pointer -fno-sanitize-recover=all"
        ld_opt="-fPIC -fsanitize=address,undefined"
    fi
    [[ -x $src/configure || -x $src/auto/configure ]] \
        || die "no nginx source tree in $src (run ./config.sh deps)"

    # Rebuild from scratch when anything configure bakes in has changed:
    # the addon config, the Redis scripts and key names compiled in, the
    # nginx tree.
    local stamp
    stamp=$(cat "$ROOT/config" "$ROOT"/redis/*.lua "$ROOT/redis/keys" \
        | sha256sum | cut -c1-16)
    stamp+="-$(ls -id "$src" | cut -d' ' -f1)-${SANITIZE:-0}"
    if [[ ! -f $out/stamp || $(cat "$out/stamp") != "$stamp" ]]; then
        say "configuring nginx in $out"
        rm -rf "$out"
        mkdir -p "$out"
        cp -a "$src" "$out/nginx-src"
        local conf=() cfg=./configure
        [[ -x $out/nginx-src/configure ]] || cfg=./auto/configure
        if [[ -f $out/nginx-src/conf_flags ]]; then
            # Debian's own flags, so that load_module accepts the result
            # shellcheck disable=SC1091
            source "$out/nginx-src/conf_flags"
            conf=("${NGX_CONF_FLAGS[@]}")
        else
            conf=(--with-compat --with-http_ssl_module --with-threads)
        fi
        (cd "$out/nginx-src" && $cfg "${conf[@]}" --with-cc-opt="$cc_opt" \
            --with-ld-opt="$ld_opt" --add-dynamic-module="$ROOT" \
            >"$out/configure.log" 2>&1) \
            || { tail -20 "$out/configure.log"; die "configure failed"; }
        echo "$stamp" >"$out/stamp"
    fi
    say "building the module"
    (cd "$out/nginx-src" && make -f objs/Makefile -j2 modules >"$out/make.log" 2>&1) \
        || { grep -E 'error|warning' -A3 "$out/make.log" | head -60; die "build failed"; }
    mkdir -p "$out/modules"
    # a new file renamed over the old one: a running nginx keeps its mapping
    # of the old inode, and workers it respawns load a whole file, never a
    # half-written one
    cp "$out/nginx-src/objs/ngx_http_llm_module.so" \
        "$out/modules/.ngx_http_llm_module.so.$$"
    mv -f "$out/modules/.ngx_http_llm_module.so.$$" \
        "$out/modules/ngx_http_llm_module.so"
    say "built $out/modules/ngx_http_llm_module.so"
}

# ---------------------------------------------------------------- worker
bundle_commit() {
    git --git-dir="$CACHE/llama-src/.git" rev-parse --short=12 HEAD
}

llama_server() {
    local bundle=$NODE_DIR/node-llama-cpp/llama/gitRelease.bundle commit bin
    [[ -f $bundle ]] || die "node-llama-cpp is not installed (./config.sh deps)"
    mkdir -p "$CACHE"
    if [[ ! -d $CACHE/llama-src/.git ]]; then
        say "unpacking llama.cpp from node-llama-cpp's bundle"
        rm -rf "$CACHE/llama-src"
        git clone -q "$bundle" "$CACHE/llama-src" 2>/dev/null
    fi
    commit=$(bundle_commit)
    bin=$CACHE/llama-server-$commit/llama-server
    if [[ ! -x $bin ]]; then
        say "building llama-server $commit (CPU, once; about 6-8 minutes on 2 cores)"
        cmake -S "$CACHE/llama-src" -B "$CACHE/llama-build" -DCMAKE_BUILD_TYPE=Release \
            -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
            -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON \
            -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
            -DGGML_NATIVE=ON -DGGML_OPENMP=OFF >"$CACHE/llama-cmake.log" 2>&1 \
            || { tail -20 "$CACHE/llama-cmake.log"; die "cmake of llama.cpp failed"; }
        # progress: one line per ten percent
        cmake --build "$CACHE/llama-build" --target llama-server -j2 2>&1 \
            | tee "$CACHE/llama-build.log" \
            | awk '/^\[ *[0-9]+0%\]/ { p = substr($0, 1, 6); if (p != last) {
                   print "    " p; fflush(); last = p } }' >&2 \
            || true
        [[ -x $CACHE/llama-build/bin/llama-server ]] \
            || { tail -30 "$CACHE/llama-build.log"; die "llama-server build failed"; }
        mkdir -p "$CACHE/llama-server-$commit"
        cp "$CACHE/llama-build/bin/llama-server" "$bin"
        rm -rf "$CACHE/llama-build"
    fi
    echo "$bin"
}

models() {
    local gen=$ROOT/t/worker/gguf_gen.c key bin vocab
    local small=(--embd 64 --layers 2 --heads 4 --ff 192 --ctx 32768 --seed 7)
    local large=(--embd 128 --layers 4 --heads 4 --ff 384 --ctx 65536 --seed 22)
    # the models change with the generator or its arguments
    key=$({ cat "$gen"; echo "${small[*]} ${large[*]}"; } | sha256sum | cut -c1-12)
    bin=$CACHE/gguf_gen-$key
    vocab=$CACHE/llama-src/models/ggml-vocab-llama-spm.gguf
    [[ -f $vocab ]] || die "tokenizer $vocab missing"
    if [[ ! -x $bin ]]; then
        gcc -O2 -Wall -Werror -o "$bin" "$gen" -lm
    fi
    mkdir -p "$CACHE/models-$key"
    if [[ ! -f $CACHE/models-$key/small.gguf ]]; then
        say "generating the small (8x7B stand-in) model"
        "$bin" --vocab "$vocab" --out "$CACHE/models-$key/small.gguf.tmp" \
            "${small[@]}"
        mv "$CACHE/models-$key/small.gguf.tmp" "$CACHE/models-$key/small.gguf"
    fi
    if [[ ! -f $CACHE/models-$key/large.gguf ]]; then
        say "generating the large (8x22B stand-in) model"
        "$bin" --vocab "$vocab" --out "$CACHE/models-$key/large.gguf.tmp" \
            "${large[@]}"
        mv "$CACHE/models-$key/large.gguf.tmp" "$CACHE/models-$key/large.gguf"
    fi
    echo "$CACHE/models-$key"
}

worker() {
    LLAMA_SERVER=$(llama_server)
    MODELS=$(models)
    export LLAMA_SERVER LLM_MODEL_SMALL=$MODELS/small.gguf LLM_MODEL_LARGE=$MODELS/large.gguf
}

# ---------------------------------------------------------------- run / stop
wait_http() {   # url seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        curl -sf -o /dev/null -m 1 "$1" && return 0
        sleep 0.1
    done
    return 1
}

# a key of a family of redis/keys, each <word> of it the next value
redis_key() {   # family value...
    local p out="" re='^([^<]*)<[a-z0-9_]+>(.*)$'
    p=$(awk -v f="$1" '$1 == f { print $2 }' "$ROOT/redis/keys")
    [[ -n $p ]] || die "redis/keys has no $1"
    shift
    while [[ $p =~ $re ]]; do
        out+=${BASH_REMATCH[1]}$1
        p=${BASH_REMATCH[2]}
        shift
    done
    printf '%s' "$out$p"
}

# ctx: the tokens of one request; the four slots share one KV buffer of
# that size (-kvu), so each may take all of it while the others are idle
start_llama() {  # name port model ctx
    "$LLAMA_SERVER" --host 127.0.0.1 --port "$2" -m "$3" --alias "$1" \
        -t 1 -tb 2 -c "$4" -np 4 -kvu -fa on --no-webui --log-disable \
        >"$STATE/logs/$1.log" 2>&1 &
    echo $! >"$STATE/$1.pid"
}

run() {
    deps
    build
    worker
    local port=${LLM_PORT:-8080} rport=${REDIS_PORT:-6390}
    local small=${LLM_SMALL_PORT:-8091} large=${LLM_LARGE_PORT:-8092}
    local nginx=${NGINX_BIN:-/usr/sbin/nginx}
    stop >/dev/null 2>&1 || true
    mkdir -p "$STATE/logs" "$STATE/tmp" "$STATE/redis"
    say "starting redis on 127.0.0.1:$rport"
    redis-server --bind 127.0.0.1 --port "$rport" --save '' --appendonly no \
        --dir "$STATE/redis" --daemonize yes --pidfile "$STATE/redis.pid" \
        --logfile "$STATE/logs/redis.log"
    say "starting llama-server workers on :$small (small) and :$large (large)"
    start_llama tiny-8x7b "$small" "$LLM_MODEL_SMALL" 32768
    start_llama tiny-8x22b "$large" "$LLM_MODEL_LARGE" 65536
    wait_http "http://127.0.0.1:$small/health" 120 \
        || die "llama-server (small) did not start"
    wait_http "http://127.0.0.1:$large/health" 120 \
        || die "llama-server (large) did not start"

    local key hash
    if [[ -f $STATE/demo.key ]]; then
        key=$(cat "$STATE/demo.key")
    else
        key="sk-llm-demo-$(head -c 15 /dev/urandom | od -An -tx1 | tr -d ' \n')"
        echo "$key" >"$STATE/demo.key"
    fi
    hash=$(printf %s "$key" | sha256sum | cut -d' ' -f1)
    redis-cli -p "$rport" HSET "$(redis_key TENANT demo)" rpm 600 tpm 200000 \
        budget_day_usd 5.00 created "$(date +%s)" >/dev/null
    redis-cli -p "$rport" HSET "$(redis_key API_KEY "$hash")" tenant demo \
        label demo created "$(date +%s)" revoked 0 >/dev/null

    # the example configuration, on this run's Redis and gateway ports;
    # its relative paths are under the prefix, $STATE
    local conf
    conf=$(<"$ROOT/docs/example.conf")
    local from
    for from in "llm_redis 127.0.0.1:6379 " "listen 127.0.0.1:8080;" \
        "http://127.0.0.1:8091/" "http://127.0.0.1:8092/"
    do
        [[ $conf == *"$from"* ]] \
            || die "docs/example.conf: no \"$from\" to put the port in"
    done
    conf=${conf/"llm_redis 127.0.0.1:6379 "/"llm_redis 127.0.0.1:$rport "}
    conf=${conf/"listen 127.0.0.1:8080;"/"listen 127.0.0.1:$port;"}
    conf=${conf//"http://127.0.0.1:8091/"/"http://127.0.0.1:$small/"}
    conf=${conf//"http://127.0.0.1:8092/"/"http://127.0.0.1:$large/"}
    {
        ((EUID == 0)) && echo "user root;"
        printf '%s\n' "$conf"
    } >"$STATE/nginx.conf"
    mkdir -p "$STATE/modules" "$STATE/vocab"
    ln -sfn "$ROOT/build/modules/ngx_http_llm_module.so" "$STATE/modules/"
    # the router's model and the models' vocabularies (the tiny models
    # carry llama.cpp's 32000-token SPM vocabulary, Mixtral's kind)
    ln -sfn "$ROOT/bench/routing/router.model" "$STATE/router.model"
    ln -sfn "$LLM_MODEL_SMALL" "$STATE/vocab/mixtral-8x7b.gguf"
    ln -sfn "$LLM_MODEL_LARGE" "$STATE/vocab/mixtral-8x22b.gguf"
    "$nginx" -t -q -p "$STATE" -c "$STATE/nginx.conf" -e "$STATE/logs/error.log"
    "$nginx" -p "$STATE" -c "$STATE/nginx.conf" -e "$STATE/logs/error.log" \
        || { tail -20 "$STATE/logs/error.log" >&2; die "nginx did not start"; }
    if ! wait_http "http://127.0.0.1:$port/metrics" 10; then
        tail -20 "$STATE/logs/error.log" >&2
        die "the gateway does not answer on 127.0.0.1:$port"
    fi
    cat <<EOF

nginx-llm-gateway is up on http://127.0.0.1:$port (logs in $STATE/logs)
Demo API key (tenant "demo"): $key

curl -s http://127.0.0.1:$port/v1/chat/completions \\
  -H "Authorization: Bearer $key" -H "Content-Type: application/json" \\
  -d '{"model":"mixtral-8x7b","messages":[{"role":"user","content":"Hello!"}],"max_tokens":32}'

Add "stream": true for SSE; "model": "auto" lets the router choose.

Status page (loopback only): http://127.0.0.1:$port/status
  curl -s 'http://127.0.0.1:$port/status?format=json'
Stop everything with: ./config.sh stop
EOF
}

# Stops one process that run started, by its pid file, and waits until it
# is gone, so that a run that follows finds its ports free.  The pid is
# read once: nginx removes its own file as it exits.
stop_one() {    # name signal [pid file]
    local f=${3:-$STATE/$1.pid} pid i
    pid=$(cat "$f" 2>/dev/null) || return 0
    rm -f "$f"
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    kill "-$2" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    # its children first: nginx's workers outlive a killed master
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
}

stop() {
    local f
    # every one of them, whatever happened to the others
    for f in nginx tiny-8x7b tiny-8x22b redis; do
        if [[ $f == nginx ]]; then
            stop_one "$f" QUIT "$STATE/logs/nginx.pid" || true
        else
            stop_one "$f" TERM || true
        fi
    done
    say "stopped"
}

# ---------------------------------------------------------------- test
run_prove() {   # label
    local rc=0
    say "test suite ($1)"
    (cd "$ROOT" && prove -r -j1 t/) || rc=$?
    return $rc
}

route_eval() {
    mkdir -p "$ROOT/build"
    gcc -O2 -Wall -Wextra -Wno-unused-parameter -I"$ROOT/ngx_module" \
        -o "$ROOT/build/route-eval" "$ROOT/bench/route-eval.c" \
        "$ROOT/ngx_module/ngx_http_llm_score.c" -lcjson \
        || die "route-eval: build failed"
    # the labelled set, unless another one is named (bench/routing/*.tsv)
    local a file="$ROOT/bench/routing/prompts.tsv"
    for a in "$@"; do [[ $a == *.tsv ]] && file=""; done
    "$ROOT/build/route-eval" "$@" ${file:+"$file"}
}

route_train() {   # [route-train options] [FILE...]
    local a out="" eval="" files=() opts=() bin=$ROOT/build/route-train
    local curve=$ROOT/build/route-curve.tsv
    mkdir -p "$ROOT/build"
    gcc -O2 -Wall -Wextra -I"$ROOT/ngx_module" -o "$bin" \
        "$ROOT/bench/route-train.c" "$ROOT/ngx_module/ngx_http_llm_features.c" \
        "$ROOT/ngx_module/ngx_http_llm_classifier.c" -lcjson -lm \
        || die "route-train: build failed"
    while (($#)); do
        case $1 in
            -o) out=$2; shift 2 ;;
            -e) eval=$2; opts+=("$1" "$2"); shift 2 ;;
            -b) opts+=("$1" "$2"); curve=""; shift 2 ;;
            -s|-q|-n|-c) opts+=("$1" "$2"); shift 2 ;;
            -*) opts+=("$1"); shift ;;
            *) files+=("$1"); shift ;;
        esac
    done
    if ((${#files[@]} == 0)); then
        files=("$ROOT"/bench/routing/corpus/*.jsonl
               "$ROOT/bench/routing/prompts.tsv" "$ROOT/bench/routing/heldout.tsv")
    fi
    [[ -n $out || -n $eval ]] || out=$ROOT/bench/routing/router.model
    "$bin" "${opts[@]}" ${curve:+-c "$curve"} ${out:+-o "$out"} "${files[@]}"
    if [[ -n $curve ]] && command -v gnuplot >/dev/null 2>&1; then
        gnuplot -e "data='$curve'; out='$ROOT/build/route-curve.svg'" \
            "$ROOT/bench/routing/curve.gp" \
            && say "curve: $ROOT/build/route-curve.svg (docs/routing-curve.svg)"
    fi
}

# ---------------------------------------------------------------- fuzz
fuzz() {   # [seconds] [target]
    local secs=${1:-60} only=${2:-} out=$ROOT/build-fuzz t rc=0 len log
    local runs execs speed crashed dict
    [[ $secs =~ ^[0-9]+$ ]] || die "fuzz: SECONDS must be a number"
    "$ROOT/t/fuzz/build.sh" "$ROOT" "$out" ${only:+"$only"} \
        || die "fuzz: build failed"
    printf '%-16s %12s %10s %8s\n' target executions exec/s crashes
    for t in "$out"/bin/fuzz_*; do
        t=$(basename "$t")
        [[ -z $only || $t == "$only" ]] || continue
        [[ -d $ROOT/t/fuzz/corpus/$t ]] || die "fuzz: no t/fuzz/corpus/$t"
        # the options libFuzzer (and OSS-Fuzz) read from TARGET.options
        len=$(sed -n 's/^max_len *= *//p' "$ROOT/t/fuzz/$t.options" \
            2>/dev/null)
        rm -rf "$out/crashes/$t"
        mkdir -p "$out/corpus/$t" "$out/crashes/$t"
        log=$out/$t.log
        runs=(-max_total_time="$secs")
        [[ -n ${FUZZ_RUNS:-} ]] && runs=(-runs="$FUZZ_RUNS")
        dict=()
        [[ -f $ROOT/t/fuzz/$t.dict ]] && dict=(-dict="$ROOT/t/fuzz/$t.dict")
        crashed=0
        "$out/bin/$t" "${runs[@]}" ${len:+-max_len="$len"} -timeout=10 \
            -rss_limit_mb=2048 -print_final_stats=1 \
            -artifact_prefix="$out/crashes/$t/" \
            "${dict[@]}" \
            "$out/corpus/$t" "$ROOT/t/fuzz/corpus/$t" >"$log" 2>&1 \
            || crashed=1
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
        if ((crashed)) || compgen -G "$out/crashes/$t/*" >/dev/null; then
            crashed=$(find "$out/crashes/$t" -type f | wc -l)
            ((crashed)) || crashed=1
            rc=1
        fi
        printf '%-16s %12s %10s %8s\n' "$t" "${execs:-?}" "${speed:-?}" \
            "$crashed"
        if ((crashed)); then
            grep -E 'invariant broken|runtime error|ERROR: |SUMMARY' -A1 \
                "$log" | head -20 >&2
            say "$t: log $log, inputs in $out/crashes/$t/"
        fi
    done
    return $rc
}

test_suite() {
    # layers call downward only: a cheap check, first
    "$ROOT/.ci/layers" "$ROOT/ngx_module" || return 1
    deps
    build
    worker
    export LLM_ROOT=$ROOT NODE_PATH=$NODE_DIR
    local rc=0
    run_prove "plain" || rc=1
    # every parser under libFuzzer for a short while: a crash fails (before
    # the sanitizer run, so that prove's summary stays the last word)
    if [[ ${LLM_NO_FUZZ:-0} != 1 ]]; then
        say "fuzz targets, ${LLM_FUZZ_SECONDS:-30} s each"
        fuzz "${LLM_FUZZ_SECONDS:-30}" || rc=1
    fi
    if [[ ${LLM_NO_SANITIZE:-0} != 1 ]]; then
        SANITIZE=1 build
        local san
        san=$(mktemp -d /tmp/llm-san.XXXXXX)
        LLM_MODULE=$ROOT/build-asan/modules/ngx_http_llm_module.so \
        LLM_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
        ASAN_OPTIONS="detect_leaks=0:log_path=$san/san:abort_on_error=0" \
        UBSAN_OPTIONS="print_stacktrace=1:log_path=$san/san" \
        LLM_SAN_DIR=$san run_prove "AddressSanitizer + UBSan" || rc=1
        if compgen -G "$san/san*" >/dev/null; then
            say "sanitizer reports:"
            cat "$san"/san* >&2
            rc=1
        fi
        rm -rf "$san"
    fi
    return $rc
}

case ${1:-} in
    deps) deps ;;
    build) build ;;
    worker) deps; worker; echo "LLAMA_SERVER=$LLAMA_SERVER"
        echo "LLM_MODEL_SMALL=$LLM_MODEL_SMALL"; echo "LLM_MODEL_LARGE=$LLM_MODEL_LARGE" ;;
    run) run ;;
    stop) stop ;;
    test) test_suite ;;
    bench) deps; build; exec "$ROOT/bench/run.sh" ;;
    route-eval) shift; route_eval "$@" ;;
    route-train) shift; route_train "$@" ;;
    fuzz) shift; deps; fuzz "$@" ;;
    *) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
