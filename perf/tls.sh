#!/usr/bin/env bash
# perf/tls.sh — HTTPS on the mock route: ringgate against nginx, the same
# ECDSA P-256 certificate, one worker each, pinned to CPU 0 (wrk on CPU 1).
#
# Two workloads, each server measured in turn in every round (A, B, A, B…):
# - keepalive:  wrk -c 50 over HTTPS keep-alive connections: requests/s and
#               the server's CPU per request (utime+stime of its process
#               over the run, from /proc, divided by wrk's request count).
# - handshake:  wrk with `Connection: close`: every request is a new TCP
#               connection and a full TLS handshake (wrk keeps no session):
#               handshakes/s and CPU per handshake.
# Ratios ringgate/nginx are paired: per round, then the median over the
# rounds (a drift of the shared host between rounds cancels out).
#
# usage: perf/tls.sh [--rounds N] [--duration SECS] [--bin PATH] [--tls 1.2|1.3]
# Needs openssl, wrk and nginx (installed with apt-get when missing and
# root). Traffic goes to 127.0.0.1 only; every wrk run ends after --duration.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "$0")/.." && pwd)
BIN=$REPO_DIR/target/release/ringgate
ROUNDS=5
DURATION=5
WARMUP=2
TLSV=1.3
die() { echo "tls.sh: $*" >&2; exit 1; }
log() { echo "tls.sh: $*" >&2; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        --tls) TLSV=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done
[[ $TLSV == 1.2 || $TLSV == 1.3 ]] || die "--tls is 1.2 or 1.3"
[[ -x $BIN ]] || die "no binary at $BIN (cargo build --release)"

need=()
command -v openssl >/dev/null || need+=(openssl)
command -v wrk >/dev/null || need+=(wrk)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || need+=(nginx-light)
if ((${#need[@]})); then
    [[ $(id -u) == 0 ]] || die "missing: ${need[*]}"
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi

WORK=$(mktemp -d /tmp/ringgate-tls-perf.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_ringgate() { # start_ringgate PORT → PID
    local port=$1 plain
    plain=$(free_port)
    cat > "$WORK/ringgate.toml" <<EOF
[server]
listen = ["127.0.0.1:$plain"]
listen_tls = ["127.0.0.1:$port"]
workers = 1
pin_workers = true

[throttle]
rate = -1

[metrics]
enabled = false

[tls]
min_version = "$TLSV"

[[tls.certificate]]
chain = "$WORK/cert.pem"
key = "$WORK/key.pem"
hosts = ["localhost"]

[[api]]
name = "perf"
  [[api.stage]]
  name = "perf"
  [[api.route]]
  route = "GET /hello"
  [api.route.mock]
  status = 200
  headers = { "content-type" = "text/plain" }
  body = "hello, world\n"
EOF
    taskset -c 0 "$BIN" --config "$WORK/ringgate.toml" >"$WORK/ringgate.log" 2>&1 &
    echo $!
}

start_nginx() { # start_nginx PORT → PID
    local port=$1 protos
    protos=$([[ $TLSV == 1.3 ]] && echo "TLSv1.3" || echo "TLSv1.2 TLSv1.3")
    mkdir -p "$WORK/nginx"
    cat > "$WORK/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    client_body_temp_path $WORK/nginx;
    proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx;
    uwsgi_temp_path $WORK/nginx;
    scgi_temp_path $WORK/nginx;
    server {
        listen 127.0.0.1:$port ssl;
        server_name localhost;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols $protos;
        location = /perf/hello {
            default_type text/plain;
            return 200 "hello, world\n";
        }
    }
}
EOF
    taskset -c 0 "$NGINX" -c "$WORK/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx.out" 2>&1 &
    echo $!
}

wait_ready() { # wait_ready PORT
    for _ in $(seq 100); do
        curl -sk --max-time 1 "https://localhost:$1/perf/hello" -o /dev/null && return 0
        sleep 0.1
    done
    die "server on $1 did not answer"
}

tree_ticks() { # utime+stime of PID and its children (nginx's worker)
    local total=0 p
    for p in $1 $(pgrep -P "$1" || true); do
        [[ -r /proc/$p/stat ]] || continue
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo $total
}

run_one() { # run_one SERVER WORKLOAD → "rate cpu_us_per_req"
    local server=$1 workload=$2 port pid extra=() out reqs t0 t1 hz
    port=$(free_port)
    if [[ $server == ringgate ]]; then pid=$(start_ringgate "$port"); else pid=$(start_nginx "$port"); fi
    PIDS+=("$pid")
    wait_ready "$port"
    [[ $workload == handshake ]] && extra=(-H "Connection: close")
    local conns=50
    [[ $workload == handshake ]] && conns=16
    taskset -c 1 wrk -t1 -c$conns -d${WARMUP}s "${extra[@]}" "https://localhost:$port/perf/hello" >/dev/null
    t0=$(tree_ticks "$pid")
    out=$(taskset -c 1 wrk -t1 -c$conns -d${DURATION}s "${extra[@]}" "https://localhost:$port/perf/hello")
    t1=$(tree_ticks "$pid")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    if echo "$out" | grep -q "Non-2xx\|Socket errors: connect [1-9]\|read [1-9]"; then
        log "$server $workload: $(echo "$out" | grep -E 'Non-2xx|Socket errors')"
    fi
    hz=$(getconf CLK_TCK)
    python3 -c "r=$reqs; print(f'{r/$DURATION:.0f} {($t1-$t0)/$hz*1e6/max(r,1):.3f}')"
}

echo "tls.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), TLS $TLSV, ECDSA P-256, one worker each on CPU 0, wrk on CPU 1, $ROUNDS rounds of ${DURATION}s"
echo "ringgate: $BIN; nginx: $($NGINX -v 2>&1); $(openssl version)"
declare -A RATIO_RATE RATIO_CPU
for workload in keepalive handshake; do
    rates=() cpus=()
    printf '%-10s %-6s %-9s %12s %14s\n' workload round server "rate/s" "cpu us/req"
    for round in $(seq "$ROUNDS"); do
        read -r rr rc < <(run_one ringgate $workload)
        read -r nr nc < <(run_one nginx $workload)
        printf '%-10s %-6s %-9s %12s %14s\n' $workload $round ringgate "$rr" "$rc"
        printf '%-10s %-6s %-9s %12s %14s\n' $workload $round nginx "$nr" "$nc"
        rates+=("$(python3 -c "print($rr/$nr)")")
        cpus+=("$(python3 -c "print($rc/$nc)")")
    done
    python3 - "$workload" "${rates[*]}" "${cpus[*]}" <<'EOF'
import statistics, sys
w, rates, cpus = sys.argv[1], list(map(float, sys.argv[2].split())), list(map(float, sys.argv[3].split()))
print(f"{w}: ringgate/nginx paired medians [min-max]: rate {statistics.median(rates):.3f} "
      f"[{min(rates):.3f}-{max(rates):.3f}] (>1: ringgate faster), cpu per request "
      f"{statistics.median(cpus):.3f} [{min(cpus):.3f}-{max(cpus):.3f}] (<1: ringgate cheaper)")
EOF
done
