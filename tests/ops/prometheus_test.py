#!/usr/bin/env python3
"""The dashboard and the alert rules of ops/ against a real Prometheus scraping a running engine.

A Kafka broker (tests/kafka/broker.sh), `auterity run --kafka ... --metrics` with an http step
connector calling a loopback HTTP server, a load of JSON start commands on ingress (some of them
malformed, some for an unknown workflow, some whose step fails), and Debian's `prometheus`
scraping the engine every second with ops/prometheus/auterity-alerts.yml loaded (its `for:`
durations cut to 5 s so the test is short; the expressions are the file's own). Then:

- every expression of ops/grafana/auterity-dashboard.json returns series;
- every rule's expression evaluates, and every metric it reads has series;
- the HTTP server stops answering ("stop the acks"): AuterityConsumerLagGrowing fires for the
  step workers' group;
- a SIGTERM then drains (the engine waits for the batch in its connector), a second one exits
  at once.

usage: prometheus_test.py AUTERITY_BIN BROKER_SH OPS_DIR
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml
from confluent_kafka import Producer

LOAD_PER_S = 20          # start commands per second
LOAD_S_MAX = 150         # the load stops by itself after this long
WARMUP_S = 20            # load before the expressions are evaluated
FIRE_WAIT_S = 90         # longest wait for the lag alert once the answers stop
HANG_S = 120             # how long a stopped answer is held

auterity, broker_sh, ops_dir = sys.argv[1], sys.argv[2], sys.argv[3]
work = tempfile.mkdtemp(prefix="auterity-prom.")
procs = []
failures = []
passed = 0


def check(name, ok, detail=""):
    global passed
    if ok:
        passed += 1
        print(f"ok: {name}")
    else:
        failures.append(name)
        print(f"FAILED: {name} {detail}")


# --- the connector's remote service: answers, or stops answering --------------------------
stop_answers = threading.Event()


class ack_handler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if stop_answers.is_set():
            stop_answers.wait()  # set: hold the call
            time.sleep(HANG_S)
        status = 500 if self.path.startswith("/fail") else 200
        body = json.dumps({"ok": status == 200}).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ack_handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ack_port = server.server_address[1]

    out = subprocess.run([broker_sh, "start", "--nodes", "1", "--dir", f"{work}/kafka",
                          "--owner", str(os.getpid())], check=True, capture_output=True, text=True)
    bootstrap = re.search(r"^BOOTSTRAP=(\S+)", out.stdout, re.M).group(1)
    subprocess.run([auterity, "topics", "apply", "--bootstrap", bootstrap, "--partitions", "2"],
                   check=True, capture_output=True)

    workflow = {"workflow": "ack", "version": 1, "steps": [
        {"id": "call", "kind": "task", "action": "http",
         "input": {"method": "POST", "url": f"http://127.0.0.1:{ack_port}/{{{{input.path}}}}",
                   "body": {"n": "{{input.n}}"}},
         "retry": {"max_attempts": 1}}]}
    with open(f"{work}/ack.json", "w") as f:
        json.dump(workflow, f)
    with open(f"{work}/connectors.json", "w") as f:
        json.dump({"step": {"http": {"timeout_ms": 600000}}}, f)
    tenants = ["acme", "bayside"]
    for t in tenants:
        subprocess.run([auterity, "publish", "--kafka", bootstrap, "--tenant", t,
                        f"{work}/ack.json", "--data", f"{work}/tools"], check=True,
                       capture_output=True)

    engine_log = open(f"{work}/engine.log", "w+")
    engine = subprocess.Popen(
        [auterity, "run", "--kafka", bootstrap, "--instance", "a", "--data", f"{work}/state",
         "--metrics", "127.0.0.1:0", "--connectors", f"{work}/connectors.json",
         "--stats-interval-s", "0", "--command-deadline-ms", "600000"],
        stdout=engine_log, stderr=subprocess.STDOUT)
    procs.append(engine)
    metrics_port = None
    for _ in range(300):
        engine_log.seek(0)
        m = re.search(r"metrics on port (\d+)", engine_log.read())
        if m:
            metrics_port = int(m.group(1))
            break
        if engine.poll() is not None:
            break
        time.sleep(0.1)
    if not metrics_port:
        engine_log.seek(0)
        raise SystemExit("engine did not start:\n" + engine_log.read())

    # Prometheus with the rules, `for:` cut to 5 s.
    with open(f"{ops_dir}/prometheus/auterity-alerts.yml") as f:
        rules_text = f.read()
    with open(f"{work}/rules.yml", "w") as f:
        f.write(re.sub(r"(?m)^(\s+for:) .*$", r"\1 5s", rules_text))
    prom_port = free_port()
    with open(f"{work}/prometheus.yml", "w") as f:
        yaml.safe_dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                        "rule_files": [f"{work}/rules.yml"],
                        "scrape_configs": [{"job_name": "auterity", "static_configs": [
                            {"targets": [f"127.0.0.1:{metrics_port}"]}]}]}, f)
    prom = subprocess.Popen(
        ["prometheus", f"--config.file={work}/prometheus.yml",
         f"--storage.tsdb.path={work}/tsdb", f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=open(f"{work}/prometheus.log", "w"), stderr=subprocess.STDOUT)
    procs.append(prom)
    api = f"http://127.0.0.1:{prom_port}/api/v1"
    wait_for(lambda: get(f"{api}/query", query="up")["data"]["result"], 60, "prometheus")

    # Load: start commands keyed by tenant (murmur2, as the engine places them), a few bad ones.
    stop_load = threading.Event()
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                         "linger.ms": 5})

    def load():
        n = 0
        deadline = time.time() + LOAD_S_MAX
        while not stop_load.is_set() and time.time() < deadline:
            n += 1
            tenant = tenants[n % len(tenants)]
            if n % 25 == 0:
                value = b'{"kind":"Command","tenant_id":"' + tenant.encode() + b'","versoin":1}'
            else:
                wf = "nope" if n % 20 == 0 else "ack"
                path = "fail" if n % 10 == 0 else "ack"
                value = json.dumps({
                    "kind": "Command", "tenant_id": tenant, "execution_id": f"e-{n}",
                    "record_id": f"load-{n}", "payload_type": "StartExecution",
                    "payload": {"workflow": wf,
                                "input_json": json.dumps({"path": path, "n": n})}}).encode()
            producer.produce("ingress", key=tenant.encode(), value=value)
            producer.poll(0)
            time.sleep(1.0 / LOAD_PER_S)
        producer.flush(10)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    time.sleep(WARMUP_S)

    # Every dashboard expression returns series.
    with open(f"{ops_dir}/grafana/auterity-dashboard.json") as f:
        dashboard = json.load(f)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    check("dashboard has expressions", len(exprs) >= 20, str(len(exprs)))
    for e in exprs:
        r = get(f"{api}/query", query=e)
        check(f"dashboard: {e}", r["status"] == "success" and len(r["data"]["result"]) > 0,
              json.dumps(r)[:300])

    # The step workers' lag on Kafka (from their own positions) is there before the stop.
    lag = get(f"{api}/query",
              query='auterity_consumer_lag_records{group="worker.commands.step"}')
    check("worker lag on Kafka has a series per partition", len(lag["data"]["result"]) == 2,
          json.dumps(lag)[:300])

    # Every rule evaluates, and every metric it reads has series.
    rules = [r for g in yaml.safe_load(rules_text)["groups"] for r in g["rules"]]
    check("alert rules loaded", len(rules) >= 6, str(len(rules)))
    loaded = get(f"{api}/rules")["data"]["groups"]
    check("prometheus loaded every rule", sum(len(g["rules"]) for g in loaded) == len(rules))
    for rule in rules:
        r = get(f"{api}/query", query=rule["expr"])
        check(f"rule {rule['alert']}: evaluates", r["status"] == "success", json.dumps(r)[:300])
        for metric in sorted(set(re.findall(r"\b((?:auterity_|up\b)[a-z_]*)", rule["expr"]))):
            series = get(f"{api}/query", query=f"count({{__name__=\"{metric}\"}})")
            check(f"rule {rule['alert']}: {metric} has series",
                  len(series["data"]["result"]) > 0)

    # Stop the answers: the step worker's calls hang, its commands pile up, the alert fires.
    stop_answers.set()
    fired = wait_for(lambda: [a for a in get(f"{api}/alerts")["data"]["alerts"]
                              if a["labels"]["alertname"] == "AuterityConsumerLagGrowing"
                              and a["labels"].get("group") == "worker.commands.step"
                              and a["state"] == "firing"], FIRE_WAIT_S, None)
    check("AuterityConsumerLagGrowing fires for worker.commands.step once the connector stops "
          "answering", bool(fired), json.dumps(get(f"{api}/alerts"))[:600])
    stop_load.set()
    loader.join(15)

    # SIGTERM drains: the step worker waits for its hanging calls, so the engine is still up a
    # moment later; a second SIGTERM exits at once (128 + 15).
    engine.send_signal(signal.SIGTERM)
    time.sleep(2)
    check("first SIGTERM: the engine drains (still finishing its batch)", engine.poll() is None)
    engine.send_signal(signal.SIGTERM)
    try:
        rc = engine.wait(5)
    except subprocess.TimeoutExpired:
        rc = None
    check("second SIGTERM: exits at once with 143", rc == 143, f"rc={rc}")


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def get(url, **params):
    with urllib.request.urlopen(f"{url}?{urllib.parse.urlencode(params)}", timeout=30) as r:
        return json.loads(r.read())


def wait_for(fn, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            v = fn()
            if v:
                return v
        except OSError:
            pass
        time.sleep(1)
    if what:
        raise SystemExit(f"{what} not ready after {seconds} s")
    return None


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run([broker_sh, "stop", "--dir", f"{work}/kafka"], capture_output=True)
        if failures:
            for name in ("engine.log", "prometheus.log"):
                path = f"{work}/{name}"
                if os.path.exists(path):
                    print(f"--- {name} (tail)")
                    print("".join(open(path).readlines()[-30:]))
        shutil.rmtree(work, ignore_errors=True)
    print(f"{passed} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)
