#!/usr/bin/env python3
"""Model benchmarks: microseg beside the Python peers on the same data, in one script.

1. Micro-segment discovery: 10 dimensions (one nested in another, so some conjunctions
   add nobody to a shorter one), conjunctions up to depth 3, minimum support 100, on N
   profiles (default 1 million) with a planted target; the peer is pandas (a groupby per
   combination of dimensions, conjunctions equal to a sub-conjunction dropped, Wilson
   intervals, score test, BH), and both must test the same number of candidates, keep the
   same segments and rank the first 20 alike (by the near end of the interval). Then the
   partition (`--partition`, depth 3): pandas grows the same greedy tree (largest
   (p1 - p2)^2 / (v1 + v2) split, Bonferroni over the splits tried) and both must give the
   same groups with the same rates.
2. BG/NBD fit on C customers (default 1 million) simulated from the BG/NBD process with
   the paper's CDNOW parameters; the peer is `lifetimes` (BetaGeoFitter on the summary),
   and both must agree on the parameters.

Each side runs --runs times; the figures are medians of the commands' own timings
(`seconds` in their JSON: the search, or the BG/NBD fit, without loading the workspace) and of the
peer's calls, with the ratio.

    cargo build --release
    python bench/models.py                          # the issue's sizes
    python bench/models.py --profiles 100000 --customers 100000 --runs 1   # CI size
"""

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

Z = 1.959963984540054


def microseg(binary, data, *args):
    out = subprocess.run(
        [binary, "--data", data, *args], check=True, capture_output=True, text=True
    )
    return out.stdout


def discovery_data(n, seed):
    rng = np.random.default_rng(seed)
    dims = {}
    for i, k in enumerate([2, 3, 3, 4, 4, 5, 5, 6, 8, 10]):
        dims[f"d{i}"] = np.array([f"v{j}" for j in range(k)])[rng.integers(0, k, n)]
    # d2 is nested in d0 (as a tier in a plan): "n" exactly where d0 is v0, so
    # `d0 = "v0" and d2 = "n"` adds nobody to `d0 = "v0"`.
    dims["d2"] = np.where(dims["d0"] == "v0", "n", np.where(rng.random(n) < 0.5, "g", "s"))
    rate = np.full(n, 0.05)
    rate[(dims["d0"] == "v1") & (dims["d3"] == "v2")] = 0.09
    rate[(dims["d1"] == "v0") & (dims["d4"] == "v1") & (dims["d6"] == "v3")] = 0.15
    df = pd.DataFrame(dims)
    df.insert(0, "id", [f"p{i}" for i in range(n)])
    df["bought"] = rng.random(n) < rate
    return df


def wilson(k, n):
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * np.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return centre - half, centre + half


def pandas_discover(df, dims, depth, min_support, fdr):
    """The same search as `microseg discover`: every value combination of up to `depth`
    distinct dimensions with at least `min_support` members, less those whose members are
    a sub-combination's (equal counts: a conjunction's members are a subset), a score test
    against the base rate, Benjamini-Hochberg over every candidate tested; the kept ones
    ranked by the near end of their Wilson interval over the base, then support. Returns
    the number tested and the kept conditions in order, each a frozenset of `d = "v"`."""
    base = df["bought"].mean()
    sizes, rows = {}, []
    for d in range(1, depth + 1):
        for combo in itertools.combinations(dims, d):
            g = df.groupby(list(combo), observed=True)["bought"].agg(["size", "sum"])
            g = g[g["size"] >= min_support]
            for key, (n, k) in zip(g.index, g.to_numpy()):
                key = key if isinstance(key, tuple) else (key,)
                parts = tuple(zip(combo, key))
                sizes[parts] = n
                if d > 1 and any(
                    sizes.get(parts[:i] + parts[i + 1:]) == n for i in range(d)
                ):
                    continue
                rows.append((parts, n, k))
    n = np.array([r[1] for r in rows], dtype=float)
    k = np.array([r[2] for r in rows], dtype=float)
    p = k / n
    z = (p - base) / np.sqrt(base * (1 - base) / n)
    pv = np.array([math.erfc(abs(x) / math.sqrt(2)) for x in z])
    order = np.argsort(pv)
    m = len(pv)
    q = np.empty(m)
    running = 1.0
    for rank in range(m - 1, -1, -1):
        i = order[rank]
        running = min(running, pv[i] * m / (rank + 1))
        q[i] = min(running, 1.0)
    low, high = wilson(k, n)
    near = np.where(p >= base, low, high) / base
    kept = [i for i in range(m) if q[i] <= fdr]
    kept.sort(key=lambda i: (-near[i], -n[i]))
    ranked = [frozenset(f'{d} = "{v}"' for d, v in rows[i][0]) for i in kept]
    return m, ranked


def pandas_partition(df, dims, depth, min_support):
    """The greedy tree of `microseg discover --partition`: in each group, every
    `d = "v"` against the rest of the group with at least `min_support` on both sides; the
    split with the largest (p1 - p2)^2 / (p1 q1 / n1 + p2 q2 / n2), taken when its normal
    two-sided p is at most 0.05 / (splits tried); at most `depth` levels. The leaves as
    boolean masks."""
    y = df["bought"].to_numpy()
    columns = {d: df[d].to_numpy() for d in dims}
    leaves, todo = [], [(np.ones(len(df), bool), 0)]
    while todo:
        mask, level = todo.pop()
        best, tried = None, 0
        if level < depth:
            total_n, total_k = mask.sum(), y[mask].sum()
            for d in dims:
                values, inverse = np.unique(columns[d][mask], return_inverse=True)
                ns = np.bincount(inverse)
                ks = np.bincount(inverse, weights=y[mask])
                for v, n1, k1 in zip(values, ns, ks):
                    n2, k2 = total_n - n1, total_k - k1
                    if n1 < min_support or n2 < min_support:
                        continue
                    p1, p2 = k1 / n1, k2 / n2
                    spread = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
                    if spread <= 0:
                        continue
                    tried += 1
                    z2 = (p1 - p2) ** 2 / spread
                    if best is None or z2 > best[0]:
                        best = (z2, d, v)
        if best and math.erfc(math.sqrt(best[0]) / math.sqrt(2)) <= 0.05 / tried:
            inside = mask & (columns[best[1]] == best[2])
            todo.append((mask & ~inside, level + 1))
            todo.append((inside, level + 1))
        else:
            leaves.append(mask)
    return leaves


def condition_mask(df, text):
    """The rows meeting a printed group condition (`d = "v"`, `not d = "v"`, `and`)."""
    mask = np.ones(len(df), bool)
    if text is None:
        return mask
    for part in text.split(" and "):
        negated = part.startswith("not ")
        d, v = part.removeprefix("not ").split(" = ")
        hit = df[d].to_numpy() == v.strip('"')
        mask &= ~hit if negated else hit
    return mask


def bench_discovery(args, binary, tmp):
    df = discovery_data(args.profiles, args.seed)
    data = os.path.join(tmp, "discover")
    microseg(binary, data, "init")
    path = os.path.join(tmp, "profiles.csv")
    df.to_csv(path, index=False)
    t = time.perf_counter()
    microseg(binary, data, "import", "profiles", path, "--type", "bought=bool")
    print(f"  imported {len(df):,} profiles in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    dims = [c for c in df.columns if c.startswith("d")]
    ours, result = [], None
    for _ in range(args.runs):
        result = json.loads(
            microseg(
                binary, data, "discover", "--target", "bought = true", "--dims", ",".join(dims),
                "--max-depth", "3", "--min-support", "100", "--json",
            )
        )
        ours.append(result["seconds"])
    theirs, peer = [], None
    for _ in range(args.runs):
        t = time.perf_counter()
        peer = pandas_discover(df, dims, 3, 100, 0.05)
        theirs.append(time.perf_counter() - t)
    tested, ranked = peer
    kept = len(ranked)
    assert result["tested"] == tested, (result["tested"], tested)
    assert len(result["segments"]) == kept, (len(result["segments"]), kept)
    ours_ranked = [frozenset(s["condition"].split(" and ")) for s in result["segments"]]
    assert ours_ranked[:20] == ranked[:20], (ours_ranked[:20], ranked[:20])
    split = json.loads(
        microseg(
            binary, data, "discover", "--target", "bought = true", "--dims", ",".join(dims),
            "--max-depth", "3", "--min-support", "100", "--partition", "--json",
        )
    )
    groups = split["partition"]["groups"]
    leaves = pandas_partition(df, dims, 3, 100)
    theirs_keys = sorted((int(m.sum()), hash(m.tobytes())) for m in leaves)
    masks = [condition_mask(df, g["condition"]) for g in groups]
    ours_keys = sorted((int(m.sum()), hash(m.tobytes())) for m in masks)
    assert ours_keys == theirs_keys, (ours_keys, theirs_keys)
    y = df["bought"].to_numpy()
    for g, m in zip(groups, masks):
        assert g["support"] == m.sum() and abs(g["value"] - y[m].mean()) < 1e-12, g
    a, b = statistics.median(ours), statistics.median(theirs)
    print(
        f"discovery, 10 dims x depth 3 on {args.profiles:,} profiles: microseg {a:.3f} s, "
        f"pandas {b:.3f} s ({b / a:.1f}x); {tested:,} candidates tested, {kept:,} kept and "
        f"the first 20 ranked alike by both; partition: the same {len(groups)} groups"
    )


def simulate_bgnbd(c, seed, r=0.243, alpha=4.414, a=0.793, b=2.426):
    """Purchases (customer, day) from the BG/NBD process, time in weeks: first purchases
    uniform over the first 12 weeks, observed to week 78."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1 / alpha, c)
    p = rng.beta(a, b, c)
    t = rng.uniform(0, 12, c)
    customers, times = [np.arange(c)], [t.copy()]
    alive = np.ones(c, bool)
    while alive.any():
        idx = np.nonzero(alive)[0]
        # After each purchase the customer drops out with probability p.
        drop = rng.random(idx.size) < p[idx]
        alive[idx[drop]] = False
        idx = idx[~drop]
        t[idx] += rng.exponential(1 / lam[idx])
        ok = t[idx] <= 78
        alive[idx[~ok]] = False
        idx = idx[ok]
        customers.append(idx)
        times.append(t[idx].copy())
    customer = np.concatenate(customers)
    day = np.floor(np.concatenate(times) * 7).astype(int)
    return pd.DataFrame({"customer": customer, "day": day})


def bench_bgnbd(args, binary, tmp):
    from lifetimes import BetaGeoFitter

    tx = simulate_bgnbd(args.customers, args.seed)
    start = np.datetime64("2024-01-01")
    tx["date"] = (start + tx["day"].to_numpy().astype("timedelta64[D]")).astype(str)
    tx["id"] = "c" + tx["customer"].astype(str)
    tx["amount"] = 10.0 + (tx["day"] % 7)
    path = os.path.join(tmp, "orders.csv")
    tx[["id", "date", "amount"]].to_csv(path, index=False)
    data = os.path.join(tmp, "clv")
    microseg(binary, data, "init")
    microseg(binary, data, "import", "events", path, "--profile", "id", "--time", "date",
             "--event", "order_completed", "--revenue", "amount")
    end = str(start + np.timedelta64(78 * 7, "D"))
    ours, fit = [], None
    for _ in range(args.runs):
        fit = json.loads(
            microseg(binary, data, "clv", "fit", "--unit", "week", "--as-of", end, "--json")
        )
        ours.append(fit["seconds"]["bgnbd"])
    # The peer's input: the same summary (distinct days, weeks), as lifetimes'
    # summary_data_from_transaction_data computes it.
    days = tx.drop_duplicates(["customer", "day"]).groupby("customer")["day"]
    first, last, count = days.min(), days.max(), days.count()
    x = (count - 1).to_numpy()
    t_x = ((last - first) / 7).to_numpy()
    big_t = ((78 * 7 - first) / 7).to_numpy()
    theirs, bgf = [], None
    for _ in range(args.runs):
        bgf = BetaGeoFitter()
        t = time.perf_counter()
        bgf.fit(x, t_x, big_t)
        theirs.append(time.perf_counter() - t)
    ref = bgf.params_
    ours_p = fit["bgnbd"]
    for name in ["r", "alpha", "a", "b"]:
        assert abs(ours_p[name] / ref[name] - 1) < 0.01, (name, ours_p[name], ref[name])
    a, b = statistics.median(ours), statistics.median(theirs)
    print(
        f"BG/NBD fit on {len(x):,} customers ({len(tx):,} orders): microseg {a:.3f} s, "
        f"lifetimes {b:.3f} s ({b / a:.1f}x); r {ours_p['r']:.4f}/{ref['r']:.4f}, "
        f"alpha {ours_p['alpha']:.4f}/{ref['alpha']:.4f}, a {ours_p['a']:.4f}/{ref['a']:.4f}, "
        f"b {ours_p['b']:.4f}/{ref['b']:.4f} (microseg/lifetimes)"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default="target/release/microseg")
    ap.add_argument("--profiles", type=int, default=1_000_000)
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--only", choices=["discovery", "bgnbd"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "discovery"):
            bench_discovery(args, args.binary, tmp)
        if args.only in (None, "bgnbd"):
            bench_bgnbd(args, args.binary, tmp)


if __name__ == "__main__":
    main()
