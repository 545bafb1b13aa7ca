#!/usr/bin/env python3
"""`auterity status --kafka B` against a real broker and two engine instances.

A Kafka broker (tests/kafka/broker.sh, 4 partitions), LOAD start commands on ingress produced
before any engine runs, then `auterity run --kafka` as instances a and b. `status --json`:

- before the engines: no group has committed; the ingress lag is exactly the records produced;
- with both engines: every group of the engine (orchestrator, worker.commands.step|ai|notify)
  has both members, and their assignments split the partitions (disjoint, all covered);
- once the load has drained: lag 0 on every partition of every group, although the step
  commands' partitions end past the committed offset (the commit marker: lag counts records a
  read_committed reader would get, not offsets), and the orchestrator's last commit time is
  known for each partition that got work;
- the table names both members.

usage: status_test.py AUTERITY_BIN BROKER_SH
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Producer

PARTITIONS = 4
LOAD = 60           # start commands
SPLIT_WAIT_S = 40   # longest wait for both instances in every group
DRAIN_WAIT_S = 40   # longest wait for lag 0 everywhere
GROUPS = ["auterity.orchestrator", "auterity.worker.commands.step",
          "auterity.worker.commands.ai", "auterity.worker.commands.notify"]

auterity, broker_sh = sys.argv[1], sys.argv[2]
work = tempfile.mkdtemp(prefix="auterity-status.")
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


def status(bootstrap, *extra):
    out = subprocess.run([auterity, "status", "--kafka", bootstrap, *extra], capture_output=True,
                         text=True, timeout=60)
    if out.returncode != 0:
        raise SystemExit(f"status exited {out.returncode}: {out.stderr}")
    return out.stdout


def groups(bootstrap):
    return {g["group"]: g for g in json.loads(status(bootstrap, "--json"))["groups"]}


def split_between_both(g):
    """The group's two members (instances a and b) split the partitions of its topic."""
    members = {m["instance_id"].split(".")[0]: m for m in g["members"]}
    if sorted(members) != ["a", "b"]:
        return False
    owned = [{a["partition"] for a in m["assigned"]} for m in members.values()]
    return (all(owned) and not owned[0] & owned[1]
            and owned[0] | owned[1] == set(range(PARTITIONS)))


def main():
    out = subprocess.run([broker_sh, "start", "--nodes", "1", "--dir", f"{work}/kafka",
                          "--owner", str(os.getpid())], check=True, capture_output=True, text=True)
    bootstrap = re.search(r"^BOOTSTRAP=(\S+)", out.stdout, re.M).group(1)
    subprocess.run([auterity, "topics", "apply", "--bootstrap", bootstrap, "--partitions",
                    str(PARTITIONS)], check=True, capture_output=True)
    workflow = {"workflow": "hello", "version": 1, "steps": [
        {"id": "greet", "kind": "task", "action": "transform",
         "input": {"text": "Hello {{input.n}}"}}]}
    with open(f"{work}/hello.json", "w") as f:
        json.dump(workflow, f)
    tenants = [f"dealer-{i}" for i in range(8)]  # spread over the partitions (murmur2)
    for t in tenants:
        subprocess.run([auterity, "publish", "--kafka", bootstrap, "--tenant", t,
                        f"{work}/hello.json", "--data", f"{work}/tools"], check=True,
                       capture_output=True)

    # The load, before any engine runs: plain (non-transactional) records on ingress.
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    for n in range(LOAD):
        tenant = tenants[n % len(tenants)]
        producer.produce("ingress", key=tenant.encode(), value=json.dumps({
            "kind": "Command", "tenant_id": tenant, "execution_id": f"e-{n}",
            "record_id": f"load-{n}", "payload_type": "StartExecution",
            "payload": {"workflow": "hello", "input_json": json.dumps({"n": n})}}).encode())
    producer.flush(30)

    orch = groups(bootstrap)["auterity.orchestrator"]
    ingress = [p for p in orch["partitions"] if p["topic"] == "ingress"]
    check("before the engines: the orchestrator group has no members", orch["members"] == [],
          json.dumps(orch["members"]))
    check("before the engines: nothing committed on ingress",
          all(p["committed"] is None for p in ingress), json.dumps(ingress))
    # The publishes' transactions put a commit marker on ingress: the lag counts records.
    check("before the engines: ingress lag is every record waiting (publishes and the load)",
          sum(p["lag"] for p in ingress) == LOAD + len(tenants) and all(p["lag_exact"]
                                                                       for p in ingress),
          json.dumps(ingress))

    for instance in ("a", "b"):
        log = open(f"{work}/engine-{instance}.log", "w")
        procs.append(subprocess.Popen(
            [auterity, "run", "--kafka", bootstrap, "--instance", instance, "--data",
             f"{work}/state-{instance}", "--stats-interval-s", "0"],
            stdout=log, stderr=subprocess.STDOUT))

    # Both instances in every group, the partitions split between them.
    deadline = time.time() + SPLIT_WAIT_S
    while time.time() < deadline:
        g = groups(bootstrap)
        if all(split_between_both(g[name]) for name in GROUPS):
            break
        time.sleep(1)
    for name in GROUPS:
        check(f"{name}: instances a and b split the {PARTITIONS} partitions",
              split_between_both(g[name]), json.dumps(g[name]["members"]))

    # The load drains: lag 0 on every partition of every group.
    deadline = time.time() + DRAIN_WAIT_S
    while time.time() < deadline:
        g = groups(bootstrap)
        waiting = [(name, p["topic"], p["partition"], p["lag"]) for name in GROUPS
                   for p in g[name]["partitions"] if p["lag"] != 0]
        if not waiting:
            break
        time.sleep(1)
    check("after the load: lag 0 on every partition of every group", not waiting, str(waiting))
    orch = g["auterity.orchestrator"]
    ingress = [p for p in orch["partitions"] if p["topic"] == "ingress"]
    check("after the load: ingress committed to its end",
          all(p["committed"] is not None and p["committed"] >= p["end"] - 1
              for p in ingress if p["end"] > 0), json.dumps(ingress))
    check("the load reached at least two partitions", sum(p["end"] > 0 for p in ingress) >= 2,
          json.dumps(ingress))
    check("after the load: the orchestrator's last commit is known where it worked",
          all(p["last_commit_ms"] and abs(p["last_commit_ms"] / 1000 - time.time()) < 120
              for p in ingress if p["end"] > 0), json.dumps(ingress))
    step = [p for p in g["auterity.worker.commands.step"]["partitions"] if p["end"] > 0]
    check("the step commands were worked", sum(p["committed"] or 0 for p in step) >= LOAD,
          json.dumps(step))
    check("step workers: the time of the last command committed past is known",
          all(p["last_commit_ms"] and abs(p["last_commit_ms"] / 1000 - time.time()) < 120
              for p in step), json.dumps(step))
    # Written in transactions: the end sits past the marker, yet nothing is left to read.
    check("step commands: end past the committed offset (a commit marker), lag 0",
          any(p["end"] > p["committed"] for p in step) and all(p["lag"] == 0 for p in step),
          json.dumps(step))
    check("each partition is shown with the member that owns it",
          all(p["member"] in ("a.orchestrator", "b.orchestrator") for p in ingress),
          json.dumps(ingress))

    table = status(bootstrap)
    check("the table names both members of each group",
          all(f"member {i}.{name[len('auterity.'):]} " in table
              for i in ("a", "b") for name in GROUPS), table)


if __name__ == "__main__":
    start = time.time()
    try:
        main()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run([broker_sh, "stop", "--dir", f"{work}/kafka"], capture_output=True)
        if failures:
            for name in ("engine-a.log", "engine-b.log"):
                path = f"{work}/{name}"
                if os.path.exists(path):
                    print(f"--- {name} (tail)")
                    print("".join(open(path).readlines()[-20:]))
        shutil.rmtree(work, ignore_errors=True)
    print(f"{passed} passed, {len(failures)} failed in {time.time() - start:.0f} s")
    sys.exit(1 if failures else 0)
