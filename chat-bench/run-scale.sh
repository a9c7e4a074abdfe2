#!/usr/bin/env bash
# The figures of chat-bench/README.md's "Scale" section: what the Redis store costs Redis.
#
#   cargo build --release -p chat-server -p chat-bench
#   chat-bench/run-scale.sh [OUT_DIR]          (default target/scale-figures)
#
# (a) One Redis: setup --count SETUP_COUNT (5000 pairs: 10,000 registrations, 5,000 rooms),
#     idle IDLE_SOCKETS (2000) sockets, chat 50 pairs window 4 for 10 s: Redis used_memory and
#     CPU per registration, per request+accept (a room), per online user, per stored message;
#     INFO commandstats per unit. The server keeps --history-max 1000000 so that no room's
#     history is trimmed during the run (the memory per message is that of kept messages).
# (b) A local Redis Cluster, 3 masters + 3 replicas: setup --count CLUSTER_SETUP (2000), then
#     chat --pairs CLUSTER_PAIRS (1000) --window 1 for 10 s, each master's share of the
#     commands (INFO commandstats calls and usec) and of used_cpu.
# (c) On the cluster: chat 50 pairs window 4 and open loop --rate WAIT_RATE (5000), with
#     --redis-wait-replicas 0 and then 1 (a fresh chat-server for each; the open loop
#     WAIT_REPEAT (2) times).
#
# Every server it starts binds 127.0.0.1 on a free port and is stopped at the end (only those).
# One JSON line per bench run in OUT_DIR/<name>.json; per-node deltas in OUT_DIR/<name>.nodes.json.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-target/scale-figures}
SETUP_COUNT=${SETUP_COUNT:-5000}
IDLE_SOCKETS=${IDLE_SOCKETS:-2000}
CLUSTER_SETUP=${CLUSTER_SETUP:-2000}
CLUSTER_PAIRS=${CLUSTER_PAIRS:-1000}
WAIT_RATE=${WAIT_RATE:-5000}
WAIT_REPEAT=${WAIT_REPEAT:-2} # open-loop runs per setting (latency is noisy on shared cores)
mkdir -p "$OUT"
BENCH=target/release/chat-bench
SERVER=target/release/chat-server
STATS=chat-bench/redis-stats.py
if [[ -n ${CARGO_TARGET_DIR:-} ]]; then
    BENCH=$CARGO_TARGET_DIR/release/chat-bench
    SERVER=$CARGO_TARGET_DIR/release/chat-server
fi
[[ -x $BENCH && -x $SERVER ]] || { echo "build first: cargo build --release -p chat-server -p chat-bench" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# free_ports N: N distinct free ports, held open together while they are picked.
free_ports() {
    python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

field() { python3 -c "import json,sys; v=json.load(open(sys.argv[1])).get(sys.argv[2]); print('' if v is None else v)" "$1" "$2"; }

# redis_on PORT [flags...]: servers.sh's start_redis with a directory of its own under TMP.
redis_on() {
    local port=$1; shift
    mkdir -p "$TMP/$port"
    start_redis "$port" "$TMP/$port/redis.log" --dir "$TMP/$port" "$@"
}

# shellcheck source=chat-bench/servers.sh
source chat-bench/servers.sh

snap() { python3 "$STATS" snap "${NODES[@]}" >"$OUT/$1.snap"; }

# run NAME ARGS...: one bench run with node readings before (NAME.start.snap), at the start of
# its measurement (NAME.mid.snap: when the first "[chat" / "[idle" progress line shows, so up to
# a second into the window; for setup, the same as start) and after it (NAME.end.snap).
run() {
    local name=$1; shift
    echo "-- $name: chat-bench $* (loadavg $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    snap "$name.start"
    "$BENCH" "$@" --json >"$OUT/$name.json" 2>"$OUT/$name.err" &
    local bench=$!
    if [[ $1 == setup ]]; then
        cp "$OUT/$name.start.snap" "$OUT/$name.mid.snap"
    else
        while kill -0 "$bench" 2>/dev/null && ! grep -q '^\[\(chat\|idle\) ' "$OUT/$name.err"; do
            sleep 0.05
        done
        snap "$name.mid"
    fi
    wait "$bench"
    snap "$name.end"
    cat "$OUT/$name.json"
}

# shares NAME FROM TO PER UNIT: per-node deltas between two readings of run NAME.
shares() {
    python3 "$STATS" diff "$OUT/$1.$2.snap" "$OUT/$1.$3.snap" --per "$4" --unit "$5" \
        --label "$1 ($2 → $3)" --json "$OUT/$1.$2-$3.nodes.json" | tee -a "$OUT/summary.txt"
}

echo "machine: nproc $(nproc), $(lscpu | grep 'Model name' | sed 's/  */ /g'), Redis $(redis-server --version | grep -o 'v=[0-9.]*' | cut -c3-)" |
    tee "$OUT/summary.txt"

# ---- (a) one Redis ------------------------------------------------------------------------
read -r RPORT < <(free_ports 1)
redis_on "$RPORT"
NODES=("$RPORT")
R=redis://127.0.0.1:$RPORT
start_server single --redis-url "$R" --history-max 1000000
run single-setup setup --url "$URL" --concurrency 16 --count "$SETUP_COUNT" --server-pid "$SERVER_PID" --redis-url "$R"
shares single-setup start end "$SETUP_COUNT" "pair (2 registrations + 1 request+accept)"
run single-idle idle --url "$URL" --sockets "$IDLE_SOCKETS" --duration 10 --server-pid "$SERVER_PID" --redis-url "$R"
shares single-idle start mid "$IDLE_SOCKETS" "online user (registration, half a room, socket)"
run single-chat chat --url "$URL" --pairs 50 --window 4 --duration 10 --server-pid "$SERVER_PID" --redis-url "$R"
shares single-chat mid end "$(field "$OUT/single-chat.json" acked)" "acked message (from ≤ 1 s into the window)"
stop_server

# ---- (b) a 3 + 3 Redis Cluster ------------------------------------------------------------
read -r -a PORTS < <(free_ports 12)
NODES=("${PORTS[@]:0:6}")
for i in 0 1 2 3 4 5; do
    redis_on "${PORTS[$i]}" --cluster-enabled yes --cluster-port "${PORTS[$((i + 6))]}" \
        --cluster-config-file "$TMP/${PORTS[$i]}/nodes.conf" --cluster-node-timeout 5000 \
        --repl-diskless-sync-delay 0
done
timeout 60 redis-cli --cluster create $(printf '127.0.0.1:%s ' "${NODES[@]}") \
    --cluster-replicas 1 --cluster-yes >"$OUT/cluster-create.log" 2>&1
# Whole: every node cluster_state:ok and every master with its replica linked.
for _ in $(seq 600); do
    ok=1
    for p in "${NODES[@]}"; do
        redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok' || ok=0
        if redis-cli -p "$p" info replication | grep -q 'role:master'; then
            redis-cli -p "$p" info replication | grep -q 'connected_slaves:1' || ok=0
        fi
    done
    [[ $ok == 1 ]] && break
    sleep 0.1
done
[[ $ok == 1 ]] || { echo "the cluster did not come up" >&2; exit 1; }
MASTERS=()
for p in "${NODES[@]}"; do
    redis-cli -p "$p" info replication | grep -q 'role:master' && MASTERS+=("$p")
done
echo "cluster: masters ${MASTERS[*]}, all nodes ${NODES[*]}" | tee -a "$OUT/summary.txt"
CLUSTER=$(printf 'redis://127.0.0.1:%s,' "${NODES[@]}")
CLUSTER=${CLUSTER%,}
DIR_SLOT=$(redis-cli -p "${MASTERS[0]}" cluster keyslot '{scale:}s:x')
echo "directory slot {scale:}: $DIR_SLOT" | tee -a "$OUT/summary.txt"

# The cluster's own cost with no chat-server on it: 5 s of nothing.
snap cluster-quiet.start
sleep 5
snap cluster-quiet.end
shares cluster-quiet start end 5 "second with no traffic"

start_server cluster --redis-cluster "$CLUSTER" --key-prefix scale:
run cluster-setup setup --url "$URL" --concurrency 16 --count "$CLUSTER_SETUP" --server-pid "$SERVER_PID" --redis-url "$CLUSTER"
shares cluster-setup start end "$CLUSTER_SETUP" "pair (2 registrations + 1 request+accept)"
run cluster-chat chat --url "$URL" --pairs "$CLUSTER_PAIRS" --window 1 --duration 10 --server-pid "$SERVER_PID" --redis-url "$CLUSTER"
shares cluster-chat start mid "$CLUSTER_PAIRS" "pair of the chat's own setup (registrations, request+accept, sockets)"
shares cluster-chat mid end "$(field "$OUT/cluster-chat.json" acked)" "acked message (from ≤ 1 s into the window)"
stop_server

# ---- (c) --redis-wait-replicas 0 and 1 -----------------------------------------------------
for w in 0 1; do
    start_server "cluster-wait$w" --redis-cluster "$CLUSTER" --key-prefix scale: --redis-wait-replicas "$w"
    run "cluster-wait$w-closed" chat --url "$URL" --pairs 50 --window 4 --duration 10 --server-pid "$SERVER_PID" --redis-url "$CLUSTER"
    shares "cluster-wait$w-closed" mid end "$(field "$OUT/cluster-wait$w-closed.json" acked)" "acked message"
    for k in $(seq "$WAIT_REPEAT"); do
        run "cluster-wait$w-open$k" chat --url "$URL" --pairs 50 --rate "$WAIT_RATE" --duration 10 --server-pid "$SERVER_PID" --redis-url "$CLUSTER"
        shares "cluster-wait$w-open$k" mid end "$(field "$OUT/cluster-wait$w-open$k.json" acked)" "acked message"
    done
    stop_server
done

# ---- summary --------------------------------------------------------------------------------
python3 - "$OUT" "$WAIT_REPEAT" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
out = sys.argv[1]
j = lambda n: json.load(open(f"{out}/{n}.json"))
s, i, c = j("single-setup"), j("single-idle"), j("single-chat")
print("one Redis:")
print(f"  bytes/registration {s['redis_bytes_per_registration']}  bytes/request+accept {s['redis_bytes_per_request_accept']}"
      f"  bytes/socket {i['redis_bytes_per_socket']}  bytes/online user {i['redis_bytes_per_online_user']}"
      f"  bytes/msg {c['redis_bytes_per_msg']}")
print(f"  Redis CPU µs: /registration {s['redis_cpu_us_per_registration']}  /request+accept {s['redis_cpu_us_per_request_accept']}"
      f"  /msg {c['redis_cpu_us_per_msg']} (at {c['delivered_per_sec']} msgs/s)")
print("cluster --redis-wait-replicas 0 vs 1 (Redis CPU summed over the 6 nodes):")
for w in (0, 1):
    for kind in ["closed"] + [f"open{k}" for k in range(1, int(sys.argv[2]) + 1)]:
        r = j(f"cluster-wait{w}-{kind}")
        print(f"  wait {w} {kind:6}: {r['delivered_per_sec']:>9} msgs/s  server {r['server_cpu_us_per_msg']} µs/msg"
              f"  Redis {r['redis_cpu_us_per_msg']} µs/msg  p50 {r['latency_p50_us']} µs  p99 {r['latency_p99_us']} µs"
              f"  lost {r['lost']}")
EOF
echo "results in $OUT" >&2
