#!/usr/bin/env bash
# perf/tls.sh — HTTPS on the mock route: ringgate against nginx, the same
# certificate (ECDSA P-256, or RSA 2048 with --key rsa), one worker each,
# pinned to CPU 0 (the client on CPU 1).
#
# Workloads, each server measured in turn in every round (A, B, A, B…):
# - keepalive:  wrk -c 50 over HTTPS keep-alive connections: requests/s and
#               the server's CPU per request (utime+stime of its process
#               over the run, from /proc, divided by wrk's request count).
# - resumed:    wrk with `Connection: close`: every request is a new TCP
#               connection and a TLS 1.3 handshake that resumes wrk's
#               previous session (wrk's SSL_clear keeps the session, so
#               the server signs nothing): handshakes/s and CPU per handshake.
# - full:       openssl s_time -new (4 processes): every connection is a
#               full handshake with a signature, then one HTTP/1.0 GET.
# - backend:    plain-HTTP keep-alive clients (wrk -c 50); each server
#               forwards over HTTPS to one shared origin (a third nginx,
#               TLS, on CPU 1 with wrk), verifying its certificate, over
#               pooled keep-alive TLS connections (ringgate: [upstream.tls];
#               nginx: proxy_pass https:// with keepalive, proxy_ssl_verify
#               and session reuse): requests/s and CPU per request.
# One client core cannot out-run one server core at handshakes (the client's
# half of a handshake costs about as much as the server's), so in the two
# handshake workloads the server runs under a CPU quota (--quota, percent of
# one core, default 30; cgroup v1 or v2, as root): the server is then the
# bottleneck and the rate is the server's. --quota 0 turns this off.
# Ratios ringgate/nginx are paired: per round, then the median over the
# rounds (a drift of the shared host between rounds cancels out).
#
# usage: perf/tls.sh [--rounds N] [--duration SECS] [--bin PATH] [--tls 1.2|1.3]
#                    [--key ec|rsa] [--quota PCT]
#                    [--workloads "keepalive resumed full backend"]
# Needs openssl, wrk and nginx (installed with apt-get when missing and
# root). Traffic goes to 127.0.0.1 only; every client run ends after --duration.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "$0")/.." && pwd)
BIN=$REPO_DIR/target/release/ringgate
ROUNDS=5
DURATION=5
WARMUP=2
TLSV=1.3
KEY=ec
QUOTA=30
WORKLOADS="keepalive resumed full backend"
die() { echo "tls.sh: $*" >&2; exit 1; }
log() { echo "tls.sh: $*" >&2; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        --tls) TLSV=$2; shift 2 ;;
        --workloads) WORKLOADS=$2; shift 2 ;;
        --key) KEY=$2; shift 2 ;;
        --quota) QUOTA=$2; shift 2 ;;
        -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done
[[ $TLSV == 1.2 || $TLSV == 1.3 ]] || die "--tls is 1.2 or 1.3"
[[ $KEY == ec || $KEY == rsa ]] || die "--key is ec or rsa"
[[ $QUOTA =~ ^[0-9]+$ && $QUOTA -le 100 ]] || die "--quota is a percentage of one core, 0 to 100"
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
CGROUP=
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
    # A cgroup can be removed once its processes have exited.
    if [[ -n $CGROUP ]]; then
        for _ in $(seq 50); do rmdir "$CGROUP" 2>/dev/null && break; sleep 0.1; done
    fi
}
trap cleanup EXIT

# The CPU quota of the handshake workloads: a cgroup of this run's own
# (v2's cpu.max, or v1's cfs quota), removed at exit.
if ((QUOTA > 0)); then
    if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
        echo +cpu > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
        dir=/sys/fs/cgroup/ringgate-perf-$$
        mkdir "$dir" 2>/dev/null && CGROUP=$dir &&
            { echo "$((QUOTA * 1000)) 100000" > "$dir/cpu.max"; } 2>/dev/null || QUOTA=0
    elif [[ -d /sys/fs/cgroup/cpu ]]; then
        dir=/sys/fs/cgroup/cpu/ringgate-perf-$$
        mkdir "$dir" 2>/dev/null && CGROUP=$dir &&
            { echo 100000 > "$dir/cpu.cfs_period_us" && echo "$((QUOTA * 1000))" > "$dir/cpu.cfs_quota_us"; } 2>/dev/null || QUOTA=0
    else
        QUOTA=0
    fi
    ((QUOTA > 0)) || log "no writable cpu cgroup (not root?): the handshake workloads run without a quota, and their rate is the client's"
fi

# A CA and a server certificate it signs, as a deployment would have (the
# backend workload's proxies trust the CA; note that webpki refuses a CA
# certificate as a server's own, which plain `openssl req -x509` makes).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=ringgate perf CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
KEYARGS=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
[[ $KEY == rsa ]] && KEYARGS=(-newkey rsa:2048)
openssl req "${KEYARGS[@]}" -nodes -subj /CN=localhost \
    -keyout "$WORK/key.pem" -out "$WORK/cert.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    > "$WORK/cert.ext"
openssl x509 -req -in "$WORK/cert.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 2 -extfile "$WORK/cert.ext" -out "$WORK/cert.pem" 2>/dev/null

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_ringgate() { # start_ringgate PORT WORKLOAD → PID
    local port=$1 plain tlsport
    # For the backend workload the clients come in on the plain port.
    if [[ $2 == backend ]]; then plain=$port; tlsport=$(free_port); else plain=$(free_port); tlsport=$port; fi
    cat > "$WORK/ringgate.toml" <<EOF
[server]
listen = ["127.0.0.1:$plain"]
listen_tls = ["127.0.0.1:$tlsport"]
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
  [[api.route]]
  route = "GET /backend"
  [api.route.http_proxy]
  uri = "https://origin/perf/hello"

[[upstream]]
name = "origin"
targets = ["127.0.0.1:${ORIGIN_PORT:-1}"]
  [upstream.tls]
  ca = "$WORK/ca.pem"
  server_name = "localhost"
EOF
    taskset -c 0 "$BIN" --config "$WORK/ringgate.toml" >"$WORK/ringgate.log" 2>&1 &
    echo $!
}

start_nginx() { # start_nginx PORT WORKLOAD [NAME] → PID (NAME origin: on CPU 1)
    local port=$1 protos name=${3:-nginx} cpu=0
    [[ $name == origin ]] && cpu=1
    protos=$([[ $TLSV == 1.3 ]] && echo "TLSv1.3" || echo "TLSv1.2 TLSv1.3")
    mkdir -p "$WORK/$name"
    local listen="listen 127.0.0.1:$port ssl;"
    [[ $2 == backend ]] && listen="listen 127.0.0.1:$port;"
    cat > "$WORK/$name.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/$name/nginx.pid;
error_log $WORK/$name/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    client_body_temp_path $WORK/$name;
    proxy_temp_path $WORK/$name;
    fastcgi_temp_path $WORK/$name;
    uwsgi_temp_path $WORK/$name;
    scgi_temp_path $WORK/$name;
    upstream origin {
        server 127.0.0.1:${ORIGIN_PORT:-1};
        keepalive 512;
        keepalive_requests 1000000;
    }
    server {
        $listen
        server_name localhost;
        ssl_certificate $WORK/cert.pem;
        ssl_certificate_key $WORK/key.pem;
        ssl_protocols $protos;
        location = /perf/hello {
            default_type text/plain;
            return 200 "hello, world\n";
        }
        location = /perf/backend {
            proxy_pass https://origin/perf/hello;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_server_name on;
            proxy_ssl_name localhost;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $WORK/ca.pem;
            proxy_ssl_session_reuse on;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
        }
    }
}
EOF
    taskset -c $cpu "$NGINX" -c "$WORK/$name.conf" -p "$WORK/$name" >"$WORK/$name.out" 2>&1 &
    echo $!
}

wait_ready() { # wait_ready URL
    local code
    for _ in $(seq 100); do
        code=$(curl -sk --max-time 1 -o /dev/null -w '%{http_code}' "$1" || true)
        [[ $code == 200 ]] && return 0
        sleep 0.1
    done
    log "$1 did not answer 200 (last: $code)"
    return 1
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
    if [[ $server == ringgate ]]; then pid=$(start_ringgate "$port" "$workload"); else pid=$(start_nginx "$port" "$workload"); fi
    PIDS+=("$pid")
    local url="https://localhost:$port/perf/hello"
    [[ $workload == backend ]] && url="http://localhost:$port/perf/backend"
    # run_one runs in a subshell: stop its server before giving up.
    wait_ready "$url" || { kill "$pid"; die "$server did not come up"; }
    local handshakes=false
    [[ $workload == resumed || $workload == full ]] && handshakes=true
    if $handshakes && ((QUOTA > 0)); then
        # Every thread of the server (nginx: its worker too) under the quota.
        for p in $pid $(pgrep -P "$pid" || true); do echo "$p" > "$CGROUP/cgroup.procs"; done
    fi
    local seconds=$DURATION
    if [[ $workload == full ]]; then
        # s_time fetches with HTTP/1.0: the server closes after each answer.
        local spids=() w0 w1 i
        for i in 1 2 3 4; do
            taskset -c 1 openssl s_time -connect "127.0.0.1:$port" -new -time "$WARMUP" -www /perf/hello >/dev/null 2>&1 &
            spids+=($!)
        done
        wait "${spids[@]}"
        spids=()
        t0=$(tree_ticks "$pid")
        w0=$(date +%s.%N)
        for i in 1 2 3 4; do
            taskset -c 1 openssl s_time -connect "127.0.0.1:$port" -new -time "$DURATION" -www /perf/hello >"$WORK/s_time.$i" 2>&1 &
            spids+=($!)
        done
        wait "${spids[@]}"
        w1=$(date +%s.%N)
        t1=$(tree_ticks "$pid")
        # "N connections in T real seconds, …": s_time's own count.
        reqs=$(cat "$WORK"/s_time.* | awk '/connections in [0-9]+ real seconds/ {n += $1} END {print n + 0}')
        seconds=$(python3 -c "print($w1 - $w0)")
    else
        [[ $workload == resumed ]] && extra=(-H "Connection: close")
        local conns=50
        [[ $workload == resumed ]] && conns=16
        taskset -c 1 wrk -t1 -c$conns -d${WARMUP}s "${extra[@]}" "$url" >/dev/null
        t0=$(tree_ticks "$pid")
        out=$(taskset -c 1 wrk -t1 -c$conns -d${DURATION}s "${extra[@]}" "$url")
        t1=$(tree_ticks "$pid")
        reqs=$(echo "$out" | awk '/requests in/ {print $1}')
        if echo "$out" | grep -q "Non-2xx\|Socket errors: connect [1-9]\|read [1-9]"; then
            log "$server $workload: $(echo "$out" | grep -E 'Non-2xx|Socket errors')"
        fi
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    hz=$(getconf CLK_TCK)
    python3 -c "r=$reqs; print(f'{r/$seconds:.0f} {($t1-$t0)/$hz*1e6/max(r,1):.3f}')"
}

ORIGIN_PORT=
if [[ $WORKLOADS == *backend* ]]; then
    ORIGIN_PORT=$(free_port)
    PIDS+=("$(start_nginx "$ORIGIN_PORT" keepalive origin)")
    wait_ready "https://localhost:$ORIGIN_PORT/perf/hello" || die "the origin did not come up"
fi
KEYNAME=$([[ $KEY == rsa ]] && echo "RSA 2048" || echo "ECDSA P-256")
echo "tls.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), TLS $TLSV, $KEYNAME, one worker each on CPU 0, the client on CPU 1, $ROUNDS rounds of ${DURATION}s; handshake workloads under a CPU quota of $QUOTA % of a core (0: none)"
echo "ringgate: $BIN; nginx: $($NGINX -v 2>&1); $(openssl version)"
declare -A RATIO_RATE RATIO_CPU
for workload in $WORKLOADS; do
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
