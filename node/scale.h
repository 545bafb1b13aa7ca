#pragma once
// Scaling the partition count (docs/tenant-moves.md, "Scaling the partition count"): where the
// tenants are and what they weigh, read from the partitions' state stores and ingress; a plan of
// tenant moves that balances them over the partitions kept; and the plan's application on the
// embedded log (the log grows or retires partitions, then one MoveTenant per move goes on
// ingress; the engine runs the moves like any `tenants move`).
//
// Load is what a stopped engine's state shows: a tenant weighs its running executions + 1.
// Rates (inputs/s) would be better and need a running engine's metrics (left, issue 9).

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/log.h"
#include "engine/result.h"

namespace auterity {

class state_store;

inline constexpr size_t scale_moves_max = 10'000;  // moves one scale publishes

struct tenant_load {
  std::string tenant;
  uint32_t partition = 0;  // where its state is
  uint64_t running = 0;    // running executions
  uint64_t state_bytes = 0;
  uint64_t weight() const { return running + 1; }
};

struct placement_survey {
  std::vector<tenant_load> tenants;  // sorted by tenant
  // Moves published and not yet consumed (MoveTenant on ingress past the orchestrator's
  // position): tenant -> target. A plan counts them as done, so a rerun does not move twice.
  std::map<std::string, uint32_t> pending_moves;
};

// `stores[p]` is partition p's state store (null: no state there, nothing counted).
result<placement_survey> survey_placement(log& l, const std::vector<state_store*>& stores);

struct planned_move {
  std::string tenant;
  uint32_t from = 0, to = 0;
  uint64_t weight = 0;
};

struct scale_plan {
  uint32_t partitions_before = 0, partitions = 0;  // physical counts; never fewer after
  uint32_t active_before = 0, active = 0;          // partitions that take tenants
  std::vector<uint32_t> retired;                   // after: active .. partitions-1
  std::vector<planned_move> moves;
  std::vector<uint64_t> load_before, load_after;  // weight per partition (pending moves done)
  size_t pending = 0;                             // moves already on ingress
};

// Plans a scale to `target` active partitions (1 .. 1000) from what `survey` found on a log
// with `partitions` partitions and header `now`. Up (target above the physical count): the log
// grows to target, nothing retired, and tenants move from the most to the least loaded
// partitions while that lowers the larger load. Down (target at most the physical count):
// partitions target.. are retired and every tenant on them moves to the least loaded partition
// below target, heaviest first. A plan may hold no moves (a rerun after everything moved).
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
