#!/usr/bin/env python3
"""The `chat` workload driven by a third-party WebSocket client: Python's aiohttp.

chat-bench measures the server with its own Rust client; this script measures it under a client
that is not ours, written against docs/PROTOCOL.md only, as a Python service would be. It
registers 2 x PAIRS users over REST, pairs them (send_request, accept), opens one socket per
user and joins its room, then every user sends `send_message` frames with an `ack`, keeping
WINDOW of them unanswered, for DURATION seconds. Every message must reach the other member once
and in order; the script checks that and reports, as one JSON line:

  sent, acked, delivered, delivered_per_sec, lost, duplicated, out_of_order, errors,
  latency_p50_us / p99_us (send to the peer's receive_message), server_cpu_us_per_msg (from
  /proc/PID/stat of --server-pid), redis_cpu_us_per_msg (INFO cpu of --redis-port), and the
  client's own CPU per message.

  pip install aiohttp
  python3 chat-bench/clients/aiohttp_chat.py --url http://127.0.0.1:5000 --pairs 50 \
      --window 4 --duration 10 --server-pid PID [--redis-port PORT]

The server needs its registration limit raised (`--registrations-per-min`, as for chat-bench).
The run stops itself after DURATION plus a drain of at most 5 seconds.
"""

import argparse
import asyncio
import json
import os
import sys
import time

import aiohttp

TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_secs(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def redis_cpu_secs(port):
    """used_cpu_sys + used_cpu_user of the Redis on 127.0.0.1:port."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"INFO cpu\r\n")
    await writer.drain()
    header = await reader.readline()  # $<length>
    body = await reader.readexactly(int(header[1:]) + 2)
    writer.close()
    info = dict(
        line.split(":", 1) for line in body.decode().splitlines() if ":" in line
    )
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


class Answer(Exception):
    pass


async def call(http, url, path, token=None, body=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(url + path, json=body or {}, headers=headers) as r:
        data = await r.json()
        if r.status != 200 or not data.get("success"):
            raise Answer(f"{path}: {r.status} {data}")
        return data


class User:
    def __init__(self, phone, token):
        self.phone, self.token = phone, token
        self.room = self.peer = self.ws = None
        self.sent = self.acked = self.errors = 0
        self.received = 0  # messages of the peer seen
        self.next_from_peer = 0  # the peer's next expected sequence number
        self.duplicated = self.out_of_order = 0
        self.in_flight = asyncio.Semaphore(0)


async def setup(http, url, pairs):
    run = int(time.time()) % 100000
    users = []
    for i in range(2 * pairs):
        phone = f"+1{run:05d}{i:06d}"
        data = await call(http, url, "/register_user", body={"phone": phone})
        users.append(User(phone, data["token"]))
    for a, b in zip(users[::2], users[1::2]):
        await call(http, url, "/send_request", a.token, {"phone2": b.phone})
        data = await call(http, url, "/respond_request", b.token,
                          {"phone1": a.phone, "action": "accept"})
        a.room = b.room = data["message"]["chat_id"]
        a.peer, b.peer = b, a
    ws_url = url.replace("http://", "ws://", 1) + "/ws"
    for u in users:
        u.ws = await http.ws_connect(ws_url, headers={"Authorization": f"Bearer {u.token}"},
                                     max_msg_size=1 << 20)
        hello = await u.ws.receive_json()
        assert hello["event"] == "connection_status", hello
        await u.ws.send_json({"event": "join_room", "data": {"room": u.room}, "ack": "join"})
        while True:
            frame = await u.ws.receive_json()
            if frame["event"] == "room_history":
                break
            if frame["event"] == "error":
                raise Answer(f"join_room: {frame}")
    return users


async def reader(u, latencies, measuring):
    async for msg in u.ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        frame = json.loads(msg.data)
        event = frame["event"]
        if event == "ack" and isinstance(frame.get("ack"), int):
            u.acked += 1
            u.in_flight.release()
        elif event == "error":
            u.errors += 1
            u.in_flight.release()
        elif event == "receive_message":
            m = frame["data"]
            if m["sender"] != u.peer.phone:
                continue  # the echo of our own
            seq, sent_ns = (int(x) for x in m["message"].split(":")[:2])
            if seq < u.next_from_peer:
                u.duplicated += 1
                continue
            if seq > u.next_from_peer:
                u.out_of_order += 1
            u.next_from_peer = seq + 1
            u.received += 1
            if measuring[0]:
                latencies.append((time.monotonic_ns() - sent_ns) // 1000)


async def sender(u, window, stop):
    for _ in range(window):
        u.in_flight.release()
    pad = "x" * 40
    while not stop.is_set():
        await u.in_flight.acquire()
        if stop.is_set():
            break
        text = f"{u.sent}:{time.monotonic_ns()}:{pad}"
        await u.ws.send_str(json.dumps({"event": "send_message", "ack": u.sent,
                                        "data": {"room": u.room, "message": text}}))
        u.sent += 1


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--pairs", type=int, default=50)
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--redis-port", type=int)
    a = p.parse_args()
    if not a.url.startswith("http://127.") and not a.url.startswith("http://localhost"):
        sys.exit("the load goes to a loopback server only")

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        users = await setup(http, a.url, a.pairs)
        latencies, measuring = [], [False]
        readers = [asyncio.create_task(reader(u, latencies, measuring)) for u in users]
        stop = asyncio.Event()
        senders = [asyncio.create_task(sender(u, a.window, stop)) for u in users]
        await asyncio.sleep(1)  # warm-up, not measured
        received0 = sum(u.received for u in users)
        cpu0, own0, t0 = process_cpu_secs(a.server_pid), time.process_time(), time.monotonic()
        redis0 = await redis_cpu_secs(a.redis_port) if a.redis_port else None
        measuring[0] = True
        await asyncio.sleep(a.duration)
        measuring[0] = False
        received = sum(u.received for u in users) - received0
        elapsed = time.monotonic() - t0
        cpu = process_cpu_secs(a.server_pid) - cpu0
        own = time.process_time() - own0
        redis = await redis_cpu_secs(a.redis_port) - redis0 if a.redis_port else None
        stop.set()
        for u in users:
            u.in_flight.release()
        await asyncio.gather(*senders)
        # Drain: every frame sent is answered, and every acknowledged message reaches the peer
        # (waiting for the second alone would close a socket while a last message is on its
        # way both as an ack and as the peer's delivery).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
                u.acked + u.errors < u.sent or u.peer.received < u.acked for u in users):
            await asyncio.sleep(0.05)
        for u in users:
            await u.ws.close()
        await asyncio.gather(*readers, return_exceptions=True)

    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None
    per = lambda secs: round(secs * 1e6 / received, 2) if received else None
    print(json.dumps({
        "client": f"python {sys.version.split()[0]} aiohttp {aiohttp.__version__}",
        "pairs": a.pairs, "window": a.window, "duration_secs": round(elapsed, 2),
        "sent": sum(u.sent for u in users), "acked": sum(u.acked for u in users),
        "delivered": received, "delivered_per_sec": round(received / elapsed),
        "lost": sum(max(0, u.acked - u.peer.received) for u in users),
        "duplicated": sum(u.duplicated for u in users),
        "out_of_order": sum(u.out_of_order for u in users),
        "errors": sum(u.errors for u in users),
        "latency_p50_us": pct(0.50), "latency_p99_us": pct(0.99),
        "server_cpu_us_per_msg": per(cpu),
        "redis_cpu_us_per_msg": per(redis) if redis is not None else None,
        "client_cpu_us_per_msg": per(own),
    }))


if __name__ == "__main__":
    asyncio.run(main())
