#!/usr/bin/env python3
"""Runs orchestration_bench over the configurations recorded in bench/README.md.

The machine is shared, so before each run this waits (up to --quiet-wait-s) until the other
processes use less than --quiet-max of the CPUs, and a run during which they used more than
that (the bench reports it as neighbours_cpu_share) is repeated, up to --attempts times. Each
configuration is run --repeat times; the median run (by transitions/s) is reported.

Usage: python3 bench/run_matrix.py build-bench/bench/orchestration_bench [--repeat 3] [--only A]
Prints one JSON line per accepted run to stderr and a markdown table per group to stdout.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

GROUPS = {
    "A": ("open loop, 20,000 executions x 10 steps started up front",
          [["--fsync", "--partitions", str(p)] for p in (1, 2, 4)] +
          [["--no-fsync", "--partitions", str(p)] for p in (1, 2, 4)]),
    "B": ("acker threading, fsync on, open loop",
          [["--partitions", str(p), "--ackers", a] for p in (2, 4)
           for a in ("partition", "single")]),
    "C": ("closed loop: executions in flight, 2 partitions",
          [["--in-flight", str(n), "--executions", str(e)] + f
           for f in (["--fsync"], ["--no-fsync"])
           for n, e in ((10, 2000), (100, 10000), (1000, 20000), (5000, 40000))]),
    "D": ("orchestrator batch size (inputs per stream per batch), fsync on, 2 partitions",
          [["--orchestrator-batch", str(b)] for b in (128, 512, 2048)]),
    # Emulated slower disks: every fdatasync takes at least N us (bench/slow_fsync.cc).
    "E": ("fdatasync floor emulated with libslow_fsync.so, 2 partitions",
          [[f"FDATASYNC_US={us}"] + a for us in (1000, 4000)
           for a in (["--in-flight", "100", "--executions", "4000"],
                     ["--in-flight", "1000", "--executions", "10000"], [])]),
}


def command(binary, args):
    """Splits FDATASYNC_US=N off `args` into the LD_PRELOAD environment of the shim."""
    env = dict(os.environ)
    rest = []
    for a in args:
        if a.startswith("FDATASYNC_US="):
            env["LD_PRELOAD"] = os.path.join(os.path.dirname(binary), "libslow_fsync.so")
            env["AUTERITY_BENCH_FDATASYNC_US"] = a.split("=", 1)[1]
        else:
            rest.append(a)
    return [binary, "--json"] + rest, env


def machine_busy_share(seconds=1.0):
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
        return busy, sum(v[:8])
    b0, t0 = read()
    time.sleep(seconds)
    b1, t1 = read()
    return (b1 - b0) / max(1, t1 - t0)


def wait_quiet(limit, wait_s):
    deadline = time.time() + wait_s
    while time.time() < deadline:
        if machine_busy_share() < limit:
            return True
    return False


# A run is repeated if the disk probe before it was this much slower than the disk's idle
# ~50 us (or the emulated floor): other processes' IO was in the way.
disk_slack_us = 1000


def run_once(binary, args, quiet_max, attempts, quiet_wait_s):
    best = None
    for _ in range(attempts):
        wait_quiet(quiet_max, quiet_wait_s)
        cmd, env = command(binary, args)
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            sys.exit(f"{' '.join(args)} failed:\n{out.stdout}{out.stderr}")
        line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
        r = json.loads(line)
        r["args"] = " ".join(args)
        print(json.dumps(r), file=sys.stderr, flush=True)
        if best is None or (r["neighbours_cpu_share"] + r["fdatasync_us"]["before"] / 1e4 <
                            best["neighbours_cpu_share"] + best["fdatasync_us"]["before"] / 1e4):
            best = r
        floor = next((int(a.split("=")[1]) for a in args if a.startswith("FDATASYNC_US=")), 0)
        disk_quiet = max(r["fdatasync_us"].values()) < floor + disk_slack_us
        if r["neighbours_cpu_share"] <= quiet_max and disk_quiet:
            break
    return best


def row(args, runs):
    runs = sorted(runs, key=lambda r: r["transitions_per_s"])
    m = runs[len(runs) // 2]
    tps = [r["transitions_per_s"] for r in runs]
    lat = m["latency_ms"]
    orch = m["cpu_share"]["orchestrator"] * 100
    return (f"| `{args}` | {m['transitions_per_s']:,.0f} | {min(tps):,.0f}–{max(tps):,.0f} "
            f"| {lat['p50']:.1f} / {lat['p90']:.1f} / {lat['p99']:.1f} / {lat['max']:.1f} "
            f"| {m['orchestrator_commits_per_s']:,.0f} | {m['inputs_per_commit']:.0f} / "
            f"{m['records_per_commit']:.0f} | {m['commit_ms']:.2f} | {m['acker_commits_per_s']:,.0f}"
            f" x {m['acks_per_acker_commit']:.0f} | {orch:.0f}% | "
            f"{max(r['neighbours_cpu_share'] for r in runs) * 100:.0f}% "
            f"| {statistics.median(r['fdatasync_us']['before'] for r in runs):.0f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--attempts", type=int, default=4)
    ap.add_argument("--quiet-max", type=float, default=0.10)
    ap.add_argument("--quiet-wait-s", type=float, default=60)
    ap.add_argument("--only", default="ABCDE")
    a = ap.parse_args()
    for g in a.only:
        title, configs = GROUPS[g]
        print(f"\n{g}. {title}\n")
        print("| flags | transitions/s (median) | range | latency ms p50 / p90 / p99 / max "
              "| orch. commits/s | inputs / records per commit | commit ms | acker commits/s x acks "
              "| orchestrator CPU | neighbours CPU (max) | disk fdatasync us |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for args in configs:
            runs = [run_once(a.binary, args, a.quiet_max, a.attempts, a.quiet_wait_s)
                    for _ in range(a.repeat)]
            print(row(" ".join(args), runs), flush=True)


if __name__ == "__main__":
    main()
