#!/usr/bin/env bash
# Builds the libFuzzer targets: t/fuzz/build.sh ROOT OUT [TARGET...]
#
# The module runs on nginx's core (pools, strings, events), which
# nginx-dev ships as headers only: the sources are Debian's own, the
# nginx .orig tarball that `apt-get source` fetches (into CACHE, once,
# from the machine's own Debian mirrors, with lists of its own: the
# system's apt setup is left alone;
# NGINX_FUZZ_SRC=dir: another nginx source tree).  The core is compiled
# once with clang, ASan and UBSan into OUT/nginx-src (its main() renamed,
# libFuzzer has one); the module's
# files and each target with coverage as well.  A target that #includes a
# module file (to reach its static functions) is linked without that
# file's object.  Every target is linked with the same --wrap list: the
# calls that would reach Redis or finish a request land in
# t/fuzz/ngx_http_llm_fuzz.c.
set -euo pipefail

ROOT=$1 OUT=$2
shift 2

CACHE=${LLM_CACHE_DIR:-$HOME/.cache/nginx-llm-gateway}
CC=${FUZZ_CC:-clang}
san=("-fsanitize=address,undefined" -fno-sanitize-recover=all
    -fno-omit-frame-pointer)
WRAP=(ngx_http_llm_redis_command ngx_http_llm_redis_command_on
    ngx_http_llm_redis_script
    ngx_http_llm_redis_ready
    ngx_http_llm_redis_cancel ngx_http_llm_redis_reset
    ngx_http_llm_run ngx_http_llm_fail
    ngx_http_llm_finalize ngx_http_run_posted_requests
    ngx_http_finalize_request)

die() { printf 'fuzz build: %s\n' "$*" >&2; exit 1; }

command -v "$CC" >/dev/null || die "no $CC (./config.sh deps installs clang)"

nginx_source() {   # prints the directory of an nginx source tree
    local d=$CACHE/nginx-fuzz-src apt=() v tgz
    if [[ -n ${NGINX_FUZZ_SRC:-} ]]; then
        echo "$NGINX_FUZZ_SRC"
        return
    fi
    v=$(dpkg-query -W -f='${Version}' nginx-dev 2>/dev/null | sed 's/-.*//')
    [[ -n $v ]] || die "nginx-dev is not installed (./config.sh deps)"
    if [[ ! -f $d/nginx-$v/src/core/nginx.c ]]; then
        echo "==> fetching the nginx $v source (Debian's, once)" >&2
        rm -rf "$d"
        mkdir -p "$d/lists/partial" "$d/cache" "$d/parts"
        # the machine's own Debian mirrors, for sources instead of binaries
        if [[ -f /etc/apt/sources.list ]]; then
            sed -n 's/^deb /deb-src /p' /etc/apt/sources.list \
                >"$d/parts/system.list"
        fi
        for f in /etc/apt/sources.list.d/*.sources; do
            [[ -f $f ]] || continue
            sed 's/^Types: *deb$/Types: deb-src/' "$f" \
                >"$d/parts/$(basename "$f")"
        done
        apt=(-qq -o Dir::Etc::SourceList=/dev/null
            -o "Dir::Etc::SourceParts=$d/parts" -o "Dir::State::Lists=$d/lists"
            -o "Dir::Cache=$d/cache" -o APT::Sandbox::User=root)
        apt-get "${apt[@]}" update >&2 || die "apt-get update (sources) failed"
        # the .orig tarball is all we need: a missing Debian part is no loss
        (cd "$d" && apt-get "${apt[@]}" source --download-only nginx >&2) \
            || true
        tgz=$d/nginx_$v.orig.tar.gz
        [[ -f $tgz ]] || die "apt-get source nginx gave no nginx_$v.orig.tar.gz"
        tar -xzf "$tgz" -C "$d"
        rm -rf "$d/lists" "$d/cache" "$d/parts" "$d"/*.tar.* "$d"/*.dsc
    fi
    echo "$d/nginx-$v"
}

src=$(nginx_source)
[[ -f $src/src/core/nginx.c ]] || die "no nginx sources in $src"

stamp="$(stat -c %i "$src")-$CC-${san[*]}-ssl"
if [[ ! -f $OUT/stamp || $(cat "$OUT/stamp") != "$stamp" ]]; then
    echo "==> configuring nginx for fuzzing in $OUT" >&2
    # what was built goes; a grown corpus stays
    rm -rf "${OUT:?}/nginx-src" "${OUT:?}/mod" "${OUT:?}/bin" "${OUT:?}/stamp"
    mkdir -p "$OUT"
    cp -a "$src" "$OUT/nginx-src"
    cfg=./configure
    [[ -x $OUT/nginx-src/configure ]] || cfg=./auto/configure
    (cd "$OUT/nginx-src" && $cfg --with-cc="$CC" \
        --with-cc-opt="-g -O1 ${san[*]}" --with-ld-opt="${san[*]}" \
        --without-http_rewrite_module --with-http_ssl_module \
        --without-http_gzip_module --without-pcre \
        >"$OUT/configure.log" 2>&1) \
        || { tail -20 "$OUT/configure.log"; die "configure failed"; }
    echo "$stamp" >"$OUT/stamp"
fi

ngx=$OUT/nginx-src
incs=(-I "$ngx/src/core" -I "$ngx/src/event" -I "$ngx/src/event/modules"
    -I "$ngx/src/os/unix" -I "$ngx/objs" -I "$ngx/src/http"
    -I "$ngx/src/http/modules" -I "$ROOT/ngx_module" -I "$OUT/gen"
    -I "$ROOT/t/fuzz")

# nginx's objects: those of objs/nginx, nginx.o's main() renamed
mapfile -t core < <(awk '/^objs\/nginx:/ { on = 1 }
    on { for (i = 1; i <= NF; i++) if ($i ~ /\.o$/) print $i }
    on && !/\\$/ { exit }' "$ngx/objs/Makefile")
((${#core[@]})) || die "no objects in $ngx/objs/Makefile"
(cd "$ngx" && make -s -f objs/Makefile -j2 "${core[@]}" >"$OUT/make.log" 2>&1) \
    || { tail -30 "$OUT/make.log"; die "nginx build failed"; }
cflags=$(sed -n 's/^CFLAGS = //p' "$ngx/objs/Makefile")
objs=()
for o in "${core[@]}"; do
    if [[ $o == objs/src/core/nginx.o ]]; then
        # shellcheck disable=SC2086
        $CC -c $cflags "${incs[@]}" -Dmain=ngx_fuzz_unused_main \
            -o "$OUT/nginx-nomain.o" "$ngx/src/core/nginx.c"
        objs+=("$OUT/nginx-nomain.o")
    else
        objs+=("$ngx/$o")
    fi
done

# the Redis scripts as C, by the module's own config script
mkdir -p "$OUT/gen" "$OUT/mod" "$OUT/bin"
(
    # shellcheck disable=SC2034  # read by the config script
    ngx_addon_dir=$ROOT NGX_OBJS=$OUT/gen ngx_module_link='' HTTP_MODULES=''
    # shellcheck disable=SC2034
    NGX_ADDON_SRCS='' NGX_ADDON_DEPS='' CORE_LIBS=''
    # shellcheck disable=SC1091
    . "$ROOT/config"
) >/dev/null

# the module with coverage; make-style: only what changed
mflags=(-g -O1 "${san[@]}" -fsanitize=fuzzer-no-link -Wall -Werror
    -Wno-unused-function)
hdrs=("$ROOT"/ngx_module/*.h "$ROOT"/t/fuzz/*.h
    "$OUT/gen/ngx_http_llm_scripts.h" "$OUT/gen/ngx_http_llm_keys.h")
newer() {   # target sources...
    local t=$1 s
    shift
    [[ -f $t ]] || return 0
    for s in "$@"; do [[ $s -nt $t ]] && return 0; done
    return 1
}
mods=()
for c in "$ROOT"/ngx_module/*.c "$ROOT"/t/fuzz/ngx_http_llm_fuzz.c; do
    o=$OUT/mod/$(basename "${c%.c}").o
    if newer "$o" "$c" "${hdrs[@]}"; then
        $CC -c "${mflags[@]}" "${incs[@]}" -o "$o" "$c"
    fi
    mods+=("$o")
done

ld=(-fsanitize=fuzzer "${san[@]}")
for w in "${WRAP[@]}"; do ld+=("-Wl,--wrap=$w"); done

targets=("$@")
if ((${#targets[@]} == 0)); then
    for c in "$ROOT"/t/fuzz/fuzz_*.c; do
        targets+=("$(basename "${c%.c}")")
    done
fi

for t in "${targets[@]}"; do
    c=$ROOT/t/fuzz/$t.c
    [[ -f $c ]] || die "no target $t (t/fuzz/$t.c)"
    # the module files it includes itself
    mapfile -t inc < <(sed -n \
        's|^#include ".*/ngx_module/\(ngx_http_llm_[a-z_]*\)\.c"|\1|p' "$c")
    link=()
    for o in "${mods[@]}"; do
        skip=0
        for i in "${inc[@]}"; do
            [[ $(basename "$o" .o) == "$i" ]] && skip=1
        done
        ((skip)) || link+=("$o")
    done
    deps=("$c" "${hdrs[@]}")
    for i in "${inc[@]}"; do deps+=("$ROOT/ngx_module/$i.c"); done
    if newer "$OUT/bin/$t" "${deps[@]}" "${mods[@]}"; then
        $CC "${mflags[@]}" "${incs[@]}" -c -o "$OUT/mod/$t.o" "$c"
        $CC "${ld[@]}" -o "$OUT/bin/$t" "$OUT/mod/$t.o" "${link[@]}" \
            "${objs[@]}" -lcurl -lcjson -lhiredis -lssl -lcrypto -lcrypt -lpthread
    fi
done
