#!/usr/bin/env python3
"""Load benchmark of `microseg serve` (issue 5), against 127.0.0.1 only, bounded in time.

1. Makes a fresh workspace with a write key, an admin token and five streaming segments
   (a windowed count, a windowed `did` with a property filter, an absence sequence, a
   metric with in_segment, and `probed` for the latency probes), starts `microseg serve`
   on a free port and waits for `listening on`.
2. Runs `microseg bench ingest` --runs times: --connections keep-alive connections post
   /v1/batch requests of --batch generated events for --seconds; a probe thread sends one
   event for a fresh user 20 times a second and a reader follows /v1/changes, timing each
   probe from its 200 (committed: "accepted") to its `entered` change.
3. Samples the server's resident memory (/proc/PID/status VmRSS) and the size of the
   store's write-ahead log (store.sqlite-wal) every second throughout.
4. Creates one more segment over HTTP with everything above stored, and times the answer
   (the streaming state is rebuilt from every stored event while ingestion waits).
5. Peer, in this script: the same number of event rows of the same shape inserted by
   Python's sqlite3 into a WAL database with synchronous=FULL, 50,000 rows per
   transaction (microseg's largest group commit): the durable-storage floor without HTTP,
   JSON or evaluation. Ratio = microseg events/s over the peer's rows/s.

    cargo build --release
    python bench/load.py                              # 3 runs of 60 s
    python bench/load.py --runs 1 --seconds 600       # memory over 10 minutes

Prints a table, and with --json one JSON document.
"""

import argparse
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEGMENTS = [
    ("probed", "did(Probe)"),
    ("buyers", 'count("Order Completed", within 7d) >= 2'),
    ("bikes_viewer", 'did("Product Viewed" where category = "bikes") within 1d'),
    ("browse_no_buy", '"Product Viewed" then not "Order Completed" within 1h'),
    ("loyal", 'orders >= 3 and in_segment("buyers")'),
]


def run(binary, *args, **kw):
    out = subprocess.run([binary, *args], check=True, capture_output=True, text=True, **kw)
    return out.stdout


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peer_rows_per_second(rows, work):
    """Python sqlite3: `rows` event rows, durable, 50,000 per transaction."""
    path = os.path.join(work, "peer.sqlite")
    if os.path.exists(path):
        os.remove(path)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = FULL")
    con.execute(
        "CREATE TABLE events(id INTEGER PRIMARY KEY, profile_id INTEGER NOT NULL, time INTEGER NOT NULL,"
        " name_id INTEGER NOT NULL, revenue REAL, properties TEXT, message_id TEXT)"
    )
    rng = random.Random(1)
    now = int(time.time() * 1000)
    group = 50_000
    template = [
        (
            rng.randrange(100_000),
            now,
            rng.randrange(4),
            None,
            '{"category":"bikes","price":%d.5}' % rng.randrange(200),
            "peer-%d" % i,
        )
        for i in range(group)
    ]
    started = time.perf_counter()
    done = 0
    while done < rows:
        n = min(group, rows - done)
        batch = [(p, t, e, r, props, f"{m}-{done}") for (p, t, e, r, props, m) in template[:n]]
        con.execute("BEGIN")
        con.executemany(
            "INSERT INTO events(profile_id, time, name_id, revenue, properties, message_id) VALUES (?,?,?,?,?,?)",
            batch,
        )
        con.execute("COMMIT")
        done += n
    seconds = time.perf_counter() - started
    con.close()
    return rows / seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "microseg"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60)
    # 8 senders: every request waits for the group commit that holds it, so with 4 the
    # server sat idle a quarter of the time between commits (1.5 of 2 cores busy).
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--peer-rows", type=int, default=2_000_000)
    ap.add_argument("--work", help="workspace directory (default: a temporary one, removed)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = args.work or tempfile.mkdtemp(prefix="microseg-load-")
    data = os.path.join(work, "ws")
    if os.path.exists(data):
        shutil.rmtree(data)
    m = args.binary
    run(m, "init", data)
    write_key = json.loads(run(m, "--data", data, "key", "create", "write"))["key"]
    admin_key = json.loads(run(m, "--data", data, "key", "create", "admin"))["key"]
    for name, condition in SEGMENTS:
        run(m, "--data", data, "segment", "create", name, condition)

    server = subprocess.Popen(
        [m, "--data", data, "serve", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=open(os.path.join(work, "serve.log"), "w"),
        text=True,
    )
    samples = []  # (seconds since start, RSS MiB)
    wal = os.path.join(data, "store.sqlite-wal")
    wal_mib = []
    stop = threading.Event()
    try:
        line = server.stdout.readline()
        found = re.search(r"listening on (\S+)", line)
        if not found:
            sys.exit(f"error: the server did not start: {line!r}; see {work}/serve.log")
        addr = found.group(1)
        t0 = time.monotonic()

        def sample():
            while not stop.is_set():
                samples.append((time.monotonic() - t0, rss_mib(server.pid)))
                try:
                    wal_mib.append(os.path.getsize(wal) / 2**20)
                except OSError:
                    pass
                stop.wait(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        runs = []
        for i in range(args.runs):
            out = run(
                m, "bench", "ingest", "--server", addr, "--write-key", write_key,
                "--admin-key", admin_key, "--seconds", str(args.seconds),
                "--connections", str(args.connections), "--batch", str(args.batch),
                "--users", str(args.users), "--seed", str(i + 1), "--json",
            )
            r = json.loads(out)
            runs.append(r)
            print(
                f"run {i + 1}: {r['events_per_second_mean']:,.0f} events/s, "
                f"accepted→entered p99 {r['accepted_to_entered_ms']['p99']:.1f} ms, "
                f"RSS {samples[-1][1]:,.0f} MiB",
                file=sys.stderr,
            )
        # Memory figures are of the ingestion runs; the rebuild below is reported apart.
        stop.set()
        sampler.join()
        rebuild_samples = []
        stop_rebuild = threading.Event()

        def sample_rebuild():
            while not stop_rebuild.is_set():
                rebuild_samples.append(rss_mib(server.pid))
                stop_rebuild.wait(1.0)

        rebuild_sampler = threading.Thread(target=sample_rebuild, daemon=True)
        rebuild_sampler.start()
        # A segment created over HTTP with everything above stored: how long the rebuild
        # (backfill from every stored event) holds ingestion.
        import urllib.request
        request = urllib.request.Request(
            f"http://{addr}/v1/segments",
            data=json.dumps({"name": "late_buyers", "condition": 'count("Order Completed", within 1d) >= 5'}).encode(),
            headers={"Authorization": f"Bearer {admin_key}", "Content-Type": "application/json"},
            method="POST",
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=3600) as answer:
            created = json.load(answer)
        create_seconds = time.perf_counter() - started
        print(f"segment created over HTTP in {create_seconds:.1f} s (size {created['size']})", file=sys.stderr)
        stop_rebuild.set()
        rebuild_sampler.join()
    finally:
        server.terminate()
        server.wait(timeout=120)

    peers = [peer_rows_per_second(args.peer_rows, work) for _ in range(args.runs)]
    eps = statistics.median(r["events_per_second_mean"] for r in runs)
    peer = statistics.median(peers)
    p99 = statistics.median(r["accepted_to_entered_ms"]["p99"] for r in runs)
    p50 = statistics.median(r["accepted_to_entered_ms"]["p50"] for r in runs)
    sent_p99 = statistics.median(r["sent_to_entered_ms"]["p99"] for r in runs)
    req_p99 = statistics.median(r["request_ms"]["p99"] for r in runs)
    rss = [s[1] for s in samples]
    # Memory after the first minute and at the end, and its growth over the second half.
    after_1min = next((r for t, r in samples if t >= 60), rss[0] if rss else float("nan"))
    half = [s for s in samples if s[0] >= samples[-1][0] / 2] if samples else []
    growth = (
        (half[-1][1] - half[0][1]) / ((half[-1][0] - half[0][0]) / 60)
        if len(half) > 1 and half[-1][0] > half[0][0]
        else float("nan")
    )
    report = {
        "runs": args.runs,
        "seconds_per_run": args.seconds,
        "connections": args.connections,
        "batch": args.batch,
        "events_per_second_median": eps,
        "events_per_second_runs": [r["events_per_second_mean"] for r in runs],
        "peer_sqlite_rows_per_second_median": peer,
        "ratio_to_peer": eps / peer,
        "accepted_to_entered_ms_p50_median": p50,
        "accepted_to_entered_ms_p99_median": p99,
        "sent_to_entered_ms_p99_median": sent_p99,
        "request_ms_p99_median": req_p99,
        "probes_without_change": sum(r["probes_without_change"] for r in runs),
        "overloaded_503": sum(r["overloaded_503"] for r in runs),
        "rss_mib_after_1_min": after_1min,
        "rss_mib_end": rss[-1] if rss else None,
        "rss_mib_max": max(rss) if rss else None,
        "rss_mib_per_min_second_half": growth,
        "wal_mib_max": max(wal_mib) if wal_mib else None,
        "events_stored": sum(r["events_acknowledged"] for r in runs),
        "segment_create_seconds": create_seconds,
        "rss_mib_max_during_create": max(rebuild_samples) if rebuild_samples else None,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{'measurement':44} {'value':>14}")
        for k in [
            "events_per_second_median",
            "peer_sqlite_rows_per_second_median",
            "ratio_to_peer",
            "accepted_to_entered_ms_p50_median",
            "accepted_to_entered_ms_p99_median",
            "sent_to_entered_ms_p99_median",
            "request_ms_p99_median",
            "probes_without_change",
            "overloaded_503",
            "rss_mib_after_1_min",
            "rss_mib_end",
            "rss_mib_max",
            "rss_mib_per_min_second_half",
            "wal_mib_max",
            "events_stored",
            "segment_create_seconds",
            "rss_mib_max_during_create",
        ]:
            v = report[k]
            print(f"{k:44} {v:>14,.2f}" if isinstance(v, float) else f"{k:44} {v:>14,}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
