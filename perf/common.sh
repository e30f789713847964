# perf/common.sh — shared by perf/connections.sh and perf/soak.sh (sourced).
#
# common_setup NAME: log/die prefixed with NAME, a private WORK directory,
# and PIDS, every process in which is ended (and waited for) on exit along
# with WORK.
# raise_nofile: the open-file soft limit up to the hard one; sets HARD_NOFILE.
# listening_port FILE: waits (up to 10 s) for a "listening on 127.0.0.1:PORT"
# line in FILE (ringgate and ringgate-origin print one) and prints PORT.

common_setup() {
    COMMON_NAME=$1
    WORK=$(mktemp -d "/tmp/ringgate-$COMMON_NAME.XXXXXX")
    PIDS=()
    trap common_cleanup EXIT
}

log() { echo "$COMMON_NAME.sh: $*" >&2; }
die() { log "$*"; exit 1; }

common_cleanup() {
    local p
    for p in ${PIDS[@]+"${PIDS[@]}"}; do kill "$p" 2>/dev/null || true; done
    for p in ${PIDS[@]+"${PIDS[@]}"}; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}

raise_nofile() {
    HARD_NOFILE=$(ulimit -Hn)
    [[ $HARD_NOFILE == unlimited ]] && HARD_NOFILE=1048576
    ulimit -n "$HARD_NOFILE"
}

listening_port() {
    local port=""
    for _ in $(seq 200); do
        port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$1" | head -1)
        [[ -n $port ]] && break
        sleep 0.05
    done
    echo "$port"
}
