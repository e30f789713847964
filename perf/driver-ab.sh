#!/bin/bash
# Usage: perf/driver-ab.sh [ROUNDS]   (BIN=path/to/ringgate to override; build with cargo build --release first)
# Which I/O driver set-up serves the mock route cheapest? One ringgate worker pinned to CPU 0,
# wrk (-t1 -c64) pinned to CPU 1; the variants alternate within each round:
#   io_uring with ring_entries 256, 4096 (the default) and 32768 (all with COOP_TASKRUN,
#   SINGLE_ISSUER, DEFER_TASKRUN), and the epoll driver.
# Prints req/s, p99 and server CPU µs per request (utime+stime / requests) per run.
set -u
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/ringgate}
ROUNDS=${1:-3}
tck=$(getconf CLK_TCK)
tmp=$(mktemp -d)
for round in $(seq 1 "$ROUNDS"); do
  for variant in io_uring:256 io_uring:4096 io_uring:32768 epoll:4096; do
    drv=${variant%%:*}; entries=${variant##*:}
    sed -e 's/@PORT@/18200/' -e 's/@WORKERS@/1/' "$(dirname "$0")/ringgate-mock.toml.in" > "$tmp/ab.toml"
    sed -i "s/^pin_workers = true/pin_workers = true\nio_driver = \"$drv\"\nring_entries = $entries/" "$tmp/ab.toml"
    taskset -c 0 "$BIN" serve --config "$tmp/ab.toml" >/dev/null 2>"$tmp/ab.err" & pid=$!
    sleep 0.5
    taskset -c 1 wrk -t1 -c64 -d2s http://127.0.0.1:18200/perf/hello >/dev/null
    t0=$(awk '{print $14+$15}' /proc/$pid/stat)
    out=$(taskset -c 1 wrk -t1 -c64 -d8s --latency http://127.0.0.1:18200/perf/hello)
    t1=$(awk '{print $14+$15}' /proc/$pid/stat)
    kill $pid; wait $pid 2>/dev/null
    reqs=$(echo "$out" | awk '/requests in/{print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
    p99=$(echo "$out" | awk '/ 99%/{print $2}')
    cpu=$(echo "scale=3; ($t1-$t0)*1000000/$tck/$reqs" | bc)
    printf 'round %s %-15s req/s %10s p99 %8s cpu_us/req %s (%s)\n' "$round" "$variant" "$rps" "$p99" "$cpu" \
      "$(grep -o 'epoll driver\|[0-9]* entries' "$tmp/ab.err" | head -1)"
  done
done
rm -rf "$tmp"
