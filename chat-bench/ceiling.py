#!/usr/bin/env python3
"""Opens TCP connections to a running chat-server until it refuses them, from several loopback
addresses (127.0.0.2, .3, ...: 500 each, under the per-address cap), and reports what it saw:
connections held (each answered one GET /healthz), refused (closed unanswered), hung (neither
within 5 s), the /metrics refusal counters, and how long after 100 held connections close a new
one is served again. Stops by itself.

    chat-bench/ceiling.py HOST:PORT [MAX_ATTEMPTS]
"""
import asyncio, sys, time

REQ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
PER_ADDRESS = 500


async def one(host, port, i):
    src = f"127.0.0.{2 + i // PER_ADDRESS}"
    try:
        r, w = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=(src, 0)), 5)
    except Exception as e:
        return "connect-failed", None
    try:
        w.write(REQ)
        await w.drain()
        head = await asyncio.wait_for(r.read(4096), 5)
    except asyncio.TimeoutError:
        w.close()
        return "hung", None
    except Exception:
        w.close()
        return "refused", None
    if head.startswith(b"HTTP/1.1 200"):
        return "held", (r, w)
    w.close()
    return "refused", None


async def get(r, w, path):
    w.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await w.drain()
    data = b""
    while b"\r\n\r\n" not in data:
        data += await r.read(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
    while len(body) < length:
        body += await r.read(65536)
    return body.decode()


async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    port = int(port)
    attempts = int(sys.argv[2]) if len(sys.argv) > 2 else 19400
    held, counts = [], {"held": 0, "refused": 0, "hung": 0, "connect-failed": 0}
    started = time.monotonic()
    batch = 200
    for start in range(0, attempts, batch):
        results = await asyncio.gather(*(one(host, port, i) for i in range(start, min(start + batch, attempts))))
        for kind, conn in results:
            counts[kind] += 1
            if conn:
                held.append(conn)
        if counts["refused"] >= 100:
            break
    opened = time.monotonic() - started
    metrics = await get(*held[0], "/metrics")
    refused = [l for l in metrics.splitlines() if l.startswith("chat_connections_refused_total{")]
    accept_errors = [l for l in metrics.splitlines() if l.startswith("chat_accept_errors_total ")]
    # The held ones are still served.
    still = sum([1 for x in await asyncio.gather(*(get(r, w, "/healthz") for r, w in held[1:201])) if "ok" in x])
    for r, w in held[-100:]:
        w.close()
    del held[-100:]
    t0 = time.monotonic()
    while True:
        kind, conn = await one(host, port, 0)
        if kind == "held":
            again = time.monotonic() - t0
            conn[1].close()
            break
        await asyncio.sleep(0.005)
    print(f"held {counts['held']}, refused {counts['refused']}, hung {counts['hung']}, "
          f"connect failed {counts['connect-failed']} in {opened:.1f} s; "
          f"{still}/200 held ones served again; metrics: {refused + accept_errors}; "
          f"served again {again * 1000:.0f} ms after 100 closed")
    for r, w in held:
        w.close()


asyncio.run(main())
