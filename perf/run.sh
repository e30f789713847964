#!/usr/bin/env bash
# perf/run.sh — end-to-end benchmark of ringgate against reference servers.
#
# Scenario "mock":  ringgate's fixed mock response vs nginx `return 200`.
# Scenario "proxy": ringgate http_proxy vs nginx proxy_pass vs haproxy, all in
#                   front of one origin (started once, on wrk's CPU):
#                   ringgate-origin, or with --origin nginx a neutral nginx.
# Scenario "cache": cache hits: ringgate's stage cache vs nginx proxy_cache vs
#                   varnish, in front of the same origin, two workloads (one
#                   hot URL; 10,000 URLs with Zipf popularity, perf/zipf.lua).
# Scenario "revalidate": the same three caches honouring the origin's
#                   headers (ringgate's RFC 9111 mode, nginx
#                   proxy_cache_revalidate, varnish with keep): every entry
#                   says max-age=1 and an ETag, so over the 10,000 Zipf URLs
#                   most requests find their entry stale and revalidate it
#                   (the origin answers If-None-Match with a 304).
# Servers of a scenario run one at a time, alternating (A, B, A, B, ...), each
# started before its run and stopped after it, so they never compete.
# --baseline PATH adds "ringgate-base" (the same config, an older binary),
# run right after ringgate in every round.
# Ratios ringgate/X are PAIRED: per round, ringgate's figure divided by X's
# from the same round (and workload), then the median of those per-round
# ratios, so a drift of the host between rounds cancels out.
# See perf/README.md for the method and how to read the output.
#
# Usage: perf/run.sh [--scenario mock|proxy|cache|revalidate] [--rounds N] [--duration SECS]
#                    [--warmup SECS] [--connections C] [--mode pinned|wide]
#                    [--bin PATH] [--baseline PATH] [--origin ringgate-origin|nginx]
#                    [--servers LIST] [--with-mock] [--no-save]
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$PERF_DIR/.." && pwd)
CMDLINE=$(printf '%q ' "$0" "$@")
CMDLINE=${CMDLINE% }

SCENARIO=mock
ROUNDS=3
DURATION=10
WARMUP=2
CONNECTIONS=64
MODE=pinned
BIN=""
BASELINE=""
ORIGIN_KIND=ringgate-origin
SERVERS_OVERRIDE="${PERF_SERVERS:-}"
SAVE=1
WITH_MOCK=0
KEYS=0
OBSERVE=0
PERF_KEY=perf-key-0123456789abcdefghij

usage() {
    cat <<'EOF'
Usage: perf/run.sh [options]
  --scenario NAME     scenario to run: mock, proxy, cache or revalidate [mock]
  --rounds N          rounds; each round runs every server once        [3]
  --duration SECS     length of each measured wrk run                  [10]
  --warmup SECS       wrk warm-up before each measured run             [2]
  --connections C     wrk connections                                  [64]
  --mode pinned|wide  pinned: one server worker on CPU 0, wrk -t1 on CPU 1
                      wide: servers use all cores, wrk nproc/2 threads [pinned]
                      (proxy: the origin runs on CPU 1 next to wrk, one worker;
                      in wide mode unpinned with nproc/2 workers)
  --bin PATH          ringgate binary [target/release/ringgate; built with
                      `cargo build --release --locked` if missing]
                      (proxy: the origin is target/release/ringgate-origin,
                      or env PERF_ORIGIN_BIN; built if missing)
  --baseline PATH     also run "ringgate-base": the same ringgate config
                      from the binary at PATH (e.g. the build before a
                      change), right after ringgate in every round; the
                      summary gets the paired ratios ringgate/ringgate-base
  --origin KIND       proxy only: the origin behind the proxies
                      ringgate-origin: target/release/ringgate-origin
                      nginx: a neutral nginx `return 200` (one worker,
                      own prefix and port; taskset -c 1 when pinned)
                                                        [ringgate-origin]
  --servers LIST      comma-separated subset of the scenario's servers
                      (also env PERF_SERVERS), e.g. --servers nginx;
                      may name ringgate-base (needs --baseline)
  --with-mock         cache only: in the hot-URL workload, also run
                      ringgate's mock route (the mock scenario's config,
                      GET /perf/hello) and compare the cache hits with it
  --keys              mock, proxy: add "ringgate-keys", the same binary with the
                      route behind an API key in a usage plan (per-key,
                      per-key-per-route, stage and account limits and a
                      monthly quota, none reached); every client sends the
                      key header, so ringgate/ringgate-keys prices the checks
  --observe           add "ringgate-quiet", the same binary with per-request
                      metrics off and no access log, while "ringgate" runs with
                      metrics on and a CLF access log to a file, so
                      ringgate/ringgate-quiet prices observability
  --no-save           do not write perf/results/<scenario>-<date>.txt
Ratios ringgate/X are paired: per round (and workload), ringgate's figure
over X's from the same round, then the median of those per-round ratios
[min-max]. The per-server medians table is printed for reference only.
EOF
}

die() { echo "run.sh: error: $*" >&2; exit 1; }
log() { echo "run.sh: $*" >&2; }

need_arg() { [[ $# -ge 2 && -n $2 ]] || die "option $1 needs a value"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --*=*) opt=${1%%=*}; val=${1#*=}; shift; set -- "$opt" "$val" "$@"; continue ;;
    esac
    case $1 in
        --scenario)    need_arg "$@"; SCENARIO=$2; shift 2 ;;
        --rounds)      need_arg "$@"; ROUNDS=$2; shift 2 ;;
        --duration)    need_arg "$@"; DURATION=$2; shift 2 ;;
        --warmup)      need_arg "$@"; WARMUP=$2; shift 2 ;;
        --connections) need_arg "$@"; CONNECTIONS=$2; shift 2 ;;
        --mode)        need_arg "$@"; MODE=$2; shift 2 ;;
        --bin)         need_arg "$@"; BIN=$2; shift 2 ;;
        --baseline)    need_arg "$@"; BASELINE=$2; shift 2 ;;
        --origin)      need_arg "$@"; ORIGIN_KIND=$2; shift 2 ;;
        --servers)     need_arg "$@"; SERVERS_OVERRIDE=$2; shift 2 ;;
        --no-save)     SAVE=0; shift ;;
        --with-mock)   WITH_MOCK=1; shift ;;
        --keys)        KEYS=1; shift ;;
        --observe)     OBSERVE=1; shift ;;
        -h|--help)     usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
{ is_uint "$ROUNDS" && ((ROUNDS >= 1)); } || die "--rounds must be a positive integer"
{ is_uint "$DURATION" && ((DURATION >= 1)); } || die "--duration must be a positive integer"
is_uint "$WARMUP" || die "--warmup must be a non-negative integer"
{ is_uint "$CONNECTIONS" && ((CONNECTIONS >= 1)); } || die "--connections must be a positive integer"
[[ $MODE == pinned || $MODE == wide ]] || die "--mode must be pinned or wide"
[[ $ORIGIN_KIND == ringgate-origin || $ORIGIN_KIND == nginx ]] ||
    die "--origin must be ringgate-origin or nginx"
if [[ $ORIGIN_KIND == nginx && $SCENARIO != proxy ]]; then
    die "--origin nginx is for --scenario proxy only"
fi

BIN_DEFAULT=0
if [[ -z $BIN ]]; then
    BIN=$REPO_DIR/target/release/ringgate
    BIN_DEFAULT=1
fi
[[ $BIN == /* ]] || BIN=$PWD/$BIN
if [[ -n $BASELINE ]]; then
    [[ $BASELINE == /* ]] || BASELINE=$PWD/$BASELINE
    [[ -f $BASELINE && -x $BASELINE ]] || die "--baseline: not an executable file: $BASELINE"
fi

NPROC=$(nproc)

# --------------------------------------------------------------------------
# Scenarios. A scenario defines:
#   scenario_<name>            sets SCENARIO_SERVERS (first = subject of the
#                              ratios), SCENARIO_PATH, SCENARIO_STATUS,
#                              SCENARIO_BODY (expected body; "" = unchecked)
#   scenario_setup_<name>      optional: start backends etc. (not measured)
#   scenario_teardown_<name>   optional
#   scenario_ensure_<name>     optional: install/build what setup needs
# Each server <s> needs ensure_server_<s> (install/build) and
# start_server_<s> PORT (starts it in the background, sets SERVER_PID).
# A scenario whose setup starts an origin sets ORIGIN_PID and ORIGIN_PORT:
# templates get @ORIGIN_PORT@, and each run also reports the origin's CPU.
# SCENARIO_ORIGIN says what the origin's request counter must show over a
# measured run: "forward" (at least every request wrk completed; proxy) or
# "cache" (reported per run, ~0 once the cache is warm; cache).
# Optional SCENARIO_WORKLOADS: names of load patterns, each run for every
# server every round; workload_<scenario>_<name> sets WL_PATH (checked with
# curl, and wrk's URL), WL_WRK (extra wrk arguments before the URL),
# WL_WRK_ARGS (script arguments, after "--") and WL_FILL (a function run
# with the base URL before the warm-up, e.g. to fill a cache). Default: one
# workload "default" on SCENARIO_PATH.
# --------------------------------------------------------------------------
SCENARIO_WORKLOADS=(default)
SCENARIO_ORIGIN=""
workload_default() { WL_PATH=$SCENARIO_PATH WL_WRK=() WL_WRK_ARGS=() WL_FILL=""; }

scenario_mock() {
    SCENARIO_SERVERS=(ringgate nginx)
    SCENARIO_PATH=/perf/hello
    SCENARIO_STATUS=200
    SCENARIO_BODY=$'hello, world\n'
}

scenario_proxy() {
    SCENARIO_SERVERS=(ringgate nginx haproxy)
    SCENARIO_PATH=/perf/hello
    SCENARIO_STATUS=200
    SCENARIO_BODY=$'hello, world\n'
    SCENARIO_ORIGIN=forward
}

# cache: every server answers GET /perf/items/{id} with the origin's
# /bytes/1024 (1024 bytes, byte i = 'a' + i % 26), cached for an hour.
ZIPF_N=10000 ZIPF_S=1.0 ZIPF_SEED=42
scenario_cache() {
    SCENARIO_SERVERS=(ringgate nginx varnish)
    SCENARIO_PATH=/perf/items/1
    SCENARIO_STATUS=200
    SCENARIO_BODY=$(awk 'BEGIN { for (i = 0; i < 1024; i++) printf "%c", 97 + i % 26 }')
    SCENARIO_ORIGIN=cache
    SCENARIO_WORKLOADS=(hot zipf)
}
# One hot URL: the check (curl) fills its entry, the warm-up hits it.
workload_cache_hot() { WL_PATH=/perf/items/1 WL_WRK=() WL_WRK_ARGS=() WL_FILL=""; }
# 10,000 URLs, Zipf(1.0) popularity, deterministic sequence (perf/zipf.lua);
# every URL is requested once (fill_walk) before the warm-up.
workload_cache_zipf() {
    WL_PATH=/perf/items/1
    WL_WRK=(-s "$PERF_DIR/zipf.lua")
    WL_WRK_ARGS=(-- "$ZIPF_N" "$ZIPF_S" "$ZIPF_SEED" /perf/items/)
    WL_FILL=fill_walk
}
# revalidate: GET /perf/items/{id} from the origin's /revalidating/1024
# (max-age=1, ETag "v1", 304 to If-None-Match "v1"): the zipf workload only,
# so most requests meet a stale entry. The origin's request count per run is
# the number of revalidations (and misses) each cache made.
scenario_revalidate() {
    scenario_cache
    SCENARIO_ORIGIN=revalidate
    SCENARIO_WORKLOADS=(zipf)
}
workload_revalidate_zipf() { workload_cache_zipf; }
# --with-mock adds ringgate's mock route (the mock scenario's config) to the
# hot workload, as server "ringgate-mock".
MOCK_PATH=/perf/hello
MOCK_BODY=$'hello, world\n'

declare -F "scenario_$SCENARIO" >/dev/null || die "unknown scenario: $SCENARIO"
"scenario_$SCENARIO"

# --keys: ringgate-keys runs right after ringgate; every request carries the key.
if ((KEYS)); then
    [[ $SCENARIO == mock || $SCENARIO == proxy ]] || die "--keys is for --scenario mock or proxy"
    SCENARIO_SERVERS=("${SCENARIO_SERVERS[0]}" ringgate-keys "${SCENARIO_SERVERS[@]:1}")
fi
KEY_HEADER=()
((KEYS)) && KEY_HEADER=(-H "x-api-key: $PERF_KEY")

# --observe: ringgate-quiet runs right after ringgate.
if ((OBSERVE)); then
    SCENARIO_SERVERS=("${SCENARIO_SERVERS[0]}" ringgate-quiet "${SCENARIO_SERVERS[@]:1}")
fi

# --baseline: ringgate-base is part of every scenario, right after ringgate.
if [[ -n $BASELINE ]]; then
    SCENARIO_SERVERS=("${SCENARIO_SERVERS[0]}" ringgate-base "${SCENARIO_SERVERS[@]:1}")
fi
SERVERS=("${SCENARIO_SERVERS[@]}")
if [[ -n $SERVERS_OVERRIDE ]]; then
    IFS=', ' read -r -a SERVERS <<<"$SERVERS_OVERRIDE"
    for s in "${SERVERS[@]}"; do
        [[ $s == ringgate-base && -z $BASELINE ]] && die "server ringgate-base needs --baseline PATH"
        [[ " ${SCENARIO_SERVERS[*]} " == *" $s "* ]] ||
            die "server '$s' is not part of scenario $SCENARIO (${SCENARIO_SERVERS[*]})"
    done
fi
# With --baseline, ringgate-base runs (even if --servers leaves it out) right
# after ringgate (first if ringgate is not selected), so the old and the new
# binary always run back to back.
if [[ -n $BASELINE ]]; then
    ordered=() placed=0
    for s in "${SERVERS[@]}"; do
        [[ $s == ringgate-base ]] && continue
        ordered+=("$s")
        if [[ $s == ringgate ]] && ((placed == 0)); then ordered+=(ringgate-base); placed=1; fi
    done
    ((placed)) || ordered=(ringgate-base ${ordered[@]+"${ordered[@]}"})
    SERVERS=("${ordered[@]}")
fi
((${#SERVERS[@]} >= 1)) || die "no servers selected"
if ((WITH_MOCK)); then
    [[ $SCENARIO == cache ]] || die "--with-mock is for --scenario cache only"
fi
# workload_servers WORKLOAD: the servers run in that workload, in order.
workload_servers() {
    printf '%s\n' "${SERVERS[@]}"
    if ((WITH_MOCK)) && [[ $1 == hot ]]; then echo ringgate-mock; fi
}
# load_workload WORKLOAD: set WL_* for it.
load_workload() {
    if [[ $1 == default ]]; then workload_default; else "workload_${SCENARIO}_$1"; fi
}
for wl in "${SCENARIO_WORKLOADS[@]}"; do
    [[ $wl == default ]] || declare -F "workload_${SCENARIO}_$wl" >/dev/null ||
        die "scenario $SCENARIO: no workload_${SCENARIO}_$wl"
done

# --------------------------------------------------------------------------
# Installing what is missing.
# --------------------------------------------------------------------------
APT_UPDATED=0
apt_update() { # once per run
    [[ $(id -u) -eq 0 ]] || die "need to install packages but not running as root"
    command -v apt-get >/dev/null || die "need to install packages but apt-get is missing"
    if ((APT_UPDATED == 0)); then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        APT_UPDATED=1
    fi
}
apt_install() {
    apt_update
    log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

apt_has() { apt-cache show "$1" >/dev/null 2>&1; }

ensure_cmd() { # ensure_cmd CMD PACKAGE
    command -v "$1" >/dev/null || apt_install "$2"
    command -v "$1" >/dev/null || die "$1 still missing after installing $2"
}

ensure_server_nginx() {
    NGINX=$(command -v nginx || true)
    [[ -z $NGINX && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
    if [[ -z $NGINX ]]; then
        # nginx-light is enough for `return` (and has proxy/cache for later
        # scenarios); fall back to the full package where it does not exist.
        apt_update
        if apt_has nginx-light; then apt_install nginx-light; else apt_install nginx; fi
        NGINX=$(command -v nginx || echo /usr/sbin/nginx)
        [[ -x $NGINX ]] || die "nginx still missing after install"
    fi
}

ensure_server_haproxy() {
    HAPROXY=$(command -v haproxy || true)
    [[ -z $HAPROXY && -x /usr/sbin/haproxy ]] && HAPROXY=/usr/sbin/haproxy
    if [[ -z $HAPROXY ]]; then
        apt_install haproxy
        HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
        [[ -x $HAPROXY ]] || die "haproxy still missing after install"
    fi
}

ensure_server_varnish() {
    VARNISHD=$(command -v varnishd || true)
    [[ -z $VARNISHD && -x /usr/sbin/varnishd ]] && VARNISHD=/usr/sbin/varnishd
    if [[ -z $VARNISHD ]]; then
        apt_install varnish
        VARNISHD=$(command -v varnishd || echo /usr/sbin/varnishd)
        [[ -x $VARNISHD ]] || die "varnishd still missing after install"
    fi
    # varnishd compiles the VCL with the C compiler.
    command -v cc >/dev/null || command -v gcc >/dev/null || apt_install gcc
}

ORIGIN_BIN=${PERF_ORIGIN_BIN:-$REPO_DIR/target/release/ringgate-origin}
[[ $ORIGIN_BIN == /* ]] || ORIGIN_BIN=$PWD/$ORIGIN_BIN
scenario_ensure_proxy() {
    if [[ $ORIGIN_KIND == nginx ]]; then
        ensure_server_nginx
        return
    fi
    if [[ ! -x $ORIGIN_BIN ]]; then
        [[ -z ${PERF_ORIGIN_BIN:-} ]] || die "origin binary not found: $ORIGIN_BIN"
        command -v cargo >/dev/null || die "$ORIGIN_BIN missing and cargo not found"
        log "building the origin: cargo build --release --locked --bin ringgate-origin"
        (cd "$REPO_DIR" && cargo build --release --locked --bin ringgate-origin) >&2
        [[ -x $ORIGIN_BIN ]] || die "build did not produce $ORIGIN_BIN"
    fi
}
scenario_ensure_cache() { scenario_ensure_proxy; }
scenario_ensure_revalidate() { scenario_ensure_proxy; }

ensure_server_ringgate() {
    if [[ ! -x $BIN ]]; then
        ((BIN_DEFAULT)) || die "ringgate binary not found: $BIN"
        command -v cargo >/dev/null || die "$BIN missing and cargo not found"
        log "building ringgate: cargo build --release --locked"
        (cd "$REPO_DIR" && cargo build --release --locked) >&2
        [[ -x $BIN ]] || die "build did not produce $BIN"
    fi
}
ensure_server_ringgate-mock() { ensure_server_ringgate; }
ensure_server_ringgate-keys() { ensure_server_ringgate; }
ensure_server_ringgate-quiet() { ensure_server_ringgate; }
ensure_server_ringgate-base() { [[ -x $BASELINE ]] || die "baseline binary not found: $BASELINE"; }

# --------------------------------------------------------------------------
# Servers. start_server_<name> PORT: render the config, start in background,
# set SERVER_PID. The process gets the server CPU affinity (CPU 0 if pinned).
# --------------------------------------------------------------------------
throttle_off() { # throttle_off BINARY: the config lines that turn the account throttle off
    local probe
    probe=$(mktemp "$WORK/throttle-probe.XXXX.toml")
    printf '[throttle]\nrate = -1\n' >"$probe"
    if "$1" check --config "$probe" >/dev/null 2>&1; then
        printf '[throttle]\nrate = -1'
    else
        printf '# (this build has no throttling)'
    fi
}
render() { # render TEMPLATE OUT KEY=VALUE...
    local tpl=$1 out=$2 kv content
    shift 2
    [[ -f $tpl ]] || die "template missing: $tpl"
    content=$(<"$tpl")
    for kv in "$@"; do
        content=${content//"@${kv%%=*}@"/"${kv#*=}"}
    done
    if grep -qE '@[A-Z_]+@' <<<"$content"; then
        die "unreplaced placeholder in $tpl: $(grep -oE '@[A-Z_]+@' <<<"$content" | sort -u | tr '\n' ' ')"
    fi
    printf '%s\n' "$content" >"$out"
}

start_server_nginx() {
    local port=$1 dir workers=1 cache
    dir=$(mktemp -d "$WORK/nginx.XXXX")
    chmod 755 "$dir"
    [[ $MODE == wide ]] && workers=auto
    # cache: a fresh cache directory per run (a cold cache), on tmpfs when
    # nginx_cache_setup made NGINX_CACHE_ROOT; removed when nginx stops.
    cache=$dir/cache
    if [[ $SCENARIO == cache || $SCENARIO == revalidate ]] && [[ -n $NGINX_CACHE_ROOT ]]; then
        SERVER_CACHE_DIR=$(mktemp -d "$NGINX_CACHE_ROOT/nginx.XXXX")
        chmod 755 "$SERVER_CACHE_DIR" # nginx's workers (nobody under root) write below
        cache=$SERVER_CACHE_DIR/cache
    fi
    render "$PERF_DIR/nginx-$SCENARIO.conf.in" "$dir/nginx.conf" \
        PORT="$port" WORKERS="$workers" TMP="$dir" ORIGIN_PORT="${ORIGIN_PORT:-0}" \
        CACHE="$cache" NOFILE="$NGINX_NOFILE" OFC_MAX="$NGINX_OFC_MAX"
    "$NGINX" -t -q -p "$dir" -c "$dir/nginx.conf" >"$dir/configtest.log" 2>&1 ||
        { cat "$dir/configtest.log" >&2; die "nginx config test failed"; }
    SERVER_LOG=$dir/stdout.log
    ${SERVER_AFFINITY[@]+"${SERVER_AFFINITY[@]}"} \
        "$NGINX" -p "$dir" -c "$dir/nginx.conf" >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    SERVER_ERRLOG=$dir/error.log
}

start_ringgate() { # start_ringgate PORT TEMPLATE-SCENARIO BINARY [keys|quiet|observed]
    local port=$1 dir workers=1 throttle stage_throttle='' route_key='' big
    dir=$(mktemp -d "$WORK/ringgate.XXXX")
    [[ $MODE == wide ]] && workers='"auto"'
    throttle=$(throttle_off "$3")
    if [[ ${4:-} == keys ]]; then
        # Every level and the quota, with limits no run reaches.
        big='{ rate = 1000000000, burst = 1000000000 }'
        throttle=$(printf '%s\n' '[throttle]' 'rate = 1000000000' 'burst = 1000000000' \
            '[[api_key]]' 'name = "perf"' "value = \"$PERF_KEY\"" \
            '[[usage_plan]]' 'name = "perf"' 'keys = ["perf"]' "throttle = $big" \
            'quota = { limit = 1000000000000, period = "MONTH" }' \
            '[[usage_plan.stage]]' 'api = "perf"' 'stage = "perf"' \
            "route_throttle = { \"GET /hello\" = $big }")
        stage_throttle="throttle = $big"
        route_key='api_key_required = true'
    fi
    if [[ ${4:-} == quiet ]]; then
        throttle+=$'\n[metrics]\nenabled = false'
    elif [[ ${4:-} == observed ]]; then
        throttle+=$'\n'$(printf '%s\n' '[metrics]' 'enabled = true' '[access_log]' \
            "path = \"$dir/access.log\"" 'format = "clf"')
    fi
    render "$PERF_DIR/ringgate-$2.toml.in" "$dir/ringgate.toml" \
        PORT="$port" WORKERS="$workers" ORIGIN_PORT="${ORIGIN_PORT:-0}" \
        THROTTLE="$throttle" STAGE_THROTTLE="$stage_throttle" ROUTE_KEY="$route_key"
    SERVER_LOG=$dir/stdout.log
    SERVER_ERRLOG=$SERVER_LOG
    ${SERVER_AFFINITY[@]+"${SERVER_AFFINITY[@]}"} \
        "$3" serve --config "$dir/ringgate.toml" >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
}
start_server_ringgate() {
    if ((OBSERVE)); then
        start_ringgate "$1" "$SCENARIO" "$BIN" observed
    else
        start_ringgate "$1" "$SCENARIO" "$BIN"
    fi
}

# --observe: the same binary with metrics off and no access log.
start_server_ringgate-quiet() { start_ringgate "$1" "$SCENARIO" "$BIN" quiet; }

# ringgate with the mock scenario's config (cache --with-mock).
start_server_ringgate-mock() { start_ringgate "$1" mock "$BIN"; }

# --keys: the same binary, the route behind an API key and every limit.
start_server_ringgate-keys() { start_ringgate "$1" "$SCENARIO" "$BIN" keys; }

# --baseline: the same config as ringgate, run from the baseline binary.
start_server_ringgate-base() { start_ringgate "$1" "$SCENARIO" "$BASELINE"; }

# varnishd in the foreground (-F) with a private working dir (-n), malloc
# storage, one thread pool in pinned mode, the CLI on loopback; no varnishlog
# or varnishncsa. It forks a cache child (counted with the manager's CPU).
start_server_varnish() {
    local port=$1 dir
    local -a pools=()
    dir=$(mktemp -d "$WORK/varnish.XXXX")
    chmod 755 "$dir"
    [[ $MODE == pinned ]] && pools=(-p thread_pools=1)
    render "$PERF_DIR/varnish-$SCENARIO.vcl.in" "$dir/default.vcl" \
        PORT="$port" TMP="$dir" ORIGIN_PORT="${ORIGIN_PORT:-0}"
    SERVER_LOG=$dir/stdout.log
    SERVER_ERRLOG=$SERVER_LOG
    ${SERVER_AFFINITY[@]+"${SERVER_AFFINITY[@]}"} \
        "$VARNISHD" -F -n "$dir/varnish" -a "127.0.0.1:$port" -T 127.0.0.1:0 \
        -f "$dir/default.vcl" -s malloc,256M ${pools[@]+"${pools[@]}"} >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
}

start_server_haproxy() {
    local port=$1 dir threads=1 nofile maxconn
    dir=$(mktemp -d "$WORK/haproxy.XXXX")
    [[ $MODE == wide ]] && threads=$NPROC
    # Two descriptors per proxied connection, plus listeners, logs, pollers.
    nofile=$(ulimit -n)
    [[ $nofile == unlimited ]] && nofile=1048576
    maxconn=$(((nofile - 200) / 2))
    ((maxconn > 100000)) && maxconn=100000
    ((maxconn >= CONNECTIONS)) || die "open-file limit $nofile too low for haproxy with $CONNECTIONS connections"
    render "$PERF_DIR/haproxy-$SCENARIO.cfg.in" "$dir/haproxy.cfg" \
        PORT="$port" THREADS="$threads" MAXCONN="$maxconn" ORIGIN_PORT="${ORIGIN_PORT:-0}"
    "$HAPROXY" -c -q -f "$dir/haproxy.cfg" >"$dir/configtest.log" 2>&1 ||
        { cat "$dir/configtest.log" >&2; die "haproxy config check failed"; }
    SERVER_LOG=$dir/stdout.log
    SERVER_ERRLOG=$SERVER_LOG
    ${SERVER_AFFINITY[@]+"${SERVER_AFFINITY[@]}"} \
        "$HAPROXY" -db -f "$dir/haproxy.cfg" >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
}

# --------------------------------------------------------------------------
# Process bookkeeping: CPU ticks of a process tree, stopping by PID.
# --------------------------------------------------------------------------
# tree_pids ROOT: ROOT and all its descendants (from /proc/*/stat ppid).
tree_pids() {
    local root=$1 f line rest pid
    local -a fields queue
    local -A children=()
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        pid=${f#/proc/}; pid=${pid%/stat}
        rest=${line##*) }
        read -r -a fields <<<"$rest"
        children[${fields[1]}]+=" $pid"
    done
    queue=("$root")
    while ((${#queue[@]})); do
        pid=${queue[0]}
        queue=("${queue[@]:1}")
        echo "$pid"
        # shellcheck disable=SC2206
        [[ -n ${children[$pid]:-} ]] && queue+=(${children[$pid]})
    done
}

# cpu_ticks PID...: sum of utime+stime (clock ticks) of the given processes;
# utime/stime of a process include all its threads.
cpu_ticks() {
    local pid line rest total=0
    local -a fields
    for pid in "$@"; do
        { read -r line <"/proc/$pid/stat"; } 2>/dev/null || continue
        rest=${line##*) }
        read -r -a fields <<<"$rest"
        # fields[0] is stat field 3 (state): utime = field 14, stime = 15.
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

STARTED_PIDS=()
stop_server() { # stop_server PID
    local pid=$1 i
    local -a tree
    mapfile -t tree < <(tree_pids "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "PID $pid did not exit on SIGTERM, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    # Leftover descendants of our server (e.g. nginx workers), by PID only.
    for i in "${tree[@]:1}"; do
        if kill -0 "$i" 2>/dev/null; then kill -KILL "$i" 2>/dev/null || true; fi
    done
    local -a left=()
    for i in "${STARTED_PIDS[@]}"; do [[ $i == "$pid" ]] || left+=("$i"); done
    STARTED_PIDS=(${left[@]+"${left[@]}"})
}

# cache: nginx's proxy_cache directory root on tmpfs (nginx_cache_setup):
# a private /dev/shm/ringgate-perf-cache.XXXXXX made by this run, or "".
NGINX_CACHE_ROOT="" SERVER_CACHE_DIR=""
SHM_PREFIX=/dev/shm/ringgate-perf-cache.
# remove_shm_dir DIR: rm -rf DIR, only if it is NGINX_CACHE_ROOT (made by
# mktemp in this run) or below it; nothing else in /dev/shm is touched.
remove_shm_dir() {
    local d=$1
    [[ -n $d && -n $NGINX_CACHE_ROOT && $NGINX_CACHE_ROOT == "$SHM_PREFIX"?????? ]] || return 0
    [[ $d == "$NGINX_CACHE_ROOT" || $d == "$NGINX_CACHE_ROOT"/nginx.* ]] || return 0
    [[ $d != *..* ]] || return 0
    rm -rf --one-file-system -- "$d" 2>/dev/null || true
    [[ ! -e $d ]] || log "WARNING: could not remove $d"
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ringgate-perf.XXXXXX")
chmod 755 "$WORK"
cleanup() {
    local rc=$? pid
    for pid in ${STARTED_PIDS[@]+"${STARTED_PIDS[@]}"}; do stop_server "$pid"; done
    if declare -F "scenario_teardown_$SCENARIO" >/dev/null; then
        "scenario_teardown_$SCENARIO" || true
    fi
    # The tmpfs cache holds only cache files (RAM): removed on every exit,
    # after the servers writing to it are stopped.
    if [[ -n $NGINX_CACHE_ROOT ]]; then
        remove_shm_dir "$NGINX_CACHE_ROOT"
        [[ -e $NGINX_CACHE_ROOT ]] || NGINX_CACHE_ROOT=""
    fi
    if ((rc == 0)); then
        rm -rf "$WORK"
    else
        log "failed (exit $rc); logs kept in $WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'exit 129' HUP

# --------------------------------------------------------------------------
# Network helpers (loopback only).
# --------------------------------------------------------------------------
free_port() {
    local p i
    if command -v python3 >/dev/null; then
        python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
        return
    fi
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    die "could not find a free port"
}

wait_ready() { # wait_ready PORT PID: up to 10 s for the port to accept
    local port=$1 pid=$2 i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

check_response() { # check_response URL [BODY]: expected status and body
    local url=$1 body=${2-$SCENARIO_BODY} out code
    out=$WORK/check.body
    code=$(curl -sS --max-time 5 ${KEY_HEADER[@]+"${KEY_HEADER[@]}"} -o "$out" -w '%{http_code}' "$url") ||
        die "curl $url failed"
    [[ $code == "$SCENARIO_STATUS" ]] || die "GET $url: status $code, expected $SCENARIO_STATUS"
    if [[ -n $body ]]; then
        [[ "$(cat "$out"; echo x)" == "${body}x" ]] ||
            die "GET $url: unexpected body: $(head -c 200 "$out" | od -c | head -3)"
    fi
}

# cpu_busy: per-CPU busy % over 1 s before the runs (other load skews results).
cpu_busy() {
    local a b
    a=$(grep -E '^cpu[0-9]+ ' /proc/stat)
    sleep 1
    b=$(grep -E '^cpu[0-9]+ ' /proc/stat)
    awk 'NR == FNR { for (i = 2; i <= NF; i++) t0[$1] += $i; i0[$1] = $5 + $6; next }
         { t = 0; for (i = 2; i <= NF; i++) t += $i; dt = t - t0[$1]; di = $5 + $6 - i0[$1]
           b = (dt > 0) ? 100 * (dt - di) / dt : 0
           printf "%s%s %.0f%%", sep, $1, b; sep = ", " }' \
        <(echo "$a") <(echo "$b")
}

# origin_count: sets ORIGIN_COUNT to the requests the origin has served so
# far (not in a subshell: it keeps a count of its own calls). ringgate-origin
# does not count GET /count itself. The nginx origin's stub_status counts
# every request, these included, so the calls made so far are subtracted.
# Without stub_status (ORIGIN_COUNTS=0) it is always 0.
ORIGIN_COUNT=0 ORIGIN_COUNT_CALLS=0 ORIGIN_COUNTS=1
origin_count() {
    local out
    ((ORIGIN_COUNTS)) || { ORIGIN_COUNT=0; return 0; }
    out=$(curl -sS --max-time 5 "http://127.0.0.1:$ORIGIN_PORT/count") ||
        die "origin: GET /count failed"
    if [[ $ORIGIN_KIND == nginx ]]; then
        ORIGIN_COUNT_CALLS=$((ORIGIN_COUNT_CALLS + 1))
        # "Active connections: N / server accepts handled requests / A H R / ..."
        out=$(awk 'NR == 3 { print $3 }' <<<"$out")
        [[ $out =~ ^[0-9]+$ ]] || die "origin: unexpected stub_status output"
        out=$((out - ORIGIN_COUNT_CALLS))
    fi
    ORIGIN_COUNT=$out
}

# scenario_setup_proxy: start one origin for the whole scenario on wrk's CPU
# (pinned mode: taskset -c 1, one worker): ringgate-origin on a port it
# picks, or (--origin nginx) nginx on a free port.
ORIGIN_PID="" ORIGIN_PORT="" ORIGIN_LOG="" ORIGIN_DESC=""
scenario_setup_proxy() {
    local workers=1 i line
    [[ $MODE == wide ]] && workers=$((NPROC / 2 > 0 ? NPROC / 2 : 1))
    ORIGIN_WORKERS=$workers
    if [[ $ORIGIN_KIND == nginx ]]; then
        start_origin_nginx
        return
    fi
    ORIGIN_DESC="$ORIGIN_BIN --workers $workers"
    ORIGIN_LOG=$WORK/origin.log
    ${LOAD_AFFINITY[@]+"${LOAD_AFFINITY[@]}"} \
        "$ORIGIN_BIN" --listen 127.0.0.1:0 --workers "$workers" --name perf \
        >"$ORIGIN_LOG" 2>&1 &
    ORIGIN_PID=$!
    STARTED_PIDS+=("$ORIGIN_PID")
    for ((i = 0; i < 100; i++)); do
        line=$(grep -m1 -oE 'listening on 127\.0\.0\.1:[0-9]+' "$ORIGIN_LOG" || true)
        [[ -n $line ]] && break
        kill -0 "$ORIGIN_PID" 2>/dev/null || { cat "$ORIGIN_LOG" >&2; die "origin exited at start"; }
        sleep 0.1
    done
    [[ -n $line ]] || { cat "$ORIGIN_LOG" >&2; die "origin did not report its port within 10 s"; }
    ORIGIN_PORT=${line##*:}
    ORIGIN_DESC="$ORIGIN_DESC (PID $ORIGIN_PID)"
    check_response "http://127.0.0.1:$ORIGIN_PORT/hello" $'hello, world\n'
    log "origin: PID $ORIGIN_PID on 127.0.0.1:$ORIGIN_PORT, $workers worker(s)${LOAD_AFFINITY[*]:+, ${LOAD_AFFINITY[*]}}"
}

scenario_setup_cache() {
    scenario_setup_proxy
    if [[ " ${SERVERS[*]} " == *" nginx "* ]]; then nginx_cache_setup; fi
}
scenario_setup_revalidate() { scenario_setup_cache; }

# nginx_cache_setup (cache, with nginx): nginx is tuned as a RAM cache, so
# its proxy_cache files go to tmpfs: NGINX_CACHE_ROOT, a private directory
# made here under /dev/shm (each nginx run gets a fresh nginx.XXXX below it,
# removed when that nginx stops; cleanup removes the root on every exit).
# If /dev/shm is missing, not tmpfs, short of space or not writable, the
# cache stays in the run's temp dir and NGINX_CACHE_WARN says why (header).
# Also sizes open_file_cache to the open-file limit: NGINX_NOFILE (nginx's
# worker_rlimit_nofile: the hard limit, at most 65536) less the client,
# upstream and other descriptors, at most 20000 (NGINX_OFC_MAX).
NGINX_CACHE_WARN="" NGINX_NOFILE=1024 NGINX_OFC_MAX=20000 NGINX_OFC_WARN=""
SHM_NEED_MIB=128 # 10,000 entries take ~40 MiB of tmpfs pages
nginx_cache_setup() {
    local fs="" avail=0 hard
    if [[ -d /dev/shm ]]; then
        fs=$(stat -f -c %T /dev/shm 2>/dev/null || true)
        avail=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print int($4 / 1024) }' || true)
        [[ $avail =~ ^[0-9]+$ ]] || avail=0
    fi
    if [[ ! -d /dev/shm ]]; then
        NGINX_CACHE_WARN="/dev/shm is missing"
    elif [[ $fs != tmpfs ]]; then
        NGINX_CACHE_WARN="/dev/shm is not tmpfs (${fs:-unknown})"
    elif ((avail < SHM_NEED_MIB)); then
        NGINX_CACHE_WARN="/dev/shm has only $avail MiB free (need $SHM_NEED_MIB)"
    elif ! NGINX_CACHE_ROOT=$(mktemp -d "${SHM_PREFIX}XXXXXX" 2>/dev/null); then
        NGINX_CACHE_ROOT=""
        NGINX_CACHE_WARN="could not create a directory in /dev/shm"
    else
        chmod 755 "$NGINX_CACHE_ROOT"
        log "nginx cache on tmpfs: $NGINX_CACHE_ROOT ($avail MiB free)"
    fi
    hard=$(ulimit -Hn)
    [[ $hard == unlimited ]] && hard=1048576
    NGINX_NOFILE=$((hard < 65536 ? hard : 65536))
    NGINX_OFC_MAX=$((NGINX_NOFILE - CONNECTIONS - 512 - 64))
    ((NGINX_OFC_MAX <= 20000)) || NGINX_OFC_MAX=20000
    ((NGINX_OFC_MAX >= 16)) || NGINX_OFC_MAX=16
    if ((NGINX_OFC_MAX < ZIPF_N)); then
        NGINX_OFC_WARN="open-file limit $NGINX_NOFILE: nginx's open_file_cache holds $NGINX_OFC_MAX descriptors, fewer than the $ZIPF_N zipf cache files (the rest are opened per hit)"
    fi
    return 0
}

# start_origin_nginx: the neutral origin (--origin nginx): a separate nginx
# instance from perf/nginx-origin.conf.in with its own prefix, pid file and
# port, ORIGIN_WORKERS workers, `return 200 "hello, world\n"` on GET /hello,
# stub_status on GET /count (if the build has it). Stopped by PID at the end
# (cleanup), workers included.
start_origin_nginx() {
    local dir count="return 404;"
    dir=$WORK/origin-nginx
    mkdir -p "$dir"
    chmod 755 "$dir"
    if "$NGINX" -V 2>&1 | grep -q -- '--with-http_stub_status_module'; then
        count="stub_status;"
    else
        ORIGIN_COUNTS=0
        log "WARNING: $NGINX has no stub_status: the origin's request count is not checked"
    fi
    ORIGIN_PORT=$(free_port)
    render "$PERF_DIR/nginx-origin.conf.in" "$dir/nginx.conf" \
        PORT="$ORIGIN_PORT" WORKERS="$ORIGIN_WORKERS" TMP="$dir" COUNT="$count"
    "$NGINX" -t -q -p "$dir" -c "$dir/nginx.conf" >"$dir/configtest.log" 2>&1 ||
        { cat "$dir/configtest.log" >&2; die "origin nginx config test failed"; }
    ORIGIN_LOG=$dir/error.log
    ${LOAD_AFFINITY[@]+"${LOAD_AFFINITY[@]}"} \
        "$NGINX" -p "$dir" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
    ORIGIN_PID=$!
    STARTED_PIDS+=("$ORIGIN_PID")
    if ! wait_ready "$ORIGIN_PORT" "$ORIGIN_PID"; then
        cat "$dir/stdout.log" "$ORIGIN_LOG" >&2 2>/dev/null || true
        die "origin nginx did not accept connections on 127.0.0.1:$ORIGIN_PORT within 10 s"
    fi
    check_response "http://127.0.0.1:$ORIGIN_PORT/hello" $'hello, world\n'
    ORIGIN_DESC="nginx $("$NGINX" -v 2>&1 | sed 's/^nginx version: nginx\///') (PID $ORIGIN_PID, a separate instance), worker_processes $ORIGIN_WORKERS, return 200 (perf/nginx-origin.conf.in)"
    log "origin: nginx, PID $ORIGIN_PID on 127.0.0.1:$ORIGIN_PORT, $ORIGIN_WORKERS worker(s)${LOAD_AFFINITY[*]:+, ${LOAD_AFFINITY[*]}}"
}

# --------------------------------------------------------------------------
# Load generation.
# --------------------------------------------------------------------------
# run_wrk SECS URL OUTFILE; the workload's WL_WRK go before the URL and
# WL_WRK_ARGS (script arguments) after it.
run_wrk() {
    ${LOAD_AFFINITY[@]+"${LOAD_AFFINITY[@]}"} \
        wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$1"s --timeout 5s --latency \
        ${KEY_HEADER[@]+"${KEY_HEADER[@]}"} ${WL_WRK[@]+"${WL_WRK[@]}"} "$2" ${WL_WRK_ARGS[@]+"${WL_WRK_ARGS[@]}"} >"$3" 2>&1 ||
        { cat "$3" >&2; die "wrk failed"; }
}

# fill_walk BASE OUTPREFIX: GET BASE/perf/items/1 .. /perf/items/ZIPF_N once
# each, in order, over one keep-alive connection (curl), on wrk's CPU; every
# answer must be the scenario's status. Sets FILL_ORIGIN (the origin's
# requests during the walk: ZIPF_N - 1 for a cache that fetches each
# missing key once; the check already filled /perf/items/1).
fill_walk() {
    local base=$1 cfg=$2.walk.curl codes=$2.walk.codes c0 c1 bad
    awk -v b="$base" -v n="$ZIPF_N" 'BEGIN {
        for (i = 1; i <= n; i++) printf "url = \"%s/perf/items/%d\"\noutput = \"/dev/null\"\n", b, i }' >"$cfg"
    origin_count; c0=$ORIGIN_COUNT
    ${LOAD_AFFINITY[@]+"${LOAD_AFFINITY[@]}"} \
        curl -sS --max-time 120 -K "$cfg" -w '%{http_code}\n' >"$codes" ||
        die "fill: curl failed walking $ZIPF_N URLs on $base"
    origin_count; c1=$ORIGIN_COUNT
    bad=$(awk -v want="$SCENARIO_STATUS" '$1 != want { n++ } END { print n + 0 }' "$codes")
    (($(wc -l <"$codes") == ZIPF_N && bad == 0)) ||
        die "fill: $bad of $ZIPF_N answers on $base were not $SCENARIO_STATUS ($(sort "$codes" | uniq -c | tr '\n' ' '))"
    FILL_ORIGIN=$((c1 - c0))
}

# parse_wrk FILE -> "rps requests p99_us non2xx socket_errors"
parse_wrk() {
    awk '
        function us(v,   n, u) {
            n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
            if (u == "us") return n
            if (u == "ms") return n * 1000
            if (u == "s")  return n * 1000000
            if (u == "m")  return n * 60000000
            if (u == "h")  return n * 3600000000
            return -1
        }
        / requests in /                  { req = $1 }
        /^Requests\/sec:/                { rps = $2 }
        /^[ \t]*99%/                     { p99 = us($2) }
        /Non-2xx or 3xx responses:/      { non2xx = $NF }
        /Socket errors:/ { gsub(/,/, ""); serr = $4 + $6 + $8 + $10 }
        END {
            if (req == "" || rps == "" || p99 == "") exit 1
            printf "%s %s %.1f %d %d\n", rps, req, p99, non2xx + 0, serr + 0
        }' "$1"
}

check_wrk_errors() { # check_wrk_errors FILE WHAT
    local rps req p99 non2xx serr
    read -r rps req p99 non2xx serr < <(parse_wrk "$1") ||
        { cat "$1" >&2; die "$2: could not parse wrk output"; }
    if ((non2xx > 0 || serr > 0 || req == 0)); then
        cat "$1" >&2
        if [[ -n ${SERVER_ERRLOG:-} && -s $SERVER_ERRLOG ]]; then
            log "last lines of $SERVER_ERRLOG:"
            tail -n 40 "$SERVER_ERRLOG" >&2
        fi
        die "$2: $non2xx non-2xx/3xx responses, $serr socket errors, $req requests"
    fi
}

# --------------------------------------------------------------------------
# Setup.
# --------------------------------------------------------------------------
ensure_cmd wrk wrk
ensure_cmd curl curl
ensure_cmd taskset util-linux
for s in "${SERVERS[@]}"; do
    declare -F "start_server_$s" >/dev/null || die "no start_server_$s"
    "ensure_server_$s"
done
if declare -F "scenario_ensure_$SCENARIO" >/dev/null; then
    "scenario_ensure_$SCENARIO"
fi

if [[ $MODE == pinned ]]; then
    ((NPROC >= 2)) || die "pinned mode needs 2 CPUs (0 and 1); have $NPROC"
    { taskset -c 0 true 2>/dev/null && taskset -c 1 true 2>/dev/null; } ||
        die "pinned mode needs CPUs 0 and 1 in this process's affinity mask"
    SERVER_AFFINITY=(taskset -c 0)
    LOAD_AFFINITY=(taskset -c 1)
    WRK_THREADS=1
else
    SERVER_AFFINITY=()
    LOAD_AFFINITY=()
    WRK_THREADS=$((NPROC / 2))
    ((WRK_THREADS >= 1)) || WRK_THREADS=1
fi
((CONNECTIONS >= WRK_THREADS)) || die "--connections ($CONNECTIONS) < wrk threads ($WRK_THREADS)"
CLK_TCK=$(getconf CLK_TCK)

if declare -F "scenario_setup_$SCENARIO" >/dev/null; then
    "scenario_setup_$SCENARIO"
fi

DATE_ISO=$(date -u +%Y-%m-%dT%H:%M:%SZ)
DATE_FILE=$(date -u +%Y%m%d-%H%M%S)
REPORT=$WORK/report.txt
: >"$REPORT"
say() { printf '%s\n' "$*" | tee -a "$REPORT"; }

say "ringgate perf — scenario: $SCENARIO"
say "command:  $CMDLINE"
say "date:     $DATE_ISO"
say "kernel:   $(uname -r)   nproc: $NPROC   loadavg: $(cut -d' ' -f1-3 /proc/loadavg)"
BUSY=$(cpu_busy)
say "idle chk: busy before start: $BUSY"
if awk -v s="$BUSY" 'BEGIN { n = split(s, a, /[ %,]+/); for (i = 2; i <= n; i += 2) if (a[i] + 0 > 10) exit 0; exit 1 }'; then
    say "WARNING:  CPUs are busy before the benchmark: results will be noisy"
fi
say "cpu:      $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo unknown)"
say "mode:     $MODE   rounds: $ROUNDS   duration: ${DURATION}s   warm-up: ${WARMUP}s   connections: $CONNECTIONS   wrk threads: $WRK_THREADS"
if [[ $MODE == pinned ]]; then
    say "pinning:  servers: taskset -c 0, one worker$([[ " ${SERVERS[*]} " == *" varnish "* ]] && echo ' (varnish: -p thread_pools=1)');  wrk: taskset -c 1${ORIGIN_PID:+;  origin: taskset -c 1 (shares the CPU with wrk)}"
fi
say "servers:  ${SERVERS[*]}$( ((WITH_MOCK)) && echo ' (+ ringgate-mock in hot)')   (order within a round; alternated every round)"
if [[ ${SCENARIO_WORKLOADS[*]} != default ]]; then
    say "workloads: ${SCENARIO_WORKLOADS[*]}   (each round runs every workload on every server; each run starts a fresh server)"
fi
if [[ $SCENARIO == revalidate ]]; then
    say "  zipf:   GET /perf/items/{1..$ZIPF_N}, Zipf(s=$ZIPF_S), seed $ZIPF_SEED (perf/zipf.lua); all $ZIPF_N URLs walked once with curl before the warm-up"
    say "  origin: /revalidating/1024?id=N: cache-control: max-age=1, etag \"v1\"; 304 to If-None-Match \"v1\""
    say "  caches: ringgate stage cache 256MiB, respect_origin_cache_control = true, key path.id;"
    say "          nginx proxy_cache (as in cache) with proxy_cache_revalidate on, Cache-Control honoured;"
    say "          varnish malloc,256M, ttl from Cache-Control, grace 0s, keep 1h (conditional fetches)"
fi
if [[ $SCENARIO == cache ]]; then
    say "  hot:    GET /perf/items/1 only (the check fills it; warm-up and run are hits)"
    say "  zipf:   GET /perf/items/{1..$ZIPF_N}, Zipf(s=$ZIPF_S), seed $ZIPF_SEED (perf/zipf.lua); all $ZIPF_N URLs walked once with curl before the warm-up"
    say "  caches: ringgate stage cache 256MiB, ttl 3600s, key path.id, status_header = false;"
    if [[ " ${SERVERS[*]} " == *" nginx "* ]]; then
        if [[ -n $NGINX_CACHE_ROOT ]]; then
            say "          nginx proxy_cache on tmpfs ($NGINX_CACHE_ROOT, a fresh dir per run), key \$uri, valid 200 1h,"
        else
            say "          nginx proxy_cache in the run's temp dir ($(stat -f -c %T "$WORK" 2>/dev/null || echo unknown)), key \$uri, valid 200 1h,"
        fi
        say "          open_file_cache max=$NGINX_OFC_MAX (worker_rlimit_nofile $NGINX_NOFILE), sendfile + tcp_nopush, access_log off;"
    fi
    say "          varnish malloc,256M, hash on URL, beresp.ttl = 1h, cookies ignored"
    ((WITH_MOCK)) && say "  ringgate-mock: the mock scenario's ringgate config, GET /perf/hello (13-byte body; cache bodies are 1024 bytes)"
    [[ -n $NGINX_CACHE_WARN ]] &&
        say "WARNING:  $NGINX_CACHE_WARN: nginx's proxy_cache files are in the run's temp dir ($WORK), not on tmpfs"
    [[ -n $NGINX_OFC_WARN ]] && say "WARNING:  $NGINX_OFC_WARN"
fi
for s in "${SERVERS[@]}"; do
    case $s in
        ringgate)
            rev=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
            say "ringgate: $BIN (commit $rev)"
            if [[ -n $(find "$REPO_DIR/src" -name '*.rs' -newer "$BIN" -print -quit 2>/dev/null) ]]; then
                say "WARNING:  $BIN is older than src/: rebuild it (cargo build --release --locked)"
            fi ;;
        ringgate-base)
            say "ringgate-base: $BASELINE ($(stat -c '%y' "$BASELINE" | cut -d. -f1), sha256 $(sha256sum "$BASELINE" | cut -c1-12); same config as ringgate, run right after it)"
            if [[ " ${SERVERS[*]} " == *" ringgate "* ]] && cmp -s "$BIN" "$BASELINE"; then
                say "NOTE:     ringgate and ringgate-base are the same binary: their ratios show the noise floor"
            fi ;;
        nginx) say "nginx:    $("$NGINX" -v 2>&1 | sed 's/^nginx version: //')" ;;
        haproxy) say "haproxy:  $("$HAPROXY" -v 2>&1 | head -1 | sed 's/^HAProxy version //')" ;;
        varnish) say "varnish:  $("$VARNISHD" -V 2>&1 | head -1 | sed 's/^varnishd (//; s/ revision.*//')" ;;
        *) ;;
    esac
done
say "wrk:      $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
if [[ -n $ORIGIN_PID ]]; then
    say "origin:   $ORIGIN_KIND: $ORIGIN_DESC on 127.0.0.1:$ORIGIN_PORT, $(case $SCENARIO in cache) echo 'GET /bytes/1024?id=N' ;; revalidate) echo 'GET /revalidating/1024?id=N' ;; *) echo 'GET /hello' ;; esac); one instance for all runs; origin cpu = utime+stime of all its processes"
    if [[ $ORIGIN_KIND == ringgate-origin && -n $(find "$REPO_DIR/tools" -name '*.rs' -newer "$ORIGIN_BIN" -print -quit 2>/dev/null) ]]; then
        say "WARNING:  $ORIGIN_BIN is older than tools/: rebuild it"
    fi
    ((ORIGIN_COUNTS)) || say "WARNING:  the origin nginx has no stub_status: forwarded requests are not checked"
fi
if [[ " ${SERVERS[*]} " == *" ringgate "* ]] && (($(workload_servers "${SCENARIO_WORKLOADS[0]}" | wc -l) > 1)); then
    say "ratios:   PAIRED: per round (and workload), ringgate's figure / the other server's from the"
    say "          same round; reported: the median of the per-round ratios [min-max]. The per-server"
    say "          medians table is for reference only (its quotients can mix fast and slow host phases)."
fi
say ""

# --------------------------------------------------------------------------
# Runs.
# --------------------------------------------------------------------------
R_ROUND=() R_WL=() R_SERVER=() R_RPS=() R_P99=() R_CPU=() R_REQ=() R_UTIL=() R_OCPU=() R_OREQ=()
R_FILL=() R_TCPU=()
ROUND_NOTES=()

run_one() { # run_one ROUND WORKLOAD SERVER
    local round=$1 wl=$2 s=$3 port url base path body pid out t0 t1 ticks rps req p99 non2xx serr cpu
    local o0=0 o1=0 c0=0 c1=0 fill="-"
    local -a pids opids=()
    load_workload "$wl"
    path=$WL_PATH body=$SCENARIO_BODY
    if [[ $s == ringgate-mock ]]; then
        path=$MOCK_PATH body=$MOCK_BODY WL_WRK=() WL_WRK_ARGS=() WL_FILL=""
    fi
    port=$(free_port)
    base="http://127.0.0.1:$port"
    url="$base$path"
    SERVER_PID="" SERVER_CACHE_DIR=""
    "start_server_$s" "$port"
    pid=$SERVER_PID
    STARTED_PIDS+=("$pid")
    if ! wait_ready "$port" "$pid"; then
        cat "$SERVER_LOG" >&2 || true
        [[ $SERVER_ERRLOG != "$SERVER_LOG" ]] && { cat "$SERVER_ERRLOG" >&2 || true; }
        die "$s did not accept connections on 127.0.0.1:$port within 10 s"
    fi
    check_response "$url" "$body"

    out=$WORK/wrk-$round-$wl-$s
    if [[ -n $WL_FILL ]]; then
        log "round $round: $wl: $s fill ($WL_FILL) on $base"
        "$WL_FILL" "$base" "$out"
        fill=$FILL_ORIGIN
        log "round $round: $wl: $s fill done; origin served $fill"
    fi
    if ((WARMUP > 0)); then
        log "round $round: $wl: $s warm-up ${WARMUP}s on $url"
        run_wrk "$WARMUP" "$url" "$out.warmup"
        check_wrk_errors "$out.warmup" "$s warm-up ($wl, round $round)"
    fi

    mapfile -t pids < <(tree_pids "$pid")
    log "round $round: $wl: $s measuring ${DURATION}s (pids ${pids[*]})"
    # The origin's CPU: all its processes (nginx: master and workers).
    [[ -n $ORIGIN_PID ]] && mapfile -t opids < <(tree_pids "$ORIGIN_PID")
    if [[ -n $ORIGIN_PID ]]; then origin_count; c0=$ORIGIN_COUNT; fi
    [[ -n $ORIGIN_PID ]] && o0=$(cpu_ticks "${opids[@]}")
    t0=$(cpu_ticks "${pids[@]}")
    run_wrk "$DURATION" "$url" "$out.run"
    t1=$(cpu_ticks "${pids[@]}")
    [[ -n $ORIGIN_PID ]] && o1=$(cpu_ticks "${opids[@]}")
    if ! kill -0 "$pid" 2>/dev/null; then
        cat "$out.run" >&2
        log "last lines of $SERVER_ERRLOG:"; tail -n 40 "$SERVER_ERRLOG" >&2 || true
        die "$s (PID $pid) died during the run"
    fi
    if [[ -n $ORIGIN_PID ]]; then
        kill -0 "$ORIGIN_PID" 2>/dev/null || { cat "$ORIGIN_LOG" >&2; die "origin (PID $ORIGIN_PID) died"; }
        origin_count; c1=$ORIGIN_COUNT
    fi
    stop_server "$pid"
    # nginx's tmpfs cache of this run (RAM): not needed once nginx is gone.
    [[ -n $SERVER_CACHE_DIR ]] && remove_shm_dir "$SERVER_CACHE_DIR"

    check_wrk_errors "$out.run" "$s ($wl, round $round)"
    read -r rps req p99 non2xx serr < <(parse_wrk "$out.run")
    # proxy: every response wrk counted must have been forwarded to the origin.
    if [[ $SCENARIO_ORIGIN == forward ]] && ((ORIGIN_COUNTS && c1 - c0 < req)); then
        die "$s (round $round): wrk completed $req requests but the origin served only $((c1 - c0))"
    fi
    # cache: a warm cache sends (almost) nothing to the origin; report misses.
    if [[ $SCENARIO_ORIGIN == cache ]] && ((c1 - c0 > 0)); then
        ROUND_NOTES+=("NOTE: $wl/$s: the origin served $((c1 - c0)) requests during the measured run ($req hits expected; a warm cache sends none)")
        cp "$SERVER_ERRLOG" "$out.serverlog" 2>/dev/null || true
    fi
    ticks=$((t1 - t0))
    cpu=$(awk -v t="$ticks" -v hz="$CLK_TCK" -v n="$req" 'BEGIN { printf "%.3f", t / hz * 1e6 / n }')

    R_ROUND+=("$round") R_WL+=("$wl") R_SERVER+=("$s") R_RPS+=("$rps") R_P99+=("$p99")
    R_CPU+=("$cpu") R_REQ+=("$req") R_OREQ+=("$((c1 - c0))") R_FILL+=("$fill")
    R_OCPU+=("$(awk -v t="$((o1 - o0))" -v hz="$CLK_TCK" -v n="$req" 'BEGIN { printf "%.3f", t / hz * 1e6 / n }')")
    R_TCPU+=("$(awk -v a="$cpu" -v b="${R_OCPU[-1]}" 'BEGIN { printf "%.3f", a + b }')")
    R_UTIL+=("$(awk -v t="$ticks" -v hz="$CLK_TCK" -v d="$DURATION" 'BEGIN { printf "%.0f", 100 * t / hz / d }')")
}

# With an origin, an extra column: the origin's CPU per request over the same
# run (it runs on wrk's CPU in pinned mode, so it also competes with wrk);
# in cache, also the origin's requests during the measured run and during
# the fill walk.
row_fmt='%-6s %-13s %12s %12s %14s %10s %12s %8s%s\n'
ocol() { # ocol ORIGIN-US/REQ [ORIGIN-REQS FILL]
    [[ -n $ORIGIN_PID ]] && printf ' %14s' "$1"
    [[ $SCENARIO_ORIGIN == cache || $SCENARIO_ORIGIN == revalidate ]] && printf ' %12s %10s' "$2" "$3"
    return 0
}
print_header() {
    # shellcheck disable=SC2059
    say "$(printf "$row_fmt" round server 'req/s' 'p99 (us)' 'cpu us/req' 'srv cpu%' requests errors "$(ocol 'origin us/req' 'origin reqs' 'fill orig')")"
}
wl_label() { [[ $1 == default ]] || printf ', workload %s' "$1"; }

# --------------------------------------------------------------------------
# Paired ratios. For a pair (ringgate, X), each round (and workload) gives
# one ratio: ringgate's figure / X's figure from the same round, whose runs
# were close in time (ringgate-base right after ringgate). The summary is the
# median of those per-round ratios, with their min and max. (A median of
# ringgate's rounds over a median of X's rounds can take the two from
# different phases of a drifting host; per-round pairs cannot.)
# --------------------------------------------------------------------------
SUBJECT=${SCENARIO_SERVERS[0]}
# paired_ratios ARRAYNAME WORKLOAD SERVER OTHER [ROUND]: the per-round
# ratios SERVER/OTHER of metric ARRAYNAME (R_RPS, R_P99, R_CPU, R_TCPU), one
# a line, for rounds where both ran (only ROUND if given; none if OTHER's
# figure is 0).
paired_ratios() {
    local -n arr=$1
    local wl=$2 s=$3 x=$4 only=${5:-} i r
    local -A a=() b=()
    for ((i = 0; i < ${#R_SERVER[@]}; i++)); do
        [[ ${R_WL[i]} == "$wl" ]] || continue
        [[ -n $only && ${R_ROUND[i]} != "$only" ]] && continue
        [[ ${R_SERVER[i]} == "$s" ]] && a[${R_ROUND[i]}]=${arr[i]}
        [[ ${R_SERVER[i]} == "$x" ]] && b[${R_ROUND[i]}]=${arr[i]}
    done
    for r in "${!a[@]}"; do
        [[ -n ${b[$r]:-} ]] || continue
        awk -v a="${a[$r]}" -v b="${b[$r]}" 'BEGIN { if (b > 0) printf "%.6f\n", a / b }'
    done
    return 0
}
# paired_stats ARRAYNAME WORKLOAD SERVER OTHER -> "MEDIAN MIN MAX N" of the
# per-round ratios ("n/a n/a n/a 0" without any).
paired_stats() {
    paired_ratios "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "n/a n/a n/a 0"; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.3f %.3f %.3f %d\n", m, v[1], v[NR], NR }'
}
# paired_fmt ARRAYNAME WORKLOAD SERVER OTHER -> "MEDIAN [MIN-MAX]"
paired_fmt() {
    local med lo hi n
    read -r med lo hi n < <(paired_stats "$@")
    if ((n > 1)); then printf '%s [%s-%s]' "$med" "$lo" "$hi"; else printf '%s' "$med"; fi
}
# paired_line WORKLOAD OTHER [ROUND]: "ringgate/OTHER  req/s ..  p99 ..  cpu/req .."
# over all rounds (median [min-max]) or for one ROUND.
paired_line() {
    local wl=$1 x=$2 round=${3:-} m f line note=""
    local -a metrics=(R_RPS R_P99 R_CPU) labels=('req/s' 'p99' 'cpu/req')
    if [[ $SCENARIO_ORIGIN == forward ]]; then
        metrics+=(R_TCPU) labels+=('proxy+origin cpu/req')
    fi
    [[ $x == ringgate-mock ]] && note="   (hot-URL hits vs the mock route)"
    line=$(printf '%-22s' "$SUBJECT/$x")
    for ((m = 0; m < ${#metrics[@]}; m++)); do
        if [[ -n $round ]]; then
            f=$(paired_ratios "${metrics[m]}" "$wl" "$SUBJECT" "$x" "$round" | awk '{ printf "%.3f", $1 }')
            line+=$(printf '  %s %-6s' "${labels[m]}" "${f:-n/a}")
        else
            line+=$(printf '  %s %-*s' "${labels[m]}" $((ROUNDS > 1 ? 19 : 6)) "$(paired_fmt "${metrics[m]}" "$wl" "$SUBJECT" "$x")")
        fi
    done
    printf '%s%s\n' "${line%"${line##*[! ]}"}" "$note"
}
# ratio_others WORKLOAD: the servers ringgate is compared with (none if
# ringgate did not run in that workload).
ratio_others() {
    local -a ss
    mapfile -t ss < <(workload_servers "$1")
    [[ " ${ss[*]} " == *" $SUBJECT "* ]] || return 0
    for s in "${ss[@]}"; do [[ $s == "$SUBJECT" ]] || echo "$s"; done
}

for ((round = 1; round <= ROUNDS; round++)); do
    for wl in "${SCENARIO_WORKLOADS[@]}"; do
        first=${#R_ROUND[@]}
        ROUND_NOTES=()
        mapfile -t wl_servers < <(workload_servers "$wl")
        for s in "${wl_servers[@]}"; do
            run_one "$round" "$wl" "$s"
        done
        say "--- round $round/$ROUNDS$(wl_label "$wl") ---"
        print_header
        for ((i = first; i < ${#R_ROUND[@]}; i++)); do
            # shellcheck disable=SC2059
            say "$(printf "$row_fmt" "${R_ROUND[i]}" "${R_SERVER[i]}" "${R_RPS[i]}" \
                "${R_P99[i]}" "${R_CPU[i]}" "${R_UTIL[i]}" "${R_REQ[i]}" 0 \
                "$(ocol "${R_OCPU[i]}" "${R_OREQ[i]}" "${R_FILL[i]}")")"
        done
        mapfile -t others < <(ratio_others "$wl")
        for x in ${others[@]+"${others[@]}"}; do
            say "  round ratio $(paired_line "$wl" "$x" "$round")"
        done
        for note in ${ROUND_NOTES[@]+"${ROUND_NOTES[@]}"}; do say "$note"; done
        say ""
    done
done

# --------------------------------------------------------------------------
# Summary: per-server medians (reference), then the paired ratios.
# --------------------------------------------------------------------------
median() { # median VALUE...
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) printf "%.3f", v[(NR + 1) / 2];
              else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
metric_values() { # metric_values ARRAYNAME WORKLOAD SERVER
    local -n arr=$1
    local i
    for ((i = 0; i < ${#R_SERVER[@]}; i++)); do
        [[ ${R_WL[i]} == "$2" && ${R_SERVER[i]} == "$3" ]] && echo "${arr[i]}"
    done
    return 0
}
declare -A MED_RPS MED_P99 MED_CPU MED_OCPU MED_OREQ
for wl in "${SCENARIO_WORKLOADS[@]}"; do
    mapfile -t wl_servers < <(workload_servers "$wl")
    for s in "${wl_servers[@]}"; do
        k="$wl|$s"
        mapfile -t v < <(metric_values R_RPS "$wl" "$s"); MED_RPS[$k]=$(median "${v[@]}")
        mapfile -t v < <(metric_values R_P99 "$wl" "$s"); MED_P99[$k]=$(median "${v[@]}")
        mapfile -t v < <(metric_values R_CPU "$wl" "$s"); MED_CPU[$k]=$(median "${v[@]}")
        mapfile -t v < <(metric_values R_OCPU "$wl" "$s"); MED_OCPU[$k]=$(median "${v[@]}")
        mapfile -t v < <(metric_values R_OREQ "$wl" "$s"); MED_OREQ[$k]=$(median "${v[@]}")
    done
done

sum_fmt='%-13s %14s %12s %14s%s\n'
scol() { # scol ORIGIN-US/REQ ORIGIN-REQS
    [[ -n $ORIGIN_PID ]] && printf ' %14s' "$1"
    [[ $SCENARIO_ORIGIN == cache || $SCENARIO_ORIGIN == revalidate ]] && printf ' %12s' "$2"
    return 0
}
say "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)   (the runs themselves add about 2$([[ " ${SERVERS[*]} " == *" varnish "* ]] && echo "; varnish's runnable threads far more"))"
for wl in "${SCENARIO_WORKLOADS[@]}"; do
    mapfile -t wl_servers < <(workload_servers "$wl")
    say "=== summary: scenario $SCENARIO$(wl_label "$wl"), mode $MODE, $ROUNDS round(s) ==="
    say "per-server medians over the rounds (reference only; the ratios below are paired per round):"
    # shellcheck disable=SC2059
    say "$(printf "$sum_fmt" server 'req/s' 'p99 (us)' 'cpu us/req' "$(scol 'origin us/req' 'origin reqs')")"
    for s in "${wl_servers[@]}"; do
        k="$wl|$s"
        # shellcheck disable=SC2059
        say "$(printf "$sum_fmt" "$s" "${MED_RPS[$k]}" "${MED_P99[$k]}" "${MED_CPU[$k]}" "$(scol "${MED_OCPU[$k]}" "${MED_OREQ[$k]}")")"
    done

    mapfile -t others < <(ratio_others "$wl")
    if ((${#others[@]})); then
        say ""
        say "paired ratios $SUBJECT/X: median of the per-round ratios (ringgate and X from the same round) [min-max]"
        say "(req/s: >1 = $SUBJECT faster; p99 and cpu/req: <1 = $SUBJECT better)"
        for x in "${others[@]}"; do
            say "$(paired_line "$wl" "$x")"
        done
    fi
    say ""
done

# cache: the issue's goals, per workload (paired median req/s ratios).
if [[ $SCENARIO == cache && " ${SERVERS[*]} " == *" ringgate "* ]]; then
    for wl in "${SCENARIO_WORKLOADS[@]}"; do
        line="goals, $wl:"
        if [[ " ${SERVERS[*]} " == *" nginx "* ]]; then
            read -r r _ < <(paired_stats R_RPS "$wl" ringgate nginx)
            line+=" ringgate/nginx req/s $r (goal >= 2: $(awk -v r="$r" 'BEGIN { print (r + 0 >= 2) ? "met" : "NOT met" }'))"
        fi
        if ((WITH_MOCK)) && [[ $wl == hot ]]; then
            read -r r _ < <(paired_stats R_RPS "$wl" ringgate ringgate-mock)
            line+="; ringgate/ringgate-mock req/s $r (goal >= 0.9: $(awk -v r="$r" 'BEGIN { print (r + 0 >= 0.9) ? "met" : "NOT met" }'))"
        fi
        say "$line"
    done
fi

if ((SAVE)); then
    mkdir -p "$PERF_DIR/results"
    dest=$PERF_DIR/results/$SCENARIO-$DATE_FILE.txt
    cp "$REPORT" "$dest"
    echo ""
    echo "saved: ${dest#"$REPO_DIR"/}"
fi
