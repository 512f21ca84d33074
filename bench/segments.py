#!/usr/bin/env python3
"""Segment benchmarks: microseg vs DuckDB on the same generated data, in one script.

1. A 5-leaf trait segment (count and members) on N profiles (default 10 million).
2. 190 pairwise overlaps (intersection sizes) of 20 segments on the same profiles.
3. A behavioural segment with a window and a property filter on M profiles' events
   (default 1 million profiles, 50 million events).

`microseg bench segments --export DIR --json` generates the data in memory, times its own
evaluation (medians) and writes the columns as raw arrays; this script loads the same
columns into an in-memory DuckDB (strings as ENUM, the dictionary type matching
microseg's codes), runs the same segments as SQL, checks that every count agrees and
prints both medians with their ratio. DuckDB uses every core; microseg evaluates on one.

    cargo build --release
    python bench/segments.py                      # the issue's sizes
    python bench/segments.py --profiles 1000000 --event-profiles 100000 --events 5000000
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import duckdb
import numpy as np
import pandas as pd

AS_OF_MS = None  # set from microseg's report


def median_ms(runs, fn):
    times = []
    result = None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), result


def load_profiles(con, d):
    manifest = json.load(open(os.path.join(d, "profiles.json")))
    cols = {}
    for name, c in manifest["columns"].items():
        path = os.path.join(d, c["file"])
        if c["type"] == "codes":
            codes = np.fromfile(path, dtype="<i4")
            cols[name] = pd.Categorical.from_codes(codes, categories=c["values"])
        elif c["type"] in ("i64", "time_ms"):
            cols[name] = np.fromfile(path, dtype="<i8")
        elif c["type"] == "f64":
            cols[name] = np.fromfile(path, dtype="<f8")
        elif c["type"] == "bool":
            cols[name] = np.fromfile(path, dtype="u1") == 1
    df = pd.DataFrame(cols)
    con.register("profiles_df", df)
    con.execute("CREATE TABLE profiles AS SELECT * FROM profiles_df")
    con.unregister("profiles_df")


def load_events(con, d):
    manifest = json.load(open(os.path.join(d, "events.json")))
    df = pd.DataFrame(
        {
            "profile": np.fromfile(os.path.join(d, "event_profile.u32"), dtype="<u4"),
            "time": np.fromfile(os.path.join(d, "event_time.i64"), dtype="<i8"),
            "event": pd.Categorical.from_codes(
                np.fromfile(os.path.join(d, "event_name.i32"), dtype="<i4"),
                categories=manifest["names"],
            ),
            "category": pd.Categorical.from_codes(
                np.fromfile(os.path.join(d, "event_category.i32"), dtype="<i4"),
                categories=manifest["categories"],
            ),
        }
    )
    con.register("events_df", df)
    con.execute("CREATE TABLE events AS SELECT * FROM events_df")
    con.unregister("events_df")


# The segments of `microseg bench segments`, written as SQL by hand (no missing values in
# the generated data, so plain SQL predicates mean the same as the condition language).
FIVE_LEAF_SQL = """gender = 'f' AND age BETWEEN 25 AND 44
  AND city IN ('Budapest', 'Wien', 'Praha', 'Berlin') AND skill <> 'pro' AND consent_email"""

TWENTY_SQL = [
    "city = 'Budapest'", "city = 'Wien'", "city = 'Berlin'", "city = 'Praha'",
    "city IN ('Paris', 'Lyon', 'Marseille')",
    "discipline = 'road'", "discipline = 'mountain'", "discipline = 'city'",
    "discipline = 'gravel'", "discipline = 'track'",
    "skill = 'beginner'", "skill = 'amateur'", "skill = 'pro'",
    "gender = 'f'", "gender = 'm'",
    "age < 30", "age BETWEEN 30 AND 49", "age >= 50",
    "consent_email", "income > 60000",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--microseg", default="target/release/microseg")
    ap.add_argument("--profiles", type=int, default=10_000_000)
    ap.add_argument("--event-profiles", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=50_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="microseg-bench-") as d:
        cmd = [args.microseg, "bench", "segments", "--profiles", str(args.profiles),
               "--event-profiles", str(args.event_profiles), "--events", str(args.events),
               "--runs", str(args.runs), "--export", d, "--json"]
        print("running:", " ".join(cmd), file=sys.stderr)
        ms = json.loads(subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout)
        as_of_ms = int(pd.Timestamp(ms["as_of"]).value // 1_000_000)

        con = duckdb.connect()
        t = time.perf_counter()
        load_profiles(con, d)
        print(f"duckdb: loaded profiles in {time.perf_counter() - t:.1f} s", file=sys.stderr)

        # 1. Five-leaf segment: the count, and the members materialised (as microseg's
        # bitmap is).
        count_sql = f"SELECT count(*) FROM profiles WHERE {FIVE_LEAF_SQL}"
        duck_five, (n,) = median_ms(args.runs, lambda: con.execute(count_sql).fetchone())
        members_sql = f"CREATE OR REPLACE TEMP TABLE m AS SELECT rowid FROM profiles WHERE {FIVE_LEAF_SQL}"
        duck_five_members, _ = median_ms(args.runs, lambda: con.execute(members_sql))
        assert n == ms["five_leaf"]["size"], (n, ms["five_leaf"]["size"])

        # 2. 190 overlaps in one pass: 20 predicates per row, then every pair's count.
        flags = ", ".join(f"({c}) AS s{i}" for i, c in enumerate(TWENTY_SQL))
        pairs = [(i, j) for i in range(20) for j in range(i + 1, 20)]
        sums = ", ".join(f"count_if(s{i} AND s{j})" for i, j in pairs)
        overlap_sql = f"WITH f AS (SELECT {flags} FROM profiles) SELECT {sums} FROM f"
        duck_overlaps, row = median_ms(args.runs, lambda: con.execute(overlap_sql).fetchone())
        for (i, j), got in zip(pairs, row):
            want = next(p["intersection"] for p in ms["overlaps"]["pairs"]
                        if p["a"] == i and p["b"] == j)
            assert got == want, (TWENTY_SQL[i], TWENTY_SQL[j], got, want)
        con.execute("DROP TABLE profiles")

        t = time.perf_counter()
        load_events(con, d)
        print(f"duckdb: loaded events in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        lo = as_of_ms - 30 * 86_400_000
        behaviour_sql = f"""SELECT count(*) FROM (SELECT profile FROM events
            WHERE event = 'page_viewed' AND category = 'winter_accessories'
              AND time BETWEEN {lo} AND {as_of_ms}
            GROUP BY profile HAVING count(*) >= 2)"""
        duck_behaviour, (nb,) = median_ms(args.runs, lambda: con.execute(behaviour_sql).fetchone())
        assert nb == ms["behavioural"]["size"], (nb, ms["behavioural"]["size"])

    rows = [
        ("5-leaf trait segment (count + members)", args.profiles,
         ms["five_leaf"]["median_ms"], duck_five_members, "10 ms, 5x DuckDB"),
        ("5-leaf trait segment vs DuckDB count only", args.profiles,
         ms["five_leaf"]["median_ms"], duck_five, ""),
        ("190 overlaps of 20 segments", args.profiles,
         ms["overlaps"]["median_ms"], duck_overlaps, "30 ms"),
        ("behavioural: window + property filter", ms["events"],
         ms["behavioural"]["median_ms"], duck_behaviour, "1 s, faster than DuckDB"),
    ]
    print(f"\n{'measurement':45} {'rows':>12} {'microseg ms':>12} {'duckdb ms':>10} {'ratio':>7}  target")
    for name, n, ours, theirs, target in rows:
        print(f"{name:45} {n:>12,} {ours:>12.2f} {theirs:>10.2f} {theirs / ours:>6.1f}x  {target}")
    print(f"\n(microseg also: first 5-leaf run incl. building indexes "
          f"{ms['five_leaf']['first_run_ms']:.0f} ms; evaluating the 20 segments "
          f"{ms['overlaps']['segments_median_ms']:.1f} ms; all counts agree with DuckDB)")
    if args.out:
        json.dump({"microseg": ms, "duckdb": {"five_leaf_count_ms": duck_five,
                   "five_leaf_members_ms": duck_five_members, "overlaps_ms": duck_overlaps,
                   "behavioural_ms": duck_behaviour}}, open(args.out, "w"), indent=2)


if __name__ == "__main__":
    main()
