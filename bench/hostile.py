#!/usr/bin/env python3
"""Memory of `microseg serve` under what a write key can send (issue 19), against
127.0.0.1 only, bounded in time.

1. Makes a demo shop (--customers, default 100,000) in a temporary directory, or copies
   --data, and starts `microseg serve` on it with a write key and an admin token.
2. Samples the server's resident memory (VmRSS) after each probe:
   - traits: identify calls carrying thousands of new trait names on existing customers
     (the issue's probe: 340 MB -> 1.65 GB before the limits and sparse traits);
   - future: events dated in 2099;
   - idle: 500 connections that send nothing (closed after [server] header_timeout_seconds);
   - names: calls with thousands of new event names.
3. Stops the server, then times `microseg import profiles` of a one-row CSV with 100,000
   columns (150 s and 12.9 GB for `segment size` before: now refused up front).

Prints one JSON document. Usage:
    python bench/hostile.py [--binary target/release/microseg] [--customers 100000]
"""

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_sampled(command):
    """Runs a command, sampling its resident memory every 10 ms: exit code, seconds, peak
    VmRSS and the start of what it printed."""
    started = time.monotonic()
    p = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while p.poll() is None:
        try:
            peak = max(peak, rss_mib(p.pid))
        except OSError:
            pass
        time.sleep(0.01)
    return {
        "exit": p.returncode,
        "seconds": round(time.monotonic() - started, 2),
        "peak_rss_mib": round(peak, 1),
        "stdout": p.stdout.read().strip()[:120],
        "stderr": p.stderr.read().strip()[:200],
    }


def post(addr, path, body, auth):
    host, port = addr.rsplit(":", 1)
    data = json.dumps(body).encode()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n"
        )
        s.sendall(head.encode() + data)
        reply = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    return int(reply[9:12])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/microseg")
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--data", help="a workspace to copy instead of making a demo shop")
    ap.add_argument("--traits-limit", type=int,
                    help="[limits] traits for the run (default: the workspace's, 500); raise "
                         "it to see what sparse traits cost when every name is taken")
    args = ap.parse_args()
    m = os.path.abspath(args.binary)
    work = tempfile.mkdtemp(prefix="microseg-hostile-")
    data = os.path.join(work, "ws")
    try:
        if args.data:
            shutil.copytree(args.data, data)
        else:
            subprocess.run(
                [m, "demo", data, "--customers", str(args.customers)],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        if args.traits_limit:
            config = os.path.join(data, "microseg.toml")
            with open(config) as f:
                text = f.read()
            if "[limits]" in text:
                text = text.replace("traits = 500\n", f"traits = {args.traits_limit}\n")
            else:
                text += f"\n[limits]\ntraits = {args.traits_limit}\n"
            with open(config, "w") as f:
                f.write(text)
        key = lambda kind: json.loads(
            subprocess.run([m, "--data", data, "key", "create", kind],
                           check=True, capture_output=True, text=True).stdout)["key"]
        write = "Basic " + base64.b64encode((key("write") + ":").encode()).decode()
        admin = "Bearer " + key("admin")
        server = subprocess.Popen(
            [m, "--data", data, "serve", "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=open(os.path.join(work, "serve.log"), "w"), text=True,
        )
        line = server.stdout.readline()
        if not line.startswith("listening on "):
            sys.exit(f"error: the server did not start: {line!r}")
        addr = line.split()[-1]
        out = {"customers": args.customers, "traits_limit": args.traits_limit or 500,
               "rss_mib": {"ready": round(rss_mib(server.pid), 1)}}
        peak = rss_mib(server.pid)

        # Probe: 2,000 identify calls with 50 new trait names each (100,000 names).
        statuses = {}
        for r in range(2000):
            traits = {f"probe_{r}_{i}": f"value {i}" for i in range(50)}
            call = {"batch": [{"type": "identify", "userId": f"c{r % 5000}", "traits": traits}]}
            s = post(addr, "/v1/batch", call, write)
            statuses[s] = statuses.get(s, 0) + 1
            peak = max(peak, rss_mib(server.pid)) if r % 100 == 0 else peak
        out["traits"] = {"requests": statuses, "rss_mib": round(rss_mib(server.pid), 1)}

        # Probe: 20,000 events dated 2099, in batches of 100.
        statuses = {}
        for r in range(200):
            batch = [{"type": "track", "userId": f"c{i}", "event": "page_viewed",
                      "timestamp": "2099-01-01T00:00:00Z"} for i in range(100)]
            s = post(addr, "/v1/batch", {"batch": batch}, write)
            statuses[s] = statuses.get(s, 0) + 1
        out["future"] = {"requests": statuses, "rss_mib": round(rss_mib(server.pid), 1)}

        # Probe: 1,000 calls with 50 new event names each.
        statuses = {}
        for r in range(1000):
            batch = [{"type": "track", "userId": "c1", "event": f"probe_event_{r}_{i}"}
                     for i in range(50)]
            s = post(addr, "/v1/batch", {"batch": batch}, write)
            statuses[s] = statuses.get(s, 0) + 1
        out["event_names"] = {"requests": statuses, "rss_mib": round(rss_mib(server.pid), 1)}

        # Probe: 500 connections that send nothing.
        host, port = addr.rsplit(":", 1)
        idle = [socket.create_connection((host, int(port))) for _ in range(500)]
        time.sleep(12)
        closed = 0
        for s in idle:
            s.settimeout(0.5)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except OSError:
                pass
            s.close()
        out["idle"] = {"opened": 500, "closed_after_12s": closed,
                       "rss_mib": round(rss_mib(server.pid), 1)}
        peak = max(peak, rss_mib(server.pid))
        out["rss_mib"]["after_probes"] = round(rss_mib(server.pid), 1)
        out["rss_mib"]["peak_sampled"] = round(peak, 1)
        server.terminate()
        server.wait(timeout=120)

        # A command after the probes: reading a trait writes the profiles snapshot back,
        # every trait column of the workspace (the probes' included) one at a time.
        out["command_after"] = run_sampled(
            [m, "--data", data, "segment", "size", "probe_0_0 exists"])

        # A one-row CSV with 100,000 columns.
        wide = os.path.join(work, "wide.csv")
        with open(wide, "w") as f:
            f.write("id," + ",".join(f"c{i}" for i in range(100_000)) + "\n")
            f.write("u1," + ",".join(str(i) for i in range(100_000)) + "\n")
        out["wide_csv"] = run_sampled([m, "--data", data, "import", "profiles", wide])
        print(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
