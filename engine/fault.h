#pragma once
// Fault points: named places in the commit and restore paths where a test can stop or kill the
// process deterministically, e.g. between "offsets in the transaction" and "commit" (the fault
// suite, tests/faults/). Armed only by the environment, read once at the first hit:
//
//   AUTERITY_FAULT=point:action[@n][,point:action[@n]...]
//
// action `stop`: print "auterity: fault point <point> reached (pid <pid>): stopping" to stderr
// and SIGSTOP this process (the test sends SIGCONT); `kill`: the same line with "killing",
// then SIGKILL; `hold`: the line with "holding this thread", then the calling thread blocks for
// good while the rest of the process goes on (e.g. one Kafka committer's transaction left open
// while another committer works). `@n` fires at the n-th time the point is reached (default
// 1), counted per entry from the hits no earlier entry fired on; each entry fires once. Points
// (docs/ownership-handover.md has the sequence they sit in):
//
//   txn.produced           Kafka: a transaction carrying an orchestrator batch has produced its
//                          records, before send_offsets_to_transaction
//   txn.offsets_sent       the same transaction after send_offsets_to_transaction, before
//                          commit_transaction
//   txn.committed          a partition's commit succeeded, before its local state is written
//                          (pipelined: the next batch may already be decided, in memory only)
//   pipeline.decided_ahead a pipelined partition decided and staged its next batch while the
//                          previous one's commit is not yet known (queued, open or committing)
//   restore.positions_read a new owner read the committed positions, before the executions end
//   replica.applied        a gateway's read replica (api/replica.h) applied a batch in memory,
//                          before the write of its state and checkpoint
//   replica.written        the same, after that write returned
//   replica.flushed        a stopping replica flushed one partition's memtables
//   reopen.stopped         `run` stopped its node to open it again in process (the partition
//                          count or the placement header changed), before the new open
//
// Unarmed, a fault point costs one relaxed atomic load. A malformed AUTERITY_FAULT is reported
// on stderr at the first hit and ignored.

#include <string_view>

namespace auterity {

void fault_point(std::string_view point);

}  // namespace auterity
