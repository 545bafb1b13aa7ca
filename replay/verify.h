#pragma once
// Auditors' checks over one partition:
//   - compare_with_replay: rebuild the state from the executions stream through the appliers
//     into a scratch RocksDB and compare it with the engine's store, key by key, byte for byte;
//   - verify_chains: recompute every execution's hash chain and report the first event whose
//     prev_hash does not match the previous event (removed, altered or reordered history).

#include <cstdint>
#include <string>
#include <vector>

#include "engine/log.h"
#include "engine/state_store.h"

namespace auterity {

// Differences as readable lines ("only in live: <key>", "differs: <key>", ...); empty = equal.
// Replays up to the live store's checkpoint, so a store that is behind the log compares fairly.
result<std::vector<std::string>> compare_with_replay(log& l, uint32_t partition,
                                                     const state_store& live,
                                                     const std::string& scratch_dir);

struct chain_report {
  uint64_t events = 0;
  uint64_t executions = 0;  // chains checked (executions and tenant-level chains)
  std::vector<std::string> problems;  // first problem per chain, readable
};
result<chain_report> verify_chains(log& l, uint32_t partition);

// Key bytes with non-printable characters escaped (\x00).
std::string printable_key(std::string_view key);

}  // namespace auterity
