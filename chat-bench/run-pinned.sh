#!/usr/bin/env bash
# Latency with the load generator on a core of its own.
#
#   cargo build --release -p chat-server -p chat-bench
#   chat-bench/run-pinned.sh [memory|redis|both] [OUT_DIR]
#
# The server (and, for Redis, its redis-server) run on CPU 1 (`taskset -c 1`), chat-bench on
# CPU 0 (`taskset -c 0`), so the generator no longer takes CPU from what it measures. Per
# store: closed loop at windows 4 and 64 (PAIRS pairs, 10 s) to find this setup's saturation
# (the better of the two), then open loop at 50 % and 80 % of it (OPEN_SECS s each). One JSON
# line per run in OUT_DIR/pinned-<store>-<run>.json, and a table of the results on stdout.
# Every process it started is stopped at the end, and only those.
set -euo pipefail
cd "$(dirname "$0")/.."

STORES=${1:-both}
OUT=${2:-target/bench-pinned}
PAIRS=${PAIRS:-50}
OPEN_SECS=${OPEN_SECS:-20}
SERVER_CPU=${SERVER_CPU:-1}
BENCH_CPU=${BENCH_CPU:-0}
mkdir -p "$OUT"
BENCH=target/release/chat-bench
SERVER=target/release/chat-server
[[ -x $BENCH && -x $SERVER ]] || { echo "build first: cargo build --release -p chat-server -p chat-bench" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }
[[ $(nproc) -ge 2 ]] || { echo "needs two CPUs" >&2; exit 1; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

SERVER_WRAP=(taskset -c "$SERVER_CPU")
# shellcheck source=chat-bench/servers.sh
source chat-bench/servers.sh

# run NAME ARGS... : one bench run on the generator's CPU, JSON to $OUT/pinned-NAME.json
run() {
    local name=$1; shift
    echo "-- $name: chat-bench $*" >&2
    taskset -c "$BENCH_CPU" "$BENCH" "$@" --json >"$OUT/pinned-$name.json" 2>"$OUT/pinned-$name.err"
}

field() { python3 -c "import json; print(json.load(open('$1')).get('$2', ''))"; }

pinned() {
    local store=$1; shift
    local extra=("$@")
    start_server "$store" "${extra[@]}"
    local bench_extra=()
    [[ ${#extra[@]} -gt 0 ]] && bench_extra=("${extra[@]}")
    local best=0
    for w in 4 64; do
        run "$store-closed-w$w" chat --url "$URL" --pairs "$PAIRS" --duration 10 --window "$w" \
            --server-pid "$SERVER_PID" "${bench_extra[@]}"
        local rate
        rate=$(field "$OUT/pinned-$store-closed-w$w.json" delivered_per_sec)
        best=$(python3 -c "print(max($best, int(float('$rate'))))")
    done
    for pct in 50 80; do
        run "$store-open-$pct" chat --url "$URL" --pairs "$PAIRS" --duration "$OPEN_SECS" \
            --rate $((best * pct / 100)) --server-pid "$SERVER_PID" "${bench_extra[@]}"
    done
    stop_server
    echo "$store saturation $best" >"$OUT/pinned-$store-saturation.txt"
}

if [[ $STORES == memory || $STORES == both ]]; then
    pinned memory
fi
if [[ $STORES == redis || $STORES == both ]]; then
    port=$(free_port)
    start_redis "$port" "$OUT/pinned-redis.log"
    pinned redis --redis-url "redis://127.0.0.1:$port"
fi

python3 - "$OUT" <<'EOF'
import glob, json, os, sys
out = sys.argv[1]
print("| run | msgs/s | p50 µs | p99 µs | max µs | server µs/msg | Redis µs/msg | lost |")
print("|---|---|---|---|---|---|---|---|")
for path in sorted(glob.glob(os.path.join(out, "pinned-*.json"))):
    d = json.load(open(path))
    name = os.path.basename(path)[len("pinned-"):-len(".json")]
    get = lambda k: d.get(k, "")
    print(f"| {name} | {get('delivered_per_sec')} | {get('latency_p50_us')} | {get('latency_p99_us')} | "
          f"{get('latency_max_us')} | {get('server_cpu_us_per_msg')} | {get('redis_cpu_us_per_msg')} | {get('lost')} |")
EOF
