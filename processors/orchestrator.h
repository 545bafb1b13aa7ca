#pragma once
// The workflow orchestrator: the partition processor that turns upstream commands, acks and
// due timers into events and outgoing commands. See processors/README.md.

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/partition_runtime.h"
#include "engine/record.h"
#include "processors/tenant_load.h"
#include "processors/tenant_policy.h"

namespace auterity {

class orchestrator_state;
struct execution_state;

struct orchestrator_options {
  uint32_t partitions = 1;  // total partitions, to check tenant placement
  // Forward an input found on a partition that does not own its tenant (a producer that did
  // not use murmur2, a tenant moved away) to the one that does, in the same commit, instead of
  // rejecting it. Both logs commit across partitions (engine/log.h).
  bool forward_misplaced = true;
  // The placement header (engine/log.h): the count a tenant's default partition hashes against
  // (0: `partitions`), and the partitions no tenant may move to.
  uint32_t base = 0;
  std::vector<uint32_t> retired;
};

// Counters of one partition's orchestrator (relaxed atomics, read by other threads).
struct orchestrator_probe {
  std::atomic<uint64_t> rejections{0};
  std::atomic<uint64_t> deadletters{0};
  std::atomic<uint64_t> stale_acks{0};        // duplicate or for an old attempt / finished step
  std::atomic<uint64_t> step_transitions{0};  // acks and timers that moved a step
  std::atomic<uint64_t> commands_out{0};
  std::atomic<uint64_t> executions_started{0};
  std::atomic<uint64_t> executions_ended{0};
  std::atomic<uint64_t> forwarded{0};  // inputs sent on to the partition that owns their tenant
  std::atomic<uint64_t> tenants_moved_out{0};
  std::atomic<uint64_t> tenants_moved_in{0};
  // State store reads while deciding (a cache miss prefetch did not foresee): should stay 0.
  std::atomic<uint64_t> decide_reads{0};
};

// One tenant's AI spend of the current UTC day and month against its budgets (micro-USD; a
// budget of 0: none), as exported on /metrics.
struct ai_spend_sample {
  std::string tenant;
  int64_t day_spent_micros = 0;
  int64_t month_spent_micros = 0;
  int64_t day_budget_micros = 0;
  int64_t month_budget_micros = 0;
  // The larger of day and month spent / budget over the budgets set; -1 if none is set.
  double budget_used() const;
};

// One tenant's load on the partition as exported on /metrics (processors/tenant_load.h).
struct tenant_load_sample {
  std::string tenant;
  uint64_t inputs = 0;  // counters since the partition was opened
  uint64_t events = 0;
  uint64_t running = 0;  // running executions now
  uint64_t recent = 0;   // inputs + events in the last tenant_load_window_ms
};
struct partition_load {
  std::vector<tenant_load_sample> busiest;  // the k busiest, busiest first
  tenant_load_sample others;                // the sums of every other tenant seen here
  size_t other_tenants = 0;                 // how many tenants `others` sums
};

class orchestrator final : public partition_processor {
 public:
  explicit orchestrator(orchestrator_options options);
  ~orchestrator() override;

  result<void> open(state_store& store, uint32_t partition) override;
  void replay(uint64_t offset, std::string_view bytes) override;
  void prefetch(std::span<const input> inputs) override;
  bool barrier(const input& in) const override;  // a MoveTenant command
  void process(const input& in, batch_context& ctx) override;
  int64_t next_timer_ms() const override;
  void fire_timers(batch_context& ctx, size_t max_timers) override;
  void flush(state_batch& out, const std::vector<uint64_t>& event_offsets) override;
  void stage() override;
  bool may_decide_ahead() const override;

  const orchestrator_probe& probe() const { return _probe; }
  // The `k` tenants of this partition nearest their AI budget — highest budget_used() first,
  // then, for tenants without a budget, highest month spend — with their spend of the UTC day
  // and month of `now_ms` (0 if their latest spend is of an earlier day or month). From the
  // applied state as of the last flush (committed: live and replay alike); safe to call from
  // any thread. O(tenants with spend or a budget).
  std::vector<ai_spend_sample> ai_spend_top(int64_t now_ms, size_t k) const;

  // The `k` busiest tenants of this partition — most inputs + events over the last
  // tenant_load_window_ms, then most running executions, then by name — and the sums of all
  // the others, from the state's load counts as of the last flush (tenant_load.h); safe to call
  // from any thread. O(tenants seen here).
  partition_load tenant_load_top(int64_t now_ms, size_t k) const;

  // next_timer_ms() as of the last flush, safe to read from any thread.
  int64_t published_next_timer_ms() const { return _published_next_timer.load(); }

 private:
  class decider;
  class deciding_scope;
  // Loads what deciding `tenant`'s records needs beyond the record's own execution.
  void prefetch_tenant(std::string_view tenant);
  void prefetch_definition(std::string_view tenant, const fbs::PublishDefinition& p);
  // Sub-workflows: the definitions a workflow can start, transitively (to subworkflow_depth_max
  // levels below `depth`), and the executions deciding for `e` can reach: its ancestors (its
  // end answers its parent) and every running execution below the top one (an end cancels its
  // children).
  void prefetch_callees(std::string_view tenant, std::string_view workflow, uint32_t version,
                        uint32_t depth, std::set<std::string>* seen = nullptr);
  void prefetch_family(const execution_state& e);
  orchestrator_options _options;
  std::unique_ptr<orchestrator_state> _state;
  orchestrator_probe _probe;
  std::atomic<int64_t> _published_next_timer{INT64_MAX};
  // The state's AI spend entries and load counts as of the last flush, for ai_spend_top() and
  // tenant_load_top().
  published_by_tenant<tenant_ai_spend> _spend_published;
  published_by_tenant<tenant_activity> _load_published;
  // What the views show once a staged batch is written: taken when it is staged, so a batch
  // decided ahead (pipelining) is not shown before it committed.
  struct staged_views {
    std::set<std::string> spend_changed;
    std::unordered_map<std::string, tenant_ai_spend> spend;
    std::set<std::string> load_changed;
    std::unordered_map<std::string, tenant_activity> load;
    int64_t next_timer_ms = INT64_MAX;
  };
  std::deque<staged_views> _staged_views;  // one per batch staged in _state, oldest first
  void publish_views();
  // The state of the tenant a MoveTenant input moves, read by prefetch (a barrier batch).
  struct move_export;
  std::unique_ptr<move_export> _export;
};

// True if an applier exists for events of `type` written with schema `version`. Replay asks
// before applying a record from a log under audit: an unknown one must be reported there, not
// trip the appliers' assertion.
bool has_applier(fbs::Payload type, uint16_t version);

}  // namespace auterity
