#pragma once
// Scaling the partition count (docs/tenant-moves.md, "Scaling the partition count"): where the
// tenants are and what they weigh, read from the partitions' state stores and ingress; a plan of
// tenant moves that balances them over the partitions kept; and the plan's application on the
// embedded log (the log grows or retires partitions, then one MoveTenant per move goes on
// ingress; the engine runs the moves like any `tenants move`).
//
// Load is measured from the stopped engine's state and log (docs/tenant-moves.md, "Seeing
// load"): a tenant weighs its running executions + 1 + the events of the tenant on its
// partition's executions stream in the survey's window (the last `window_ms` before the newest
// event of the log, by the records' timestamps: a stopped engine's directory still shows the
// load it last ran with). The same weight serves `partitions show`, `partitions plan` and
// `partitions scale`.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/log.h"
#include "engine/result.h"

namespace auterity {

class state_store;

inline constexpr size_t scale_moves_max = 10'000;  // moves one scale publishes
// Records of one partition's executions stream the survey reads back from its end to measure
// the window's events: a partition busier than this over the window shows this many.
inline constexpr uint64_t survey_recent_records_max = 1'000'000;
inline constexpr int64_t survey_window_ms_default = 5 * 60'000;

struct tenant_load {
  std::string tenant;
  uint32_t partition = 0;  // where its state is
  uint64_t running = 0;    // running executions
  uint64_t state_bytes = 0;
  uint64_t recent_events = 0;  // events of the tenant on `partition` in the survey's window
  uint64_t weight() const { return running + 1 + recent_events; }
};

// What one partition holds (its state store and its executions stream).
struct partition_survey {
  bool has_state = false;      // a state store was there to read
  uint64_t tenants = 0;        // registered tenants
  uint64_t moved_out = 0;      // tenants that left (placement entries `moved_out`)
  uint64_t running = 0;        // running executions
  uint64_t state_bytes = 0;    // keys + values of the whole store
  uint64_t recent_events = 0;  // records on executions in the window, every tenant's
  bool recent_capped = false;  // survey_recent_records_max was reached
};

struct placement_survey {
  std::vector<tenant_load> tenants;  // sorted by tenant
  // Moves published and not yet consumed (MoveTenant on ingress past the orchestrator's
  // position): tenant -> target. A plan counts them as done, so a rerun does not move twice.
  std::map<std::string, uint32_t> pending_moves;
  std::vector<partition_survey> partitions;  // by partition
  int64_t window_ms = 0;                     // 0: no events measured
  int64_t window_end_ms = 0;                 // the newest event's timestamp (0: none)
};

// `stores[p]` is partition p's state store (null: no state there, nothing counted).
// `window_ms` 0 measures no events (weights are running executions + 1). The window is read back
// from each partition's end, stopping at its start; `read_forward` reads it in one forward pass
// over each partition's last survey_recent_records_max records instead (Kafka: a reader that
// steps backwards seeks at every read, and a seek on a busy consumer can time out).
result<placement_survey> survey_placement(log& l, const std::vector<state_store*>& stores,
                                          int64_t window_ms = survey_window_ms_default,
                                          bool read_forward = false);

struct planned_move {
  std::string tenant;
  uint32_t from = 0, to = 0;
  uint64_t weight = 0;
  std::string why;  // e.g. "balance", "partition 3 retired", "isolate hot tenant acme"
};

struct scale_plan {
  uint32_t partitions_before = 0, partitions = 0;  // physical counts; never fewer after
  uint32_t active_before = 0, active = 0;          // partitions that take tenants
  std::vector<uint32_t> retired;                   // after: active .. partitions-1
  std::vector<planned_move> moves;
  std::vector<uint64_t> load_before, load_after;  // weight per partition (pending moves done)
  size_t pending = 0;                             // moves already on ingress
  // Tenants hot enough for a partition of their own (weight at least the fair share, the total
  // over the active partitions), with the partition each gets.
  std::vector<std::pair<std::string, uint32_t>> isolated;
  int64_t window_ms = 0;  // how load was measured (placement_survey::window_ms)
};

// Plans a scale to `target` active partitions (1 .. 1000) from what `survey` found on a log
// with `partitions` partitions and header `now`. Up (target above the physical count): the log
// grows to target, nothing retired, and tenants move from the most to the least loaded
// partitions while that lowers the larger load. Down (target at most the physical count):
// partitions target.. are retired and every tenant on them moves to the least loaded partition
// below target, heaviest first. Then each tenant at least as heavy as the fair share (total
// weight / target) that shares its partition is isolated: it moves to an empty active
// partition if there is one, else the others move off its partition; isolated partitions take
// no tenants in the balancing that follows. A plan may hold no moves (a rerun after everything
// moved, a balanced deployment).
// errc::invalid for a target out of range; errc::too_large past scale_moves_max moves.
result<scale_plan> plan_scale(const placement_survey& survey, uint32_t partitions,
                              const placement_header& now, uint32_t target);

// Human-readable plan: one line per partition (load before and after), one per move.
std::string format_plan(const scale_plan& plan);

// Applies a plan to the embedded log in `log_dir` (no engine may run on it: errc::locked):
// changes its header (scale_embedded_log), then publishes one MoveTenant per move on ingress.
// Returns how many moves were published.
result<size_t> apply_scale_embedded(const std::string& log_dir, const scale_plan& plan,
                                    int64_t now_ms);

}  // namespace auterity
