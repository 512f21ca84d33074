"""Console benchmarks: each page's one request against a running `microseg serve`, and the
overview beside DuckDB computing the same figures from the same CSV files.

1. Builds the demo shop (`microseg demo DIR --customers N --json`: the import alone, no
   models or campaigns, so every event is at or before 2026-11-01) unless --data names one
   (then only the pages are timed, with each campaign's page for its first two).
2. Starts `microseg serve`, asks each console page --runs times (one HTTP request each, as
   the console does) and reports the median and the slowest, in milliseconds.
3. DuckDB loads profiles.csv and events.csv (timed apart) and computes the overview's
   figures: profiles, customers, orders, revenue, and the 5 × 5 recency × frequency grid
   of customers (NTILE quintiles as in bench/foundation.py, recency in whole days as of
   the overview's own `as_of`). The figures are compared with the
   overview's answer, and the ratio DuckDB query / microseg request is printed (above 1
   means microseg answers faster than DuckDB computes from its loaded tables).
4. `microseg report` on the same workspace, wall time, median of --runs.

Usage: python bench/console.py [--customers 50000] [--runs 7] [--data DIR]
Needs: `pip install duckdb`, and `cargo build --release`.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import duckdb

GRID_SQL = """
WITH o AS (
    SELECT user_id AS id, count(*) AS orders, sum(revenue) AS revenue,
           floor(($as_of - max(epoch_ms("time"))) / 86400000)::BIGINT AS recency_days
    FROM events WHERE event = 'order_completed' GROUP BY user_id
), rfm AS (
    SELECT id, orders, revenue,
           6 - ntile(5) OVER (ORDER BY recency_days, id) AS r,
           ntile(5) OVER (ORDER BY orders, id) AS f
    FROM o
)
SELECT r, f, count(*) AS n, sum(orders) AS orders, sum(revenue) AS revenue FROM rfm GROUP BY r, f
"""


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {p.stderr}")
    return p


def get(base, path, token, body=None):
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    if body is not None:
        req.data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        data = json.loads(r.read())
    return (time.perf_counter() - t0) * 1000, data


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--data", help="an existing demo workspace (default: build one)")
    ap.add_argument("--microseg", default="target/release/microseg")
    args = ap.parse_args()
    ms = os.path.abspath(args.microseg)
    work = tempfile.mkdtemp(prefix="microseg-console-bench-")
    data = args.data or os.path.join(work, "shop")
    if not args.data:
        print(f"building the demo shop of {args.customers:,} customers in {data} ...", file=sys.stderr)
        run([ms, "demo", data, "--customers", str(args.customers), "--json"])
    token = json.loads(run([ms, "--data", data, "key", "create", "admin", "--name", "bench"]).stdout)["key"]
    server = subprocess.Popen([ms, "--data", data, "serve", "--listen", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline().strip()
        base = "http://" + line.removeprefix("listening on ")
        names = [s["name"] for s in get(base, "/v1/segments", token)[1]["segments"]]
        profile = "c0000001"
        pages = [
            ("overview", "/v1/console/overview", None),
            ("segments", "/v1/console/segments", None),
            ("size (as you type)", "/v1/console/size", {"condition": 'discipline = "mountain" and orders >= 2'}),
            ("explore", "/v1/console/explore?by=discipline,skill,gender", None),
            ("profile", f"/v1/console/profiles/{profile}", None),
            ("campaigns", "/v1/console/campaigns", None),
            ("discover", "/v1/console/discover", {"target": "orders >= 2", "dims": ["discipline", "skill", "gender", "income_band"]}),
            ("personas", "/v1/console/personas", None),
        ]
        campaigns = [c["name"] for c in get(base, "/v1/console/campaigns", token)[1]["campaigns"]]
        for name in campaigns[:2]:
            pages.append((f"campaign {name}"[:21], f"/v1/console/campaigns/{name}", None))
        print(f"workspace: {data} ({len(names)} segments); {os.cpu_count()} cores; {args.runs} requests per page\n")
        print(f"{'page':<22}{'median ms':>10}{'max ms':>10}")
        results = {}
        for label, path, body in pages:
            times = []
            for _ in range(args.runs):
                ms_, doc = get(base, path, token, body)
                times.append(ms_)
            results[label] = (statistics.median(times), max(times), doc)
            print(f"{label:<22}{statistics.median(times):>10.1f}{max(times):>10.1f}")
    finally:
        server.terminate()
        server.wait()

    overview = results["overview"][2]
    if args.data:
        print("\n(a given workspace may hold more than its demo CSV files: not compared with DuckDB)")
        return
    # The recency scores as of the instant the overview was computed at.
    as_of_ms = int(datetime.datetime.fromisoformat(overview["as_of"].replace("Z", "+00:00")).timestamp() * 1000)
    con = duckdb.connect()
    t0 = time.perf_counter()
    con.execute(f"CREATE TABLE profiles AS SELECT * FROM read_csv('{data}/demo/profiles.csv', header=true)")
    con.execute(f"CREATE TABLE events AS SELECT * FROM read_csv('{data}/demo/events.csv', header=true)")
    load = time.perf_counter() - t0
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        profiles = con.execute("SELECT count(*) FROM profiles").fetchone()[0]
        grid = con.execute(GRID_SQL, {"as_of": as_of_ms}).fetchall()
        times.append((time.perf_counter() - t0) * 1000)
    duck = statistics.median(times)
    customers = sum(n for _, _, n, _, _ in grid)
    orders = sum(o for _, _, _, o, _ in grid)
    revenue = sum(r for _, _, _, _, r in grid)
    cells = [[0] * 5 for _ in range(5)]
    for r, f, n, _, _ in grid:
        cells[5 - r][f - 1] = n
    checks = [
        ("profiles", overview["profiles"] == profiles),
        ("customers", overview["customers"] == customers),
        ("orders", overview["orders"] == orders),
        ("revenue", abs(overview["revenue"] - revenue) < 1e-6 * max(1.0, revenue)),
        ("5 x 5 grid", overview["rfm"]["customers"] == cells),
    ]
    print(f"\nDuckDB: loaded the CSV files in {load:.2f} s; overview figures in {duck:.1f} ms (median)")
    print(f"overview: microseg request {results['overview'][0]:.1f} ms vs DuckDB query {duck:.1f} ms: ratio {duck / results['overview'][0]:.2f}")
    for name, ok in checks:
        print(f"  {name}: {'same' if ok else 'DIFFERENT'}")
    report = []
    for _ in range(max(1, args.runs // 2)):
        t0 = time.perf_counter()
        run([ms, "--data", data, "report", "--out", os.path.join(work, "report.html"), "--dims", "discipline,skill,gender,income_band"])
        report.append(time.perf_counter() - t0)
    print(f"\nmicroseg report: {statistics.median(report):.2f} s (median of {len(report)}), {os.path.getsize(os.path.join(work, 'report.html')) / 1024:.0f} KB")
    if not all(ok for _, ok in checks):
        sys.exit("the overview differs from DuckDB")


if __name__ == "__main__":
    main()
