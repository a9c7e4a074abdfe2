#!/usr/bin/env bash
# Redis instructions per call of this crate's Lua functions, counted by valgrind's callgrind:
# deterministic, so a change can be judged on a machine whose cores other work shares (CPU
# time there moves by tens of percent between runs; instruction counts by well under 1 %).
#
#   chat-store-redis/perf/callgrind.sh [CALLS]        (default 20000 per function)
#
# Starts its own redis-server on a free loopback port under callgrind (never 6379, and only
# that process is stopped at the end), loads the function library as the store builds it,
# makes one room whose history already holds 10,000 messages and one subscriber to its channel,
# then for each measured call: runs it CALLS times with redis-benchmark (4 clients, 16
# pipelined each) with instrumentation on, and prints instructions per call. Needs
# valgrind, redis-server, redis-cli, redis-benchmark and python3 on PATH. Redis's own
# binary is stripped, so a per-function breakdown (callgrind_annotate on the .out files it
# names) shows Lua's internals as addresses.
set -euo pipefail
cd "$(dirname "$0")/../.."
CALLS=${1:-20000}
WORK=$(mktemp -d /tmp/chat-store-redis-perf.XXXXXX)
LIB=$WORK/library.lua

CHAT_LIBRARY_OUT=$LIB cargo test -q -p chat-store-redis --lib -- --ignored --exact \
    scripts::tests::write_library >/dev/null
NS=$(grep -o "name=chat_[0-9a-f]*" "$LIB" | sed 's/name=//')

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
OUT=$WORK/callgrind.out
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT" \
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    >"$WORK/redis.log" 2>&1 &
REDIS=$!
SUB=
cleanup() {
    [[ -n $SUB ]] && kill "$SUB" 2>/dev/null
    kill "$REDIS" 2>/dev/null
    wait 2>/dev/null || true
}
trap cleanup EXIT
R=(redis-cli -p "$port")
for _ in $(seq 300); do "${R[@]}" ping >/dev/null 2>&1 && break; sleep 0.2; done
"${R[@]}" function load replace "$(cat "$LIB")" >/dev/null

P=chat:
ROOM=0b6c2d9e-8a51-4a3e-9d8f-2f7c1e4a5b6c
M="$P{$ROOM}:m"
H="$P{$ROOM}:h"
D="$P{$ROOM}:d"
O="$P{$ROOM}:o"
CH="${P}r:$ROOM"
A=+15550000001
"${R[@]}" hset "$M" a $A b +15550000002 c 1700000000000 x 1900000000000 >/dev/null
"${R[@]}" pexpireat "$M" 1900003600000 >/dev/null
redis-cli -p "$port" subscribe "$CH" >/dev/null &
SUB=$!
# A 64-byte text, as chat-bench sends, in the entry the store writes (src/entry.rs).
TEXT="$A:12345:1732560000000000000:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
ENTRY="$A|1732560000000||$TEXT"
CID_ENTRY="$A|1732560000000|12|__rand_int__|$TEXT"
bench() { redis-benchmark -p "$port" -c 4 -P 16 -r 100000000 "$@" >/dev/null; }

# The room's history at 10,000 messages, so trimming runs as in a long-lived room.
bench -n 10000 FCALL "${NS}_append" 2 "$M" "$H" $A 10000 "$CH" 0 "$ENTRY"

n=0
measure() {
    local what=$1
    shift
    n=$((n + 1))
    callgrind_control -z "$REDIS" >/dev/null 2>&1
    callgrind_control -i on "$REDIS" >/dev/null 2>&1
    bench -n "$CALLS" "$@"
    callgrind_control -i off "$REDIS" >/dev/null 2>&1
    callgrind_control -d "$REDIS" >/dev/null 2>&1
    local f="$OUT.$n"
    for _ in $(seq 50); do [[ -s $f ]] && break; sleep 0.1; done
    local ir
    ir=$(awk '/^totals:/ {print $2}' "$f")
    printf '%-40s %8d instructions per call  (%s)\n' "$what" $((ir / CALLS)) "$f"
}

# The argument before the entry: whether the node knows the sender is a member.
measure "append, no client id" \
    FCALL "${NS}_append" 2 "$M" "$H" $A 10000 "$CH" 0 "$ENTRY"
measure "append, no client id, known sender" \
    FCALL "${NS}_append" 2 "$M" "$H" $A 10000 "$CH" 1 "$ENTRY"
# A socket's burst of four to one room in one call (instructions per call, so per message / 4).
measure "append_burst of 4, known sender" \
    FCALL "${NS}_append_burst" 4 "$M" "$H" "$D" "$O" $A 10000 "$CH" 1 \
    "$ENTRY" "" "$ENTRY" "" "$ENTRY" "" "$ENTRY" ""
# The append's two commands sent alone (their own parsing and reply included), for the share of
# an append that is the function machinery's.
measure "XADD alone (as the append sends it)" \
    XADD "$H" NOMKSTREAM MAXLEN '~' 10000 '*' v "$ENTRY"
measure "PUBLISH alone (as the append sends it)" \
    PUBLISH "$CH" "2:1732560000000-0|$ENTRY"
measure "append, a new client id" \
    FCALL "${NS}_append" 4 "$M" "$H" "$D" "$O" $A 10000 "$CH" 0 "$CID_ENTRY" __rand_int__
measure "append, a new client id, known sender" \
    FCALL "${NS}_append" 4 "$M" "$H" "$D" "$O" $A 10000 "$CH" 1 "$CID_ENTRY" __rand_int__
# history is MULTI, EXISTS, XREVRANGE (or XRANGE), EXEC: the range is the part that counts.
measure "history's XREVRANGE, latest 50" \
    XREVRANGE "$H" + - COUNT 51
measure "presence" \
    FCALL "${NS}_presence" 0 "$P" $A
measure "create_session, a new phone" \
    FCALL "${NS}_create_session" 0 "$P" "+1555__rand_int__" "tok__rand_int__" 1 N \
    1732560000000 1832560000000 ""
measure "session, unknown token" \
    FCALL "${NS}_session" 0 "$P" "tok-none"
echo "callgrind files in $WORK" >&2
