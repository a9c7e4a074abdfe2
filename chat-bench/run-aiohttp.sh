#!/usr/bin/env bash
# The chat workload under a third-party client, Python aiohttp (clients/aiohttp_chat.py).
#
#   cargo build --release -p chat-server
#   pip install aiohttp
#   chat-bench/run-aiohttp.sh [OUT_DIR]
#
# Per store (memory, then Redis on its own redis-server): PAIRS pairs at WINDOW, SECS seconds,
# twice: with every process free to use both CPUs (the server's default runtime), and with the
# client on CPU 0 and the server and Redis on CPU 1 (`taskset`). One JSON line per run in
# OUT_DIR/aiohttp-<store>-<shared|pinned>.json and a table on stdout. Every process it started
# is stopped at the end, and only those.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-target/bench-aiohttp}
PAIRS=${PAIRS:-50}
WINDOW=${WINDOW:-4}
SECS=${SECS:-10}
mkdir -p "$OUT"
SERVER=target/release/chat-server
[[ -x $SERVER ]] || { echo "build first: cargo build --release -p chat-server" >&2; exit 1; }
python3 -c 'import aiohttp' 2>/dev/null || { echo "needs aiohttp: pip install aiohttp" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
# shellcheck source=chat-bench/servers.sh
source chat-bench/servers.sh

# one STORE SETUP: SETUP is shared or pinned
one() {
    local store=$1 setup=$2 client=()
    SERVER_WRAP=()
    local flags=() bench=()
    if [[ $setup == pinned ]]; then SERVER_WRAP=(taskset -c 1); client=(taskset -c 0); fi
    if [[ $store == redis ]]; then
        local port
        port=$(free_port)
        start_redis "$port" "$OUT/aiohttp-redis-$setup.log"
        flags=(--redis-url "redis://127.0.0.1:$port")
        bench=(--redis-port "$port")
    fi
    start_server "aiohttp-$store-$setup" ${flags[@]+"${flags[@]}"}
    ${client[@]+"${client[@]}"} python3 chat-bench/clients/aiohttp_chat.py --url "$URL" \
        --pairs "$PAIRS" --window "$WINDOW" --duration "$SECS" --server-pid "$SERVER_PID" \
        ${bench[@]+"${bench[@]}"} >"$OUT/aiohttp-$store-$setup.json"
    stop_server
    if [[ $store == redis ]]; then kill "$REDIS_PID"; fi
}

for store in memory redis; do
    for setup in shared pinned; do one "$store" "$setup"; done
done

python3 - "$OUT" <<'PY'
import glob, json, os, sys
print("| run | msgs/s | p50 µs | p99 µs | server µs/msg | Redis µs/msg | client µs/msg | lost | dup | disorder |")
print("|---|---|---|---|---|---|---|---|---|---|")
for path in sorted(glob.glob(os.path.join(sys.argv[1], "aiohttp-*.json"))):
    d = json.load(open(path))
    name = os.path.basename(path)[len("aiohttp-"):-len(".json")]
    g = lambda k: d.get(k) if d.get(k) is not None else "–"
    print(f"| {name} | {g('delivered_per_sec')} | {g('latency_p50_us')} | {g('latency_p99_us')} | "
          f"{g('server_cpu_us_per_msg')} | {g('redis_cpu_us_per_msg')} | {g('client_cpu_us_per_msg')} | "
          f"{g('lost')} | {g('duplicated')} | {g('out_of_order')} |")
PY
