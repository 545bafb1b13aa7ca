#pragma once
// The deterministic simulator (docs/simulation.md): one seed runs the partition runtimes, the
// orchestrator and the workers, single-threaded on an injected clock, against the real embedded
// log and real RocksDB on a directory in tmpfs, with faults chosen by one PRNG: crashes at every
// commit point, power loss (torn, partial and zeroed tails of unsynced bytes; a lost tail of
// the state store's unsynced WAL), an fsync that lies, duplicated / delayed / reordered acks and
// clock jumps. After the run it checks, from the log and an effect ledger kept outside the
// engine, that nothing was lost or done twice, that the state equals its replay and that every
// hash chain verifies.
//
// A seed replays exactly: everything the engine and the faults do is a function of the seed.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace auterity::sim {

// Fault classes, counted per run (docs/simulation.md, "Faults").
enum class fault : uint8_t {
  crash_in_client_commit,         // an ingress append fails mid-write (unsynced bytes)
  crash_in_orchestrator_commit,   // an orchestrator commit is written, not synced
  crash_after_orchestrator_sync,  // the commit is durable, the state write is not
  crash_in_worker_commit,         // a worker's acks + position written, not synced
  crash_after_worker_sync,        // ... durable, the worker never learned it
  crash_in_acker_commit,          // the step acker's commit, written, not synced
  crash_after_acker_sync,         // ... durable, the acker never learned it
  crash_in_forward_delivery,      // the log delivering a forwarded input to its partition
  crash_in_recovery,              // between two partitions' recoveries, or in a redelivery
  crash_between_actions,          // between two commits (everything synced)
  power_loss,                     // unsynced bytes of the log and the store are at risk
  log_tail_dropped,               // a segment's unsynced bytes lost
  log_tail_partial,               // ... a prefix of them kept (a partial write)
  log_tail_sectors,               // ... random 512-byte sectors of them zeroed (torn, reordered)
  log_tail_garbage,               // ... random bytes after them (a half-written extension)
  store_wal_cut,                  // the state store's unsynced WAL cut at a random byte
  fsync_lied,                     // fdatasync returned 0 and synced nothing
  ack_duplicated,                 // an ack appended twice
  ack_delayed,                    // an ack held back one or more ticks
  ack_reordered,                  // acks committed in another order than their commands
  clock_jump_forward,             // the clock moved 1 s .. 10 min ahead at once
  clock_jump_back,                // the clock moved 1 s .. 2 min back
  count_,
};
inline constexpr size_t fault_count = static_cast<size_t>(fault::count_);
std::string_view fault_name(fault f);

struct run_stats {
  std::array<uint64_t, fault_count> faults{};
  uint64_t commits = 0;     // log commits attempted
  uint64_t executions = 0;  // started from ingress (ExecutionStarted in the log)
  uint64_t children = 0;    // sub-workflow executions started
  uint64_t succeeded = 0, failed = 0, cancelled = 0;
  uint64_t events = 0;              // executions records at the end
  uint64_t rejections = 0;          // commands the orchestrator rejected (duplicates, ...)
  uint64_t deferred = 0;            // notifications deferred (quiet hours, rate limit)
  uint64_t commands = 0;            // commands in the log at the end
  uint64_t effects = 0;             // distinct idempotency keys the ledger saw
  uint64_t redeliveries = 0;        // connector calls for a key already seen (after a crash)
  uint64_t acked_commits_lost = 0;  // commits acknowledged, then lost with a lying fsync
  uint64_t quarantined = 0;         // torn tails the log's recovery quarantined
  bool loss_detected = false;       // a lying fsync lost data and recovery refused to go on
};

struct run_result {
  uint64_t seed = 0;
  std::vector<std::string> problems;  // empty: every check held
  run_stats stats;
  std::string dir;  // kept when problems were found
};

struct run_options {
  std::string scratch_root = "/dev/shm";  // per-seed directories go below it
  bool keep = false;                      // keep the directory even on success
  bool trace = false;                     // print what happens, step by step
};

// Runs one seed to the end and checks it.
run_result run_seed(uint64_t seed, const run_options& options);

}  // namespace auterity::sim
