#pragma once
// Internal to processors/: the orchestrator's in-memory view of its partition's state — a
// cache over the state store plus the changes of the current batch. Appliers change it; the
// decider only reads it.

#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "engine/partition_runtime.h"
#include "engine/state_store.h"
#include "processors/definition.h"
#include "processors/execution_state.h"
#include "processors/tenant_policy.h"

namespace auterity {

struct timer_entry {
  int64_t due_ms;
  std::string tenant;
  std::string execution;
  uint16_t step;
  auto operator<=>(const timer_entry&) const = default;
};

class orchestrator_state {
 public:
  result<void> open(state_store& store);

  // Cached lookups; load from the store on a miss (prefetch makes misses rare in decide).
  execution_state* find_execution(std::string_view tenant, std::string_view id);
  const definition* find_definition(std::string_view tenant, std::string_view workflow,
                                    uint32_t version);  // version 0: latest
  bool tenant_known(std::string_view tenant);
  tenant_chain& chain(std::string_view tenant);
  // The tenant's policy in force (null: none published) and its version (0: none).
  const tenant_policy* policy(std::string_view tenant);
  uint32_t policy_version(std::string_view tenant);
  // A tenant counter or record outside executions (AI spend, notification windows and
  // content hashes; keys in execution_state.h). nullopt: absent.
  const std::optional<std::string>& value(const std::string& key);

  // --- for appliers only ---
  execution_state& create_execution(execution_state e);
  void mark_dirty(const execution_state& e);
  void mark_chain_dirty(std::string_view tenant);
  void set_timer(execution_state& e, uint16_t step, int64_t due_ms);  // 0 clears
  void put_definition(std::string_view tenant, const definition& d);
  void index_event(const execution_state& e, uint32_t seq, record_position where);
  void on_ended(const execution_state& e);
  void put_policy(std::string_view tenant, uint32_t version, const tenant_policy& p);
  void put_value(const std::string& key, std::string value);

  const std::set<timer_entry>& timers() const { return _timers; }
  // After the commit: resolves pending event positions with the batch's committed executions
  // offsets and hands over every change.
  void flush(state_batch& out, const std::vector<uint64_t>& event_offsets);

 private:
  state_store* _store = nullptr;
  std::unordered_map<std::string, std::unique_ptr<execution_state>> _executions;
  std::unordered_set<std::string> _dirty;
  std::unordered_set<std::string> _ended;  // evicted from the cache after the flush
  std::unordered_map<std::string, std::shared_ptr<const definition>> _definitions;
  std::unordered_map<std::string, uint32_t> _latest;
  std::unordered_map<std::string, bool> _tenants;
  std::unordered_map<std::string, tenant_chain> _chains;
  std::unordered_set<std::string> _dirty_chains;
  std::set<timer_entry> _timers;
  struct versioned_policy {
    uint32_t version = 0;  // 0: none
    std::shared_ptr<const tenant_policy> policy;
  };
  versioned_policy& load_policy(std::string_view tenant);
  std::unordered_map<std::string, versioned_policy> _policies;
  std::unordered_map<std::string, std::optional<std::string>> _values;
  state_batch _pending;
  std::vector<std::pair<std::string, uint64_t>> _unresolved;  // index key, batch ordinal
};

// Applies one committed executions record (events change state; rejections do not). The live
// path and replay both call this, so they cannot disagree.
void apply_record(orchestrator_state& state, record_position where, std::string_view bytes);

}  // namespace auterity
