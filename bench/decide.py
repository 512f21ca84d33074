#!/usr/bin/env python3
"""Decision benchmark of `microseg serve` (issue 20): `GET /v1/decide` under load, against
127.0.0.1 only, bounded in time.

1. Prepares a demo shop (`microseg demo DIR --customers N`, or --workspace to reuse one):
   `[server]` rates high enough not to throttle the one key, `[activation]` rules (global
   control, exploration, caps, quiet hours off so e-mail decisions reach the templates),
   a fallback for the `home_hero` placement, `consent_web` for 80 % of customers
   (imported), and five live campaigns: the demo's two e-mail campaigns and three web
   campaigns competing for `home_hero` (a saved segment with an exclusion condition, two
   conditions, one reading a metric, one behavioural; a unique offer code; two variants).
2. Starts `microseg serve`, waits for `listening on`, and notes the start-up time and the
   resident memory.
3. Runs `microseg bench decide` --runs times: --connections keep-alive connections ask
   for random customers, alternating `channel=email` and `placement=home_hero`, for
   --seconds as fast as answers come (throughput), then paced at --rate requests/s
   (latency counted from each request's planned start). Medians over the runs.
4. Peer, in this script: DuckDB (in-process, no HTTP, one connection) answering a point
   lookup of one customer's row by id from the same customers' metrics, as many times in
   --seconds: the floor of "find this person's row" that every decision starts with.

    cargo build --release
    python bench/decide.py --customers 1000000           # makes the shop (minutes)
    python bench/decide.py --workspace /path/to/shop     # reuses one (changed in place)

Prints a table, and with --json one JSON document.
"""

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CAMPAIGNS = [
    {
        "name": "hero_winter",
        "segment": 'count(page_viewed where category = "winter_accessories", within 30d) >= 1',
        "channel": "web",
        "priority": 30,
        "holdout": 0.1,
        "variants": [{"name": "a", "weight": 1,
                      "message": {"placement": "home_hero", "content": "Winter gloves are back, {{ first_name }}"}}],
    },
    {
        "name": "hero_road",
        "segment": 'discipline = "road" and orders >= 1',
        "channel": "web",
        "priority": 20,
        "holdout": 0.1,
        "variants": [{"name": "a", "weight": 1,
                      "message": {"placement": "home_hero",
                                  "content": "{{ first_name }}, {{ orders }} orders in: new road bikes are here"}}],
    },
    {
        "name": "hero_mtb",
        "segment": "female_amateur_mtb",
        "exclude": ["orders >= 10"],
        "channel": "web",
        "priority": 10,
        "holdout": 0.1,
        "offer": {"kind": "discount", "value": 0.1, "valid_for": "48h", "code": "unique"},
        "variants": [
            {"name": "a", "weight": 1, "message": {"placement": "home_hero", "content": "Trail season: {{ offer.code }}"}},
            {"name": "b", "weight": 1, "message": {"placement": "home_hero", "content": "{{ city }} trails: 10% off"}},
        ],
    },
]

SETTINGS = """
[server]
key_requests_per_second = 1000000.0
key_burst = 1000000
cors_origins = ["*"]
"""

ACTIVATION = """
[activation]
global_control = 0.05
exploration = 0.05
caps = { email = "2/7d", all = "4/7d" }
quiet_hours = ""

[activation.exploration_message.email]
subject = "What's new this season, {{ first_name }}"
text = "New bikes, new trails and the gear for them: see what is in the shop."

[activation.fallback]
home_hero = "Welcome to the shop"
"""


def run(binary, *args, **kw):
    out = subprocess.run([binary, *args], check=True, capture_output=True, text=True, **kw)
    return out.stdout


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def prepare(binary, ws, customers):
    """Settings, consent_web, campaigns and a write key; returns the key."""
    config_path = os.path.join(ws, "microseg.toml")
    with open(config_path) as f:
        config = f.read()
    # Replace the demo's [activation] (and its sub-tables) with the benchmark's.
    config = re.sub(r"\n\[activation[^\n]*\][\s\S]*?(?=\n\[(?!activation)|\Z)", "\n", config)
    config = re.sub(r"\n\[server\][\s\S]*?(?=\n\[|\Z)", "\n", config)
    with open(config_path, "w") as f:
        f.write(SETTINGS + config.rstrip() + "\n" + ACTIVATION)
    csv = os.path.join(ws, "consent_web.csv")
    rng = random.Random(20)
    with open(csv, "w") as f:
        f.write("id,consent_web\n")
        for i in range(1, customers + 1):
            f.write("c%07d,%s\n" % (i, "true" if rng.random() < 0.8 else "false"))
    # --force: a rerun imports the same file again (setting the same traits).
    run(binary, "--data", ws, "import", "profiles", csv, "--force")
    existing = run(binary, "--data", ws, "campaign", "list")
    for c in CAMPAIGNS:
        path = os.path.join(ws, c["name"] + ".json")
        with open(path, "w") as f:
            json.dump(c, f)
        verb = "edit" if re.search(r"^%s\s" % c["name"], existing, re.M) else "create"
        run(binary, "--data", ws, "campaign", verb, "--file", path)
    listed = run(binary, "--data", ws, "campaign", "list").strip().splitlines()
    key = json.loads(run(binary, "--data", ws, "key", "create", "write"))["key"]
    return key, len(listed) - 1


def serve(binary, ws):
    proc = subprocess.Popen(
        [binary, "--data", ws, "serve", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    started = time.perf_counter()
    line = proc.stdout.readline()
    m = re.search(r"listening on (\S+)", line)
    if not m:
        proc.kill()
        sys.exit(f"serve did not start: {line!r}")
    return proc, m.group(1), time.perf_counter() - started


def bench(binary, addr, key, args, rate):
    out = run(
        binary, "bench", "decide", "--server", addr, "--write-key", key,
        "--seconds", str(args.seconds), "--connections", str(args.connections),
        "--customers", str(args.customers), "--rate", str(rate), "--json",
    )
    return json.loads(out)


def peer(ws, binary, customers, seconds):
    """DuckDB point lookups of one customer's metrics row by id, for `seconds`."""
    import duckdb

    csv = os.path.join(ws, "metrics_peer.csv")
    run(binary, "--data", ws, "metrics", "--format", "csv", "--out", csv)
    con = duckdb.connect()
    con.execute(f"CREATE TABLE m AS SELECT * FROM read_csv_auto('{csv}')")
    rng = random.Random(3)
    lat = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        who = "c%07d" % (rng.randrange(customers) + 1)
        t = time.perf_counter()
        con.execute("SELECT * FROM m WHERE id = ?", [who]).fetchall()
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    return {
        "lookups": len(lat),
        "lookups_per_second": len(lat) / seconds,
        "p50_ms": lat[len(lat) // 2],
        "p99_ms": lat[int(len(lat) * 0.99)],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "microseg"))
    ap.add_argument("--workspace", help="a demo shop to reuse (changed in place)")
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    tmp = None
    ws = args.workspace
    if ws is None:
        tmp = tempfile.TemporaryDirectory(prefix="microseg-decide-")
        ws = os.path.join(tmp.name, "shop")
        print(f"making a {args.customers:,}-customer demo shop ...", file=sys.stderr)
        run(args.binary, "demo", ws, "--customers", str(args.customers))
    key, campaigns = prepare(args.binary, ws, args.customers)
    proc, addr, startup = serve(args.binary, ws)
    try:
        rss_start = rss_mib(proc.pid)
        full, paced = [], []
        for i in range(args.runs):
            full.append(bench(args.binary, addr, key, args, 0))
            paced.append(bench(args.binary, addr, key, args, args.rate))
            print(f"run {i + 1}: {full[-1]['requests_per_second']:.0f} req/s at full speed "
                  f"(p99 {full[-1]['latency_ms']['p99']:.2f} ms); paced {args.rate:.0f}/s: "
                  f"{paced[-1]['requests_per_second']:.0f} req/s, p99 {paced[-1]['latency_ms']['p99']:.2f} ms",
                  file=sys.stderr)
        rss_end = rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    med = statistics.median
    result = {
        "customers": args.customers,
        "campaigns": campaigns,
        "startup_seconds": startup,
        "rss_mib_start": rss_start,
        "rss_mib_end": rss_end,
        "full_speed": {
            "requests_per_second": med(r["requests_per_second"] for r in full),
            "p50_ms": med(r["latency_ms"]["p50"] for r in full),
            "p99_ms": med(r["latency_ms"]["p99"] for r in full),
            "with_a_winner_share": med(r["with_a_winner"] / max(r["requests"], 1) for r in full),
            "statuses": full[-1]["statuses"],
        },
        "paced": {
            "rate": args.rate,
            "requests_per_second": med(r["requests_per_second"] for r in paced),
            "p50_ms": med(r["latency_ms"]["p50"] for r in paced),
            "p99_ms": med(r["latency_ms"]["p99"] for r in paced),
            "max_ms": med(r["latency_ms"]["max"] for r in paced),
        },
        "runs": {"full_speed": full, "paced": paced},
    }
    if not args.no_peer:
        result["peer_duckdb_point_lookup"] = peer(ws, args.binary, args.customers, args.seconds)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        f, p = result["full_speed"], result["paced"]
        print(f"{args.customers:,} customers, {result['campaigns']} campaigns; serve ready in "
              f"{startup:.1f} s, {rss_start:.0f} → {rss_end:.0f} MiB")
        print(f"full speed ({args.connections} connections): {f['requests_per_second']:.0f} req/s, "
              f"p50 {f['p50_ms']:.2f} ms, p99 {f['p99_ms']:.2f} ms, {f['with_a_winner_share']:.1%} with a winner")
        print(f"paced at {p['rate']:.0f}/s: {p['requests_per_second']:.0f} req/s, p50 {p['p50_ms']:.2f} ms, "
              f"p99 {p['p99_ms']:.2f} ms, max {p['max_ms']:.2f} ms")
        if "peer_duckdb_point_lookup" in result:
            d = result["peer_duckdb_point_lookup"]
            print(f"peer DuckDB point lookup (in-process, no rules): {d['lookups_per_second']:.0f}/s, "
                  f"p50 {d['p50_ms']:.3f} ms, p99 {d['p99_ms']:.3f} ms; "
                  f"microseg decisions/s over DuckDB lookups/s: "
                  f"{f['requests_per_second'] / d['lookups_per_second']:.2f}")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
