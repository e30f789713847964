#!/bin/bash
# Usage: perf/driver-ab.sh   (BIN=path/to/ringgate to override; build with cargo build --release first)
# Prints req/s, p99 and server CPU per request for each driver, alternating, three rounds.
# A/B: ringgate mock route, io_uring (tuned) vs epoll driver; one worker on CPU 0, wrk on CPU 1.
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/ringgate}
tck=$(getconf CLK_TCK)
for round in 1 2 3; do
  for drv in io_uring epoll; do
    sed -e 's/@PORT@/18200/' -e 's/@WORKERS@/1/' $(dirname "$0")/ringgate-mock.toml.in > /tmp/ab.toml
    sed -i "s/^pin_workers = true/pin_workers = true\nio_driver = \"$drv\"/" /tmp/ab.toml
    taskset -c 0 $BIN serve --config /tmp/ab.toml >/dev/null 2>/tmp/ab.err & pid=$!
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
    echo "round $round $drv req/s $rps p99 $p99 cpu_us/req $cpu ($(grep -o 'epoll driver\|io_uring driver' /tmp/ab.err | head -1))"
  done
done
