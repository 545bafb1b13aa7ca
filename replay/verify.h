#pragma once
// Auditors' checks:
//   - verify_log: for each partition (in parallel), one pass over the executions stream that
//     checks every hash chain (chain_check.h) and, with the engine's state store, rebuilds the
//     state through the appliers into a scratch RocksDB (state_replay.h) and compares it with
//     the engine's, key by key, byte for byte. Bounded memory: a batch of records, the open
//     chains and executions, and a window of each store.
//   - verify_chains / compare_with_replay: the same checks for one partition, as lists of
//     readable lines (used by the property and crash tests).

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/log.h"
#include "engine/state_store.h"
#include "replay/chain_check.h"
#include "replay/state_replay.h"

namespace auterity {

class progress;

struct verify_options {
  bool chains = true;  // report hash-chain problems
  bool state = true;   // rebuild the state and compare it with the engine's
  std::string tenant;  // only this tenant (its partition, its records, its keys); empty: all
  std::vector<uint32_t> partitions;  // empty: every partition (or the tenant's)
  unsigned threads = 0;              // partitions verified at once; 0: one per core
  std::string scratch_dir;           // rebuilt stores go to <scratch_dir>/pNNN (required for state)
  size_t problems_listed_max = 100'000;  // per partition and kind; all are counted
  size_t ended_batch_max = 32768;        // ended histories compared per batch (chain_check.h)
  progress* meter = nullptr;             // counts records read (a progress bar); may be null
};

struct partition_verification {
  uint32_t partition = 0;
  uint64_t records = 0;           // executions records read
  uint64_t events = 0;            // chained events checked
  uint64_t chains = 0;            // histories (executions and tenant definition chains)
  uint64_t open_chains_peak = 0;  // most histories open at once: the chain check's memory
  bool heads_compared = false;    // chain ends compared with the engine's state
  std::vector<chain_problem> chain_problems;  // the first problems_listed_max, by offset
  uint64_t chain_problems_total = 0;
  bool state_compared = false;
  uint64_t state_keys = 0;
  uint64_t state_differences = 0;
  std::vector<state_diff> state_diffs;
  uint64_t records_not_applied = 0;
  std::vector<skipped_record> not_applied;
  std::vector<std::string> notes;  // what could not be checked, and why
  // Bytes after the log's last valid commit, found by the read-only open (one line each, from
  // the caller: engine/embedded_log.h damage_text). Damage inside committed data counts as a
  // problem; a torn tail, as a crash during a commit leaves it, does not (lost acknowledged
  // events show up as chain problems).
  std::vector<std::string> log_damage;
  uint64_t log_damage_problems = 0;
  double seconds = 0;
};

struct verify_report {
  std::vector<partition_verification> partitions;
  uint64_t problems() const;  // chain problems + state differences + damaged committed data
  bool ok() const { return problems() == 0; }
};

// `stores[p]`: the engine's state store of partition p, or null if there is none here (then
// the state is not compared and chain ends are not checked; a note says so).
result<verify_report> verify_log(log& l, std::span<state_store* const> stores,
                                 const verify_options& options);

// ---------------------------------------------------------------- one partition, as lines

// Differences as readable lines; empty = equal. Replays up to the live store's checkpoint, so a
// store that is behind the log compares fairly. `scratch`: options of the rebuilt store.
result<std::vector<std::string>> compare_with_replay(log& l, uint32_t partition,
                                                     const state_store& live,
                                                     const std::string& scratch_dir,
                                                     const state_store_options& scratch = {});

struct chain_report {
  uint64_t events = 0;
  uint64_t executions = 0;            // chains checked (executions and tenant-level chains)
  std::vector<std::string> problems;  // first problem per chain, readable
};
// Chains only, without the engine's state (so the newest events are not vouched for).
result<chain_report> verify_chains(log& l, uint32_t partition);

// Key bytes with non-printable characters escaped (\x00).
std::string printable_key(std::string_view key);

}  // namespace auterity
