#!/usr/bin/env python3
"""The other tenants' throughput while a tenant moves (issue 9, item 7; bench/README.md,
"Tenant moves").

Starts `auterity run --http` on a fresh embedded log (2 partitions, fsync on, in-process
workers), gives the tenant `hot` N running executions (each waiting for a signal, with a 1 h
timer), then drives four other tenants with a closed loop of starts through the HTTP API
(`wrk`, bench/api/starts.lua, `wait` mode: every answer comes once the engine decided the
start, so each connection has one start in flight) and, after --before-s seconds, moves `hot`
to the other partition through the API (`POST /v1/tenants/hot/move?wait_ms=`). The engine's
/metrics (`auterity_tenant_events_total`, per partition and tenant) is sampled every
--sample-ms; the other tenants' events/s during the move are compared with the steady state
before it and the state after it, in total and per partition (the move's source and target).

  ninja -C build auterity
  bench/move_load.py --build build --running 10000 --repeat 3

Prints one line per run and the ratios (during / before). Needs wrk (Debian: apt-get install
wrk). Stops the engine and removes its directory at the end (--keep keeps it).
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OTHERS = ["acme", "globex", "initech", "umbrella"]


def wait_for(pred, timeout_s, what):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    sys.exit(f"move_load: timed out waiting for {what}")


def port_in(path, pattern):
    try:
        with open(path) as f:
            m = re.search(pattern, f.read())
            return int(m.group(1)) if m else None
    except FileNotFoundError:
        return None


class api:
    def __init__(self, port, key):
        self.port, self.key = port, key
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(self, method, path, body=None):
        headers = {"Authorization": "Bearer " + self.key}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):  # the server closes a keep-alive connection left idle
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                text = r.read()
                break
            except (http.client.RemoteDisconnected, ConnectionError):
                if attempt == 2:
                    raise
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        return r.status, (json.loads(text) if text else None)


def scrape(port):
    """{(partition, tenant): events_total} and {(partition, tenant): running}."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    events, running = {}, {}
    for line in text.splitlines():
        for name, into in (("auterity_tenant_events_total", events),
                           ("auterity_tenant_running_executions", running)):
            if line.startswith(name + "{"):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):line.index("}") + 1]))
                into[(labels.get("partition"), labels.get("tenant"))] = float(line.rsplit(" ", 1)[1])
    return events, running


def one_run(args, run_index):
    d = tempfile.mkdtemp(prefix="auterity-move-load.")
    exe = os.path.join(args.build, "cli", "auterity")
    engine = None
    try:
        def key(tenant, role):
            return subprocess.check_output([exe, "keys", "create", "--data", d, "--tenant", tenant,
                                            "--role", role], stderr=subprocess.DEVNULL,
                                           text=True).strip()

        admin = key("*", "admin")
        pairs = [f"{t}={key(t, 'publisher')}" for t in OTHERS]
        log_path = os.path.join(d, "run.log")
        with open(log_path, "w") as out:
            engine = subprocess.Popen(
                [exe, "run", "--data", d, "--partitions", "2", "--http", "127.0.0.1:0",
                 "--metrics", "127.0.0.1:0", "--http-rate", "1000000", "--http-burst", "1000000",
                 "--stats-interval-s", "5"], stdout=out, stderr=subprocess.STDOUT)
        port = wait_for(lambda: port_in(log_path, r"HTTP API on port (\d+)"), 60, "the HTTP API")
        mport = wait_for(lambda: port_in(log_path, r"metrics on port (\d+)"), 60, "/metrics")
        a = api(port, admin)
        quick = {"workflow": "quick", "version": 1,
                 "steps": [{"id": "a", "kind": "task", "action": "transform"}]}
        wait = {"workflow": "wait", "version": 1,
                "steps": [{"id": "w", "kind": "wait_signal", "signal": "go",
                           "timeout_ms": 3_600_000}]}
        for t in OTHERS:
            s, b = a.call("POST", f"/v1/tenants/{t}/definitions?wait_ms=30000", {"definition": quick})
            assert s in (200, 201), (s, b)
        s, b = a.call("POST", "/v1/tenants/hot/definitions?wait_ms=30000", {"definition": wait})
        assert s in (200, 201), (s, b)
        s, where = a.call("GET", "/v1/tenants/hot/placement")
        assert s == 200, (s, where)
        source = where["partition"]
        target = 1 - source

        # The hot tenant's running executions: starts from 8 connections, then wait until the
        # engine runs them all.
        t0 = time.monotonic()
        n, threads = args.running, []

        def starter(k):
            c = api(port, admin)
            for i in range(k, n, 8):
                s, b = c.call("POST", "/v1/tenants/hot/executions",
                              {"execution_id": f"lead-{i}", "workflow": "wait", "input": {"n": i}})
                if s != 202:
                    sys.exit(f"move_load: start {i}: {s} {b}")

        for k in range(8):
            th = threading.Thread(target=starter, args=(k,))
            th.start()
            threads.append(th)
        for th in threads:
            th.join()
        wait_for(lambda: scrape(mport)[1].get((str(source), "hot"), 0) >= n, 600,
                 f"{n} running executions of hot")
        fill_s = time.monotonic() - t0

        # The load of the other tenants, the samples, and the move.
        total = int(args.before_s + args.after_s) + 30  # wrk is stopped once the after window ends
        # One wrk per partition, each over the tenants that partition decides: a connection
        # waiting for a stalled partition must not hold back the other partition's tenants
        # (one wrk round-robin over all of them would couple the two).
        groups = {}
        for pair in pairs:
            t = pair.split("=", 1)[0]
            s, where_t = a.call("GET", f"/v1/tenants/{t}/placement")
            assert s == 200, (s, where_t)
            groups.setdefault(where_t["partition"], []).append(pair)
        wrks = [subprocess.Popen(
            ["wrk", "-t1", f"-c{max(1, args.conns * len(g) // len(pairs))}", f"-d{total}s",
             "--latency", "-s", os.path.join(HERE, "api", "starts.lua"),
             f"http://127.0.0.1:{port}", "--", *g, "wait"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for g in groups.values()]
        samples = []  # (t, {partition: other tenants' events_total})
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                ev, _ = scrape(mport)
                per = {}
                for (p, t), v in ev.items():
                    if t != "hot":
                        per[p] = per.get(p, 0.0) + v
                samples.append((time.monotonic(), per))
                time.sleep(args.sample_ms / 1000)

        sth = threading.Thread(target=sampler)
        sth.start()
        start = time.monotonic()
        time.sleep(args.before_s)
        load_before = os.getloadavg()[0]
        perf = None
        if args.perf:  # the engine's profile from the move's start to 0.7 s after its answer
            perf = subprocess.Popen(["perf", "record", "-g", "-o", args.perf, "-p",
                                     str(engine.pid)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        m0 = time.monotonic()
        s, b = api(port, admin).call("POST", "/v1/tenants/hot/move?wait_ms=120000", {"to": target})
        m1 = time.monotonic()
        if perf is not None:
            time.sleep(0.7)
            perf.send_signal(signal.SIGINT)
            perf.wait()
        if s != 200:
            sys.exit(f"move_load: move answered {s}: {b}")
        time.sleep(args.after_s)
        stop.set()
        sth.join()
        wrk_out = ""
        for w in wrks:
            w.send_signal(signal.SIGINT)  # wrk prints its summary on SIGINT
            wrk_out += w.communicate()[0]
        load_after = os.getloadavg()[0]

        def rate(lo, hi, part=None):
            """Other tenants' events/s between two times (the nearest samples inside)."""
            inside = [(t, per) for t, per in samples if lo <= t <= hi]
            if len(inside) < 2:
                return float("nan")
            (ta, pa), (tb, pb) = inside[0], inside[-1]
            keys = [part] if part is not None else set(pa) | set(pb)
            return sum(pb.get(k, 0) - pa.get(k, 0) for k in keys) / (tb - ta)

        # The move window is widened to at least two samples on each side of its answer.
        pad = args.sample_ms / 1000
        before = (start + 2, m0)  # the first 2 s warm up
        during = (m0 - pad, m1 + pad)
        after = (m1 + 1, m1 + args.after_s)
        r = {
            "run": run_index,
            "running": n,
            "fill_s": round(fill_s, 1),
            "move_ms": round((m1 - m0) * 1000),
            "moved": b,
            "load": [round(load_before, 1), round(load_after, 1)],
        }
        for name, w in (("before", before), ("during", during), ("after", after)):
            r[name] = round(rate(*w))
            r[name + "_source"] = round(rate(*w, part=str(source)))
            r[name + "_target"] = round(rate(*w, part=str(target)))
        # Work the other tenants lost to the move, as milliseconds of their steady rate: the
        # events a window around the move fell short of the steady rate, divided by that rate.
        # Independent of how wide the window is, as long as it covers the disturbance.
        lost_window = (m0 - 0.3, m1 + 0.7)
        for part, suffix in ((None, ""), (str(source), "_source"), (str(target), "_target")):
            steady = rate(*before, part=part)
            got = rate(*lost_window, part=part)
            span = lost_window[1] - lost_window[0]
            r["lost_ms" + suffix] = (round((steady - got) * span / steady * 1000)
                                     if steady else None)
        # Over the second that starts with the move (a scrape interval sees less than this).
        r["ratio_1s"] = round(rate(m0 - pad, m0 + 1) / r["before"], 3) if r["before"] else None
        r["ratio"] = round(r["during"] / r["before"], 3) if r["before"] else None
        r["ratio_source"] = (round(r["during_source"] / r["before_source"], 3)
                             if r["before_source"] else None)
        r["ratio_target"] = (round(r["during_target"] / r["before_target"], 3)
                             if r["before_target"] else None)
        r["wrk"] = re.findall(r"starts/s.*", wrk_out) or wrk_out[-300:]
        return r
    finally:
        if engine is not None:
            engine.terminate()
            try:
                engine.wait(timeout=60)
            except subprocess.TimeoutExpired:
                engine.kill()
        if args.keep:
            print(f"move_load: kept {d}", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--running", type=int, default=10000,
                    help="running executions of the moved tenant (default 10000)")
    ap.add_argument("--conns", type=int, default=16,
                    help="wrk connections for the other tenants' starts (default 16)")
    ap.add_argument("--before-s", type=float, default=10)
    ap.add_argument("--after-s", type=float, default=8)
    ap.add_argument("--sample-ms", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--perf", metavar="FILE",
                    help="record the engine's profile around the move (perf record -g) in FILE")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("move_load: needs wrk (apt-get install wrk)")
    results = []
    for i in range(args.repeat):
        r = one_run(args, i + 1)
        results.append(r)
        print(json.dumps(r), flush=True)
    if len(results) > 1:
        med = lambda k: statistics.median(r[k] for r in results)
        print("median over {} runs: move {} ms; other tenants during the move / before: {:.3f} "
              "(source {:.3f}, target {:.3f}); over the second from the move's start {:.3f}; "
              "lost {} ms of their work (source {}, target {})".format(
                  len(results), med("move_ms"), med("ratio"), med("ratio_source"),
                  med("ratio_target"), med("ratio_1s"), med("lost_ms"), med("lost_ms_source"),
                  med("lost_ms_target")))


if __name__ == "__main__":
    main()
