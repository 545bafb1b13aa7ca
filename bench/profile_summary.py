#!/usr/bin/env python3
"""Summarises a `perf record --call-graph dwarf` profile of orchestration_bench by cost centre.

Usage:
  perf script -i perf.data -F comm,tid,period,ip,sym | python3 bench/profile_summary.py

Inclusive rows count a sample once if any frame of its stack matches the row's pattern and its
parent row (the nearest row above with less indent) matched too; siblings may overlap (e.g. a
lookup inside apply_record counts for both). Self rows count the leaf frame only. Percentages are
of all cycles sampled in the process, every thread included.
"""

import re
import sys
from collections import defaultdict

# (indent, label, pattern): inclusive cost centres, in the order printed.
INCLUSIVE = [
    (0, "partition runtime (orchestrator threads)", r"partition_runtime::loop"),
    (1, "read inputs from the log (pread, crc, copy)", r"partition_runtime::read_inputs"),
    (1, "prefetch (decode + verify envelope, lookups)", r"orchestrator::prefetch"),
    (1, "decide: orchestrator::process", r"orchestrator::process"),
    (2, "apply_record (appliers, incl. SHA-256)", r"auterity::apply_record"),
    (3, "SHA-256 of each event", r"auterity::sha256"),
    (4, "of which EVP_MD_fetch (algorithm lookup per call)", r"EVP_MD_fetch"),
    (2, "render_template (step input, nlohmann::json)", r"auterity::render_template"),
    (2, "ack output parse + dump in on_ack (nlohmann::json)", "nearest_caller:on_ack"),
    (2, "FlatBuffers building (finish_envelope, Create*)",
     r"FlatBufferBuilder|auterity::finish_envelope|schema::Create"),
    (2, "fmt::format (record ids, command ids, keys)", r"\bfmt::"),
    (2, "state lookups (find_execution/find_definition, key strings)",
     r"orchestrator_state::find_execution|orchestrator_state::find_definition"),
    (1, "flush: encode dirty executions into the state batch", r"orchestrator::flush"),
    (1, "log commit (encode, crc32c, pwrite, fdatasync)", 
     r"(?m)embedded_log::commit|^(write_)?commit \(inlined\)$"),  # devirtualized, inlined
    (2, "fdatasync (CPU part only; waiting is off-CPU)", r"fdatasync"),
    (2, "pwrite", r"pwrite"),
    (2, "crc32c", r"crc32c"),
    (1, "RocksDB write (state_store::write: WAL + memtable)", r"state_store::write"),
    (2, "memtable insert (skiplist)", r"MemTable::Add"),
    (0, "acker threads (bench's stand-in worker)", r"acker::"),
    (0, "RocksDB background (flush/compaction)", r"BackgroundCallFlush|BackgroundCallCompaction"),
    (0, "bench main thread (setup, sampling, final check)", r"parse_and_run"),
    (0, "nlohmann::json anywhere", r"nlohmann::"),
    (0, "FlatBuffers verification anywhere (decode_envelope)", r"auterity::decode_envelope"),
]

# Leaf-frame (self) groups.
SELF = [
    ("malloc/free/new/delete", r"malloc|free|_int_|operator new|operator delete|tcache|arena"),
    ("memcpy/memmove/memcmp", r"mem(cpy|move|cmp|set)"),
    ("hash-map node walk (_M_find_before_node)", r"_M_find_before_node|_Hashtable"),
    ("RocksDB skiplist + key compare", r"InlineSkipList|KeyComparator|BytewiseComparator"),
    ("kernel (syscalls, page faults, futex)", r"^KERNEL$"),
]


def nearest_caller_is(frames, caller):
    """True if a nlohmann frame's nearest non-library caller is `caller`."""
    for i, f in enumerate(frames):
        if "nlohmann::" not in f:
            continue
        for g in frames[i + 1:]:
            if "nlohmann::" in g or g.startswith("std::") or "(inlined)" in g:
                continue
            return caller in g
    return False


def matcher(pattern):
    if pattern.startswith("nearest_caller:"):
        caller = pattern.split(":", 1)[1]
        return lambda frames, stack: nearest_caller_is(frames, caller)
    rx = re.compile(pattern)
    return lambda frames, stack: rx.search(stack) is not None


def samples(lines):
    """Yields (comm, period, [frames leaf first]) per sample of `perf script` output."""
    head, frames = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if head:
                yield head[0], head[1], frames
            head, frames = None, []
            continue
        if not line.startswith(("\t", " ")) and head is None:
            parts = line.split()
            head = (parts[0], int(parts[-1]) if parts[-1].isdigit() else 1)
            continue
        parts = line.strip().split(None, 1)
        addr, sym = parts[0], parts[1] if len(parts) > 1 else "[unknown]"
        frames.append("KERNEL" if addr.startswith("ffffffff") else sym)
    if head:
        yield head[0], head[1], frames


def main():
    inclusive = defaultdict(int)
    self_cost = defaultdict(int)
    total = 0
    patterns = [(label, matcher(p)) for _, label, p in INCLUSIVE]
    self_patterns = [(label, re.compile(p)) for label, p in SELF]
    for comm, period, frames in samples(sys.stdin):
        if comm.startswith("perf"):
            continue
        total += period
        stack = "\n".join(frames)
        # A row counts only if its parent row (the nearest one above with less indent) did.
        matched = []
        for (indent, _, _), (label, match) in zip(INCLUSIVE, patterns):
            while matched and matched[-1][0] >= indent:
                matched.pop()
            parent_ok = not matched or matched[-1][1]
            hit = parent_ok and match(frames, stack)
            matched.append((indent, hit))
            if hit:
                inclusive[label] += period
        leaf = frames[0] if frames else ""
        for label, rx in self_patterns:
            if rx.search(leaf):
                self_cost[label] += period
                break
    if total == 0:
        sys.exit("no samples")
    print("| cost centre (inclusive) | % of process cycles |")
    print("|---|---:|")
    for indent, label, _ in INCLUSIVE:
        pad = "&nbsp;&nbsp;" * indent
        print(f"| {pad}{label} | {100.0 * inclusive[label] / total:.1f} |")
    print()
    print("| leaf (self) cost | % of process cycles |")
    print("|---|---:|")
    for label, _ in SELF:
        print(f"| {label} | {100.0 * self_cost[label] / total:.1f} |")


if __name__ == "__main__":
    main()
