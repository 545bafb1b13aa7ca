#pragma once
// Rebuilding a partition's state from its executions stream through the processors' appliers
// (the same code the engine runs), into a scratch RocksDB; and comparing two state stores key
// by key with bounded memory.
//
// The appliers assert on records the engine could never have written (an event for an
// execution that never started, a step its definition does not have): for the engine that is
// a bug. A log under audit may be tampered with, so the rebuilder checks those preconditions
// first and skips a record that fails them, reporting it, instead of letting the process abort.
// Records the chain check distrusts (see chain_check.h) are skipped the same way; their
// executions then differ from the engine's state, and the comparison lists every such key.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "engine/log.h"
#include "engine/state_store.h"
#include "processors/execution_state.h"

namespace auterity {

class orchestrator;

// A record the rebuilder did not apply, and why.
struct skipped_record {
  uint64_t offset = 0;
  std::string record_id;
  std::string reason;
};

class state_rebuilder {
 public:
  // Opens a fresh scratch store in `scratch_dir` (emptied first). `partitions`: the log's
  // partition count (the orchestrator checks placement with it). `tenant`: apply only this
  // tenant's records (appliers only touch the record's own tenant's keys, so the result is
  // that tenant's state exactly). `store`: the scratch store's options (the simulator's are
  // small).
  static result<std::unique_ptr<state_rebuilder>> open(const std::string& scratch_dir,
                                                       uint32_t partition, uint32_t partitions,
                                                       std::string tenant = {},
                                                       const state_store_options& store = {});
  // A rebuilder that can be stopped and reopened where it stopped (a gateway's read replica,
  // api/replica.h): open() into a fresh `dir`, and it also keeps in its store what add() checks
  // records against that the processors' keys do not hold cheaply — the running executions with
  // their definition (under open_prefix) and the executions it skipped a record of (under
  // dropped_prefix), both outside the processors' key space; definitions are read back from the
  // processors' own keys — and each flush's `meta` (the caller's, e.g. which log the state comes
  // from) under meta_key. All of it is written in the flush's one atomic batch with the
  // checkpoint.
  static result<std::unique_ptr<state_rebuilder>> open_resumable(const std::string& dir,
                                                                 uint32_t partition,
                                                                 uint32_t partitions);
  // Reopens what open_resumable() left in `dir`, to go on from its checkpoint
  // (store().checkpoint()); meta() is the last flush's. errc::not_found if there is no store
  // there; the store's own error if it does not open (damaged files).
  static result<std::unique_ptr<state_rebuilder>> reopen(const std::string& dir, uint32_t partition,
                                                         uint32_t partitions);
  ~state_rebuilder();

  // Applies one executions record (in offset order). `trusted` false: skip it (the chain check
  // found a problem in its history).
  void add(uint64_t offset, std::string_view bytes, bool trusted = true);
  // Writes what was applied since the last flush, with checkpoint `next_offset` (and `meta`, if
  // resumable).
  result<void> flush(uint64_t next_offset, std::string_view meta = {});
  const std::string& meta() const { return _meta; }

  // Keys of a resumable rebuilder's own, kept out of the processors' key space ('T', 'R', 'O').
  static constexpr std::string_view meta_key = std::string_view("\x00rebuilder.meta", 15);
  static constexpr std::string_view open_prefix = std::string_view("\x00rebuilder.open\x00", 16);
  static constexpr std::string_view dropped_prefix =
      std::string_view("\x00rebuilder.dropped\x00", 19);

  state_store& store() { return *_store; }
  uint64_t applied() const { return _applied; }
  const std::vector<skipped_record>& skipped() const { return _skipped; }
  uint64_t skipped_total() const { return _skipped_total; }
  const std::string& tenant() const { return _tenant; }
  // Closes the store and deletes the scratch directory.
  void remove();

 private:
  state_rebuilder() = default;
  std::optional<std::string> precondition_failure(const fbs::Envelope& e);
  std::string started_definition(const fbs::Envelope& e) const;
  void remember_definition(const fbs::Envelope& e);
  void remember_moved_in(const fbs::Envelope& e);
  // Definitions and running executions from one state entry of `tenant` (moved in, reopened).
  void remember_state_entry(std::string_view tenant, std::string_view key, std::string_view value);
  result<void> load_indexes();
  void mark_open(const std::string& exec, std::string definition);
  void mark_ended(const std::string& exec);
  result<void> open_orchestrator(uint32_t partition, uint32_t partitions);
  void skip(uint64_t offset, std::string_view record_id, std::string reason);

  std::string _dir;
  std::string _tenant;
  bool _resumable = false;
  std::string _meta;
  std::unique_ptr<state_store> _store;
  std::unique_ptr<orchestrator> _orchestrator;
  state_batch _batch;
  // A resumable rebuilder's own keys changed since the last flush (nullopt: deleted).
  std::map<std::string, std::optional<std::string>, std::less<>> _own;
  uint64_t _applied = 0;
  // Step ids by "tenant\0workflow\0version" and the latest version by "tenant\0workflow":
  // what the appliers will look up. Bounded by the definitions published.
  std::map<std::string, std::set<std::string, std::less<>>, std::less<>> _definitions;
  std::map<std::string, uint32_t, std::less<>> _latest;
  // Running executions and their definition key: bounded by the executions open at once.
  std::map<std::string, std::string, std::less<>> _open;
  // Executions with a skipped event: their later events are skipped too (an applier would
  // meet a state it cannot be in). Bounded by the skipped records.
  std::set<std::string, std::less<>> _dropped;
  std::vector<skipped_record> _skipped;
  uint64_t _skipped_total = 0;
};

// How to stop a rebuild: at an offset, or before the first record later than a time.
struct rebuild_limit {
  uint64_t end_offset = UINT64_MAX;
  std::optional<int64_t> until_ms;
};

struct rebuild_result {
  uint64_t end_offset = 0;      // the first record not replayed: the state reflects [0, end)
  int64_t last_ms = 0;          // timestamp of the last record replayed (0: none)
  uint64_t chain_problems = 0;  // problems the chain check met on the way (records skipped)
};

// Replays executions[partition] up to `limit` into `r` (flushing each batch), checking the
// hash chains on the way so a tampered record is skipped rather than applied.
result<rebuild_result> rebuild(log& l, uint32_t partition, state_rebuilder& r,
                               const rebuild_limit& limit);

// ------------------------------------------------------------------------------ comparing

struct state_diff {
  enum class kind { only_live, only_rebuilt, differs } what;
  std::string key;   // printable (non-printing bytes as \xNN)
  std::string text;  // readable: what the key is and how the values differ
};

struct state_comparison {
  uint64_t keys_live = 0;
  uint64_t keys_rebuilt = 0;
  uint64_t differences = 0;       // all of them, listed or not
  std::vector<state_diff> diffs;  // the first `diffs_max`
};

// Compares every key of `live` with `rebuilt` (with `tenant`: only that tenant's keys), in key
// order, holding a bounded window of each store in memory.
result<state_comparison> compare_states(const state_store& live, const state_store& rebuilt,
                                        std::string_view tenant = {}, size_t diffs_max = 100'000);

// Step ids of an execution's definition as stored in `s` ("#<i>" where it has none).
std::vector<std::string> step_names_of(const state_store& s, const execution_state& e);

// What a state key is: "execution acme/lead-1", "event index acme/lead-1 #3", ...
std::string describe_state_key(std::string_view key);

}  // namespace auterity
