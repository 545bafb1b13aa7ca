#!/usr/bin/env python3
"""A step worker for the Auterity engine, in Python: the reference for workers in other languages.

It takes `RunStep` commands from the commands.step topic, runs the action, and answers each with
a `StepAck` on the acks topic (same partition), exactly once: the acks of a batch and the
consumer offsets after it are committed in one Kafka transaction. The protocol it follows is
engine/WORKERS.md; the record classes are generated from schemas/auterity.fbs by the build
(`flatc --python`, into <build>/generated/python: put that directory on PYTHONPATH).

Actions:
  transform   output = the step input
  upper       output = the step input (a JSON object) with every top-level string upper-cased
  anything else: a permanent failure naming the action

Run:  PYTHONPATH=build/generated/python python3 worker.py --bootstrap 127.0.0.1:9092
Stops on SIGTERM/SIGINT, after --max-commands commands, or after --idle-exit-ms without any.
"""

import argparse
import json
import signal
import sys
import time

import flatbuffers
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from auterity.schema import Envelope as envelope_fb
from auterity.schema import StepAck as step_ack_fb
from auterity.schema import Usage as usage_fb
from auterity.schema.AckStatus import AckStatus
from auterity.schema.Envelope import Envelope
from auterity.schema.Payload import Payload
from auterity.schema.RecordKind import RecordKind
from auterity.schema.RunStep import RunStep

# The engine's consumer group for commands.step: "auterity." + "worker.commands.step" (the
# worker runtime's group is "worker." + the stream's name). The topic prefix is not part of it
# (engine/kafka_log.cc, kafka_group_id). The engine's own step workers are members of it too.
GROUP_ID = "auterity.worker.commands.step"
FILE_IDENTIFIER = b"AUTR"
PAYLOAD_BYTES_MAX = 64 * 1024  # processors/limits.h payload_bytes_max: output_json, input_json
COMMAND_DEADLINE_MS = 30_000  # a command without deadline_ms must be answered this fast
BATCH_RECORDS_MAX = 256  # commands per transaction
KAFKA_TIMEOUT_S = 30  # longest wait for one transactional call


class PermanentFailure(Exception):
    """The command can never succeed: the engine fails the step without retrying."""


def now_ms():
    return int(time.time() * 1000)


# ------------------------------------------------------------------------------------- actions


def transform(value):
    return value


def upper(value):
    if not isinstance(value, dict):
        raise PermanentFailure("upper takes a JSON object")
    return {k: v.upper() if isinstance(v, str) else v for k, v in value.items()}


ACTIONS = {"transform": transform, "upper": upper}


def run_step(cmd):
    """Returns (status, output_json, error) for one RunStep."""
    action = (cmd.Action() or b"").decode()
    deadline = cmd.DeadlineMs() or now_ms() + COMMAND_DEADLINE_MS
    if now_ms() > deadline:
        return AckStatus.RetryableFailure, "", "deadline passed before the worker started it"
    try:
        if action not in ACTIONS:
            raise PermanentFailure(
                f"unknown task action '{action}' (python worker actions: {', '.join(ACTIONS)})")
        try:
            value = json.loads(cmd.InputJson() or b"{}")
        except ValueError:
            raise PermanentFailure("step input is not JSON")
        output = json.dumps(ACTIONS[action](value), separators=(",", ":"))
    except PermanentFailure as e:
        return AckStatus.PermanentFailure, "", str(e)
    except Exception as e:  # a bug or a passing outage: let the engine retry the step
        return AckStatus.RetryableFailure, "", f"python worker: {type(e).__name__}: {e}"
    if len(output.encode()) > PAYLOAD_BYTES_MAX:
        return (AckStatus.PermanentFailure, "",
                f"output is {len(output.encode())} bytes; payload_bytes_max is {PAYLOAD_BYTES_MAX}")
    if now_ms() > deadline:  # too late: the engine may have timed the attempt out already
        return AckStatus.RetryableFailure, "", "deadline exceeded"
    return AckStatus.Success, output, ""


# ------------------------------------------------------------------------------------- records


def decode_command(value):
    """(envelope, RunStep) of a command record, or None if it is not one."""
    if not value or len(value) < 8 or value[4:8] != FILE_IDENTIFIER:
        return None
    try:
        env = Envelope.GetRootAs(value, 0)
        if env.PayloadType() != Payload.RunStep:
            return None
        table = env.Payload()
        cmd = RunStep()
        cmd.Init(table.Bytes, table.Pos)
        env.RecordId(), cmd.Step()  # touch the fields we need: a torn buffer fails here
        return env, cmd
    except Exception:
        return None


def make_ack(env, cmd, status, output, error):
    """The StepAck envelope, field for field as the engine's make_ack (worker_runtime.cc)."""
    command_id = env.RecordId()
    b = flatbuffers.Builder(512 + len(output))
    # Strings and sub-tables first: a table can only point at what was built before it.
    model, provider = b.CreateString(""), b.CreateString("")
    usage_fb.UsageStart(b)  # no AI here: empty usage (tokens and cost at their default 0)
    usage_fb.UsageAddModel(b, model)
    usage_fb.UsageAddProvider(b, provider)
    usage = usage_fb.UsageEnd(b)
    ack_command_id = b.CreateString(command_id)
    step = b.CreateString(cmd.Step())
    output_json = b.CreateString(output)
    error_text = b.CreateString(error)
    step_ack_fb.StepAckStart(b)
    step_ack_fb.StepAckAddCommandId(b, ack_command_id)
    step_ack_fb.StepAckAddStep(b, step)
    step_ack_fb.StepAckAddAttempt(b, cmd.Attempt())
    step_ack_fb.StepAckAddStatus(b, status)
    step_ack_fb.StepAckAddOutputJson(b, output_json)
    step_ack_fb.StepAckAddError(b, error_text)
    step_ack_fb.StepAckAddUsage(b, usage)
    payload = step_ack_fb.StepAckEnd(b)
    tenant = b.CreateString(env.TenantId())
    execution = b.CreateString(env.ExecutionId())
    record_id = b.CreateString(b"ack/" + command_id)
    causation_id = b.CreateString(command_id)
    envelope_fb.EnvelopeStart(b)
    envelope_fb.EnvelopeAddTimestampMs(b, now_ms())
    envelope_fb.EnvelopeAddTenantId(b, tenant)
    envelope_fb.EnvelopeAddExecutionId(b, execution)
    envelope_fb.EnvelopeAddRecordId(b, record_id)
    envelope_fb.EnvelopeAddCausationId(b, causation_id)
    envelope_fb.EnvelopeAddPayload(b, payload)
    envelope_fb.EnvelopeAddSchemaVersion(b, 1)
    envelope_fb.EnvelopeAddKind(b, RecordKind.Command)
    envelope_fb.EnvelopeAddPayloadType(b, Payload.StepAck)
    b.Finish(envelope_fb.EnvelopeEnd(b), file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


# --------------------------------------------------------------------------------- Kafka loop


def commit(producer):
    while True:
        try:
            producer.commit_transaction(KAFKA_TIMEOUT_S)
            return
        except KafkaException as e:
            if not e.args[0].retriable():
                raise


def rewind(consumer):
    """After an aborted transaction: back to the committed offsets, so the batch runs again."""
    for tp in consumer.committed(consumer.assignment(), timeout=KAFKA_TIMEOUT_S):
        if tp.offset < 0:
            tp.offset = OFFSET_BEGINNING
        consumer.seek(tp)


def run_batch(consumer, producer, records, acks_topic):
    """Acks `records` and moves the group's offsets past them in one transaction.
    Returns the number of commands acknowledged (0 if the transaction was aborted)."""
    producer.begin_transaction()
    try:
        next_offsets = {}
        for r in records:
            next_offsets[(r.topic(), r.partition())] = r.offset() + 1
            decoded = decode_command(r.value())
            if decoded is None:
                # The engine's own workers deadletter such a record; this one only skips it.
                print(f"worker: skipping {r.topic()}/{r.partition()}@{r.offset()}: not a RunStep",
                      file=sys.stderr)
                continue
            env, cmd = decoded
            status, output, error = run_step(cmd)
            producer.produce(acks_topic, key=env.TenantId(), partition=r.partition(),
                             value=make_ack(env, cmd, status, output, error))
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(),
                                             KAFKA_TIMEOUT_S)
        commit(producer)
        return len(records)
    except KafkaException as e:
        if not e.args[0].txn_requires_abort():
            raise  # fenced or fatal: stop; a restart resumes from the committed offsets
        print(f"worker: aborting a transaction: {e}", file=sys.stderr)
        producer.abort_transaction(KAFKA_TIMEOUT_S)
        rewind(consumer)
        return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, host:port")
    parser.add_argument("--prefix", default="", help="topic prefix (auterity topics --prefix)")
    parser.add_argument("--transactional-id", default="auterity.python-worker",
                        help="unique per worker process that runs at the same time")
    parser.add_argument("--max-commands", type=int, default=0, help="stop after this many")
    parser.add_argument("--idle-exit-ms", type=int, default=0,
                        help="stop after this long without a command (0: never)")
    args = parser.parse_args()

    stopping = []
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stopping.append(True))

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": GROUP_ID,
        "isolation.level": "read_committed",  # never see an aborted or open transaction
        "enable.auto.commit": False,  # offsets are committed only inside our transactions
        "auto.offset.reset": "earliest",
        # As the engine's own group members: a worker that died is replaced within 6 s.
        "session.timeout.ms": 6000,
    })
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "transactional.id": args.transactional_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 1,
    })
    producer.init_transactions(KAFKA_TIMEOUT_S)  # fences an older process with the same id
    consumer.subscribe([args.prefix + "commands.step"])
    acks_topic = args.prefix + "acks"
    print(f"worker: consuming {args.prefix}commands.step as {GROUP_ID}", file=sys.stderr,
          flush=True)

    done, last_work = 0, time.monotonic()
    while not stopping:
        records = consumer.consume(num_messages=BATCH_RECORDS_MAX, timeout=0.1)
        errors = [r.error() for r in records if r.error()]
        for e in errors:
            if e.fatal():
                raise KafkaException(e)
            print(f"worker: {e}", file=sys.stderr)  # librdkafka retries by itself
        records = [r for r in records if not r.error()]
        if not records:
            if args.idle_exit_ms and (time.monotonic() - last_work) * 1000 > args.idle_exit_ms:
                break
            continue
        done += run_batch(consumer, producer, records, acks_topic)
        last_work = time.monotonic()
        if args.max_commands and done >= args.max_commands:
            break
    consumer.close()
    print(f"worker: acknowledged {done} commands", file=sys.stderr)


if __name__ == "__main__":
    main()
