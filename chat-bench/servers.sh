# Shared by the bench scripts (sourced, not run): free_port, start_redis, start_server,
# stop_server.
#
# The script sets SERVER (the chat-server binary), OUT (its output directory) and a PIDS array
# its exit trap kills; SERVER_WRAP, an array such as (taskset -c 1), runs the server (and Redis)
# under that command when set. Servers bind 127.0.0.1:0 with every rate limit raised out of the
# way; Redis binds 127.0.0.1 and keeps nothing on disk.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_redis PORT LOG [flags...] → sets REDIS_PID; returns once it answers PING (the script
# exits if it never does). Its output goes to LOG.
start_redis() {
    local port=$1 log=$2; shift 2
    ${SERVER_WRAP[@]+"${SERVER_WRAP[@]}"} redis-server --port "$port" --bind 127.0.0.1 \
        --save "" --appendonly no "$@" >"$log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "redis-server on $port did not start (see $log)" >&2
    exit 1
}

# start_server NAME [flags...] → sets SERVER_PID and URL; the server's log is OUT/NAME-server.log
start_server() {
    local name=$1; shift
    local log="$OUT/$name-server.log"
    ${SERVER_WRAP[@]+"${SERVER_WRAP[@]}"} "$SERVER" --bind 127.0.0.1:0 \
        --registrations-per-min 100000000 --frames-per-sec 1000000 --frame-burst 1000000 \
        "$@" 2>"$log" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for _ in $(seq 100); do grep -q 'listening on' "$log" && break; sleep 0.1; done
    URL="http://$(grep -o 'listening on [0-9.:]*' "$log" | head -1 | sed 's/listening on //')"
    echo "== $name: chat-server pid $SERVER_PID at $URL" >&2
}

stop_server() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; }
