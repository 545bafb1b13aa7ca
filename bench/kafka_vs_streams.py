#!/usr/bin/env python3
"""The engine against Kafka Streams on one fresh broker, alternating (bench/KAFKA.md).

Builds the Kafka Streams baseline (bench/kstreams/build.sh), starts ONE fresh 1-node broker
through tests/kafka/broker.sh on a port in 19000-19798, then, for --repeat rounds, at each
--in-flight: runs build/bench/kafka_bench (the engine; AUTERITY_KAFKA_ATTACH makes it use this
broker instead of starting its own) and the Kafka Streams baseline at each --streams-interval
(commit.interval.ms, Streams' other settings at their defaults) and at each --tuned-interval
with TUNED_PROPS (below), in alternating order (reversed every other round). Beside each run it
records the machine's state: load average, /proc/stat busy % over the run, other processes'
CPU share, and a raw librdkafka transaction-rate probe (kafka_bench --no-engine) just before.
Prints the ratios (engine / Streams: transitions/s and p99) first, the absolute figures after.
Stops by itself (every child has a timeout) and stops and deletes the broker at the end, also
on Ctrl-C/SIGTERM (broker.sh --owner stops it too if this process is killed).

  bench/kafka_vs_streams.py --kafka-bench build/bench/kafka_bench --warmup-s 5 --seconds 10
"""

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BROKER_SH = REPO / "tests" / "kafka" / "broker.sh"
BUILD_SH = REPO / "bench" / "kstreams" / "build.sh"
STREAMS_MAIN = "dev.auterity.bench.KStreamsBench"
PORT_LO, PORT_SLOTS = 19000, 400  # broker and controller ports: 19000 + 2k, 19000 + 2k + 1
BROKER_START_ATTEMPTS = 3
RUN_SLACK_S = 90  # beyond warm-up + window: process start, topics, drain, close
# "tuned": what a Streams user after low latency sets. poll.ms (default 100) bounds how long a
# stream thread waits in poll() with its output uncommitted (it commits after the poll returns);
# fetch.max.wait.ms 10 as the engine's readers (engine/kafka_log.cc); max.task.idle.ms -1: a
# task never waits for its other input partition (ingress and acks need no time alignment).
TUNED_PROPS = ["poll.ms=10", "consumer.fetch.max.wait.ms=10", "max.task.idle.ms=-1"]
RAW_LINE = re.compile(r"raw txn (?P<name>.+?)\s+(?P<txn>[\d.]+) txn/s\s+(?P<rec>\d+) records/s"
                      r"\s+txn p50\s+(?P<p50>[\d.]+) p99\s+(?P<p99>[\d.]+) ms")


def log(msg):
    print(f"kafka_vs_streams: {msg}", file=sys.stderr, flush=True)


def busy_ticks():
    """(busy, total) USER_HZ ticks of the "cpu" line of /proc/stat (busy as kafka_bench's)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7], sum(v)


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def last_json(out):
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None


class Broker:
    def __init__(self):
        self.dir = None
        self.bootstrap = None
        self.pid = None

    def start(self):
        for attempt in range(1, BROKER_START_ATTEMPTS + 1):
            port = PORT_LO + 2 * random.randrange(PORT_SLOTS)
            p = subprocess.run([str(BROKER_SH), "start", "--port-base", str(port),
                                "--owner", str(os.getpid())],
                               capture_output=True, text=True, timeout=300)
            env = dict(re.findall(r"^(BOOTSTRAP|DIR)=(.*)$", p.stdout, re.M))
            if p.returncode == 0 and "DIR" in env:
                self.dir, self.bootstrap = env["DIR"], env["BOOTSTRAP"]
                self.pid = int(Path(self.dir, "node1.pid").read_text().strip())
                log(f"broker {self.bootstrap} in {self.dir} (pid {self.pid})")
                return
            log(f"broker start on port {port} failed (attempt {attempt}):\n{p.stderr[-2000:]}")
        raise SystemExit("kafka_vs_streams: no broker")

    def stop(self):
        if self.dir:
            subprocess.run([str(BROKER_SH), "stop", "--dir", self.dir, "--rm"],
                           capture_output=True, timeout=120)
            log(f"broker in {self.dir} stopped and deleted")
            self.dir = None


def run_child(cmd, env, timeout_s):
    """Runs cmd; returns (rc, stdout, stderr). A child past its timeout is killed."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        return -1, e.stdout or "", f"timed out after {timeout_s} s"


def raw_probe(a, broker, env):
    """librdkafka's raw transactional rate right now: kafka_bench --no-engine (one producer)."""
    rc, out, err = run_child([a.kafka_bench, "--no-engine", "--raw-seconds", str(a.raw_seconds),
                              "--raw-records", str(a.raw_records), "--raw-producers", "1"],
                             env, 3 * (a.raw_seconds + 10) + RUN_SLACK_S)
    rows = {m["name"].strip(): float(m["txn"]) for m in RAW_LINE.finditer(out)}
    if rc != 0 or not rows:
        log(f"raw probe failed (rc {rc}): {err[-500:]}")
    key = f"{a.raw_records} rec + offsets"
    return {"txn_per_s": rows.get(key), "alternating_txn_per_s": rows.get(key + ", 2 alternating")}


def run_one(a, broker, env, classpath, side, in_flight, interval, tuned):
    state = {"loadavg": loadavg(), "raw": raw_probe(a, broker, env) if a.raw_seconds else {}}
    timeout_s = a.warmup_s + a.seconds + RUN_SLACK_S
    common = ["--in-flight", str(in_flight), "--warmup-s", str(a.warmup_s),
              "--seconds", str(a.seconds), "--timeout", str(a.warmup_s + a.seconds + 60),
              "--json"]
    if side == "engine":
        cmd = [a.kafka_bench, "--raw-seconds", "0", *a.engine_arg, *common]
    else:
        cmd = ["java", *a.jvm_arg, "-cp", classpath, STREAMS_MAIN, "--bootstrap",
               broker.bootstrap, "--broker-pids", str(broker.pid),
               "--commit-interval-ms", str(interval), *common]
        for prop in TUNED_PROPS if tuned else []:
            cmd += ["--streams-prop", prop]
    b0 = busy_ticks()
    started = time.time()
    rc, out, err = run_child(cmd, env, timeout_s)
    b1 = busy_ticks()
    state["busy_pct"] = 100.0 * (b1[0] - b0[0]) / max(1, b1[1] - b0[1])
    res = last_json(out) if rc == 0 else None
    if res is None:
        log(f"{side} at {in_flight} failed (rc {rc}): {(out + err)[-1500:]}")
    return {"side": side, "in_flight": in_flight, "interval": interval, "tuned": tuned, "rc": rc,
            "seconds": time.time() - started, "result": res, "state": state,
            "command": " ".join(cmd)}


def variant_name(interval, tuned):
    return f"Streams, commit.interval.ms {interval}" + (", tuned" if tuned else "")


def label(r):
    if r["side"] == "engine":
        return "engine"
    return f"Streams {r['interval']} ms" + (", tuned" if r["tuned"] else "")


def fmt_range(xs, f="{:,.0f}"):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    lo, hi = min(xs), max(xs)
    return f.format(lo) if len(xs) == 1 or lo == hi else f"{f.format(lo)}–{f.format(hi)}"


def report(a, runs):
    ok = [r for r in runs if r["result"]]
    print("\n## Ratios: engine / Kafka Streams (same broker, same run)\n")
    print("transitions/s: > 1 means the engine is faster; p99: < 1 means the engine's is lower.")
    print("Median of each side's runs; in brackets the range of the per-round ratios.\n")
    print("| in flight | against | transitions/s ratio | p99 ratio | runs (engine, Streams) |")
    print("|---:|---|---:|---:|---:|")
    for n in a.in_flight:
        eng = [r for r in ok if r["side"] == "engine" and r["in_flight"] == n]
        for ci, tuned in streams_variants(a):
            st = [r for r in ok if r["side"] == "streams" and r["in_flight"] == n
                  and r["interval"] == ci and r["tuned"] == tuned]
            if not eng or not st:
                print(f"| {n:,} | {variant_name(ci, tuned)} | — | — "
                      f"| {len(eng)}, {len(st)} |")
                continue
            t = statistics.median(r["result"]["transitions_per_s"] for r in eng) / max(
                1e-9, statistics.median(r["result"]["transitions_per_s"] for r in st))
            p = statistics.median(r["result"]["latency_ms"]["p99"] for r in eng) / max(
                1e-9, statistics.median(r["result"]["latency_ms"]["p99"] for r in st))
            pairs = [(e, s) for e in eng for s in st if e["round"] == s["round"]]
            tr = [e["result"]["transitions_per_s"] / max(1e-9, s["result"]["transitions_per_s"])
                  for e, s in pairs]
            pr = [e["result"]["latency_ms"]["p99"] / max(1e-9, s["result"]["latency_ms"]["p99"])
                  for e, s in pairs]
            print(f"| {n:,} | {variant_name(ci, tuned)} | **{t:.2f}×** "
                  f"({fmt_range(tr, '{:.2f}')}) | **{p:.2f}×** ({fmt_range(pr, '{:.2f}')}) "
                  f"| {len(eng)}, {len(st)} |")
    print("\n## Absolute figures, in the order run, with the machine's state\n")
    print("| round | in flight | side | transitions/s | p50 / p99 ms | commits/s | commit ms "
          "| load avg | busy % | others % | raw txn/s (alt. 2) |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        s = r["state"]
        raw = s.get("raw") or {}
        rawtxt = fmt_range([raw.get("txn_per_s")], "{:.0f}") + " (" + fmt_range(
            [raw.get("alternating_txn_per_s")], "{:.0f}") + ")"
        x = r["result"]
        if not x:
            print(f"| {r['round']} | {r['in_flight']:,} | {label(r)} | failed (rc {r['rc']}) "
                  f"| | | | {s['loadavg']:.1f} | {s['busy_pct']:.0f} | | {rawtxt} |")
            continue
        others = x["cpu_share"].get("others", 0) * 100
        print(f"| {r['round']} | {r['in_flight']:,} | {label(r)} | {x['transitions_per_s']:,.0f} "
              f"| {x['latency_ms']['p50']:.1f} / {x['latency_ms']['p99']:.1f} "
              f"| {x['commits_per_s']:.1f} | {x['commit_ms']:.2f} | {s['loadavg']:.1f} "
              f"| {s['busy_pct']:.0f} | {others:.0f} | {rawtxt} |")
    print("\ncommit ms: engine = orchestrator commit incl. its transaction (kafka_bench "
          "commit_ms); Streams = producer txn-commit-time per Streams commit. raw: one "
          f"transactional producer, {a.raw_records} records + offsets per transaction "
          f"({a.raw_seconds} s), just before the run; alt. 2 = two producers taking turns. "
          f"tuned: {' '.join(TUNED_PROPS)}.")


def streams_variants(a):
    return [(ci, False) for ci in a.streams_interval] + [(ci, True) for ci in a.tuned_interval]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kafka-bench", default=str(REPO / "build" / "bench" / "kafka_bench"))
    ap.add_argument("--in-flight", type=lambda s: [int(x) for x in s.split(",")],
                    default=[100, 1000])
    ap.add_argument("--streams-interval", type=lambda s: [int(x) for x in s.split(",") if x],
                    default=[100, 10], help="Kafka Streams commit.interval.ms values")
    ap.add_argument("--tuned-interval", type=lambda s: [int(x) for x in s.split(",") if x],
                    default=[10], help="commit.interval.ms values of the tuned Streams runs")
    ap.add_argument("--repeat", type=int, default=2, help="rounds (each side this many times)")
    ap.add_argument("--warmup-s", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--raw-seconds", type=int, default=2, help="per raw variant; 0: no probe")
    ap.add_argument("--raw-records", type=int, default=150, help="records per raw transaction")
    ap.add_argument("--engine-arg", action="append", default=[],
                    help="extra kafka_bench argument (repeatable, e.g. --engine-arg=--acker=txn)")
    ap.add_argument("--jvm-arg", action="append", default=[], help="extra JVM argument")
    ap.add_argument("--out", help="also write every run as JSON to this file")
    a = ap.parse_args()
    if not Path(a.kafka_bench).is_file():
        raise SystemExit(f"kafka_vs_streams: no {a.kafka_bench} (ninja -C build kafka_bench)")
    if a.repeat < 1 or not a.in_flight or not (a.streams_interval or a.tuned_interval):
        raise SystemExit("kafka_vs_streams: --repeat >= 1 and non-empty lists needed")

    b = subprocess.run([str(BUILD_SH)], capture_output=True, text=True, timeout=1800)
    if b.returncode != 0:
        raise SystemExit(f"kafka_vs_streams: {BUILD_SH} failed:\n{b.stderr[-3000:]}")
    classpath = b.stdout.strip().splitlines()[-1].split("=", 1)[1]

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    broker = Broker()
    runs = []
    try:
        broker.start()
        env = dict(os.environ, AUTERITY_KAFKA_ATTACH=broker.dir)
        sides = [("engine", 0, False)] + [("streams", ci, t) for ci, t in streams_variants(a)]
        for rnd in range(1, a.repeat + 1):
            for n in a.in_flight:
                order = sides if rnd % 2 else list(reversed(sides))
                for side, ci, tuned in order:
                    log(f"round {rnd}, {n} in flight: "
                        + (variant_name(ci, tuned) if side == "streams" else "engine"))
                    r = run_one(a, broker, env, classpath, side, n, ci, tuned)
                    r["round"] = rnd
                    runs.append(r)
                    x = r["result"]
                    if x:
                        log(f"  {x['transitions_per_s']:,.0f} transitions/s, p99 "
                            f"{x['latency_ms']['p99']:.1f} ms, busy {r['state']['busy_pct']:.0f}%")
    except KeyboardInterrupt:
        log("interrupted; reporting what ran")
    finally:
        broker.stop()
    if a.out:
        Path(a.out).write_text(json.dumps({"args": vars(a), "runs": runs}, indent=1))
    print(f"kafka_vs_streams: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} cores, commit {git_head()}, warm-up {a.warmup_s} s, "
          f"window {a.seconds} s, {a.repeat} rounds")
    report(a, runs)
    return 0 if runs and all(r["result"] for r in runs) else 1


def git_head():
    p = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)
    return p.stdout.strip() or "?"


if __name__ == "__main__":
    sys.exit(main())
