#!/usr/bin/env python3
"""Seeds the fuzz corpora (tests/fuzz/corpus/) from a real run and from the sample files.

  build/cli/auterity demo --data /tmp/d --partitions 1 --no-fsync --quiet --executions 6
  tests/fuzz/make_corpus.py /tmp/d [--flatc flatc]

Reads the embedded log's segment (frame format: engine/embedded_log.cc) without the engine:
  log_recovery   the first commits of the segment (whole, torn in a frame, with a flipped byte),
                 each with flag bytes 0 and 1 (fuzz_log_recovery.cc);
  envelope       one record of each payload type found, from every stream;
  orchestrator   the ingress records (flag byte 0) and acks (flag byte 1);
  json_envelope  the ingress records as JSON (flatc --json --strict-json);
  definition, policy  the sample workflow and policy with inputs (hand-written parts).
Files are named by their SHA-1, as libFuzzer names what it adds. Re-running adds, never removes.
"""
import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
STREAMS = ["ingress", "executions", "commands.step", "commands.ai", "commands.notify", "acks",
           "definitions", "deadletter"]


def put(target, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def frames(seg):
    """(start, end, type, body) of each frame of a segment."""
    pos = 0
    while pos + 16 <= len(seg) and seg[pos:pos + 4] == b"AUTL":
        body_len = struct.unpack_from("<I", seg, pos + 8)[0]
        ftype = seg[pos + 12]
        end = pos + 16 + body_len
        if end > len(seg):
            return
        yield pos, end, ftype, seg[pos + 16:end]
        pos = end


def to_json(flatc, tmp, value):
    """The record as the envelope's JSON (flatc), or None if it is not an envelope."""
    path = os.path.join(tmp, "r.bin")
    with open(path, "wb") as f:
        f.write(value)
    out = os.path.join(tmp, "r.json")
    if os.path.exists(out):
        os.remove(out)
    r = subprocess.run([flatc, "--json", "--strict-json", "--raw-binary", "-o", tmp,
                        os.path.join(ROOT, "schemas", "auterity.fbs"), "--", path],
                       capture_output=True)
    return open(out, "rb").read() if r.returncode == 0 and os.path.exists(out) else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--flatc", default="flatc")
    a = ap.parse_args()
    seg_dir = os.path.join(a.data, "log", "p000")
    seg = open(os.path.join(seg_dir, sorted(os.listdir(seg_dir))[0]), "rb").read()

    records = []  # (stream, key, value)
    commit_ends = []
    for start, end, ftype, body in frames(seg):
        if ftype == 1:
            s, _off, klen = struct.unpack_from("<BQI", body, 0)
            key = body[13:13 + klen]
            records.append((STREAMS[s], key, body[13 + klen:]))
        elif ftype == 2:
            commit_ends.append(end)

    # log_recovery: prefixes ending at a commit, a torn one, one with a flipped byte.
    for n in (1, 3, 8):
        if len(commit_ends) >= n:
            prefix = seg[:commit_ends[n - 1]]
            for flag in (0, 1):
                put("log_recovery", bytes([flag]) + prefix)
    if len(commit_ends) >= 4:
        put("log_recovery", b"\x00" + seg[:commit_ends[3] - 7])
        flipped = bytearray(seg[:commit_ends[3]])
        flipped[commit_ends[0] + 40] ^= 0x01
        put("log_recovery", b"\x00" + bytes(flipped))
        put("log_recovery", b"\x02" + seg[:commit_ends[3]])  # two segments

    # envelope: two records of each (stream, payload type); json_envelope: ingress as JSON.
    taken = {}
    with tempfile.TemporaryDirectory() as tmp:
        for s, key, value in records:
            text = to_json(a.flatc, tmp, value)
            kind = json.loads(text).get("payload_type") if text else None
            if taken.get((s, kind), 0) < 2:
                taken[(s, kind)] = taken.get((s, kind), 0) + 1
                put("envelope", value)
                if s == "ingress" and text:
                    put("json_envelope", text)
    for s, key, value in records:
        if s == "ingress":
            put("orchestrator", b"\x00" + value)
        elif s == "acks":
            put("orchestrator", b"\x01" + value)

    wf = os.path.join(ROOT, "processors", "workflows")
    new_lead = open(os.path.join(wf, "new_lead.json"), "rb").read()
    policy = open(os.path.join(wf, "dealer_policy.json"), "rb").read()
    lead = (b'{"name":"Maria","vehicle":"RAV4","budget":42000,"timeline":"this_week",'
            b'"source":"website","trade_in":true,'
            b'"contact":{"preferred":"sms","phone":"+15550100001"}}')
    sep = b"\n%%\n"
    put("definition", new_lead + sep + b'{"dealer_name":"Acme Motors"}' + sep + lead + sep +
        b'{"grade":"hot","text":"Hi Maria","score":91}')
    put("definition", new_lead + sep + b"" + sep + b"{}" + sep + b"")
    put("policy", policy + sep + b'{"prompt":"hello","max_tokens":120}' + sep + b"+1 (555) 010-0003")
    put("policy", policy + sep + b'{"prompt":"x"}' + sep + b"Someone@Example.COM")


if __name__ == "__main__":
    sys.exit(main())
