#!/usr/bin/env bash
# perf/connections.sh — what many concurrent keep-alive connections cost:
# ringgate and nginx side by side, one after the other, on loopback.
#
# Each server gets N connections (tools/connload.rs), each sending one
# request and reading its answer. Then:
# - idle (--interval 0, the default): the connections stay open and idle;
#   the server's resident memory (VmRSS, summed over its processes) is
#   read before and after, and the growth per connection reported. This is
#   the figure nginx is compared on (0.5 KiB per idle connection measured
#   with nginx 1.22 on the project's machine).
# - trickle (--interval SECS): every connection sends another request every
#   SECS for --duration SECS; reported: errors (must be 0), requests, the
#   server's RSS and CPU time per request (utime+stime of its processes over
#   the trickle, divided by the requests answered).
# Scenario mock: GET /prod/hello, a ringgate mock route vs nginx `return
# 200`. Scenario proxy: both proxy to one ringgate-origin (pooled keep-alive
# upstream connections on both).
#
# The open-file limit bounds N: the client and the server each hold one
# descriptor per connection, and the limit is per process. The script
# raises the soft limit to the hard one and lowers N to fit, saying so.
# Connections come from several source addresses (127.0.0.1-8) so the
# ephemeral port range is not a bound either.
#
# Usage: perf/connections.sh [--connections N] [--workers W] [--scenario mock|proxy]
#                            [--interval SECS] [--duration SECS] [--servers LIST]
#                            [--bin PATH] [--no-save]
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$PERF_DIR/.." && pwd)
CMDLINE=$(printf '%q ' "$0" "$@")

CONNECTIONS=10000
WORKERS=1
SCENARIO=mock
INTERVAL=0
DURATION=20
SERVERS=ringgate,nginx
BIN=""
SAVE=1

usage() {
    sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while (($#)); do
    case $1 in
    --connections) CONNECTIONS=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --scenario) SCENARIO=$2; shift 2 ;;
    --interval) INTERVAL=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --servers) SERVERS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --no-save) SAVE=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "connections.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ $SCENARIO == mock || $SCENARIO == proxy ]] || { echo "connections.sh: --scenario mock|proxy" >&2; exit 2; }

# shellcheck source=perf/common.sh
. "$PERF_DIR/common.sh"
common_setup connections

# --- limits ---------------------------------------------------------------
raise_nofile
hard=$HARD_NOFILE
fit=$((hard - 500))
if ((CONNECTIONS > fit)); then
    log "the open-file limit is $hard per process: $CONNECTIONS connections do not fit; running $fit"
    CONNECTIONS=$fit
fi
PER_WORKER=$(((CONNECTIONS + WORKERS - 1) / WORKERS))

# --- binaries -------------------------------------------------------------
cd "$REPO_DIR"
if [[ -z $BIN || ! -x target/release/ringgate-connload || ! -x target/release/ringgate-origin ]]; then
    log "cargo build --release --locked"
    cargo build --release --locked >&2
fi
BIN=${BIN:-target/release/ringgate}
LOAD=target/release/ringgate-connload
NGINX=$(command -v nginx || true)
[[ -z $NGINX && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
if [[ -z $NGINX && $SERVERS == *nginx* ]]; then
    if [[ $(id -u) == 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >&2 ||
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >&2
        NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    else
        die "nginx is not installed (and not root to install it)"
    fi
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + RANDOM % 20000))
}

# Sum of VmRSS (kB) over a process and its children.
rss_kib() {
    local total=0 p v
    for p in "$1" $(pgrep -P "$1" || true); do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# RSS once it has settled: ringgate's connections park about a second
# after their last answer and its pools shrink back over a few seconds.
# Sampled every 0.5 s until it has not fallen for 2 s (at least 4 s, at
# most 30 s).
settled_rss() {
    local low now low_at=0 t=0
    low=$(rss_kib "$1")
    while :; do
        sleep 0.5
        t=$((t + 1))
        now=$(rss_kib "$1")
        if ((now * 101 / 100 < low)); then low_at=$t; fi
        ((now < low)) && low=$now
        if (((t - low_at >= 4 && t >= 8) || t >= 60)); then
            echo "$now"
            return
        fi
    done
}

# Sum of utime+stime (clock ticks) over a process and its children.
cpu_ticks() {
    local total=0 p v
    for p in "$1" $(pgrep -P "$1" || true); do
        v=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

ORIGIN_PORT=""
if [[ $SCENARIO == proxy ]]; then
    "target/release/ringgate-origin" --listen 127.0.0.1:0 --workers 1 >"$WORK/origin.out" 2>&1 &
    PIDS+=($!)
    ORIGIN_PORT=$(listening_port "$WORK/origin.out")
    [[ -n $ORIGIN_PORT ]] || die "the origin did not start"
fi

start_ringgate() {
    local port=$1
    {
        cat <<EOF
[server]
listen = ["127.0.0.1:$port"]
workers = $WORKERS
pin_workers = true

[limits]
max_connections_per_worker = $((PER_WORKER * 2))
keepalive_timeout = "600s"

# No account-level throttle: opening the connections alone can pass
# API Gateway's default 10,000 rps.
[throttle]
rate = -1

[[api]]
name = "conns"
  [[api.stage]]
  name = "prod"
EOF
        if [[ $SCENARIO == mock ]]; then
            cat <<EOF
  [[api.route]]
  route = "GET /hello"
  [api.route.mock]
  headers = { "content-type" = "text/plain" }
  body = "hello, world\n"
EOF
        else
            cat <<EOF
  [[api.route]]
  route = "GET /hello"
  [api.route.http_proxy]
  uri = "http://127.0.0.1:$ORIGIN_PORT/hello"
EOF
        fi
    } >"$WORK/ringgate.toml"
    "$BIN" serve --config "$WORK/ringgate.toml" >"$WORK/ringgate.out" 2>"$WORK/ringgate.err" &
    SERVER_PID=$!
}

start_nginx() {
    local port=$1 dir=$WORK/nginx location
    mkdir -p "$dir"
    if [[ $SCENARIO == mock ]]; then
        location='default_type text/plain; return 200 "hello, world\n";'
    else
        location='proxy_pass http://origin/hello; proxy_http_version 1.1; proxy_set_header Connection "";'
    fi
    cat >"$dir/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $WORKERS;
worker_cpu_affinity auto;
worker_rlimit_nofile $hard;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $((PER_WORKER * 2 + 1000)); }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 600s;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    upstream origin {
        server 127.0.0.1:${ORIGIN_PORT:-9};
        keepalive 512;
    }
    server {
        listen 127.0.0.1:$port reuseport;
        location = /prod/hello { $location }
    }
}
EOF
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
    SERVER_PID=$!
}

wait_port() {
    local port=$1
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    return 1
}

RESULTS=()
run_one() {
    local server=$1 port before after opened_kib load_pid cpu0 cpu1 line ok errors per_conn cpu_req
    port=$(free_port)
    "start_$server" "$port"
    PIDS+=("$SERVER_PID")
    wait_port "$port" || die "$server did not start (see $WORK)"
    # Warm-up: pools, allocator pages, one request per worker at least.
    "$LOAD" --target "127.0.0.1:$port" --connections 400 --duration 0 --report 60 \
        --sources 8 >/dev/null 2>&1 || die "$server: warm-up failed"
    before=$(settled_rss "$SERVER_PID")
    "$LOAD" --target "127.0.0.1:$port" --connections "$CONNECTIONS" --threads 2 --sources 8 \
        --interval "$INTERVAL" --duration "$DURATION" --report 10 >"$WORK/load-$server.out" 2>"$WORK/load-$server.err" &
    load_pid=$!
    PIDS+=("$load_pid")
    for _ in $(seq 1200); do
        grep -q "^connload: opened" "$WORK/load-$server.out" && break
        kill -0 "$load_pid" 2>/dev/null || break
        sleep 0.1
    done
    grep -q "^connload: opened" "$WORK/load-$server.out" || die "$server: the connections did not open: $(tail -3 "$WORK/load-$server.err")"
    after=$(settled_rss "$SERVER_PID")
    cpu0=$(cpu_ticks "$SERVER_PID")
    wait "$load_pid" || true
    cpu1=$(cpu_ticks "$SERVER_PID")
    line=$(grep "^connload: done" "$WORK/load-$server.out" || echo "")
    ok=$(sed -n 's/.*: \([0-9]*\) requests ok.*/\1/p' <<<"$line")
    errors=$(sed -n 's/.*ok, \([0-9]*\) errors;.*/\1/p' <<<"$line")
    opened=$(sed -n 's/^connload: opened \([0-9]*\).*/\1/p' "$WORK/load-$server.out")
    per_conn=$(awk -v a="$after" -v b="$before" -v n="$opened" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }')
    local hz
    hz=$(getconf CLK_TCK)
    # Requests during the trickle: all but the first one per connection.
    local trickled=$((ok - opened))
    if ((trickled > 0)); then
        cpu_req=$(awk -v t=$((cpu1 - cpu0)) -v hz="$hz" -v r="$trickled" 'BEGIN { printf "%.1f", t / hz * 1e6 / r }')
    else
        cpu_req="-"
    fi
    RESULTS+=("$(printf '%-10s %10s %12s %12s %14s %10s %8s %12s' "$server" "$opened" \
        "$((before / 1024)) MB" "$((after / 1024)) MB" "$per_conn" "$trickled" "${errors:-?}" "$cpu_req")")
    log "$server: $line"
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    sleep 1
}

IFS=, read -r -a list <<<"$SERVERS"
for s in "${list[@]}"; do run_one "$s"; done

{
    echo "# perf/connections.sh — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# $CMDLINE"
    echo "# scenario $SCENARIO, $CONNECTIONS connections, $WORKERS worker(s), interval $INTERVAL s, duration $DURATION s"
    echo "# host: $(nproc) CPUs, $(uname -r), open-file limit $hard; nginx: $("$NGINX" -v 2>&1 | sed 's/.*\///')"
    printf '%-10s %10s %12s %12s %14s %10s %8s %12s\n' server conns "RSS before" "RSS after" "bytes/conn" trickled errors "cpu us/req"
    printf '%s\n' "${RESULTS[@]}"
} | tee "$WORK/report.txt"

if ((SAVE)); then
    mkdir -p "$PERF_DIR/results"
    out="$PERF_DIR/results/connections-$SCENARIO-$(date -u +%Y%m%d-%H%M%S).txt"
    cp "$WORK/report.txt" "$out"
    log "saved: ${out#"$REPO_DIR/"}"
fi
