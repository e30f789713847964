#!/usr/bin/env bash
# perf/soak.sh — does anything grow under long mixed traffic with churn?
#
# Runs ringgate (2 workers) in front of ringgate-origin for --duration
# seconds (1800 by default; --quick: 120) under:
# - wrk, 32 connections, mixed requests (perf/soak.lua): a mock route, a
#   proxied route, and cache hits over 100 keys of a cached route;
# - ringgate-connload: 1,000 keep-alive connections trickling a request
#   every 5 s, plus churn tasks that open connections and make three
#   requests, send half a head and close, or read a larger body slowly.
# Every 10 s it samples the gateway's resident memory, open file
# descriptors, backend connections (established to the origin's port),
# and, from its SIGUSR1 status lines, open client connections, pooled
# buffers and buffers/blocks allocated so far.
#
# The check at the end: after warm-up (the first quarter of the run, at
# least 60 s) nothing may grow: RSS may not end more than 5 % (and 4 MB)
# above its warm-up maximum, descriptors and backend connections not above
# theirs plus a slack (64 fds for churn in flight; 8 backend connections,
# since the pool follows bursts of concurrency and a leak grows without
# bound). Exit status 1 if one did. Buffers and blocks allocated are shown, not judged: the pools give
# back what they do not need each second, so churn allocates anew.
#
# Output in perf/results/: soak-DATE.csv (the samples), soak-DATE.txt (a
# table and the verdict) and soak-DATE.svg (the plot).
#
# Usage: perf/soak.sh [--duration SECS | --quick] [--bin PATH] [--no-save]
set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$PERF_DIR/.." && pwd)
CMDLINE=$(printf '%q ' "$0" "$@")
DURATION=1800
BIN=""
SAVE=1
while (($#)); do
    case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --quick) DURATION=120; shift ;;
    --bin) BIN=$2; shift 2 ;;
    --no-save) SAVE=0; shift ;;
    -h | --help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

# shellcheck source=perf/common.sh
. "$PERF_DIR/common.sh"
common_setup soak

cd "$REPO_DIR"
if [[ -z $BIN || ! -x target/release/ringgate-connload ]]; then
    log "cargo build --release --locked"
    cargo build --release --locked >&2
fi
BIN=${BIN:-target/release/ringgate}
command -v wrk >/dev/null || {
    [[ $(id -u) == 0 ]] || die "wrk is not installed"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2
}
raise_nofile

target/release/ringgate-origin --listen 127.0.0.1:0 --workers 1 >"$WORK/origin.out" 2>&1 &
PIDS+=($!)
ORIGIN_PORT=$(listening_port "$WORK/origin.out")
[[ -n $ORIGIN_PORT ]] || die "the origin did not start"

cat >"$WORK/ringgate.toml" <<EOF
[server]
listen = ["127.0.0.1:0"]
workers = 2
pin_workers = false

[limits]
keepalive_timeout = "60s"

# No account-level throttle: the soak's load is well above API Gateway's
# default 10,000 rps, and a refusal would count as an error.
[throttle]
rate = -1

[[api]]
name = "soak"
  [[api.stage]]
  name = "prod"
    [api.stage.cache]
    capacity = "64MiB"
    ttl = "3600s"
  [[api.route]]
  route = "GET /hello"
  [api.route.mock]
  body = "hello, world\n"
  [[api.route]]
  route = "GET /proxied"
  [api.route.http_proxy]
  uri = "http://127.0.0.1:$ORIGIN_PORT/hello"
  [[api.route]]
  route = "GET /big"
  [api.route.http_proxy]
  uri = "http://127.0.0.1:$ORIGIN_PORT/bytes/65536"
  [[api.route]]
  route = "GET /cached/{id}"
  [api.route.http_proxy]
  uri = "http://127.0.0.1:$ORIGIN_PORT/bytes/{id}"
    [api.route.cache]
    key_parameters = ["path.id"]
EOF
"$BIN" serve --config "$WORK/ringgate.toml" >"$WORK/ringgate.out" 2>"$WORK/ringgate.err" &
GW=$!
PIDS+=("$GW")
PORT=$(listening_port "$WORK/ringgate.out")
[[ -n $PORT ]] || die "ringgate did not start: $(cat "$WORK/ringgate.err")"
log "ringgate on :$PORT (pid $GW), origin on :$ORIGIN_PORT; $DURATION s"

wrk -t1 -c32 -d"${DURATION}s" -s "$PERF_DIR/soak.lua" "http://127.0.0.1:$PORT" >"$WORK/wrk.out" 2>&1 &
PIDS+=($!)
WRK=$!
target/release/ringgate-connload --target "127.0.0.1:$PORT" --connections 1000 --sources 4 \
    --interval 5 --duration "$DURATION" --churn 4 --slow-path /prod/big --report 60 \
    >"$WORK/connload.out" 2>"$WORK/connload.err" &
LOAD=$!
PIDS+=("$LOAD")

# Reads the last status block (one line per worker) after a SIGUSR1.
status_sums() {
    local before
    before=$(grep -c "status: worker" "$WORK/ringgate.err" || true)
    kill -USR1 "$GW"
    for _ in $(seq 50); do
        (($(grep -c "status: worker" "$WORK/ringgate.err" || true) >= before + 2)) && break
        sleep 0.02
    done
    grep "status: worker" "$WORK/ringgate.err" | tail -2 | awk '
        { c += $5; b += $8; a += substr($11, 2); k += substr($16, 2) }
        END { printf "%d,%d,%d,%d\n", c, b, a, k }'
}

CSV=$WORK/soak.csv
echo "seconds,rss_kib,fds,backend_conns,client_conns,pooled_buffers,buffers_allocated,blocks_allocated" >"$CSV"
start=$(date +%s)
while :; do
    now=$(($(date +%s) - start))
    ((now > DURATION)) && break
    kill -0 "$GW" 2>/dev/null || die "ringgate exited: $(tail -5 "$WORK/ringgate.err")"
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$GW/status")
    fds=$(find "/proc/$GW/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    backend=$(ss -Htn state established "( dport = :$ORIGIN_PORT )" 2>/dev/null | wc -l)
    echo "$now,$rss,$fds,$backend,$(status_sums)" >>"$CSV"
    sleep 10
done
wait "$WRK" || true
wait "$LOAD" || true

# --- verdict ---------------------------------------------------------------
WARM=$((DURATION / 4))
((WARM >= 60)) || WARM=60
VERDICT=$(awk -F, -v warm="$WARM" '
    NR == 1 { next }
    $1 <= warm { for (i = 2; i <= 8; i++) if ($i > w[i]) w[i] = $i; next }
    { for (i = 2; i <= 8; i++) if ($i > m[i]) m[i] = $i; n++ }
    END {
        split("rss_kib fds backend_conns client_conns pooled_buffers buffers_allocated blocks_allocated", name, " ")
        bad = 0
        if (n == 0) { print "FAIL: no samples after warm-up"; exit }
        # RSS: 5 % and 4 MB over the warm-up maximum.
        if (m[2] > w[2] * 1.05 && m[2] - w[2] > 4096) { printf "FAIL: RSS grew from %d to %d kB\n", w[2], m[2]; bad = 1 }
        if (m[3] > w[3] + 64) { printf "FAIL: open fds grew from %d to %d\n", w[3], m[3]; bad = 1 }
        if (m[4] > w[4] + 8) { printf "FAIL: backend connections grew from %d to %d\n", w[4], m[4]; bad = 1 }
        printf "%s: after warm-up (%d s) max RSS %d kB (warm-up max %d), fds %d (%d), backend conns %d (%d), buffers allocated %d (%d), blocks allocated %d (%d)\n",
            bad ? "GREW" : "PASS", warm, m[2], w[2], m[3], w[3], m[4], w[4], m[7], w[7], m[8], w[8]
    }' "$CSV")

# --- plot (SVG, no dependencies) --------------------------------------------
plot_svg() {
    awk -F, -v dur="$DURATION" '
    NR == 1 { next }
    { t[NR] = $1; for (i = 2; i <= 8; i++) { v[i, NR] = $i; if ($i > mx[i]) mx[i] = $i } ; last = NR }
    END {
        W = 900; H = 150; L = 60; n = split("RSS (kB),open fds,backend connections,client connections,pooled buffers,buffers allocated,blocks allocated", title, ",")
        printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n", W + L + 20, n * (H + 30) + 30
        printf "<text x=\"%d\" y=\"18\">ringgate soak: %d s, samples every 10 s</text>\n", L, dur
        for (k = 1; k <= n; k++) {
            i = k + 1; y0 = 30 + (k - 1) * (H + 30); top = mx[i] > 0 ? mx[i] * 1.1 : 1
            printf "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#ccc\"/>\n", L, y0, W, H
            printf "<text x=\"%d\" y=\"%d\">%s (max %d)</text>\n", L + 5, y0 + 14, title[k], mx[i]
            printf "<text x=\"5\" y=\"%d\">%d</text><text x=\"5\" y=\"%d\">0</text>\n", y0 + 12, top, y0 + H
            printf "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\""
            for (r = 2; r <= last; r++) printf "%.1f,%.1f ", L + t[r] / (dur > 0 ? dur : 1) * W, y0 + H - v[i, r] / top * H
            printf "\"/>\n"
        }
        printf "</svg>\n"
    }' "$CSV"
}

{
    echo "# perf/soak.sh — $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# $CMDLINE"
    echo "# host: $(nproc) CPUs, $(uname -r); ringgate 2 workers, ringgate-origin 1 worker"
    echo "# wrk: $(grep -E 'requests in|Non-2xx|Socket errors' "$WORK/wrk.out" | tr -s ' ' | paste -sd';' -)"
    echo "# connload: $(grep '^connload: done' "$WORK/connload.out" || echo 'no totals')"
    echo
    column -s, -t <"$CSV"
    echo
    echo "$VERDICT"
} | tee "$WORK/report.txt"

if ((SAVE)); then
    stamp=$(date -u +%Y%m%d-%H%M%S)
    mkdir -p "$PERF_DIR/results"
    cp "$CSV" "$PERF_DIR/results/soak-$stamp.csv"
    cp "$WORK/report.txt" "$PERF_DIR/results/soak-$stamp.txt"
    plot_svg >"$PERF_DIR/results/soak-$stamp.svg"
    log "saved: perf/results/soak-$stamp.{csv,txt,svg}"
fi
grep -q '^PASS' <<<"$VERDICT"
