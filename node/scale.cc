#include "node/scale.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <numeric>
#include <optional>
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
// On Kafka, how long the survey waits for the transactions below a stream's end to be decided
// (running owners commit every few milliseconds; a paused one holds it until its timeout).
constexpr auto survey_decided_wait = std::chrono::seconds(30);

// Every committed record of (s, p) in [from, upto) (and maybe some past it) into `out`. A
// backend may answer a read with fewer records than there are (Kafka: one fetch), and Kafka's
// offsets have gaps (transaction markers), so it reads on until the range is covered.
result<void> read_range(log& l, stream s, uint32_t p, uint64_t from, uint64_t upto,
                        std::vector<record>& out) {
  for (uint64_t at = from; at < upto;) {
    auto n = l.read_to(s, p, at, upto, survey_read_records_max, 64 << 20, out);
    if (!n) return std::unexpected(n.error());
    if (*n == 0) break;
    at = out.back().offset + 1;
  }
  return {};
}

// The end of (s, p), once everything below it is decided (Kafka; the embedded log at once).
result<uint64_t> decided_end(log& l, stream s, uint32_t p) {
  auto end = l.end_offset(s, p);
  if (!end) return std::unexpected(end.error());
  if (auto d = l.await_decided(s, p, *end, survey_decided_wait); !d) {
    return std::unexpected(d.error());
  }
  return *end;
}

// Moves published on partition p's ingress and not consumed yet (last one per tenant wins).
result<void> pending_moves(log& l, uint32_t p, std::map<std::string, uint32_t>& out) {
  auto pos = l.position(orchestrator_group, stream::ingress, p);
  if (!pos) return std::unexpected(pos.error());
  auto end = decided_end(l, stream::ingress, p);
  if (!end) return std::unexpected(end.error());
  std::vector<record> recs;
  for (uint64_t from = *pos; from < *end;) {
    recs.clear();
    const uint64_t upto = std::min(*end, from + survey_read_records_max);
    if (auto r = read_range(l, stream::ingress, p, from, upto, recs); !r) return r;
    for (const record& r : recs) {
      if (r.offset >= upto) break;
      const fbs::Envelope* env = decode_envelope(r.value, nullptr);
      if (env && env->payload_type() == fbs::Payload::MoveTenant) {
        out[std::string(sv(env->tenant_id()))] = env->payload_as_MoveTenant()->to_partition();
      }
    }
    from = upto;
  }
  return {};
}

// Calls fn(envelope) for partition p's executions records from the newest back, until fn
// returns false, the start of the stream or survey_recent_records_max records; true if capped.
result<bool> read_back(log& l, uint32_t p, const std::function<bool(const fbs::Envelope&)>& fn) {
  auto end = decided_end(l, stream::executions, p);
  if (!end) return std::unexpected(end.error());
  std::vector<record> recs;
  uint64_t read = 0;
  for (uint64_t upto = *end; upto > 0;) {
    const uint64_t from = upto > survey_read_records_max ? upto - survey_read_records_max : 0;
    recs.clear();
    if (auto r = read_range(l, stream::executions, p, from, upto, recs); !r) {
      return std::unexpected(r.error());
    }
    for (auto it = recs.rbegin(); it != recs.rend(); ++it) {
      if (it->offset >= upto) continue;
      if (++read > survey_recent_records_max) return true;
      const fbs::Envelope* env = decode_envelope(it->value, nullptr);
      if (env && !fn(*env)) return false;
    }
    upto = from;
  }
  return false;
}

// The window measured forwards: one pass per partition over its last survey_recent_records_max
// records of executions, keeping the events newer than the newest seen so far minus the window
// (timestamps are nearly in order), so memory holds about one window of events. For a reader that
// seeks on every backwards step (Kafka).
result<void> window_forward(log& l, int64_t window_ms, placement_survey& out,
                            std::vector<std::map<std::string, uint64_t>>& recent) {
  struct seen {
    int64_t ms;
    uint32_t tenant;  // index into names
  };
  std::vector<std::string> names;
  std::map<std::string, uint32_t, std::less<>> index;
  std::vector<std::deque<seen>> kept(l.partition_count());
  int64_t newest = 0;
  auto prune = [&](std::deque<seen>& d) {
    while (!d.empty() && d.front().ms < newest - window_ms) d.pop_front();
  };
  std::vector<record> recs;
  for (uint32_t p = 0; p < l.partition_count(); ++p) {
    auto end = decided_end(l, stream::executions, p);
    if (!end) return std::unexpected(end.error());
    const uint64_t start = *end > survey_recent_records_max ? *end - survey_recent_records_max : 0;
    std::optional<int64_t> first_ms;
    for (uint64_t at = start; at < *end;) {
      recs.clear();
      auto n = l.read_to(stream::executions, p, at, *end, survey_read_records_max, 64 << 20, recs);
      if (!n) return std::unexpected(n.error());
      if (*n == 0) break;
      for (const record& r : recs) {
        if (r.offset >= *end) break;
        const fbs::Envelope* env = decode_envelope(r.value, nullptr);
        if (!env) continue;
        if (!first_ms) first_ms = env->timestamp_ms();
        newest = std::max(newest, env->timestamp_ms());
        const std::string_view tenant = sv(env->tenant_id());
        auto it = index.find(tenant);
        if (it == index.end()) {
          it = index.emplace(std::string(tenant), static_cast<uint32_t>(names.size())).first;
          names.emplace_back(tenant);
        }
        kept[p].push_back({env->timestamp_ms(), it->second});
        prune(kept[p]);
      }
      at = recs.back().offset + 1;
    }
    // Records before `start` were not read: the window may reach further back.
    out.partitions[p].recent_capped = start > 0 && first_ms && *first_ms >= newest - window_ms;
  }
  out.window_end_ms = newest;
  for (uint32_t p = 0; p < l.partition_count(); ++p) {
    prune(kept[p]);
    out.partitions[p].recent_events = kept[p].size();
    for (const seen& e : kept[p]) ++recent[p][names[e.tenant]];
  }
  return {};
}

}  // namespace

result<placement_survey> survey_placement(log& l, const std::vector<state_store*>& stores,
                                          int64_t window_ms, bool read_forward) {
  placement_survey out;
  out.partitions.resize(l.partition_count());
  out.window_ms = window_ms;
  std::vector<std::map<std::string, uint64_t>> recent(l.partition_count());  // by tenant
  if (window_ms > 0 && read_forward) {
    if (auto r = window_forward(l, window_ms, out, recent); !r) return std::unexpected(r.error());
  } else if (window_ms > 0) {
    // The window ends at the newest event of the log (the last moment the engine ran).
    for (uint32_t p = 0; p < l.partition_count(); ++p) {
      auto r = read_back(l, p, [&](const fbs::Envelope& env) {
        out.window_end_ms = std::max(out.window_end_ms, env.timestamp_ms());
        return false;
      });
      if (!r) return std::unexpected(r.error());
    }
    for (uint32_t p = 0; p < l.partition_count() && out.window_end_ms > 0; ++p) {
      partition_survey& ps = out.partitions[p];
      const int64_t since = out.window_end_ms - window_ms;
      // Timestamps are nearly in order: stop after a whole read's worth of older records.
      uint64_t older_in_a_row = 0;
      auto capped = read_back(l, p, [&](const fbs::Envelope& env) {
        if (env.timestamp_ms() < since) return ++older_in_a_row < survey_read_records_max;
        older_in_a_row = 0;
        ++ps.recent_events;
        ++recent[p][std::string(sv(env.tenant_id()))];
        return true;
      });
      if (!capped) return std::unexpected(capped.error());
      ps.recent_capped = *capped;
    }
  }
  for (uint32_t p = 0; p < l.partition_count(); ++p) {
    partition_survey& ps = out.partitions[p];
    if (auto r = pending_moves(l, p, out.pending_moves); !r) return std::unexpected(r.error());
    const state_store* store = p < stores.size() ? stores[p] : nullptr;
    if (!store) continue;
    ps.has_state = true;
    std::map<std::string, tenant_load> here;
    auto scanned = store->scan_all([&](std::string_view key, std::string_view value) {
      ps.state_bytes += key.size() + value.size();
      if (key.starts_with('R')) {
        tenant_load& t = here[std::string(key.substr(1))];
        t.tenant = std::string(key.substr(1));
        t.partition = p;
        return true;
      }
      placement_entry where;
      if (key.starts_with('O') && decode_placement(value, where) &&
          where.ph == placement_entry::phase::moved_out) {
        ++ps.moved_out;
      }
      if (!key.starts_with('T')) return true;
      const size_t nul = key.find('\0');
      if (nul == std::string_view::npos) return true;
      tenant_load& t = here[std::string(key.substr(1, nul - 1))];
      t.state_bytes += key.size() + value.size();
      if (nul + 1 < key.size() && key[nul + 1] == 'E') {
        exec_status status;
        if (peek_execution_status(value, status) && status == exec_status::running) ++t.running;
      }
      return true;
    });
    if (!scanned) return std::unexpected(scanned.error());
    // A tenant whose range is here but that is not registered (R) is one being installed or a
    // leftover; only registered tenants live here.
    for (auto& [name, t] : here) {
      if (t.tenant.empty()) continue;
      if (auto it = recent[p].find(name); it != recent[p].end()) t.recent_events = it->second;
      ++ps.tenants;
      ps.running += t.running;
      out.tenants.push_back(std::move(t));
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
  plan.window_ms = survey.window_ms;
  auto move = [&](placed& pl, uint32_t to, std::string why) -> result<void> {
    if (plan.moves.size() >= scale_moves_max) {
      return fail(errc::too_large, fmt::format("the plan needs more than scale_moves_max ({}) "
                                               "moves; scale in steps",
                                               scale_moves_max));
    }
    plan.load_after[pl.at] -= pl.t->weight();
    plan.load_after[to] += pl.t->weight();
    plan.moves.push_back({pl.t->tenant, pl.at, to, pl.t->weight(), std::move(why)});
    pl.at = to;
    return {};
  };
  std::vector<bool> isolated(plan.partitions, false);  // holds a hot tenant alone
  // The least loaded active partition that is not isolated (target if there is none).
  auto least_loaded = [&] {
    uint32_t best = target;
    for (uint32_t p = 0; p < target; ++p) {
      if (isolated[p]) continue;
      if (best == target || plan.load_after[p] < plan.load_after[best]) best = p;
    }
    return best;
  };
  // Heaviest first, so the greedy placement stays close to balanced.
  std::ranges::stable_sort(tenants, std::greater<>{},
                           [](const placed& p) { return p.t->weight(); });

  // Every tenant off the partitions that will not take tenants.
  for (placed& pl : tenants) {
    if (pl.at < target) continue;
    if (auto r = move(pl, least_loaded(), fmt::format("partition {} retired", pl.at)); !r) {
      return std::unexpected(r.error());
    }
  }
  // A tenant at least as heavy as the fair share needs a partition of its own: the others on
  // its partition only add to the hottest partition's load. Heaviest first; isolation stops
  // when a single partition would be left for everyone else.
  uint64_t total = 0;
  for (const placed& pl : tenants) total += pl.t->weight();
  const uint64_t fair = target > 0 ? total / target : total;
  uint32_t isolated_count = 0;
  for (placed& hot : tenants) {
    if (target < 2 || hot.t->weight() < fair || hot.t->weight() <= 1) break;
    if (isolated_count + 1 >= target) break;
    auto sharing = [&](uint32_t p) {
      size_t n = 0;
      for (const placed& pl : tenants) n += pl.at == p && &pl != &hot;
      return n;
    };
    std::string why = fmt::format("isolate hot tenant {} (weight {}, fair share {})", hot.t->tenant,
                                  hot.t->weight(), fair);
    if (isolated[hot.at] || sharing(hot.at) > 0) {
      // An empty active partition takes it in one move; else the others leave its partition
      // (unless it shares one with a hotter isolated tenant: then it has to go).
      uint32_t empty = target;
      for (uint32_t p = 0; p < target && empty == target; ++p) {
        if (!isolated[p] && sharing(p) == 0 && p != hot.at) empty = p;
      }
      if (empty != target) {
        if (auto r = move(hot, empty, why); !r) return std::unexpected(r.error());
      } else if (isolated[hot.at]) {
        continue;  // no room: it stays where it is and is balanced like the others
      } else {
        isolated[hot.at] = true;  // least_loaded() skips it from here on
        for (placed& pl : tenants) {
          if (&pl == &hot || pl.at != hot.at) continue;
          const uint32_t to = least_loaded();
          if (to == target) break;
          if (auto r = move(pl, to, why); !r) return std::unexpected(r.error());
        }
      }
    }
    isolated[hot.at] = true;
    ++isolated_count;
    plan.isolated.emplace_back(hot.t->tenant, hot.at);
  }
  // Balance: the heaviest tenant of the most loaded partition that lowers the larger load.
  for (;;) {
    uint32_t hot = target;
    for (uint32_t p = 0; p < target; ++p) {
      if (isolated[p]) continue;
      if (hot == target || plan.load_after[p] > plan.load_after[hot]) hot = p;
    }
    const uint32_t cold = least_loaded();
    if (hot == target || hot == cold) break;
    placed* best = nullptr;
    for (placed& pl : tenants) {
      if (pl.at != hot) continue;
      // After the move the larger of the two loads must be below the hot partition's now.
      if (plan.load_after[cold] + pl.t->weight() < plan.load_after[hot]) {
        best = &pl;
        break;  // heaviest first
      }
    }
    if (!best) break;
    const std::string why = fmt::format("balance: partition {} load {} -> partition {} load {}",
                                        hot, plan.load_after[hot], cold, plan.load_after[cold]);
    if (auto r = move(*best, cold, why); !r) return std::unexpected(r.error());
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
  for (const auto& [tenant, p] : plan.isolated) {
    out += fmt::format("isolated: {} alone on partition {}\n", tenant, p);
  }
  for (const planned_move& m : plan.moves) {
    out +=
        fmt::format("move {} {} -> {} (weight {}): {}\n", m.tenant, m.from, m.to, m.weight, m.why);
  }
  out += plan.window_ms > 0
             ? fmt::format(
                   "load: running executions + 1 + events in the {} s before the log's "
                   "newest event, per tenant\n",
                   plan.window_ms / 1000)
             : std::string("load: running executions + 1 per tenant\n");
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
