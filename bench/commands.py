#!/usr/bin/env python3
"""Commands as a user runs them: one fresh `microseg` process per answer, beside DuckDB
answering the same count from its own database file in a fresh process, in one script.

On a demo shop (default 1,000,000 customers, about 27 M events; made with
`microseg demo DIR --customers N` when DIR does not exist yet), it times:

1. `segment size` of a trait segment, and of two behavioural segments (a windowed count,
   and a `did` with an event-property filter), each against DuckDB's `count(*)` of the
   same SQL over the demo's CSV files loaded into a DuckDB file; every count must agree;
2. `segment list` (every saved segment with its size);
3. `serve`: from starting the process to the first 200 from `/healthz`.

Each measurement is the wall time of the whole process (start, open, load, answer, exit),
median of `--runs`, with peak memory (max RSS). DuckDB runs in a fresh Python process
(`import duckdb`, connect read-only, one query); its own query time is printed too.

    cargo build --release
    python bench/commands.py --data /tmp/shop1m            # venv with duckdb
    python bench/commands.py --data /tmp/shop1m --json     # one JSON document
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AS_OF = "2026-11-01"

CASES = [
    (
        "trait: gender and skill",
        'gender = "f" and skill = "amateur"',
        "SELECT count(*) FROM profiles WHERE gender = 'f' AND skill = 'amateur'",
    ),
    (
        "behaviour: >= 2 orders in 90 days",
        "count(order_completed, within 90d) >= 2",
        "SELECT count(*) FROM (SELECT user_id FROM events WHERE event = 'order_completed' "
        "AND time >= TIMESTAMPTZ '2026-11-01 00:00:00+00' - INTERVAL 90 DAY "
        "AND time <= TIMESTAMPTZ '2026-11-01 00:00:00+00' GROUP BY user_id HAVING count(*) >= 2)",
    ),
    (
        "behaviour: viewed winter accessories in 30 days",
        'did(page_viewed where category = "winter_accessories") within 30d',
        "SELECT count(DISTINCT user_id) FROM events WHERE event = 'page_viewed' "
        "AND category = 'winter_accessories' "
        "AND time >= TIMESTAMPTZ '2026-11-01 00:00:00+00' - INTERVAL 30 DAY "
        "AND time <= TIMESTAMPTZ '2026-11-01 00:00:00+00'",
    ),
]

DUCK_QUERY = """
import sys, time, duckdb
t = time.perf_counter()
con = duckdb.connect(sys.argv[1], read_only=True)
con.execute("SET TimeZone = 'UTC'")
n = con.execute(sys.argv[2]).fetchone()[0]
print(n, time.perf_counter() - t)
"""


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def timed(cmd, env=None):
    """Runs cmd; returns (seconds, max RSS in MiB, stdout)."""
    t = time.perf_counter()
    p = subprocess.run(
        ["/usr/bin/time", "-f", "%M"] + cmd,
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr}")
    rss = int(p.stderr.strip().splitlines()[-1]) / 1024
    return seconds, rss, p.stdout


def median_of(runs, fn):
    results = [fn() for _ in range(runs)]
    secs = [r[0] for r in results]
    return statistics.median(secs), secs, max(r[1] for r in results), results[-1][2]


def ensure_shop(microseg, data, customers):
    if os.path.exists(os.path.join(data, "store.sqlite")):
        return
    log(f"making the demo shop with {customers:,} customers in {data}")
    subprocess.run(
        [microseg, "demo", data, "--customers", str(customers), "--json"],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def ensure_duckdb(data, path):
    if os.path.exists(path):
        return
    import duckdb

    log(f"loading the demo's CSV files into {path}")
    con = duckdb.connect(path)
    con.execute("SET TimeZone = 'UTC'")
    demo = os.path.join(data, "demo")
    con.execute(
        f"CREATE TABLE profiles AS SELECT * FROM read_csv('{demo}/profiles.csv', header = true)"
    )
    con.execute(
        f"""CREATE TABLE events AS SELECT * FROM read_csv('{demo}/events.csv', header = true,
            columns = {{'user_id': 'VARCHAR', 'time': 'TIMESTAMPTZ', 'event': 'VARCHAR',
                       'revenue': 'DOUBLE', 'path': 'VARCHAR', 'category': 'VARCHAR',
                       'price': 'DOUBLE', 'items': 'BIGINT'}})"""
    )
    con.execute("CHECKPOINT")
    con.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def serve_ready(microseg, data):
    """Seconds from starting `microseg serve` to the first 200 from /healthz, and RSS."""
    port = free_port()
    t = time.perf_counter()
    p = subprocess.Popen(
        [microseg, "--data", data, "serve", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if p.poll() is not None:
                raise SystemExit("microseg serve exited")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.02)
        seconds = time.perf_counter() - t
        rss = 0.0
        with open(f"/proc/{p.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    rss = int(line.split()[1]) / 1024
        return seconds, rss, ""
    finally:
        p.terminate()
        p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="/tmp/microseg-shop1m")
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--duckdb", help="DuckDB file (default DATA/../NAME.duckdb)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    microseg = os.path.join(ROOT, "target", "release", "microseg")
    data = os.path.abspath(args.data)
    duck = args.duckdb or data.rstrip("/") + ".duckdb"
    ensure_shop(microseg, data, args.customers)
    ensure_duckdb(data, duck)
    base = [microseg, "--data", data]

    rows = []
    for label, condition, sql in CASES:
        # One untimed run of each side first: both read their files into the page cache.
        timed(base + ["segment", "size", condition, "--as-of", AS_OF, "--json"])
        timed([sys.executable, "-c", DUCK_QUERY, duck, sql])
        m = median_of(
            args.runs,
            lambda: timed(base + ["segment", "size", condition, "--as-of", AS_OF, "--json"]),
        )
        d = median_of(args.runs, lambda: timed([sys.executable, "-c", DUCK_QUERY, duck, sql]))
        ours = json.loads(m[3])["size"]
        theirs, query_s = d[3].split()
        if ours != int(theirs):
            raise SystemExit(f"{label}: microseg {ours}, DuckDB {theirs}")
        rows.append(
            {
                "measurement": label,
                "count": ours,
                "microseg_s": m[0],
                "microseg_runs": m[1],
                "microseg_rss_mib": m[2],
                "duckdb_s": d[0],
                "duckdb_runs": d[1],
                "duckdb_query_s": float(query_s),
                "duckdb_rss_mib": d[2],
                "ratio": m[0] / d[0],
            }
        )
        log(f"{label}: {ours:,} (microseg {m[0]:.3f} s, DuckDB {d[0]:.3f} s)")
    timed(base + ["segment", "list", "--as-of", AS_OF, "--json"])
    m = median_of(args.runs, lambda: timed(base + ["segment", "list", "--as-of", AS_OF, "--json"]))
    listed = json.loads(m[3])
    rows.append(
        {
            "measurement": f"segment list ({len(listed['segments'])} segments with sizes)",
            "microseg_s": m[0],
            "microseg_runs": m[1],
            "microseg_rss_mib": m[2],
        }
    )
    m = median_of(args.runs, lambda: serve_ready(microseg, data))
    rows.append(
        {
            "measurement": "serve: start to first /healthz 200",
            "microseg_s": m[0],
            "microseg_runs": m[1],
            "microseg_rss_mib": m[2],
        }
    )
    if args.json:
        print(json.dumps({"data": data, "runs": args.runs, "rows": rows}, indent=2))
        return
    print(f"\n{'measurement':<52}{'microseg s':>11}{'RSS MiB':>9}{'DuckDB s':>10}{'query s':>9}{'ratio':>7}")
    for r in rows:
        line = f"{r['measurement']:<52}{r['microseg_s']:>11.3f}{r['microseg_rss_mib']:>9.0f}"
        if "duckdb_s" in r:
            line += f"{r['duckdb_s']:>10.3f}{r['duckdb_query_s']:>9.3f}{r['ratio']:>6.2f}x"
        print(line)
    print("(ratio = microseg time / DuckDB time: below 1 means microseg answers faster)")


if __name__ == "__main__":
    main()
