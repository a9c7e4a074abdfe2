#!/usr/bin/env python3
"""Readings of a set of Redis nodes, and what changed between two readings (run-scale.sh).

  redis-stats.py snap PORT...            JSON on stdout: per node role, used_cpu (sys+user, s),
                                         used_memory, INFO commandstats calls/usec
  redis-stats.py diff BEFORE AFTER [--per N] [--unit NAME] [--label TEXT]
                                         per node deltas and shares of the masters' total,
                                         with --per each command's calls and µs per unit;
                                         a table on stdout, the same as JSON to --json FILE

Only 127.0.0.1 nodes, through redis-cli; every call is bounded by a timeout.
"""
import json
import subprocess
import sys


def info(port, section):
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "info", section],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout
    fields = {}
    for line in out.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.strip().split(":", 1)
            fields[k] = v
    return fields


def snap(ports):
    nodes = {}
    for port in ports:
        cpu = info(port, "cpu")
        mem = info(port, "memory")
        repl = info(port, "replication")
        stats = {}
        for k, v in info(port, "commandstats").items():
            if not k.startswith("cmdstat_"):
                continue
            kv = dict(p.split("=", 1) for p in v.split(","))
            stats[k[len("cmdstat_"):]] = {"calls": int(kv["calls"]), "usec": int(kv["usec"])}
        nodes[str(port)] = {
            "role": repl.get("role", "?"),
            "cpu_s": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
            "used_memory": int(mem["used_memory"]),
            "commands": stats,
        }
    return nodes


def diff(before, after, per, unit, label):
    rows = []
    for port, a in after.items():
        b = before.get(port, {"cpu_s": 0.0, "used_memory": 0, "commands": {}})
        calls = usec = 0
        by_cmd = {}
        for cmd, s in a["commands"].items():
            p = b["commands"].get(cmd, {"calls": 0, "usec": 0})
            dc, du = s["calls"] - p["calls"], s["usec"] - p["usec"]
            if dc or du:
                by_cmd[cmd] = {"calls": dc, "usec": du}
            calls += dc
            usec += du
        rows.append({
            "port": int(port),
            "role": a["role"],
            "calls": calls,
            "usec": usec,
            "cpu_us": round((a["cpu_s"] - b["cpu_s"]) * 1e6),
            "used_memory_delta": a["used_memory"] - b["used_memory"],
            "by_command": by_cmd,
        })
    masters = [r for r in rows if r["role"] == "master"]
    tot = {k: sum(r[k] for r in masters) for k in ("calls", "usec", "cpu_us")}
    all_cpu = sum(r["cpu_us"] for r in rows)
    for r in rows:
        for k in ("calls", "usec", "cpu_us"):
            r[k + "_share"] = (
                round(r[k] / tot[k], 4) if r["role"] == "master" and tot[k] else None
            )
    result = {
        "label": label,
        "per": per,
        "unit": unit,
        "masters": tot,
        "cpu_us_all_nodes": all_cpu,
        "nodes": sorted(rows, key=lambda r: (r["role"] != "master", r["port"])),
    }
    if per:
        by_cmd = {}
        for r in masters:
            for cmd, c in r["by_command"].items():
                t = by_cmd.setdefault(cmd, {"calls": 0, "usec": 0})
                t["calls"] += c["calls"]
                t["usec"] += c["usec"]
        result["per_unit"] = {
            "calls": tot["calls"] / per,
            "usec": tot["usec"] / per,
            "cpu_us_masters": tot["cpu_us"] / per,
            "cpu_us_all_nodes": all_cpu / per,
            # Each command on the masters: calls and µs per unit, µs per call (a function's own
            # commands are counted apart from its FCALL, whose µs include theirs).
            "by_command": {
                cmd: {
                    "calls": t["calls"] / per,
                    "usec": t["usec"] / per,
                    "usec_per_call": t["usec"] / t["calls"] if t["calls"] else None,
                }
                for cmd, t in sorted(by_cmd.items(), key=lambda kv: -kv[1]["usec"])
            },
        }
    print(f"== {label}")
    print(f"{'node':>7} {'role':>7} {'calls':>10} {'calls%':>7} {'usec':>10} {'usec%':>7} "
          f"{'cpu_us':>10} {'cpu%':>7} {'mem_delta':>11}  top commands (calls)")
    for r in result["nodes"]:
        top = sorted(r["by_command"].items(), key=lambda kv: -kv[1]["calls"])[:4]
        pct = lambda x: "-" if x is None else f"{100 * x:.1f}"
        print(f"{r['port']:>7} {r['role']:>7} {r['calls']:>10} {pct(r['calls_share']):>7} "
              f"{r['usec']:>10} {pct(r['usec_share']):>7} {r['cpu_us']:>10} "
              f"{pct(r['cpu_us_share']):>7} {r['used_memory_delta']:>11}  "
              + " ".join(f"{c}={s['calls']}" for c, s in top))
    if per:
        u = result["per_unit"]
        print(f"   per {unit} ({per}): {u['calls']:.2f} calls, {u['usec']:.2f} µs in commands, "
              f"{u['cpu_us_masters']:.2f} µs CPU on masters, {u['cpu_us_all_nodes']:.2f} µs CPU "
              f"on all nodes")
    return result


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    if args[0] == "snap":
        json.dump(snap(args[1:]), sys.stdout)
        print()
    elif args[0] == "diff":
        before, after = json.load(open(args[1])), json.load(open(args[2]))
        opts = dict(zip(args[3::2], args[4::2]))
        per = float(opts.get("--per", 0)) or None
        result = diff(before, after, per, opts.get("--unit", "unit"), opts.get("--label", args[2]))
        out = opts.get("--json")
        if out:
            with open(out, "w") as f:
                json.dump(result, f)
                f.write("\n")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
