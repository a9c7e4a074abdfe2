#!/usr/bin/env bash
# Reproduces the figures of chat-bench/README.md on this machine.
#
#   cargo build --release -p chat-server -p chat-bench
#   chat-bench/run-figures.sh [memory|redis|both] [OUT_DIR]
#
# For each store it starts its own chat-server (and, for Redis, its own redis-server on a free
# port with persistence off), with every rate limit raised out of the way, runs:
#   chat closed loop at windows 1 4 16 64 (saturation), chat open loop at half the best
#   closed-loop rate (p99), idle with IDLE_SOCKETS sockets, setup at concurrency 16 and 64,
# and writes one JSON line per run to OUT_DIR/<store>-<run>.json (stderr next to it); on Redis
# also OUT_DIR/redis-<run>.cmdstats.json, each Redis command's calls and µs per message. With
# Redis it then runs run-idle-cluster.sh: CLUSTER_SOCKETS (50000) idle sockets over
# CLUSTER_NODES (3) nodes, past the open-file limit of one process (OUT_DIR/cluster.json).
# Every server it started is stopped at the end, and only those.
set -euo pipefail
cd "$(dirname "$0")/.."

STORES=${1:-both}
OUT=${2:-target/bench-figures}
IDLE_SOCKETS=${IDLE_SOCKETS:-18900} # under the server's default --max-connections (the open-file limit, 20000 here, less its reserve)
PAIRS=${PAIRS:-50}
mkdir -p "$OUT"
BENCH=target/release/chat-bench
SERVER=target/release/chat-server
[[ -x $BENCH && -x $SERVER ]] || { echo "build first: cargo build --release -p chat-server -p chat-bench" >&2; exit 1; }

# As many descriptors as the hard limit allows, for the server (inherited) and the bench.
ulimit -n "$(ulimit -Hn)"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# shellcheck source=chat-bench/servers.sh
source chat-bench/servers.sh

# run NAME ARGS... : one bench run, JSON to $OUT/NAME.json; on Redis also what each Redis
# command cost per unit of the run (a delivered message for chat, a registration for setup):
# redis-stats.py readings before and after, and their difference in NAME.cmdstats.json
run() {
    local name=$1; shift
    echo "-- $name: chat-bench $* (loadavg $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    [[ -n ${REDIS_PORT:-} ]] && python3 chat-bench/redis-stats.py snap "$REDIS_PORT" >"$OUT/$name.start.snap"
    "$BENCH" "$@" --json >"$OUT/$name.json" 2>"$OUT/$name.err"
    cat "$OUT/$name.json"
    if [[ -n ${REDIS_PORT:-} ]]; then
        python3 chat-bench/redis-stats.py snap "$REDIS_PORT" >"$OUT/$name.end.snap"
        local units
        units=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d.get('delivered') or d.get('registrations') or 0)" "$OUT/$name.json")
        python3 chat-bench/redis-stats.py diff "$OUT/$name.start.snap" "$OUT/$name.end.snap" \
            --per "$units" --unit unit --label "$name" --json "$OUT/$name.cmdstats.json" >&2
    fi
}

figures() {
    local store=$1; shift
    local extra=("$@") # --redis-url for the bench, when Redis
    local server_flags=()
    [[ ${#extra[@]} -gt 0 ]] && server_flags=("${extra[@]}")

    start_server "$store-chat" "${server_flags[@]}"
    local best=0
    for w in 1 4 16 64; do
        run "$store-closed-w$w" chat --url "$URL" --pairs "$PAIRS" --duration 10 --window "$w" \
            --server-pid "$SERVER_PID" "${extra[@]}"
        best=$(python3 -c "import json,sys; d=json.load(open('$OUT/$store-closed-w$w.json')); print(max($best, int(d['delivered_per_sec'])))")
    done
    local half=$((best / 2))
    run "$store-open-half" chat --url "$URL" --pairs "$PAIRS" --duration 20 --rate "$half" \
        --server-pid "$SERVER_PID" "${extra[@]}"
    stop_server

    start_server "$store-idle" "${server_flags[@]}"
    run "$store-idle" idle --url "$URL" --sockets "$IDLE_SOCKETS" --duration 60 \
        --server-pid "$SERVER_PID" "${extra[@]}"
    stop_server

    start_server "$store-setup" "${server_flags[@]}"
    for c in 16 64; do
        run "$store-setup-c$c" setup --url "$URL" --concurrency "$c" --count 5000 \
            --server-pid "$SERVER_PID" "${extra[@]}"
    done
    stop_server
}

if [[ $STORES == memory || $STORES == both ]]; then
    figures memory
fi
if [[ $STORES == redis || $STORES == both ]]; then
    port=$(free_port)
    start_redis "$port" "$OUT/redis.log"
    REDIS_PORT=$port figures redis --redis-url "redis://127.0.0.1:$port"
    # Past one process's open-file limit: CLUSTER_SOCKETS idle sockets over CLUSTER_NODES nodes
    # on a Redis of their own.
    echo "-- redis-idle-cluster: ${CLUSTER_SOCKETS:-50000} sockets over ${CLUSTER_NODES:-3} nodes" >&2
    chat-bench/run-idle-cluster.sh "${CLUSTER_SOCKETS:-50000}" "${CLUSTER_NODES:-3}" "$OUT"
fi
echo "results in $OUT" >&2
