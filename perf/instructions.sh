#!/usr/bin/env bash
# perf/instructions.sh — user-space instructions per request, counted by
# callgrind, for ringgate and (with --baseline) an older ringgate binary.
#
# Wall-clock figures on a shared 2-vCPU host drift by 10-20 % between
# minutes; instruction counts do not. This script runs each binary under
# `valgrind --tool=callgrind` with one worker and the perf/ scenario config,
# warms it up with wrk, zeroes the counters, runs wrk for a fixed time, dumps
# the counters and divides the instructions (all threads) by wrk's request
# count. Kernel work (the TCP send and receive) is not counted: it is the same
# for both binaries and is what perf/run.sh's CPU figures add.
#
# usage: perf/instructions.sh [--bin PATH] [--baseline PATH]
#                             [--scenario mock|proxy|cache|cache-rfc|all] [--duration SECS]
#                             [--top N] [--keep DIR] [--throttle on|keys|off]
#                             [--optins on|off] [--observe on|off]
# Traffic goes to 127.0.0.1 only; every wrk run is bounded by --duration.
# Output: one line per (scenario, binary) and, with --baseline, the ratio.
# --throttle on checks every request against a route and an account limit
# that never refuse (off, the default: no account limit), to price the check;
# --throttle keys adds an API key on the route in a usage plan with per-key,
# per-key-per-route and quota limits that never refuse (wrk sends the key).
# --optins on adds the opt-in extensions: `[throttle] headers = true` and a
# per-client bucket (`client_throttle`) on the route that never refuses.
# --observe off turns per-request metrics off (`[metrics] enabled = false`)
# and writes no access log; on (the default) keeps the metrics on and, where
# the build has access logs, writes one (CLF) to a file, to price both.
# --top N also prints the N source files with the most instructions per
# request for each run (from the callgrind dump's line table).
# --keep DIR copies each callgrind dump to DIR/SCENARIO-LABEL.out (with its
# request count in DIR/SCENARIO-LABEL.reqs), for callgrind_annotate.
# The origin (proxy, cache) is the ringgate-origin next to --bin.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "$0")/.." && pwd)
BIN=$REPO_DIR/target/release/ringgate
BASE=
SCENARIO=all
DURATION=6
TOP=0
THROTTLE=off
OPTINS=off
OBSERVE=on
KEEP=
PERF_KEY=perf-key-0123456789abcdefghij

die() { echo "instructions.sh: $*" >&2; exit 1; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --bin) BIN=$2; shift 2 ;;
        --baseline) BASE=$2; shift 2 ;;
        --scenario) SCENARIO=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --top) TOP=$2; shift 2 ;;
        --throttle) THROTTLE=$2; shift 2 ;;
        --optins) OPTINS=$2; shift 2 ;;
        --observe) OBSERVE=$2; shift 2 ;;
        --keep) KEEP=$2; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) die "unknown option $1" ;;
    esac
done
case $SCENARIO in
    mock|proxy|cache|cache-rfc) SCENARIOS=$SCENARIO ;;
    all) SCENARIOS="mock proxy cache cache-rfc" ;;
    *) die "--scenario must be mock, proxy, cache, cache-rfc or all" ;;
esac

for tool in valgrind callgrind_control wrk curl python3; do
    command -v $tool >/dev/null || die "$tool not found (apt-get install -y valgrind wrk curl python3)"
done
[[ -x $BIN ]] || die "binary not found: $BIN (cargo build --release)"
[[ -z $BASE || -x $BASE ]] || die "baseline not found: $BASE"
ORIGIN_BIN=$(dirname "$BIN")/ringgate-origin
[[ -z $KEEP ]] || mkdir -p "$KEEP"

WORK=$(mktemp -d /tmp/ringgate-instr.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do { kill -KILL "$p" && wait "$p"; } 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Per-file instructions per request from a callgrind dump (inlined code is
# charged to the file it was written in, via the dump's fi=/fe= records).
top_files() {
    python3 - "$1" "$2" "$3" <<'EOF'
import collections, re, sys
path, reqs, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names, per_file = {}, collections.Counter()
def name(s):
    m = re.match(r'\((\d+)\)(?: (.*))?', s)
    if not m:
        return s
    if m.group(2):
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), s)
fl = fi = None
skip_next = False
for line in open(path):
    line = line.rstrip('\n')
    if line.startswith('fl='):
        fl, fi = name(line[3:]), None
    elif line.startswith(('fi=', 'fe=')):
        fi = name(line[3:])
    elif line.startswith('fn='):
        fi = None
    elif line.startswith(('cfi=', 'cfl=')):
        name(line[4:])
    elif line.startswith('calls='):
        skip_next = True
    elif re.match(r'^([+-]?\d+|\*) \d+$', line):
        if skip_next:
            skip_next = False  # inclusive cost of a call: counted in the callee
            continue
        per_file[fi or fl] += int(line.split()[1])
for f, c in per_file.most_common(top):
    print(f"    {c / reqs:9.1f}  {f}")
EOF
}

ORIGIN_PORT=
start_origin() {
    [[ -x $ORIGIN_BIN ]] || die "origin not found: $ORIGIN_BIN (cargo build --release --bin ringgate-origin)"
    ORIGIN_PORT=$(free_port)
    "$ORIGIN_BIN" --listen "127.0.0.1:$ORIGIN_PORT" --workers 1 >"$WORK/origin.log" 2>&1 &
    PIDS+=($!)
    local i
    for i in $(seq 50); do
        curl -sf -o /dev/null "http://127.0.0.1:$ORIGIN_PORT/hello" && return
        sleep 0.1
    done
    die "origin did not start"
}

# count LABEL BINARY SCENARIO -> prints "scenario label requests Ir/req"
count() {
    local label=$1 bin=$2 scenario=$3 port path cfg vpid out reqs dump ir i throttle stage_throttle
    local route_key='' route=GET template=/hello header=()
    [[ $scenario == cache* ]] && template='/items/{id}'
    # SEND_KEY=1: send the key header in every mode (to price the check
    # alone, not the parsing of one more header).
    [[ ${SEND_KEY:-} == 1 ]] && header=(-H "x-api-key: $PERF_KEY")
    port=$(free_port)
    cfg=$WORK/$scenario.toml
    # No account throttle where the build has one (see the templates).
    printf '[throttle]\nrate = -1\n' >"$WORK/probe.toml"
    stage_throttle=
    if ! "$bin" check --config "$WORK/probe.toml" >/dev/null 2>&1; then
        throttle='# (this build has no throttling)'
    elif [[ $THROTTLE == on || $THROTTLE == keys ]]; then
        # Checked on every request at the stage's route and the account,
        # with limits no benchmark reaches.
        throttle='[throttle]\nrate = 1000000000\nburst = 1000000000'
        stage_throttle='throttle = { rate = 1000000000, burst = 1000000000 }'
        if [[ $THROTTLE == keys ]]; then
            # And an API key in a usage plan: per-key and per-key-per-route
            # buckets and a monthly quota, none of which a run reaches.
            route_key='api_key_required = true'
            throttle+='\n[[api_key]]\nname = "perf"\nvalue = "'$PERF_KEY'"'
            throttle+='\n[[usage_plan]]\nname = "perf"\nkeys = ["perf"]'
            throttle+='\nthrottle = { rate = 1000000000, burst = 1000000000 }'
            throttle+='\nquota = { limit = 1000000000000, period = "MONTH" }'
            throttle+='\n[[usage_plan.stage]]\napi = "perf"\nstage = "perf"'
            throttle+='\nroute_throttle = { "'$route' '$template'" = { rate = 1000000000, burst = 1000000000 } }'
            header=(-H "x-api-key: $PERF_KEY")
        fi
    else
        throttle='[throttle]\nrate = -1'
    fi
    # Observability: off where the build has the switch.
    printf '[metrics]\nenabled = false\n' >"$WORK/probe.toml"
    if "$bin" check --config "$WORK/probe.toml" >/dev/null 2>&1; then
        if [[ $OBSERVE == off ]]; then
            throttle+='\n[metrics]\nenabled = false'
        else
            printf '[access_log]\npath = "%s"\n' "$WORK/probe.log" >"$WORK/probe.toml"
            if "$bin" check --config "$WORK/probe.toml" >/dev/null 2>&1; then
                throttle+='\n[access_log]\npath = "'$WORK/$label-access.log'"\nformat = "clf"'
            fi
        fi
    fi
    local route_optins=
    if [[ $OPTINS == on ]]; then
        # Right after the [throttle] line (keys mode appends other tables).
        throttle=${throttle/'[throttle]'/'[throttle]\nheaders = true'}
        route_optins='\n  client_throttle = { rate = 1000000000, burst = 1000000000 }'
    fi
    sed -e "s/@PORT@/$port/" -e 's/@WORKERS@/1/' -e "s/@ORIGIN_PORT@/${ORIGIN_PORT:-0}/" \
        -e "s|@THROTTLE@|$throttle|" -e "s/@STAGE_THROTTLE@/$stage_throttle/" \
        -e "s/@ROUTE_KEY@/$route_key/" \
        -e "s|^\(  route = \"[A-Z]* /[^\"]*\"\)\$|\1$route_optins|" \
        "$REPO_DIR/perf/ringgate-$scenario.toml.in" >"$cfg"
    case $scenario in
        cache*) path=/perf/items/7 ;;
        *) path=/perf/hello ;;
    esac
    valgrind --tool=callgrind ${CALLGRIND_OPTS:-} --callgrind-out-file="$WORK/$label.%p.out" \
        "$bin" --config "$cfg" >"$WORK/$label.log" 2>&1 &
    vpid=$!
    PIDS+=($vpid)
    for i in $(seq 100); do
        curl -sf -o /dev/null ${header[@]+"${header[@]}"} "http://127.0.0.1:$port$path" && break
        kill -0 $vpid 2>/dev/null || { tail "$WORK/$label.log" >&2; die "$label did not start"; }
        sleep 0.2
    done
    wrk -t1 -c8 -d2s ${header[@]+"${header[@]}"} "http://127.0.0.1:$port$path" >/dev/null
    callgrind_control -z $vpid >/dev/null 2>&1
    out=$(wrk -t1 -c8 -d"${DURATION}s" ${header[@]+"${header[@]}"} "http://127.0.0.1:$port$path")
    callgrind_control -d $vpid >/dev/null 2>&1
    kill -KILL $vpid 2>/dev/null || true
    wait $vpid 2>/dev/null || true
    if grep -q "Non-2xx" <<<"$out"; then
        echo "$out" >&2
        die "$label: non-2xx responses"
    fi
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    dump=$(ls -t "$WORK/$label.$vpid.out".* | head -1)
    ir=$(awk '/^summary:/ {print $2}' "$dump")
    [[ -n $reqs && $reqs -gt 0 && -n $ir ]] || die "$label: no count"
    printf '%-6s %-14s requests %8d   instructions/request %7d\n' \
        "$scenario" "$label" "$reqs" $((ir / reqs))
    if [[ -n $KEEP ]]; then
        cp "$dump" "$KEEP/$scenario-$label.out"
        echo "$reqs" >"$KEEP/$scenario-$label.reqs"
    fi
    [[ $TOP -eq 0 ]] || top_files "$dump" "$reqs" "$TOP"
    LAST=$((ir / reqs))
}

echo "instructions.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), $(valgrind --version), bin $BIN${BASE:+, baseline $BASE}"
for scenario in $SCENARIOS; do
    if [[ $scenario != mock && -z $ORIGIN_PORT ]]; then start_origin; fi
    count ringgate "$BIN" "$scenario"
    new=$LAST
    if [[ -n $BASE ]]; then
        count ringgate-base "$BASE" "$scenario"
        awk -v a="$new" -v b="$LAST" -v s="$scenario" \
            'BEGIN { printf "%-6s ringgate/ringgate-base instructions/request %.3f\n", s, a / b }'
    fi
done
