"""Foundation benchmarks: event import and metric computation, microseg beside DuckDB.

Both tools get the same events CSV (the demo bicycle shop, written by `microseg generate`)
in the same script; each figure is the median of --runs runs, and the report gives the
ratio DuckDB time / microseg time (above 1 means microseg is faster).

1. Import: `microseg import events` into a fresh workspace (durable: one SQLite
   transaction, fsynced) vs DuckDB `CREATE TABLE ... AS SELECT * FROM read_csv(...)` into a
   fresh database file followed by CHECKPOINT (durable). Wall time, process start to end.
2. Metrics: every foundation metric (visits with 30-minute sessions, orders, revenue, aov,
   first/last seen, last order, recency, tenure, RFM by NTILE) for every profile as of
   2026-11-01. "compute" is microseg's in-memory computation (as printed by `microseg
   metrics`) vs the same query in DuckDB over its already loaded table (CREATE TEMP TABLE
   AS); "end to end" is the whole command writing a CSV vs DuckDB's COPY of the query to CSV.
   The two results are compared value by value for every profile.

Usage: python bench/foundation.py [--customers 1000000] [--runs 3] [--work DIR]
Needs: `pip install duckdb`, and `cargo build --release`.
"""

import argparse
import csv
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

import duckdb

AS_OF = "2026-11-01"
AS_OF_MS = 1_793_491_200_000


def run(cmd, **kw):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {p.stderr}")
    return dt, p


def median_of(runs, fn):
    times = [fn(i) for i in range(runs)]
    return statistics.median(times), times


METRICS_SQL = f"""
WITH e AS (
    SELECT user_id, rowid AS rid, epoch_ms("time") AS t, event, revenue
    FROM events WHERE epoch_ms("time") <= {AS_OF_MS}
), ids AS (
    SELECT user_id, min(rowid) AS pid FROM events GROUP BY user_id
), s AS (
    SELECT user_id, t, event, revenue,
           CASE WHEN lag(t) OVER w IS NULL OR t - lag(t) OVER w > 1800000
                     OR event = 'session_started' THEN 1 ELSE 0 END AS new_session
    FROM e WINDOW w AS (PARTITION BY user_id ORDER BY t, event = 'session_started' DESC, rid)
), agg AS (
    SELECT user_id, sum(new_session) AS visits,
           count(*) FILTER (WHERE event = 'order_completed') AS orders,
           coalesce(sum(revenue) FILTER (WHERE event = 'order_completed'), 0) AS revenue,
           min(t) AS first_seen, max(t) AS last_seen,
           max(t) FILTER (WHERE event = 'order_completed') AS last_order_at
    FROM s GROUP BY user_id
), m AS (
    SELECT ids.user_id AS id, ids.pid, coalesce(visits, 0) AS visits,
           coalesce(orders, 0) AS orders, coalesce(revenue, 0) AS revenue,
           CASE WHEN orders > 0 THEN revenue / orders END AS aov,
           first_seen, last_seen, last_order_at,
           floor(({AS_OF_MS} - last_order_at) / 86400000)::BIGINT AS recency_days,
           floor(({AS_OF_MS} - first_seen) / 86400000)::BIGINT AS tenure_days
    FROM ids LEFT JOIN agg USING (user_id)
), rfm AS (
    SELECT id,
           6 - ntile(5) OVER (ORDER BY recency_days, id) AS rfm_r,
           ntile(5) OVER (ORDER BY orders, id) AS rfm_f,
           ntile(5) OVER (ORDER BY revenue, id) AS rfm_m
    FROM m WHERE orders > 0
)
SELECT m.*, rfm_r, rfm_f, rfm_m FROM m LEFT JOIN rfm USING (id) ORDER BY pid
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default="/tmp/microseg-bench")
    ap.add_argument("--microseg", default="target/release/microseg")
    args = ap.parse_args()
    ms = os.path.abspath(args.microseg)
    work = os.path.abspath(args.work)
    data = os.path.join(work, f"shop-{args.customers}")
    events_csv = os.path.join(data, "events.csv")
    os.makedirs(work, exist_ok=True)
    if not os.path.exists(events_csv):
        print(f"generating {args.customers} customers into {data} ...", file=sys.stderr)
        run([ms, "generate", data, "--customers", str(args.customers)])
    with open(events_csv, "rb") as f:
        n_events = sum(1 for _ in f) - 1
    size_mb = os.path.getsize(events_csv) / 1e6
    print(f"data: {events_csv} ({n_events:,} events, {size_mb:,.0f} MB)")
    print(f"machine: {os.cpu_count()} cores; medians of {args.runs} runs\n")

    # 1. Import.
    ws = os.path.join(work, "ws")
    import_cmd = [ms, "--data", ws, "import", "events", events_csv, "--profile", "user_id",
                  "--time", "time", "--name", "event", "--revenue", "revenue"]

    def microseg_import(_):
        shutil.rmtree(ws, ignore_errors=True)
        run([ms, "--data", ws, "init"])
        dt, _ = run(import_cmd)
        return dt

    duck_db = os.path.join(work, "bench.duckdb")

    def duckdb_import(_):
        for suffix in ("", ".wal"):
            if os.path.exists(duck_db + suffix):
                os.remove(duck_db + suffix)
        t0 = time.perf_counter()
        con = duckdb.connect(duck_db)
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"CREATE TABLE events AS SELECT * FROM read_csv('{events_csv}', header = true, "
                    "types = {'revenue': 'DOUBLE', 'price': 'DOUBLE', 'time': 'TIMESTAMPTZ'})")
        con.execute("CHECKPOINT")
        con.close()
        return time.perf_counter() - t0

    ms_import, ms_runs = median_of(args.runs, microseg_import)
    dk_import, dk_runs = median_of(args.runs, duckdb_import)
    print("import events from CSV, durable")
    print(f"  microseg {ms_import:7.2f} s  {n_events / ms_import / 1e6:5.2f} M events/s  runs {fmt(ms_runs)}")
    print(f"  duckdb   {dk_import:7.2f} s  {n_events / dk_import / 1e6:5.2f} M events/s  runs {fmt(dk_runs)}")
    print(f"  ratio duckdb/microseg {dk_import / ms_import:.2f}\n")

    # 2. Metrics.
    ms_csv = os.path.join(work, "microseg-metrics.csv")
    compute_re = re.compile(r"computed metrics for (\d+) profiles .*\(load ([\d.]+) s, compute ([\d.]+) s\)")
    ms_compute_runs, ms_e2e_runs = [], []
    for _ in range(args.runs):
        dt, p = run([ms, "--data", ws, "metrics", "--as-of", AS_OF, "--format", "csv", "--out", ms_csv])
        m = compute_re.search(p.stderr)
        profiles, load, compute = int(m.group(1)), float(m.group(2)), float(m.group(3))
        ms_compute_runs.append(compute)
        ms_e2e_runs.append(dt)
    con = duckdb.connect(duck_db)
    con.execute("SET TimeZone = 'UTC'")
    dk_compute_runs, dk_e2e_runs = [], []
    dk_csv = os.path.join(work, "duckdb-metrics.csv")
    for i in range(args.runs):
        t0 = time.perf_counter()
        con.execute(f"CREATE OR REPLACE TEMP TABLE metrics AS {METRICS_SQL}")
        dk_compute_runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        con.execute(f"COPY ({METRICS_SQL}) TO '{dk_csv}' (HEADER)")
        dk_e2e_runs.append(time.perf_counter() - t0)
    print(f"metrics for {profiles:,} profiles / {n_events:,} events")
    ms_c, dk_c = statistics.median(ms_compute_runs), statistics.median(dk_compute_runs)
    ms_e, dk_e = statistics.median(ms_e2e_runs), statistics.median(dk_e2e_runs)
    print(f"  compute     microseg {ms_c:7.3f} s  duckdb {dk_c:7.3f} s  ratio {dk_c / ms_c:6.2f}"
          f"   runs {fmt(ms_compute_runs)} / {fmt(dk_compute_runs)}")
    print(f"  end to end  microseg {ms_e:7.3f} s  duckdb {dk_e:7.3f} s  ratio {dk_e / ms_e:6.2f}"
          f"   (microseg loads the store each run: {load:.2f} s last run)")

    # 3. Same answers?
    rows = con.execute(METRICS_SQL).fetchall()
    cols = [d[0] for d in con.description]
    duck = {r[0]: dict(zip(cols, r)) for r in rows}
    mismatches = 0
    with open(ms_csv) as f:
        for row in csv.DictReader(f):
            d = duck[row["id"]]
            checks = [
                int(row["visits"]) == d["visits"],
                int(row["orders"]) == d["orders"],
                math.isclose(float(row["revenue"]), d["revenue"], rel_tol=1e-9, abs_tol=1e-6),
                (row["recency_days"] or None) == (None if d["recency_days"] is None else str(d["recency_days"])),
                (row["tenure_days"] or None) == (None if d["tenure_days"] is None else str(d["tenure_days"])),
                (row["rfm_r"], row["rfm_f"], row["rfm_m"]) == tuple("" if d[k] is None else str(d[k]) for k in ("rfm_r", "rfm_f", "rfm_m")),
            ]
            if not all(checks):
                mismatches += 1
                if mismatches <= 5:
                    print("  mismatch:", row, d)
    print(f"  microseg and duckdb disagree on {mismatches} of {len(duck):,} profiles")
    return 1 if mismatches else 0


def fmt(times):
    return ", ".join(f"{t:.2f}" for t in times)


if __name__ == "__main__":
    sys.exit(main())
