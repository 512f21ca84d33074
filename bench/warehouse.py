"""How cost grows: a behavioural segment and the metrics on 1, 10 and 50 million events,
in microseg itself, in DuckDB and on a local Spark Connect server (docs/scale.md).

For each size, the demo bicycle shop with enough customers for that many events
(`microseg demo --customers N`, about 27 events per customer) gets two saved segments:

- behavioural: `page_viewed where category = "winter_accessories" then not
  order_completed within 3d` (a sequence with `then not` over a JSON property);
- metrics: `rfm_r >= 4 and rfm_f >= 4 and aov > 100` (every metric: sessions, orders,
  revenue, AOV, recency, RFM quintiles; the SQL computes them all in its WITH clause).

Then, each a fresh process as a user runs it, median of --runs after one warm-up:

- microseg: `segment size NAME --json` (loads the workspace's columnar snapshot, evaluates);
- DuckDB: `warehouse load --engine duckdb` once (export + CREATE TABLE), then
  `warehouse run NAME --engine duckdb --json` (the CLI opens the file and runs the SQL);
- Spark: `warehouse load --engine spark` once (export to the stage + external tables),
  then `warehouse run NAME --engine spark --json` (one Spark Connect query).

Each run's members are compared: the three sizes must be equal. Wall times are process
start to end; "query" is what `warehouse run` reports as the engine's time.

Usage: python bench/warehouse.py [--events 1,10,50] [--runs 3] [--work DIR]
Needs: `cargo build --release`, the DuckDB CLI (`--duckdb`, default `duckdb`), and a
Spark Connect server (`--spark sc://127.0.0.1:15002`; tests/warehouse/spark-connect.sh
starts one: SPARK_DRIVER_MEMORY=6g for 50 M events; docs/scale.md).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

EVENTS_PER_CUSTOMER = 27.0
AS_OF = "2026-11-01"
SEGMENTS = {
    "scale_behavioural": 'page_viewed where category = "winter_accessories" then not order_completed within 3d',
    "scale_metrics": "rfm_r >= 4 and rfm_f >= 4 and aov > 100",
}


def run(cmd):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    return dt, p.stdout


def median_runs(cmd, runs):
    run(cmd)  # warm-up: caches, JIT, the snapshot
    results = [run(cmd) for _ in range(runs)]
    return statistics.median(r[0] for r in results), results[-1][1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", default="1,10,50", help="sizes in millions of events")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default="/tmp/microseg-scale")
    ap.add_argument("--duckdb", default="duckdb")
    ap.add_argument("--spark", default="sc://127.0.0.1:15002")
    ap.add_argument("--keep", action="store_true", help="keep the workspaces")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ms = os.path.join(root, "target", "release", "microseg")
    os.makedirs(args.work, exist_ok=True)
    report = []
    for millions in [float(x) for x in args.events.split(",")]:
        customers = int(round(millions * 1e6 / EVENTS_PER_CUSTOMER))
        ws = os.path.join(args.work, f"shop{millions:g}m")
        shutil.rmtree(ws, ignore_errors=True)
        t_demo, _ = run([ms, "demo", ws, "--customers", str(customers), "--seed", "42", "--json"])
        stage = os.path.join(ws, "stage")
        with open(os.path.join(ws, "microseg.toml"), "a") as f:
            f.write(f'\n[warehouse.duckdb]\nfile = "w.duckdb"\ncli = "{args.duckdb}"\n'
                    f'[warehouse.spark]\nurl = "{args.spark}"\nstage = "{stage}"\n')
        for name, cond in SEGMENTS.items():
            run([ms, "--data", ws, "segment", "create", name, cond])
        row = {"millions": millions, "customers": customers, "demo_s": t_demo}
        _, counts = run([ms, "--data", ws, "warehouse", "export", "--out",
                         os.path.join(ws, "lake"), "--json"])
        counts = json.loads(counts)
        row["events"] = counts["events"]
        row["export_s"] = counts["seconds"]
        for engine in ["duckdb", "spark"]:
            dt, out = run([ms, "--data", ws, "warehouse", "load", "--engine", engine, "--json"])
            row[f"{engine}_load_s"] = dt
        for name in SEGMENTS:
            wall, out = median_runs([ms, "--data", ws, "segment", "size", name, "--as-of", AS_OF,
                                     "--json"], args.runs)
            size = json.loads(out)["size"]
            row[f"{name}_local_s"] = wall
            for engine in ["duckdb", "spark"]:
                cmd = [ms, "--data", ws, "warehouse", "run", name, "--engine", engine,
                       "--as-of", AS_OF, "--json"]
                queries = []
                walls = []
                run(cmd)
                for _ in range(args.runs):
                    dt, out = run(cmd)
                    doc = json.loads(out)
                    if doc["size"] != size:
                        sys.exit(f"{engine} {name}: {doc['size']} members, microseg {size}")
                    walls.append(dt)
                    queries.append(doc["seconds"])
                row[f"{name}_{engine}_s"] = statistics.median(walls)
                row[f"{name}_{engine}_query_s"] = statistics.median(queries)
            row[f"{name}_size"] = size
        print(json.dumps(row), flush=True)
        report.append(row)
        if not args.keep:
            shutil.rmtree(ws, ignore_errors=True)
    print()
    print("| events | customers | segment | size | microseg | DuckDB (query) | Spark (query) |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for r in report:
        for name in SEGMENTS:
            print(f"| {r['events'] / 1e6:.1f} M | {r['customers']:,} | {name} | {r[name + '_size']:,} "
                  f"| {r[name + '_local_s']:.2f} s "
                  f"| {r[name + '_duckdb_s']:.2f} s ({r[name + '_duckdb_query_s']:.2f}) "
                  f"| {r[name + '_spark_s']:.2f} s ({r[name + '_spark_query_s']:.2f}) |")
    print()
    print("| events | demo (generate + import + models) | export | DuckDB load | Spark load |")
    print("|---:|---:|---:|---:|---:|")
    for r in report:
        print(f"| {r['events'] / 1e6:.1f} M | {r['demo_s']:.1f} s | {r['export_s']:.1f} s "
              f"| {r['duckdb_load_s']:.1f} s | {r['spark_load_s']:.1f} s |")


if __name__ == "__main__":
    main()
