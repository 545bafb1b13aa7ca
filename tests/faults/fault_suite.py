#!/usr/bin/env python3
"""Fault suite: `auterity run --kafka` instances under steady load on a real broker, with faults.

Instances are frozen past the session timeout (SIGSTOP, or paused by the engine's own fault
points inside a transaction), killed with SIGKILL (with and without wiping their --data), their
separate worker processes killed, and a broker node of a 3-node cluster killed. Afterwards
independent read_committed consumers (this script, not the engine's counters) check that every
started execution has exactly one start and one end, that no event, command or ack is lost or
repeated, that every notification reached the HTTP receiver once per idempotency key, and
`auterity replay verify` checks every instance's state against the log.

  --mode ci              the bounded scenario list (deterministic fault points first, then
                         random instance faults, then a 3-node cluster with a broker kill)
  --mode soak --minutes N
                         random faults of every class on a 3-node cluster for N minutes

Prints its seed (`--seed` reruns the same schedule), one results table at the end, and exits 1
naming every failed check with example ids. Needs /usr/bin/python3 (Debian's
python3-confluent-kafka and python3-flatbuffers) and the Python classes generated from the
schema (`--python-gen <build>/generated/python`). See tests/faults/README.md.
"""

import argparse
import bisect
import collections
import ctypes
import hashlib
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException,
                                 Producer, TopicPartition)
except ImportError:
    sys.exit("fault_suite: confluent_kafka missing; run with /usr/bin/python3 "
             "(Debian python3-confluent-kafka)")

# ------------------------------------------------------------------------------------- limits

SESSION_TIMEOUT_S = 6  # the engine's group session.timeout.ms (engine/kafka_group.cc)
FREEZE_S = (10.0, 12.0)  # a frozen instance stays stopped this long: past the session timeout
FAULT_POINT_WAIT_S = 60  # an armed fault point must be reached within this
RECOVERY_WAIT_S = 120  # every partition must commit again within this after a fault's remedy
SETTLE_S = 2  # steady load between two faults
DRAIN_WAIT_S = 180  # after the load stops, every execution must end within this
STUCK_DRAIN_WAIT_S = 30  # the same when a partition already stopped committing
STOP_WAIT_S = 60  # an instance must exit after SIGTERM within this
READ_WAIT_S = 120  # the checkers must read each topic to its end within this
VERIFY_WAIT_S = 300  # one `auterity replay verify`
BROKER_DOWN_S = 12  # a killed broker node stays down this long (> broker.session.timeout 9 s)
PRODUCE_TIMEOUT_MS = 120_000  # the load generator's message.timeout.ms
EXAMPLES_MAX = 5  # ids named per failed check

TOPICS = ("ingress", "executions", "commands.step", "commands.ai", "commands.notify", "acks",
          "definitions", "deadletter")
COMMAND_TOPICS = ("commands.step", "commands.ai", "commands.notify")
FAULT_LINE = re.compile(r"auterity: fault point (\S+) reached \(pid (\d+)\): (stopping|killing)")

# The workflow every load execution runs: tasks (one retried through a timer), an AI step whose
# command fails permanently (no AI provider configured) and is continued past, a delay (timer)
# and a webhook notification to the suite's HTTP receiver. No step has a timeout, so a frozen
# worker never turns into a retry: each step's commands are fixed, and so are the checks.
WORKFLOW = {
    "workflow": "fault", "version": 1,
    "steps": [
        {"id": "score", "kind": "task", "action": "transform", "input": {"n": "{{input.n}}"}},
        {"id": "crm", "kind": "task", "action": "flaky", "after": ["score"],
         "input": {"succeed_on_attempt": 2}, "retry": {"max_attempts": 3, "backoff_ms": 20}},
        {"id": "draft", "kind": "ai", "after": ["score"], "on_failure": "continue",
         "input": {"prompt": "reply to lead {{input.n}}"}},
        {"id": "wait", "kind": "delay", "delay_ms": 300, "after": ["crm"]},
        {"id": "notify", "kind": "notify", "after": ["wait", "draft"],
         "retry": {"max_attempts": 5, "backoff_ms": 200},
         "input": {"channel": "webhook", "to": "lead-{{input.n}}", "body": "hello {{input.n}}"}},
    ]}

T0 = time.monotonic()
CLIENT_LOG = logging.getLogger("fault_suite.kafka")  # librdkafka's own messages, to a file
CLIENT_LOG.propagate = False
CLIENT_LOG.setLevel(logging.INFO)


def now():
    return time.monotonic()


def say(text):
    print(f"[{now() - T0:7.1f}s] {text}", flush=True)


class SuiteError(Exception):
    """A bounded wait ran out or a step the suite needs failed: ends the run as a failure."""


# ---------------------------------------------------------------------------------- placement


def murmur2(data):
    """Kafka's murmur2 (the Java client's default partitioner, and the engine's placement)."""
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    n4 = len(data) // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i:4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = data[4 * n4:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def tenant_partition(tenant, partitions):
    return (murmur2(tenant.encode()) & 0x7FFFFFFF) % partitions


def tenants_covering(partitions, per_partition):
    """Tenant ids placed so that every partition carries load."""
    by_partition = collections.defaultdict(list)
    i = 0
    while any(len(by_partition[p]) < per_partition for p in range(partitions)):
        t = f"dealer-{i}"
        p = tenant_partition(t, partitions)
        if len(by_partition[p]) < per_partition:
            by_partition[p].append(t)
        i += 1
    return [t for p in range(partitions) for t in by_partition[p]]


# ----------------------------------------------------------------------------------- records


class Schema:
    """The classes `flatc --python` generated from schemas/auterity.fbs."""

    def __init__(self, gen_dir):
        if not os.path.isfile(os.path.join(gen_dir, "auterity", "schema", "Envelope.py")):
            raise SuiteError(f"no generated Python classes in {gen_dir} "
                             "(build the target auterity_schemas_python)")
        sys.path.insert(0, gen_dir)
        from auterity.schema import (AckStatus, CommandRejected, DeadLetter, Envelope,
                                     ExecutionFailed, NotificationAdmitted, Payload, RecordKind,
                                     StepAck, StepScheduled)
        self.Envelope = Envelope.Envelope
        self.Payload = Payload.Payload
        self.RecordKind = RecordKind.RecordKind
        self.AckStatus = AckStatus.AckStatus
        self.tables = {
            "StepScheduled": StepScheduled.StepScheduled,
            "NotificationAdmitted": NotificationAdmitted.NotificationAdmitted,
            "StepAck": StepAck.StepAck,
            "ExecutionFailed": ExecutionFailed.ExecutionFailed,
            "CommandRejected": CommandRejected.CommandRejected,
            "DeadLetter": DeadLetter.DeadLetter,
        }
        self.names = {v: k for k, v in vars(Payload.Payload).items() if not k.startswith("_")}

    def decode(self, value):
        """(envelope, payload type name) or None for bytes that are no envelope."""
        if not value or len(value) < 8 or value[4:8] != b"AUTR":
            return None
        try:
            env = self.Envelope.GetRootAs(value, 0)
            return env, self.names.get(env.PayloadType(), "?")
        except Exception:
            return None

    def payload(self, env, name):
        table = env.Payload()
        obj = self.tables[name]()
        obj.Init(table.Bytes, table.Pos)
        return obj


def text(b):
    return b.decode("utf-8", "replace") if isinstance(b, (bytes, bytearray)) else (b or "")


# ---------------------------------------------------------------------------------- processes


def die_with_suite():
    """Child preexec: SIGKILL when the suite dies (ctest timeout, SIGKILL), never orphaned."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Proc:
    """One child process (`auterity run`, `auterity worker`); output appended to its log."""

    def __init__(self, name, argv, log_path, data, kind="instance", env=None):
        self.name, self.argv, self.log_path, self.kind = name, argv, log_path, kind
        self.data = data  # its --data directory
        self.env = dict(env or {})
        self.p = None
        self.starts = 0  # how often it was started: a restart by the supervisor shows here
        self.log_from = 0
        self.expected_exit = False  # set while the suite itself stops or kills it
        self.paused = False

    def start(self, fault=None):
        env = dict(os.environ)
        env.update(self.env)
        env.pop("AUTERITY_FAULT", None)
        if fault:
            env["AUTERITY_FAULT"] = fault
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== suite {now() - T0:.1f}s: start{' AUTERITY_FAULT=' + fault if fault else ''}"
                      f": {' '.join(self.argv)}\n".encode())
            self.log_from = log.tell()
        log = open(self.log_path, "ab")
        self.p = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  stdin=subprocess.DEVNULL, start_new_session=True,
                                  preexec_fn=die_with_suite)
        log.close()
        self.expected_exit = False
        self.paused = False
        self.starts += 1

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.p.pid, sig)

    def stopped_by_signal(self):
        """True while the process is in state T (SIGSTOP)."""
        try:
            with open(f"/proc/{self.p.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
        except OSError:
            return False

    def kill9(self):
        self.expected_exit = True
        self.signal(signal.SIGKILL)
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            raise SuiteError(f"{self.name} (pid {self.p.pid}) did not die from SIGKILL in 30 s")

    def terminate(self, timeout):
        """SIGTERM; the exit status, or None if it did not exit in time (then SIGKILLed)."""
        self.expected_exit = True
        if self.paused:
            self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.p.wait(30)
            return None

    def log_text(self, since_start=True):
        try:
            with open(self.log_path, "rb") as f:
                if since_start:
                    f.seek(self.log_from)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_fault_point(self, point, timeout):
        """Waits for the engine's fault point line; (seconds waited, action)."""
        deadline = now() + timeout
        while now() < deadline:
            for m in FAULT_LINE.finditer(self.log_text()):
                if m.group(1) == point:
                    return m.group(3)
            if not self.alive():
                if any(m.group(1) == point for m in FAULT_LINE.finditer(self.log_text())):
                    continue  # printed its line and killed itself meanwhile
                raise SuiteError(f"{self.name} exited (status {self.p.returncode}) before "
                                 f"reaching fault point {point}; log {self.log_path}")
            time.sleep(0.05)
        raise SuiteError(f"{self.name} did not reach fault point {point} within {timeout} s "
                         f"(AUTERITY_FAULT unsupported by this binary?); log {self.log_path}")


# ------------------------------------------------------------------------------- HTTP receiver


class Receiver:
    """The webhook every notification goes to (loopback): records each request with its
    Idempotency-Key. Answers 200 to every well-formed one."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []  # (key, body bytes, time)
        self.bad = []  # requests without a key or not JSON
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                key = self.headers.get("Idempotency-Key", "")
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = None
                with receiver.lock:
                    if not key or not isinstance(doc, dict) or doc.get("id") != key:
                        receiver.bad.append((self.path, key, body[:200]))
                    else:
                        receiver.requests.append((key, body, now()))
                answer = b'{"ok":true}'
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the worker was killed after sending: its redelivery comes later

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self):
        return f"http://127.0.0.1:{self.port}/hooks/auterity"

    def snapshot(self):
        with self.lock:
            return list(self.requests), list(self.bad)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------- load, tail


class LoadGen(threading.Thread):
    """Publishes the workflow for each tenant, then produces StartExecution JSON envelopes to
    ingress at `rate` per second until stopped (an idempotent, acks=all producer keyed by
    tenant with Kafka's murmur2 placement, as any upstream system would)."""

    def __init__(self, bootstrap, prefix, tenants, rate, tag):
        super().__init__(daemon=True)
        self.prefix, self.tenants, self.rate, self.tag = prefix, tenants, rate, tag
        self.bootstrap = bootstrap
        self.producer = self._new_producer()
        self.replaced = 0  # producers replaced after a fatal error
        self.delivered = {}  # execution id -> tenant
        self.undelivered = {}  # execution id -> error (may or may not have started)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.produced = 0

    def _new_producer(self):
        return Producer({
            "bootstrap.servers": self.bootstrap, "logger": CLIENT_LOG,
            "error_cb": lambda err: CLIENT_LOG.warning("load producer: %s (fatal: %s)", err,
                                                       err.fatal()),
            "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "partitioner": "murmur2_random",
            "message.timeout.ms": PRODUCE_TIMEOUT_MS})

    def _replace_producer(self, err):
        """An idempotent producer that failed fatally cannot produce again: as an upstream
        system would, purge it (its unconfirmed records are reported undelivered: they may or
        may not have started) and go on with a new one."""
        say(f"{self.tag}: the load producer failed fatally ({err}); a new producer takes over")
        old = self.producer
        old.poll(0)  # its error_cb logs the fatal error's cause in kafka-clients.log
        old.purge()
        old.poll(0)  # the purged records' delivery reports: undelivered
        old.flush(0)
        self.producer = self._new_producer()
        self.replaced += 1

    def _produce(self, tenant, doc, execution=None):
        def on_delivery(err, _msg):
            if execution is None:
                return
            with self.lock:
                if err is None:
                    self.delivered[execution] = tenant
                else:
                    self.undelivered[execution] = str(err)
        while True:
            try:
                self.producer.produce(self.prefix + "ingress", key=tenant.encode(),
                                      value=json.dumps(doc).encode(), on_delivery=on_delivery)
                return
            except BufferError:
                self.producer.poll(0.1)
            except KafkaException as e:
                # produce() on a producer with a fatal error raises _FATAL ("Unable to produce
                # message: Local: Fatal error"); the error itself says fatal() only in error_cb.
                err = e.args[0] if e.args else None
                if err is None or not (err.fatal() or err.code() == KafkaError._FATAL):
                    raise
                self._replace_producer(err)

    def publish_definitions(self):
        for t in self.tenants:
            self._produce(t, {"kind": "Command", "tenant_id": t, "record_id": f"pub/{t}",
                              "payload_type": "PublishDefinition",
                              "payload": {"definition_json": json.dumps(WORKFLOW),
                                          "params_json": ""}})
        if self.producer.flush(60) != 0:
            raise SuiteError("the load generator could not publish the workflow in 60 s")

    def run(self):
        n = 0
        next_at = now()
        while not self.stopping.is_set():
            tenant = self.tenants[n % len(self.tenants)]
            execution = f"{self.tag}-{n:06d}"
            self._produce(tenant, {
                "kind": "Command", "tenant_id": tenant, "execution_id": execution,
                "record_id": f"load/{execution}", "payload_type": "StartExecution",
                "payload": {"workflow": "fault", "input_json": json.dumps({"n": n})}},
                execution)
            n += 1
            self.produced = n
            next_at += 1.0 / self.rate
            self.producer.poll(0)  # serves delivery callbacks; returns at once
            time.sleep(max(0.0, next_at - now()))
        self.producer.flush(PRODUCE_TIMEOUT_MS / 1000 + 10)
        self.producer = None  # destroys the client: no reconnecting to a stopped cluster

    def stop(self):
        self.stopping.set()
        self.join()


class Tail(threading.Thread):
    """A read_committed consumer following `executions` during the run: when each partition
    last committed, and which executions have ended (for progress and stall figures)."""

    def __init__(self, bootstrap, prefix, partitions, schema):
        super().__init__(daemon=True)
        self.schema = schema
        self.partitions = partitions
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "logger": CLIENT_LOG,
            "group.id": f"fault-suite-tail-{os.getpid()}",
            "isolation.level": "read_committed", "enable.auto.commit": False,
            "auto.offset.reset": "earliest"})
        self.consumer.assign([TopicPartition(prefix + "executions", p, OFFSET_BEGINNING)
                              for p in range(partitions)])
        self.lock = threading.Lock()
        self.times = [[] for _ in range(partitions)]  # receipt times per partition
        self.ended = set()
        self.stopping = threading.Event()

    def run(self):
        terminal = ("ExecutionSucceeded", "ExecutionFailed", "ExecutionCancelled")
        while not self.stopping.is_set():
            for msg in self.consumer.consume(num_messages=500, timeout=0.05):
                if msg.error():
                    continue
                t = now()
                decoded = self.schema.decode(msg.value())
                with self.lock:
                    self.times[msg.partition()].append(t)
                    if decoded and decoded[1] in terminal:
                        self.ended.add(text(decoded[0].ExecutionId()))
        self.consumer.close()

    def ended_count(self, ids):
        with self.lock:
            return sum(1 for i in ids if i in self.ended), [i for i in ids if i not in self.ended]

    def committed_after(self, t):
        """Partitions that have committed nothing after time t."""
        with self.lock:
            return [p for p in range(self.partitions)
                    if not self.times[p] or self.times[p][-1] <= t]

    def longest_gap(self, start, end):
        """Longest time any partition went without a commit in [start, end]: the stall."""
        worst, worst_p = 0.0, None
        with self.lock:
            for p, ts in enumerate(self.times):
                i = bisect.bisect_right(ts, start)
                prev = start
                for t in ts[i:]:
                    if t > end:
                        break
                    if t - prev > worst:
                        worst, worst_p = t - prev, p
                    prev = t
                if end - prev > worst:  # still silent at the end of the window
                    worst, worst_p = end - prev, p
        return worst, worst_p

    def stop(self):
        self.stopping.set()
        self.join()


# ------------------------------------------------------------------------------------ reading


def read_topic(bootstrap, topic, partitions, timeout):
    """Every committed record of `topic` as a read_committed consumer sees it, to the end:
    [(partition, offset, value)]. Ends when each partition reached its high watermark."""
    c = Consumer({
        "bootstrap.servers": bootstrap, "logger": CLIENT_LOG,
        "group.id": f"fault-suite-check-{os.getpid()}",
        "isolation.level": "read_committed", "enable.auto.commit": False,
        "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    try:
        high = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                for p in range(partitions)}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        records, done, reached = [], set(), {}
        deadline = now() + timeout
        while len(done) < partitions:
            if now() > deadline:
                stuck = {p: f"{reached.get(p, 0)} < {high[p]}"
                         for p in range(partitions) if p not in done}
                raise SuiteError(f"reading {topic}: partitions stopped below their high "
                                 f"watermark after {timeout} s (an open transaction?): {stuck}")
            for msg in c.consume(num_messages=2000, timeout=0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        reached[msg.partition()] = msg.offset()
                        if msg.offset() >= high[msg.partition()]:
                            done.add(msg.partition())
                    continue
                records.append((msg.partition(), msg.offset(), msg.value()))
        return records
    finally:
        c.close()


# ----------------------------------------------------------------------------------- checking


class Findings:
    """Failed checks with example ids, and the figures for the results table."""

    def __init__(self, quiet=False):
        self.quiet = quiet
        self.failed = collections.OrderedDict()  # check -> (count, [examples])
        self.passed = []
        self.figures = collections.Counter()
        self.faults = []  # dicts: phase, cls, target, t_fault, stall, partition, detail

    def fail(self, check, examples, count=None):
        examples = list(examples)
        n, ex = self.failed.get(check, (0, []))
        self.failed[check] = (n + (count if count is not None else len(examples)),
                              (ex + examples)[:EXAMPLES_MAX])
        if not self.quiet:
            say(f"FAILED {check}: {'; '.join(str(e) for e in examples[:EXAMPLES_MAX])}")

    def check(self, check, bad, what):
        """Records `check` as passed if `bad` is empty, else failed with examples."""
        if bad:
            self.fail(check, [f"{what}: {b}" for b in list(bad)[:EXAMPLES_MAX]], len(bad))
        elif check not in self.failed and check not in self.passed:
            self.passed.append(check)


TERMINAL = ("ExecutionSucceeded", "ExecutionFailed", "ExecutionCancelled")


CHECKED_TOPICS = ("executions",) + COMMAND_TOPICS + ("acks", "deadletter")


def read_log(bootstrap, prefix, partitions):
    """{topic: [(partition, offset, value)]} for every topic the checks read."""
    return {t: read_topic(bootstrap, prefix + t, partitions, READ_WAIT_S) for t in CHECKED_TOPICS}


def check_log(findings, schema, log, expected, uncertain, requests, bad):
    """The exactly-once checks over what read_committed consumers read from the topics (`log`,
    from read_log) and what the notification receiver got (`requests`, `bad`)."""
    f = findings
    # -- events on `executions`
    events = {}  # record id -> value digest
    dup_same, dup_diff = [], []
    seqs = collections.defaultdict(set)  # execution (or tenant chain) -> sequence numbers
    starts = collections.Counter()
    ends = collections.defaultdict(list)  # execution -> [(seq, type, reason)]
    event_commands = {}  # command id -> execution
    rejections, bad_records, bad_ids = [], [], []
    for p, off, value in log["executions"]:
        d = schema.decode(value)
        if d is None:
            bad_records.append(f"executions/{p}@{off}")
            continue
        env, kind = d
        rid = text(env.RecordId())
        if env.Kind() == schema.RecordKind.Rejection:
            rej = schema.payload(env, "CommandRejected")
            rejections.append(f"{rid} ({text(rej.Reason())})")
            continue
        if env.Kind() != schema.RecordKind.Event:
            continue
        digest = hashlib.sha256(value).digest()
        if rid in events:
            (dup_same if events[rid] == digest else dup_diff).append(rid)
            continue
        events[rid] = digest
        chain, _, seq = rid.rpartition("#")
        execution = text(env.ExecutionId())
        if not seq.isdigit() or (execution and chain != execution):
            bad_ids.append(rid)
            continue
        seqs[chain].add(int(seq))
        if kind == "ExecutionStarted":
            starts[execution] += 1
        elif kind in TERMINAL:
            reason = ""
            if kind == "ExecutionFailed":
                reason = text(schema.payload(env, "ExecutionFailed").Reason())
            ends[execution].append((int(seq), kind, reason))
        elif kind in ("StepScheduled", "NotificationAdmitted"):
            cid = text(schema.payload(env, kind).CommandId())
            if cid:
                event_commands[cid] = execution
    f.figures["events"] += len(events)
    f.figures["duplicated events"] += len(dup_same) + len(dup_diff)
    f.check("no_event_twice", dup_same, "event committed twice (same bytes)")
    f.check("no_event_id_reused", dup_diff, "event id committed twice with different contents")
    f.check("records_readable", bad_records + bad_ids, "undecodable record or malformed event id")
    gaps = []
    for chain, s in seqs.items():
        missing = sorted(set(range(max(s) + 1)) - s)
        if missing:
            gaps.append(f"{chain} lacks #{', #'.join(map(str, missing[:5]))}")
    f.figures["lost events"] += sum(len(set(range(max(s) + 1)) - s) for s in seqs.values())
    f.check("no_sequence_gaps", gaps, "gap in an execution's event sequence")

    # -- executions: each delivered start ran once and ended once
    never, twice, unended, multi_end, not_last, failed = [], [], [], [], [], []
    for x in expected:
        if starts[x] == 0:
            never.append(x)
        elif starts[x] > 1:
            twice.append(f"{x} ({starts[x]} ExecutionStarted)")
        e = ends.get(x, [])
        if starts[x] and not e:
            unended.append(x)
        if len(e) > 1:
            multi_end.append(f"{x} ({', '.join(k for _, k, _ in e)})")
        if e and max(seqs[x]) != e[0][0]:
            not_last.append(f"{x}#{e[0][0]} {e[0][1]} is followed by #{max(seqs[x])}")
        if e and e[0][1] != "ExecutionSucceeded":
            failed.append(f"{x} {e[0][1]} {e[0][2]}")
    unexpected = [x for x in starts if x not in expected and x not in uncertain]
    ended = sum(1 for x in expected if ends.get(x))
    f.figures["executions"] += len(expected)
    f.figures["executions ended"] += ended
    f.figures["lost executions"] += len(never) + len(unended)
    f.figures["duplicated executions"] += len(twice) + len(multi_end)
    f.check("every_start_ran", never, "delivered to ingress, never started")
    f.check("started_once", twice, "started more than once")
    f.check("ended_within_run", unended, "started, never ended")
    f.check("ended_once", multi_end + not_last, "more than one end, or events after the end")
    f.check("executions_succeeded", failed, "did not succeed")
    f.check("no_unknown_executions", unexpected, "started but never submitted")
    f.check("no_rejections", rejections, "rejected")

    # -- commands: once each, exactly those the events say were emitted
    commands = collections.Counter()
    notify_commands = set()
    for topic in COMMAND_TOPICS:
        for p, off, value in log[topic]:
            d = schema.decode(value)
            if d is None:
                bad_records.append(f"{topic}/{p}@{off}")
                continue
            rid = text(d[0].RecordId())
            commands[rid] += 1
            if topic == "commands.notify":
                notify_commands.add(rid)
    dup_commands = [f"{c} x{n}" for c, n in commands.items() if n > 1]
    lost_commands = [c for c in event_commands if c not in commands]
    orphans = [c for c in commands if c not in event_commands]
    f.figures["commands"] += len(commands)
    f.figures["duplicated commands"] += sum(n - 1 for n in commands.values())
    f.figures["lost commands"] += len(lost_commands)
    f.check("no_command_twice", dup_commands, "command record id committed more than once")
    f.check("commands_match_events", lost_commands, "scheduled in an event, not on its topic")
    f.check("no_command_without_event", orphans, "on a command topic, no event scheduled it")

    # -- acks: exactly one per command
    acks = collections.Counter()
    notify_ok = set()
    for p, off, value in log["acks"]:
        d = schema.decode(value)
        if d is None or d[1] != "StepAck":
            bad_records.append(f"acks/{p}@{off}")
            continue
        ack = schema.payload(d[0], "StepAck")
        cid = text(ack.CommandId())
        acks[cid] += 1
        if cid in notify_commands and ack.Status() == schema.AckStatus.Success:
            notify_ok.add(cid)
    dup_acks = [f"{c} x{n}" for c, n in acks.items() if n > 1]
    unacked = [c for c in commands if acks[c] == 0]
    stray = [c for c in acks if c not in commands]
    f.figures["acks"] += sum(acks.values())
    f.figures["duplicated acks"] += sum(n - 1 for n in acks.values())
    f.figures["lost acks"] += len(unacked)
    f.check("one_ack_per_command", dup_acks, "acknowledged more than once")
    f.check("every_command_acked", unacked, "never acknowledged")
    f.check("no_ack_without_command", stray, "ack for a command that is not on a command topic")

    deadletters = []
    for p, off, value in log["deadletter"]:
        d = schema.decode(value)
        reason = text(schema.payload(d[0], "DeadLetter").Reason()) if d else "?"
        deadletters.append(f"deadletter/{p}@{off}: {reason}")
    f.check("no_deadletters", deadletters, "deadlettered")
    f.check("records_readable", bad_records, "undecodable record")

    # -- notification effects at the provider (the HTTP receiver)
    bodies = collections.defaultdict(set)
    for key, body, _ in requests:
        bodies[key].add(body)
    keys_of = collections.defaultdict(set)
    for key in bodies:
        keys_of[key.split("/", 1)[0]].add(key)
    mine = [k for k in bodies if k.split("/", 1)[0] in expected or k in notify_commands]
    undelivered = [c for c in notify_ok if c not in bodies]
    conflicting = [k for k in mine if len(bodies[k]) > 1]
    unknown = [k for k in mine if k not in notify_commands]
    twice_notified = [f"{x}: {sorted(keys_of[x])}" for x in expected if len(keys_of[x]) > 1]
    delivered_raw = sum(1 for key, _, _ in requests if key in set(mine))
    f.figures["notifications"] += len(mine)
    f.figures["notification deliveries"] += delivered_raw
    f.figures["lost notifications"] += len(undelivered)
    f.figures["duplicated notifications"] += len(conflicting) + len(twice_notified)
    f.check("notifications_delivered", undelivered, "acknowledged as sent, never received")
    f.check("notification_key_one_body", conflicting, "one idempotency key, different bodies")
    f.check("one_notification_per_execution", twice_notified, "effects under several keys")
    f.check("notifications_match_commands", unknown + [str(b) for b in bad],
            "received, no such notify command (or a malformed request)")


# Each tampering of a clean log, and the check that must notice it.
SELF_CHECKS = [
    ("duplicate an event (same bytes)", "no_event_twice"),
    ("duplicate an event with other bytes", "no_event_id_reused"),
    ("drop an event from the middle of a history", "no_sequence_gaps"),
    ("drop an ExecutionStarted", "every_start_ran"),
    ("drop a terminal event", "ended_within_run"),
    ("duplicate a command", "no_command_twice"),
    ("drop a command", "commands_match_events"),
    ("duplicate an ack", "one_ack_per_command"),
    ("drop an ack", "every_command_acked"),
    ("a second body under a notification key", "notification_key_one_body"),
    ("drop a notification's deliveries", "notifications_delivered"),
]


def self_check(findings, schema, log, expected, uncertain, requests, bad):
    """Proves the checks can fail: runs them again on a copy of the (clean) log tampered once
    for each entry of SELF_CHECKS, and fails `checker_self_test` for any tampering that went
    unnoticed."""
    ev = {}  # execution -> {seq: index in log["executions"]}
    for i, (_, _, value) in enumerate(log["executions"]):
        d = schema.decode(value)
        if d and d[0].Kind() == schema.RecordKind.Event and text(d[0].ExecutionId()):
            rid = text(d[0].RecordId())
            ev.setdefault(text(d[0].ExecutionId()), {})[int(rid.rpartition("#")[2])] = i
    victims = [x for x in expected if len(ev.get(x, {})) >= 6][:5]
    if len(victims) < 5 or len(log["commands.step"]) < 2 or len(log["commands.ai"]) < 2 \
            or len(requests) < 2:
        findings.fail("checker_self_test", ["too little history to tamper with"])
        return
    t = {k: list(v) for k, v in log.items()}
    x = log["executions"]
    t["executions"].append(x[ev[victims[0]][3]])
    p, o, v = x[ev[victims[1]][3]]
    t["executions"].append((p, o, v + b"\0"))  # decodes the same, other bytes
    drop = {ev[victims[2]][2], ev[victims[3]][0], ev[victims[4]][max(ev[victims[4]])]}
    t["executions"] = [r for i, r in enumerate(t["executions"]) if i not in drop]
    t["commands.step"] = t["commands.step"][1:] + t["commands.step"][-1:]
    # The ack dropped and the one duplicated answer AI commands, which stay untouched.
    ai = {text(schema.decode(v)[0].RecordId()) for _, _, v in log["commands.ai"]}
    ai_acks = [i for i, (_, _, v) in enumerate(log["acks"])
               if text(schema.payload(schema.decode(v)[0], "StepAck").CommandId()) in ai]
    t["acks"] = [r for i, r in enumerate(log["acks"]) if i != ai_acks[0]]
    t["acks"].append(log["acks"][ai_acks[-1]])
    first_key = requests[0][0]
    tampered_requests = [r for r in requests if r[0] != first_key]
    key, body, at = requests[-1]
    tampered_requests.append((key, body + b" ", at))
    probe = Findings(quiet=True)
    check_log(probe, schema, t, expected, uncertain, tampered_requests, bad)
    missed = [f"{check} did not notice: {what}" for what, check in SELF_CHECKS
              if check not in probe.failed]
    findings.check("checker_self_test", missed, "tampered log")


# -------------------------------------------------------------------------------------- phase


class Phase:
    """One cluster, its topics, instances, worker processes, load and faults, then the checks."""

    def __init__(self, suite, name, nodes, partitions, instances, workers):
        self.suite, self.name, self.nodes, self.partitions = suite, name, nodes, partitions
        self.args, self.findings, self.rng = suite.args, suite.findings, suite.rng
        self.dir = os.path.join(suite.work_dir, name)
        os.makedirs(self.dir)
        self.prefix = f"faults-{name}-{os.getpid()}-"
        self.instance_specs, self.worker_specs = instances, workers
        self.procs = {}
        self.cluster_dir = None
        self.bootstrap = None
        self.receiver = None
        self.load = None
        self.tail = None
        self.faults = []
        self.stuck = False  # some partition stopped committing: no more faults, short drain

    # -- setup and teardown

    def broker(self, *args, timeout=300):
        log = os.path.join(self.dir, "broker.log")
        with open(log, "ab") as err:
            r = subprocess.run([self.args.broker_sh, *args], stdout=subprocess.PIPE, stderr=err,
                               text=True, timeout=timeout)
        if r.returncode != 0:
            raise SuiteError(f"broker.sh {' '.join(args)} failed (exit {r.returncode}); see {log}")
        return r.stdout

    def start_cluster(self):
        t = now()
        out = self.broker("start", "--nodes", str(self.nodes), "--owner", str(os.getpid()))
        env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        self.bootstrap, self.cluster_dir = env["BOOTSTRAP"], env["DIR"]
        self.suite.clusters.append(self.cluster_dir)
        say(f"{self.name}: {self.nodes}-node cluster {self.bootstrap} ready in {now() - t:.1f} s")

    def stop_cluster(self):
        if self.cluster_dir:
            try:
                self.broker("stop", "--dir", self.cluster_dir, "--rm", timeout=120)
            except (SuiteError, subprocess.TimeoutExpired) as e:
                say(f"{self.name}: stopping the cluster: {e}")
            self.suite.clusters.remove(self.cluster_dir)
            self.cluster_dir = None

    def auterity(self, *args, timeout=120, log_name="tools.log"):
        log = os.path.join(self.dir, log_name)
        with open(log, "ab") as out:
            out.write(f"\n=== {' '.join(args)}\n".encode())
            out.flush()
            r = subprocess.run([self.args.auterity, *args], stdout=out, stderr=subprocess.STDOUT,
                               timeout=timeout)
        return r.returncode, log

    def setup(self):
        self.start_cluster()
        rc, log = self.auterity("topics", "apply", "--bootstrap", self.bootstrap, "--partitions",
                                str(self.partitions), "--prefix", self.prefix)
        if rc != 0:
            raise SuiteError(f"auterity topics apply failed; see {log}")
        self.receiver = Receiver()
        connectors = os.path.join(self.dir, "connectors.json")
        with open(connectors, "w") as out:
            json.dump({"notify": {"webhook": {"api": "webhook", "url": self.receiver.url()}}},
                      out)
        common = ["--kafka", self.bootstrap, "--topic-prefix", self.prefix, "--connectors",
                  connectors]
        for name, in_process_workers in self.instance_specs:
            data = os.path.join(self.dir, name)
            argv = [self.args.auterity, "run", *common, "--data", data, "--instance", name,
                    "--stats-interval-s", "0"]
            if not in_process_workers:
                argv += ["--workers", "none"]
            self.procs[name] = Proc(name, argv, os.path.join(self.dir, f"{name}.log"), data)
        for name in self.worker_specs:
            data = os.path.join(self.dir, name)
            argv = [self.args.auterity, "worker", *common, "--data", data, "--instance", name,
                    "--workers", "step,ai,notify"]
            self.procs[name] = Proc(name, argv, os.path.join(self.dir, f"{name}.log"), data,
                                    kind="worker")
        for p in self.procs.values():
            p.start()
        tenants = tenants_covering(self.partitions, 2)
        self.tail = Tail(self.bootstrap, self.prefix, self.partitions, self.suite.schema)
        self.tail.start()
        self.load = LoadGen(self.bootstrap, self.prefix, tenants, self.args.rate, self.name)
        self.load.publish_definitions()
        self.load.start()
        say(f"{self.name}: {len(self.instance_specs)} instances, {len(self.worker_specs)} worker "
            f"processes, {self.partitions} partitions, {len(tenants)} tenants, "
            f"{self.args.rate} starts/s; logs in {self.dir}")
        t = now()
        self.wait_progress(t, "the first commits on every partition")
        self.sleep(SETTLE_S)

    def teardown(self):
        for p in self.procs.values():
            if p.alive():
                p.signal(signal.SIGCONT)
                p.signal(signal.SIGKILL)
        for thing in (self.load, self.tail):
            if thing is not None and thing.is_alive():
                thing.stopping.set()
        if self.receiver:
            self.receiver.close()
        self.stop_cluster()

    # -- supervision and waiting

    def supervise(self):
        """Restarts a process that exited on its own, as a supervisor would, and records it."""
        for p in self.procs.values():
            if p.p is not None and not p.alive() and not p.expected_exit:
                tail = " | ".join(p.log_text().strip().splitlines()[-3:])
                self.findings.fail("processes_stayed_up", [
                    f"{self.name}/{p.name} exited with status {p.p.returncode} at "
                    f"{now() - T0:.1f}s: {tail[-400:]} (log {p.log_path})"])
                p.start()

    def sleep(self, seconds):
        end = now() + seconds
        while now() < end:
            self.supervise()
            time.sleep(min(0.2, max(0.0, end - now())))

    def wait_progress(self, after, what):
        """Waits until every partition committed after `after`; False (and a failure) if not."""
        deadline = now() + RECOVERY_WAIT_S
        while now() < deadline:
            self.supervise()
            silent = self.tail.committed_after(after)
            if not silent:
                return True
            time.sleep(0.1)
        self.findings.fail("progress_after_fault", [
            f"{self.name}: partitions {silent} committed nothing within {RECOVERY_WAIT_S} s "
            f"after {what}"])
        self.stuck = True  # more faults would say nothing more; the run stays bounded
        return False

    # -- faults

    def record(self, cls, target, t_fault, detail):
        self.faults.append({"phase": self.name, "cls": cls, "target": target,
                            "t_fault": t_fault, "detail": detail})
        say(f"{self.name}: fault {len(self.faults)} {cls} on {target}: {detail}")

    def freeze_then_continue(self, p, t_fault, cls, detail):
        starts = p.starts
        p.paused = True
        freeze = self.rng.uniform(*FREEZE_S)
        self.sleep(freeze)
        p.signal(signal.SIGCONT)
        p.paused = False
        t_remedy = now()
        self.record(cls, p.name, t_fault, f"{detail}, SIGCONT after {t_remedy - t_fault:.1f} s")
        self.wait_progress(t_remedy, f"{cls} on {p.name}")
        # Issue 8: a fenced instance used to abort. It must step down and carry on.
        self.sleep(2)
        self.supervise()
        if p.starts != starts:
            self.findings.fail("paused_instance_survives", [
                f"{self.name}/{p.name} exited after {cls} (see processes_stayed_up); "
                f"log {p.log_path}"])
        else:
            self.findings.check("paused_instance_survives", [], "")

    def restart_clean(self, p, fault=None):
        rc = p.terminate(STOP_WAIT_S)
        self.findings.check("clean_exit", [] if rc == 0 else [
            f"{self.name}/{p.name}: status {rc} (None: still running {STOP_WAIT_S} s after "
            f"SIGTERM); log {p.log_path}"], "SIGTERM")
        p.start(fault)

    def fault_point(self, p, point, action, n):
        """Restarts `p` with AUTERITY_FAULT=point:action@n and waits for the point."""
        spec = f"{point}:{action}@{n}"
        if self.suite.fault_points_missing:
            return
        self.restart_clean(p, spec)
        try:
            fired = p.wait_fault_point(point, FAULT_POINT_WAIT_S)
        except SuiteError as e:
            # Without fault points (an older binary) the other faults still say something.
            if not p.alive():  # crashed before the point: the supervisor's business
                self.supervise()
                return
            self.findings.fail("fault_point_works", [str(e)])
            self.suite.fault_points_missing = True
            self.restart_clean(p)
            return
        t_fault = now()
        cls = f"{'pause' if action == 'stop' else 'kill'}@{point}"
        if action == "stop":
            deadline = now() + 5
            while not p.stopped_by_signal() and now() < deadline:
                time.sleep(0.02)
            if not p.stopped_by_signal():
                self.findings.fail("fault_point_works", [
                    f"{p.name}: said '{fired}' at {point} but is not stopped"])
            self.freeze_then_continue(p, t_fault, cls, f"AUTERITY_FAULT={spec}")
        else:
            try:
                p.p.wait(10)
            except subprocess.TimeoutExpired:
                self.findings.fail("fault_point_works", [f"{p.name}: alive 10 s after {spec}"])
                p.kill9()
            p.expected_exit = True
            status = p.p.returncode
            p.start()  # the supervisor restarts it, same --instance and --data
            self.record(cls, p.name, t_fault, f"AUTERITY_FAULT={spec}, exit status {status}, "
                        "restarted")
            self.wait_progress(now(), f"{cls} on {p.name}")

    def sigstop(self, p):
        p.signal(signal.SIGSTOP)
        t_fault = now()
        self.freeze_then_continue(p, t_fault, "sigstop", "SIGSTOP at a random time")

    def kill9(self, p, wipe):
        p.kill9()
        t_fault = now()
        if wipe:
            shutil.rmtree(p.data, ignore_errors=True)
        p.start()
        cls = ("kill9-worker" if p.kind == "worker" else "kill9+wipe" if wipe else "kill9")
        self.record(cls, p.name, t_fault, f"SIGKILL{', --data wiped' if wipe else ''}, "
                    "restarted")
        self.wait_progress(now(), f"{cls} on {p.name}")

    def broker_kill(self):
        from confluent_kafka.admin import AdminClient
        md = AdminClient({"bootstrap.servers": self.bootstrap, "logger": CLIENT_LOG}).list_topics(
            timeout=30)
        leaders = collections.Counter(
            pm.leader for pm in md.topics[self.prefix + "executions"].partitions.values())
        node = leaders.most_common(1)[0][0]
        self.broker("kill-node", str(node), "--dir", self.cluster_dir)
        t_fault = now()
        self.sleep(BROKER_DOWN_S)
        self.broker("start-node", str(node), "--dir", self.cluster_dir)
        self.record("broker-kill", f"node {node}", t_fault,
                    f"SIGKILL of the node leading {leaders[node]} executions partitions, "
                    f"restarted after {now() - t_fault:.1f} s")
        self.wait_progress(now(), f"broker-kill of node {node}")

    def instances(self):
        return [p for p in self.procs.values() if p.kind == "instance"]

    def workers(self):
        return [p for p in self.procs.values() if p.kind == "worker"]

    def run_fault(self, cls, target=None):
        pick = target or self.rng.choice(self.workers() if cls == "kill9-worker"
                                         else self.instances())
        if cls.startswith(("pause@", "kill@")):
            action, point = cls.split("@")
            n = 1 if point == "restore.positions_read" else self.rng.randint(10, 60)
            self.fault_point(pick, point, "stop" if action == "pause" else "kill", n)
        elif cls == "sigstop":
            self.sigstop(pick)
        elif cls in ("kill9", "kill9+wipe", "kill9-worker"):
            self.kill9(pick, wipe=cls == "kill9+wipe")
        elif cls == "broker-kill":
            self.broker_kill()
        else:
            raise SuiteError(f"unknown fault class {cls}")
        self.sleep(SETTLE_S)

    # -- the end

    def finish(self):
        """Stops the load, waits for every execution to end, stops every process, checks."""
        t_load_stop = now()
        self.load.stop()
        expected = dict(self.load.delivered)
        say(f"{self.name}: load stopped: {len(expected)} executions delivered to ingress "
            f"({len(self.load.undelivered)} not confirmed, "
            f"{self.load.replaced} producer(s) replaced after a fatal error)")
        for i, fault in enumerate(self.faults):
            end = self.faults[i + 1]["t_fault"] if i + 1 < len(self.faults) else t_load_stop
            fault["stall"], fault["partition"] = self.tail.longest_gap(fault["t_fault"], end)
        drain_wait = STUCK_DRAIN_WAIT_S if self.stuck else DRAIN_WAIT_S
        deadline = now() + drain_wait
        next_report = now() + 15
        while True:
            self.supervise()
            done, missing = self.tail.ended_count(expected)
            if not missing or now() > deadline:
                break
            if now() >= next_report:
                say(f"{self.name}: {done} of {len(expected)} executions ended")
                next_report += 15
            time.sleep(0.2)
        say(f"{self.name}: {done} of {len(expected)} executions ended "
            f"{now() - t_load_stop:.1f} s after the load stopped")
        if missing:
            self.findings.fail("executions_finish", [
                f"{len(missing)} still running {drain_wait} s after the load stopped, e.g. "
                f"{', '.join(missing[:EXAMPLES_MAX])}"], len(missing))
        self.tail.stop()
        for check in ("processes_stayed_up", "progress_after_fault", "executions_finish"):
            self.findings.check(check, [], "")  # recorded as they happened; listed when ok
        for p in self.procs.values():
            rc = p.terminate(STOP_WAIT_S)
            self.findings.check("clean_exit", [] if rc == 0 else [
                f"{self.name}/{p.name}: status {rc} (None: still running {STOP_WAIT_S} s "
                f"after SIGTERM); log {p.log_path}"], "SIGTERM")
        t = now()
        log = read_log(self.bootstrap, self.prefix, self.partitions)
        requests, bad = self.receiver.snapshot()
        check_log(self.findings, self.suite.schema, log, expected, self.load.undelivered,
                  requests, bad)
        if self.suite.args.mode == "ci" and not self.suite.self_checked:
            self_check(self.findings, self.suite.schema, log, expected, self.load.undelivered,
                       requests, bad)
            self.suite.self_checked = True
        say(f"{self.name}: topics read and checked in {now() - t:.1f} s")
        for p in self.instances():
            t = now()
            rc, log = self.auterity("replay", "verify", "--kafka", self.bootstrap,
                                    "--topic-prefix", self.prefix, "--data", p.data,
                                    "--no-progress", timeout=VERIFY_WAIT_S,
                                    log_name=f"verify-{p.name}.log")
            self.findings.check("replay_verify", [] if rc == 0 else [
                f"{self.name}/{p.name}: exit {rc}, see {log}"], "auterity replay verify")
            say(f"{self.name}: replay verify --data {p.name}: exit {rc} in {now() - t:.1f} s")
        self.findings.faults += self.faults


# -------------------------------------------------------------------------------------- suite


CI_INSTANCE_FAULTS = [  # deterministic fault points first, then faults at random times
    "pause@txn.offsets_sent", "pause@txn.produced", "kill@txn.offsets_sent",
    "kill@txn.committed", "kill9+wipe", "kill9", "sigstop", "kill9-worker"]
SOAK_FAULTS = CI_INSTANCE_FAULTS + [
    "pause@txn.committed", "kill@txn.produced", "kill@restore.positions_read",
    "pause@restore.positions_read", "broker-kill"]


class Suite:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
        self.rng = random.Random(self.seed)
        self.findings = Findings()
        self.work_dir = args.work_dir or tempfile.mkdtemp(prefix="auterity-faults.")
        os.makedirs(self.work_dir, exist_ok=True)
        handler = logging.FileHandler(os.path.join(self.work_dir, "kafka-clients.log"))
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        CLIENT_LOG.addHandler(handler)
        self.clusters = []
        self.self_checked = False
        self.fault_points_missing = False
        self.schema = Schema(args.python_gen)
        help_text = subprocess.run([args.auterity, "--help"], capture_output=True, text=True)
        self.has_worker = re.search(r"^\s+worker\b", help_text.stdout, re.M) is not None

    def worker_names(self, names):
        if self.has_worker:
            return names
        if "separate_workers" not in self.findings.failed:
            self.findings.fail("separate_workers", [
                "`auterity worker` is missing from this binary: no separate worker processes"])
        return []

    def run_ci(self):
        skip = set(self.args.skip)
        p = Phase(self, "ci1", 1, 6, [("a", True), ("b", True), ("c", False)],
                  self.worker_names(["w1", "w2"]))
        self.run_phase(p, [c for c in CI_INSTANCE_FAULTS if c not in skip and
                           (c != "kill9-worker" or p.worker_specs)], fixed_targets=True)
        if "broker-kill" not in skip:
            p = Phase(self, "ci3", 3, 6, [("a", True), ("b", False)], self.worker_names(["w1"]))
            self.run_phase(p, ["broker-kill"])

    def run_soak(self):
        p = Phase(self, "soak", 3, 6, [("a", True), ("b", True), ("c", False)],
                  self.worker_names(["w1", "w2"]))
        classes = [c for c in SOAK_FAULTS if c not in set(self.args.skip) and
                   (c != "kill9-worker" or p.worker_specs)]
        end = now() + self.args.minutes * 60
        try:
            p.setup()
            while now() < end and not p.stuck:
                p.run_fault(self.rng.choice(classes))
            p.finish()
        finally:
            p.teardown()

    def run_phase(self, p, classes, fixed_targets=False):
        try:
            p.setup()
            instances = p.instances()
            for i, cls in enumerate(classes):
                if p.stuck:
                    say(f"{p.name}: stuck; the remaining faults are skipped")
                    break
                # The fault points rotate over the instances, so each one is fenced once.
                target = instances[i % len(instances)] if fixed_targets and "@" in cls else None
                p.run_fault(cls, target)
            p.finish()
        finally:
            p.teardown()

    def cleanup(self):
        for d in list(self.clusters):
            subprocess.run([self.args.broker_sh, "stop", "--dir", d, "--rm"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    def report(self, elapsed):
        f = self.findings
        by_class = collections.OrderedDict()
        for fault in f.faults:
            by_class.setdefault(fault["cls"], []).append(fault)
        print()
        print(f"fault suite, mode {self.args.mode}, seed {self.seed}, {elapsed:.0f} s")
        print(f"{'fault class':28} {'faults':>6} {'longest stall s':>16} {'median stall s':>15}")
        for cls, faults in by_class.items():
            stalls = sorted(x.get("stall", 0.0) for x in faults)
            print(f"{cls:28} {len(faults):6} {stalls[-1]:16.1f} {stalls[len(stalls) // 2]:15.1f}")
        g = f.figures
        print(f"executions {g['executions']}, ended {g['executions ended']}, "
              f"lost {g['lost executions']}, duplicated {g['duplicated executions']}")
        print(f"events {g['events']}: lost {g['lost events']}, duplicated "
              f"{g['duplicated events']}; commands {g['commands']}: lost {g['lost commands']}, "
              f"duplicated {g['duplicated commands']}; acks {g['acks']}: missing "
              f"{g['lost acks']}, duplicated {g['duplicated acks']}")
        print(f"notifications {g['notifications']} (distinct idempotency keys), deliveries "
              f"{g['notification deliveries']} (redelivered "
              f"{g['notification deliveries'] - g['notifications']}), lost "
              f"{g['lost notifications']}, duplicated effects {g['duplicated notifications']}")
        for check in f.passed:
            if check not in f.failed:
                print(f"  ok      {check}")
        for check, (n, examples) in f.failed.items():
            print(f"  FAILED  {check} ({n}): " + "; ".join(examples))
        rerun = (f"{sys.executable} {os.path.abspath(__file__)} --mode {self.args.mode} "
                 f"--seed {self.seed} --auterity {self.args.auterity} --broker-sh "
                 f"{self.args.broker_sh} --python-gen {self.args.python_gen}"
                 + (f" --minutes {self.args.minutes}" if self.args.mode == "soak" else ""))
        print(f"rerun: {rerun}")
        return not f.failed


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("ci", "soak"), default="ci")
    ap.add_argument("--minutes", type=float, default=30, help="soak: how long to inject faults")
    ap.add_argument("--seed", type=int, help="reruns a schedule (printed at the start)")
    ap.add_argument("--auterity", default=os.path.join(root, "build", "cli", "auterity"))
    ap.add_argument("--broker-sh", default=os.path.join(root, "tests", "kafka", "broker.sh"))
    ap.add_argument("--python-gen", default=os.path.join(root, "build", "generated", "python"))
    ap.add_argument("--rate", type=float, default=12, help="executions started per second")
    ap.add_argument("--work-dir", help="logs and state (default: a new temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory on success")
    ap.add_argument("--skip", default="", type=lambda s: [c for c in s.split(",") if c],
                    help="fault classes to leave out, comma-separated (debugging)")
    args = ap.parse_args()
    suite = Suite(args)
    say(f"fault suite: mode {args.mode}, seed {suite.seed} (--seed {suite.seed} reruns it), "
        f"work directory {suite.work_dir}")
    def interrupted(signum, _frame):
        raise SuiteError(f"interrupted by signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, interrupted)
    try:
        suite.run_ci() if args.mode == "ci" else suite.run_soak()
    except SuiteError as e:
        suite.findings.fail("suite_completed", [str(e)])
    except Exception as e:  # a bug in the suite: still report, stop brokers, keep the logs
        import traceback
        traceback.print_exc()
        suite.findings.fail("suite_completed", [f"{type(e).__name__}: {e}"])
    finally:
        suite.cleanup()
    ok = suite.report(now() - T0)
    if ok and not args.keep:
        shutil.rmtree(suite.work_dir, ignore_errors=True)
    else:
        print(f"logs and state: {suite.work_dir}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
