#!/usr/bin/env bash
# Idle sockets past one process's open-file limit: a cluster of chat-server nodes on one Redis.
#
#   cargo build --release -p chat-server -p chat-bench
#   chat-bench/run-idle-cluster.sh [SOCKETS=50000] [NODES=3] [OUT_DIR]
#
# A server holds one descriptor per socket and the load generator one per socket too, so where
# the open-file hard limit is below SOCKETS (20,000 on the machine the README's figures come
# from) one process of each cannot hold them. This starts its own redis-server on a free port
# (persistence off) and NODES chat-server processes on it (one cluster: same store, same
# prefix, the Redis event bus between them), then one `chat-bench idle` per node at the same
# time, SOCKETS/NODES sockets each, for DURATION seconds (60). Each run's JSON goes to
# OUT_DIR/cluster-node<i>.json; the totals (RSS per socket and CPU per socket-second over all
# nodes, Redis's CPU per socket-second) are printed as one JSON line and written to
# OUT_DIR/cluster.json. Every process it started is stopped at the end, and only those.
# BENCH and SERVER name other binaries (the smoke test runs it on debug builds, 40 sockets).
set -euo pipefail
cd "$(dirname "$0")/.."

SOCKETS=${1:-50000}
NODES=${2:-3}
OUT=${3:-target/bench-figures}
DURATION=${DURATION:-60}
mkdir -p "$OUT"
BENCH=${BENCH:-target/release/chat-bench}
SERVER=${SERVER:-target/release/chat-server}
[[ -x $BENCH && -x $SERVER ]] || { echo "build first: cargo build --release -p chat-server -p chat-bench" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
PER_NODE=$(( (SOCKETS + NODES - 1) / NODES ))
(( PER_NODE < $(ulimit -n) - 100 )) || { echo "$PER_NODE sockets per node exceed the open-file limit $(ulimit -n); use more nodes" >&2; exit 1; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
trap 'exit 143' TERM INT

# shellcheck source=chat-bench/servers.sh
source chat-bench/servers.sh

port=$(free_port)
start_redis "$port" "$OUT/cluster-redis.log"
REDIS="redis://127.0.0.1:$port"

URLS=(); SERVER_PIDS=()
for i in $(seq "$NODES"); do
    start_server "cluster-node$i" --redis-url "$REDIS"
    URLS+=("$URL"); SERVER_PIDS+=("$SERVER_PID")
done
echo "== $NODES nodes on $REDIS: ${URLS[*]}; $PER_NODE idle sockets each for ${DURATION}s" >&2

BENCHES=()
for i in $(seq "$NODES"); do
    "$BENCH" idle --url "${URLS[$((i - 1))]}" --sockets "$PER_NODE" --duration "$DURATION" \
        --server-pid "${SERVER_PIDS[$((i - 1))]}" --redis-url "$REDIS" --json \
        >"$OUT/cluster-node$i.json" 2>"$OUT/cluster-node$i.err" &
    BENCHES+=("$!")
done
status=0
for b in "${BENCHES[@]}"; do wait "$b" || status=1; done
(( status == 0 )) || { echo "a bench run failed; see $OUT/cluster-node*.err" >&2; exit 1; }

python3 - "$OUT" "$NODES" <<'PY' | tee "$OUT/cluster.json"
import json, sys
out, nodes = sys.argv[1], int(sys.argv[2])
runs = [json.load(open(f"{out}/cluster-node{i}.json")) for i in range(1, nodes + 1)]
sockets = sum(r["sockets"] for r in runs)
rss = sum(r["server_rss_with_kib"] - r["server_rss_before_kib"] for r in runs) * 1024
cpu = sum(r["server_cpu_us"] for r in runs)
secs = min(r["idle_s"] for r in runs)
# Every node's bench reads Redis's INFO over its own window: the windows coincide, so one
# node's figure is Redis's for the whole cluster.
redis = max(r["redis_cpu_us"] for r in runs)
print(json.dumps({
    "mode": "idle-cluster", "nodes": nodes, "sockets": sockets,
    "sockets_closed": sum(r["sockets_closed"] for r in runs),
    "server_pings_seen": sum(r["server_pings_seen"] for r in runs),
    "server_rss_per_socket_bytes": round(rss / sockets, 1),
    "server_cpu_us_per_socket_sec": round(cpu / sockets / secs, 3),
    "redis_cpu_us_per_socket_sec": round(redis / sockets / secs, 3),
    "idle_s": secs,
}))
PY
