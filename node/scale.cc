#include "node/scale.h"

#include <algorithm>
#include <numeric>
#include <set>

#include <fmt/core.h>

#include "engine/embedded_log.h"
#include "engine/partition_runtime.h"
#include "engine/record.h"
#include "engine/state_store.h"
#include "processors/client.h"
#include "processors/execution_state.h"
#include "processors/orchestrator_state.h"
#include "schemas/auterity_generated.h"

namespace auterity {

namespace {

constexpr uint32_t scale_partitions_max = 1000;  // the embedded log's limit (pNNN directories)
constexpr size_t survey_read_records_max = 4096;

// Moves published on partition p's ingress and not consumed yet (last one per tenant wins).
result<void> pending_moves(log& l, uint32_t p, std::map<std::string, uint32_t>& out) {
  auto pos = l.position(orchestrator_group, stream::ingress, p);
  if (!pos) return std::unexpected(pos.error());
  auto end = l.end_offset(stream::ingress, p);
  if (!end) return std::unexpected(end.error());
  std::vector<record> recs;
  for (uint64_t from = *pos; from < *end;) {
    recs.clear();
    auto n = l.read(stream::ingress, p, from, survey_read_records_max, 8 << 20, recs);
    if (!n) return std::unexpected(n.error());
    if (*n == 0) break;
    for (const record& r : recs) {
      const fbs::Envelope* env = decode_envelope(r.value, nullptr);
      if (env && env->payload_type() == fbs::Payload::MoveTenant) {
        out[std::string(sv(env->tenant_id()))] = env->payload_as_MoveTenant()->to_partition();
      }
    }
    from = recs.back().offset + 1;
  }
  return {};
}

}  // namespace

result<placement_survey> survey_placement(log& l, const std::vector<state_store*>& stores) {
  placement_survey out;
  for (uint32_t p = 0; p < l.partition_count(); ++p) {
    if (auto r = pending_moves(l, p, out.pending_moves); !r) return std::unexpected(r.error());
    const state_store* store = p < stores.size() ? stores[p] : nullptr;
    if (!store) continue;
    std::map<std::string, tenant_load> here;
    auto scanned = store->scan_all([&](std::string_view key, std::string_view value) {
      if (key.starts_with('R')) {
        tenant_load& t = here[std::string(key.substr(1))];
        t.tenant = std::string(key.substr(1));
        t.partition = p;
        return true;
      }
      if (!key.starts_with('T')) return true;
      const size_t nul = key.find('\0');
      if (nul == std::string_view::npos) return true;
      tenant_load& t = here[std::string(key.substr(1, nul - 1))];
      t.state_bytes += key.size() + value.size();
      if (nul + 1 < key.size() && key[nul + 1] == 'E') {
        execution_state e;
        if (decode_execution(value, e) && e.status == exec_status::running) ++t.running;
      }
      return true;
    });
    if (!scanned) return std::unexpected(scanned.error());
    // A tenant whose range is here but that is not registered (R) is one being installed or a
    // leftover; only registered tenants live here.
    for (auto& [name, t] : here) {
      if (!t.tenant.empty()) out.tenants.push_back(std::move(t));
    }
  }
  std::ranges::sort(out.tenants, {}, &tenant_load::tenant);
  return out;
}

result<scale_plan> plan_scale(const placement_survey& survey, uint32_t partitions,
                              const placement_header& now, uint32_t target) {
  if (target == 0 || target > scale_partitions_max) {
    return fail(errc::invalid,
                fmt::format("--to must be 1..{} partitions, got {}", scale_partitions_max, target));
  }
  scale_plan plan;
  plan.partitions_before = partitions;
  plan.active_before = partitions - static_cast<uint32_t>(now.retired.size());
  plan.partitions = std::max(partitions, target);
  plan.active = target;
  for (uint32_t p = target; p < plan.partitions; ++p) plan.retired.push_back(p);
  plan.load_before.assign(partitions, 0);
  plan.load_after.assign(plan.partitions, 0);

  // Where each tenant is once the pending moves are done.
  struct placed {
    const tenant_load* t;
    uint32_t at;
  };
  std::vector<placed> tenants;
  for (const tenant_load& t : survey.tenants) {
    plan.load_before[t.partition] += t.weight();
    uint32_t at = t.partition;
    if (auto it = survey.pending_moves.find(t.tenant); it != survey.pending_moves.end()) {
      ++plan.pending;
      if (it->second < plan.partitions) at = it->second;
    }
    tenants.push_back({&t, at});
    plan.load_after[at] += t.weight();
  }
  auto move = [&](placed& pl, uint32_t to) -> result<void> {
    if (plan.moves.size() >= scale_moves_max) {
      return fail(errc::too_large, fmt::format("the plan needs more than scale_moves_max ({}) "
                                               "moves; scale in steps",
                                               scale_moves_max));
    }
    plan.load_after[pl.at] -= pl.t->weight();
    plan.load_after[to] += pl.t->weight();
    plan.moves.push_back({pl.t->tenant, pl.at, to, pl.t->weight()});
    pl.at = to;
    return {};
  };
  auto least_loaded = [&] {
    uint32_t best = 0;
    for (uint32_t p = 1; p < target; ++p) {
      if (plan.load_after[p] < plan.load_after[best]) best = p;
    }
    return best;
  };
  // Heaviest first, so the greedy placement stays close to balanced.
  std::ranges::stable_sort(tenants, std::greater<>{},
                           [](const placed& p) { return p.t->weight(); });

  // Every tenant off the partitions that will not take tenants.
  for (placed& pl : tenants) {
    if (pl.at < target) continue;
    if (auto r = move(pl, least_loaded()); !r) return std::unexpected(r.error());
  }
  // Balance: the heaviest tenant of the most loaded partition that lowers the larger load.
  for (;;) {
    uint32_t hot = 0;
    for (uint32_t p = 1; p < target; ++p) {
      if (plan.load_after[p] > plan.load_after[hot]) hot = p;
    }
    const uint32_t cold = least_loaded();
    placed* best = nullptr;
    for (placed& pl : tenants) {
      if (pl.at != hot) continue;
      // After the move the larger of the two loads must be below the hot partition's now.
      if (plan.load_after[cold] + pl.t->weight() < plan.load_after[hot]) {
        best = &pl;
        break;  // heaviest first
      }
    }
    if (!best || hot == cold) break;
    if (auto r = move(*best, cold); !r) return std::unexpected(r.error());
  }
  return plan;
}

std::string format_plan(const scale_plan& plan) {
  std::string out = fmt::format(
      "partitions: {} -> {} taking tenants ({} in the log{}); {} move(s) planned, {} already "
      "on ingress\n",
      plan.active_before, plan.active, plan.partitions,
      plan.retired.empty()
          ? std::string()
          : fmt::format(", {}..{} retired: Kafka cannot delete partitions and the embedded log "
                        "keeps their history",
                        plan.retired.front(), plan.retired.back()),
      plan.moves.size(), plan.pending);
  out += fmt::format("{:>9} {:>12} {:>12}\n", "partition", "load before", "load after");
  for (uint32_t p = 0; p < plan.partitions; ++p) {
    const uint64_t before = p < plan.load_before.size() ? plan.load_before[p] : 0;
    out += fmt::format("{:>9} {:>12} {:>12}{}\n", p, before, plan.load_after[p],
                       std::ranges::find(plan.retired, p) != plan.retired.end() ? "  retired" : "");
  }
  for (const planned_move& m : plan.moves) {
    out += fmt::format("move {} {} -> {} (weight {})\n", m.tenant, m.from, m.to, m.weight);
  }
  out += "load: running executions + 1 per tenant\n";
  return out;
}

result<size_t> apply_scale_embedded(const std::string& log_dir, const scale_plan& plan,
                                    int64_t now_ms) {
  auto header = scale_embedded_log(log_dir, plan.partitions, plan.retired);
  if (!header) return std::unexpected(header.error());
  embedded_log_options o;
  o.partitions = plan.partitions;
  auto l = open_embedded_log(log_dir, o);
  if (!l) return std::unexpected(l.error());
  size_t published = 0;
  for (const planned_move& m : plan.moves) {
    const std::string rid = fmt::format("scale-{}-{}", now_ms, published);
    auto r = client::submit(**l, m.tenant, client::move_tenant({m.tenant, "", rid, now_ms}, m.to));
    if (!r) return std::unexpected(r.error());
    ++published;
  }
  return published;
}

}  // namespace auterity
