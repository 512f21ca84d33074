#!/usr/bin/env python3
"""Segments created over the admin API while Segment batches pour in (issue 18, point 6),
against 127.0.0.1 only, bounded in time.

1. Makes (or reuses) the demo shop with --customers (default 200,000) and starts
   `microseg serve` on it.
2. Runs `microseg bench ingest` for --seconds: --connections keep-alive connections post
   /v1/batch requests of 500 generated events about the demo's customers.
3. After --warmup seconds, creates three behavioural segments one after the other with
   POST /v1/segments (one reading history only, one the live events only, one a sequence
   from history into the live events) and times each answer.
4. Samples the server's resident memory every 0.2 s.
5. Afterwards: every request must have been answered 200, no second may be without
   acknowledgements, and the acknowledged events per second while segments were being
   created (their mean over the seconds from the first request to the last answer; the
   slowest single second is printed too) must be at least half the usual rate (the mean
   of the seconds before, after a 5-second start). Then each new segment's
   size as the server reports it (with its as-of) must equal `microseg segment size` (the
   batch evaluator) at that as-of, run after the server stopped.

    cargo build --release
    python bench/redefine.py                 # prints a table; --json for one document
"""

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEW_SEGMENTS = [
    ("bike_browsers", 'count(page_viewed where category = "bikes", within 90d) >= 3'),
    ("live_bike_buyers", 'did("Order Completed" where category = "bikes") within 1d'),
    ("came_back", 'page_viewed where category = "components" then "Product Viewed" within 60d'),
]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(binary, *args):
    return subprocess.run([binary, *args], check=True, capture_output=True, text=True).stdout


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def call(addr, token, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"http://{addr}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "microseg"))
    ap.add_argument("--data", help="demo workspace (made when missing; default: a temporary one)")
    ap.add_argument("--customers", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=90)
    ap.add_argument("--warmup", type=float, default=30)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = None
    data = args.data
    if data is None:
        tmp = tempfile.mkdtemp(prefix="microseg-redefine-")
        data = os.path.join(tmp, "shop")
    if not os.path.exists(os.path.join(data, "store.sqlite")):
        log(f"making the demo shop with {args.customers:,} customers in {data}")
        run(args.binary, "demo", data, "--customers", str(args.customers), "--json")
    base = ["--data", data]
    write = json.loads(run(args.binary, *base, "key", "create", "write"))["key"]
    admin = json.loads(run(args.binary, *base, "key", "create", "admin"))["key"]
    # A rerun on the same workspace starts without them.
    con = sqlite3.connect(os.path.join(data, "store.sqlite"))
    for name, _ in NEW_SEGMENTS:
        con.execute("DELETE FROM segments WHERE name = ?", (name,))
        con.execute("DELETE FROM segment_versions WHERE name = ?", (name,))
    con.commit()
    con.close()
    server_log = open(os.path.join(data, "serve.log"), "w")
    server = subprocess.Popen(
        [args.binary, *base, "serve", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=server_log,
        text=True,
    )
    started = time.time()
    line = server.stdout.readline()
    if not line.startswith("listening on "):
        raise SystemExit(f"serve: {line!r}, see {server_log.name}")
    addr = line.split()[-1]
    log(f"server ready on {addr} in {time.time() - started:.1f} s")
    memory = []
    stop = threading.Event()

    def sample():
        t0 = time.time()
        while not stop.is_set():
            memory.append((time.time() - t0, rss_mib(server.pid)))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    load_started = time.time()
    load = subprocess.Popen(
        [args.binary, "bench", "ingest", "--server", addr, "--write-key", write,
         "--admin-key", admin, "--seconds", str(args.seconds), "--connections",
         str(args.connections), "--demo-users", "--users", str(args.customers),
         "--probes", "1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(args.warmup)
    created = []
    for name, condition in NEW_SEGMENTS:
        t = time.time()
        status, body = call(addr, admin, "POST", "/v1/segments", {"name": name, "condition": condition})
        created.append({
            "segment": name,
            "condition": condition,
            "status": status,
            "from_s": t - load_started,
            "to_s": time.time() - load_started,
            "seconds": time.time() - t,
            "size_when_created": body.get("size") if isinstance(body, dict) else None,
        })
        log(f"created {name}: {status} in {time.time() - t:.2f} s" + ("" if status == 201 else f": {body}"))
    out, err = load.communicate()
    if load.returncode != 0:
        raise SystemExit(f"bench ingest failed: {err}")
    report = json.loads(out)
    time.sleep(1)
    sizes = {}
    for name, _ in NEW_SEGMENTS:
        status, body = call(addr, admin, "GET", f"/v1/segments/{name}")
        sizes[name] = (body["size"], body["as_of"])
    stop.set()
    sampler.join()
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=120)
    checks = []
    for name, (size, as_of) in sizes.items():
        batch = json.loads(run(args.binary, *base, "segment", "size", name, "--as-of", as_of, "--json"))["size"]
        checks.append({"segment": name, "as_of": as_of, "streaming": size, "batch": batch})
        if size != batch:
            raise SystemExit(f"{name}: streaming {size}, batch {batch} at {as_of}")

    per_second = report["acknowledged_per_second"]
    first = int(created[0]["from_s"])
    last = int(created[-1]["to_s"]) + 1
    usual = per_second[5:first]
    during = per_second[first:last]
    before_mem = [m for t, m in memory if t < created[0]["from_s"]]
    during_mem = [m for t, m in memory if created[0]["from_s"] <= t <= created[-1]["to_s"] + 1]
    result = {
        "customers": args.customers,
        "events_acknowledged": report["events_acknowledged"],
        "overloaded_503": report["overloaded_503"],
        "seconds_without_acknowledgement": sum(1 for x in per_second if x == 0),
        "usual_events_per_second": statistics.mean(usual) if usual else None,
        "during_creation_events_per_second": statistics.mean(during) if during else None,
        "during_creation_min_second": min(during) if during else None,
        "creations": created,
        "rss_mib_before": max(before_mem) if before_mem else None,
        "rss_mib_peak_during": max(during_mem) if during_mem else None,
        "sizes": checks,
        "acknowledged_per_second": per_second,
    }
    if tmp:
        subprocess.run(["rm", "-rf", tmp])
    ok = (
        result["overloaded_503"] == 0
        and result["seconds_without_acknowledgement"] == 0
        and all(c["status"] == 201 for c in created)
        and result["during_creation_events_per_second"] >= 0.5 * result["usual_events_per_second"]
    )
    result["meets_target"] = ok
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"\n{args.customers:,} customers; {result['events_acknowledged']:,} events acknowledged, {result['overloaded_503']} × 503")
    print(f"usual rate {result['usual_events_per_second']:,.0f} events/s; while creating: mean "
          f"{result['during_creation_events_per_second']:,.0f}, slowest second {result['during_creation_min_second']:,.0f}; "
          f"seconds without acknowledgements: {result['seconds_without_acknowledgement']}")
    for c in created:
        print(f"  {c['segment']:<18} {c['status']} in {c['seconds']:.2f} s  ({c['condition']})")
    print(f"server RSS: {result['rss_mib_before']:.0f} MiB before, peak {result['rss_mib_peak_during']:.0f} MiB while creating")
    for c in checks:
        print(f"  {c['segment']:<18} streaming {c['streaming']:,} = batch {c['batch']:,} at {c['as_of']}")
    print("acknowledged events per second:", " ".join(f"{x / 1000:.0f}k" for x in per_second))
    print("meets the target" if ok else "DOES NOT meet the target")


if __name__ == "__main__":
    main()
