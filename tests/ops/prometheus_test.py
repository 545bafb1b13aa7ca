#!/usr/bin/env python3
"""The dashboard and the alert rules of ops/ against a real Prometheus scraping a running engine.

A Kafka broker (tests/kafka/broker.sh), `auterity run --kafka ... --metrics` with an http step
connector calling a loopback HTTP server, a load of JSON start commands on ingress (some of them
malformed, some for an unknown workflow, some whose step fails), and Debian's `prometheus`
scraping the engine every second with ops/prometheus/auterity-alerts.yml loaded (its `for:`
durations cut to 5 s so the test is short; the expressions are the file's own). Then:

A third tenant, `ai-dealer`, runs an AI step against fake_ai.py (the loopback server speaking
the OpenAI protocol that the connector tests use) under a policy with a day budget of
AI_DAY_BUDGET_MICROS, so its real AI calls spend the budget down while the load runs.

- every expression of ops/grafana/auterity-dashboard.json returns series;
- the engine's /metrics (scraped directly) has auterity_ai_spend_micros of ai-dealer equal to
  the sum of the AiUsageRecorded costs in its executions log, and its budget;
  AuterityAiBudgetNearlySpent fires for it;
- every rule's expression evaluates, and every metric it reads has series;
- the HTTP server stops answering ("stop the acks"): AuterityConsumerLagGrowing fires for the
  step workers' group;
- a SIGTERM then drains (the engine waits for the batch in its connector), a second one exits
  at once.

usage: prometheus_test.py AUTERITY_BIN BROKER_SH OPS_DIR FAKE_AI_PY
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
AI_EVERY = 10            # every 10th start is an AI start of the AI tenant
# One call is estimated at ~15 input + 100 output tokens at 1000/2000 micro-USD per 1k: ~215.
AI_DAY_BUDGET_MICROS = 1500
AI_FIRE_WAIT_S = 60      # longest wait for the budget alert
AI_TENANT = "ai-dealer"

auterity, broker_sh, ops_dir, fake_ai_py = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
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

    fake_ai = subprocess.Popen([sys.executable, fake_ai_py, "--openai-key", ""],
                               stdout=subprocess.PIPE, text=True)
    procs.append(fake_ai)
    ai_port = int(fake_ai.stdout.readline().split()[1])  # "LISTENING <port>"

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
        json.dump({"step": {"http": {"timeout_ms": 600000}},
                   "ai": {"providers": {"cheap": {
                       "api": "openai", "base_url": f"http://127.0.0.1:{ai_port}/v1",
                       "model": "gpt-test"}}}}, f)
    tenants = ["acme", "bayside"]
    for t in tenants:
        subprocess.run([auterity, "publish", "--kafka", bootstrap, "--tenant", t,
                        f"{work}/ack.json", "--data", f"{work}/tools"], check=True,
                       capture_output=True)
    # The AI tenant: one AI step (its failure, once the budget rejects it, is continued).
    draft = {"workflow": "draft", "version": 1, "steps": [
        {"id": "draft", "kind": "ai", "tier": "standard", "timeout_ms": 20000,
         "input": {"prompt": "Write a two-line reply to {{input.name}} about a test drive.",
                   "max_tokens": 100},
         "on_failure": "continue"}]}
    policy = {"ai": {"candidates": [
        {"provider": "cheap", "model": "gpt-test", "tier": "standard",
         "input_per_1k_micros": 1000, "output_per_1k_micros": 2000}],
        "budget": {"day_micros": AI_DAY_BUDGET_MICROS, "month_micros": 1000000,
                   "when_exhausted": "reject"}}}
    with open(f"{work}/draft.json", "w") as f:
        json.dump(draft, f)
    with open(f"{work}/ai-policy.json", "w") as f:
        json.dump(policy, f)
    subprocess.run([auterity, "publish", "--kafka", bootstrap, "--tenant", AI_TENANT,
                    f"{work}/draft.json", "--data", f"{work}/tools"], check=True,
                   capture_output=True)
    subprocess.run([auterity, "policy", "--kafka", bootstrap, "--tenant", AI_TENANT,
                    f"{work}/ai-policy.json", "--data", f"{work}/tools"], check=True,
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
            if n % AI_EVERY == 0:
                producer.produce("ingress", key=AI_TENANT.encode(), value=json.dumps({
                    "kind": "Command", "tenant_id": AI_TENANT, "execution_id": f"ai-{n}",
                    "record_id": f"load-{n}", "payload_type": "StartExecution",
                    "payload": {"workflow": "draft",
                                "input_json": json.dumps({"name": f"lead {n}"})}}).encode())
            elif n % 25 == 0:
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

    # AI spend against budget: the engine's own /metrics, against the log.
    check_ai_spend(bootstrap, metrics_port)
    fired = wait_for(lambda: [a for a in get(f"{api}/alerts")["data"]["alerts"]
                              if a["labels"]["alertname"] == "AuterityAiBudgetNearlySpent"
                              and a["labels"].get("tenant") == AI_TENANT
                              and a["labels"].get("period") == "day"
                              and a["state"] == "firing"], AI_FIRE_WAIT_S, None)
    check("AuterityAiBudgetNearlySpent fires for the AI tenant's day budget", bool(fired),
          json.dumps(get(f"{api}/alerts"))[:600])

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


def scrape(metrics_port):
    """The engine's /metrics as {(name, frozenset(labels)): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'^([a-z_]+)\{(.*)\} (\S+)$', line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def logged_ai_spend(bootstrap):
    """Sum of the AI tenant's AiUsageRecorded costs in the executions log, in micro-USD."""
    out = subprocess.run([auterity, "dump", "--kafka", bootstrap, "--data", f"{work}/tools",
                          "executions"], check=True, capture_output=True, text=True).stdout
    total = 0
    for line in out.splitlines():
        if "\tAiUsageRecorded\t" in line:  # only the AI tenant has AI steps
            m = re.search(r"cost \$(\d+)\.(\d{6})", line)
            total += int(m.group(1)) * 1000000 + int(m.group(2))
    return total


def check_ai_spend(bootstrap, metrics_port):
    def spend():
        found = {n: v for (n, l), v in scrape(metrics_port).items()
                 if n in ("auterity_ai_spend_micros", "auterity_ai_budget_micros")
                 and ("tenant", AI_TENANT) in l and ("period", "day") in l}
        return found.get("auterity_ai_spend_micros"), found.get("auterity_ai_budget_micros")

    # The spend passes 80% of the budget, then stops moving (further calls are rejected).
    wait_for(lambda: (spend()[0] or 0) >= 0.8 * AI_DAY_BUDGET_MICROS, 60, None)
    last, logged, value, budget = None, None, None, None
    deadline = time.time() + 60
    while time.time() < deadline:
        value, budget = spend()
        logged = logged_ai_spend(bootstrap)
        if value is not None and value == logged and value == last:
            break
        last = value
        time.sleep(1)
    print(f"AI spend: metric {value}, log {logged}, budget {budget}")
    check("auterity_ai_spend_micros of the AI tenant passed 80% of its day budget",
          value is not None and value >= 0.8 * AI_DAY_BUDGET_MICROS, str(value))
    check("auterity_ai_spend_micros equals the AiUsageRecorded costs in the log",
          value is not None and value == logged, f"metric {value}, log {logged}")
    check("auterity_ai_budget_micros is the policy's day budget", budget == AI_DAY_BUDGET_MICROS,
          str(budget))


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
