// Appliers: the only code that changes orchestrator state. Keyed by (event type, schema
// version); an old version's applier is never deleted, so an old history replays with the
// logic that wrote it. The live path and replay both go through apply_record().

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <limits>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "engine/assert.h"
#include "processors/orchestrator.h"
#include "processors/orchestrator_state.h"

namespace auterity {

namespace {

using applier = void (*)(orchestrator_state&, const fbs::Envelope&, execution_state*);

int step_of(orchestrator_state& s, const execution_state& e, const flatbuffers::String* name) {
  const definition* d = s.find_definition(e.tenant, e.workflow, e.version);
  vassert(d != nullptr, "execution {} refers to missing definition {} v{}", e.id, e.workflow,
          e.version);
  int idx = d->step_index(sv(name));
  vassert(idx >= 0, "event of execution {} names unknown step {}", e.id, sv(name));
  return idx;
}

void definition_published_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state*) {
  auto p = env.payload_as_DefinitionPublished();
  auto parsed = parse_definition(sv(p->definition_json()), "");
  vassert(parsed.has_value(), "published definition does not parse: {}", parsed.error().reason);
  s.put_definition(sv(env.tenant_id()), *parsed);
}

void execution_started_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state*) {
  auto p = env.payload_as_ExecutionStarted();
  execution_state e;
  e.tenant = sv(env.tenant_id());
  e.id = sv(env.execution_id());
  e.workflow = sv(p->workflow());
  e.version = p->version();
  e.input_json = sv(p->input_json());
  e.started_ms = env.timestamp_ms();
  e.parent = sv(p->parent_execution());  // a sub-workflow's link (absent before them: empty)
  e.parent_step = sv(p->parent_step());
  e.depth = p->depth();
  const definition* d = s.find_definition(e.tenant, e.workflow, e.version);
  vassert(d != nullptr, "ExecutionStarted for missing definition {} v{}", e.workflow, e.version);
  e.steps.assign(d->steps.size(), step_state{});
  s.create_execution(std::move(e));
}

void step_scheduled_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  auto p = env.payload_as_StepScheduled();
  int idx = step_of(s, *e, p->step());
  const definition* d = s.find_definition(e->tenant, e->workflow, e->version);
  step_state& st = e->steps[idx];
  st.attempt = p->attempt();
  st.error.clear();
  if (p->child_execution() && p->child_execution()->size()) st.child = sv(p->child_execution());
  switch (d->steps[idx].kind) {
    case step_kind::wait_signal:
      st.status = step_status::waiting;
      break;
    case step_kind::delay:
      st.status = step_status::delaying;
      break;
    case step_kind::foreach: {
      // The list the items run over, fixed now: {"items": [...]}.
      st.status = step_status::running;
      const auto doc = nlohmann::json::parse(sv(p->input_json()), nullptr, false);
      vassert(doc.is_object() && doc.contains("items") && doc["items"].is_array(),
              "foreach {} scheduled without its items", d->steps[idx].id);
      st.items_json = doc["items"].dump();
      st.items.assign(doc["items"].size(), item_state{});
      break;
    }
    default:
      st.status = step_status::running;
      break;
  }
  s.set_timer(*e, idx, p->timer_at_ms());
}

// ---------------------------------------------------------------------------- foreach items

item_state& item_of(orchestrator_state& s, execution_state& e, const flatbuffers::String* step,
                    uint32_t item, int& idx) {
  idx = step_of(s, e, step);
  vassert(item < e.steps[idx].items.size(), "event of execution {} names item {} of {}", e.id, item,
          sv(step));
  return e.steps[idx].items[item];
}

void item_scheduled_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  auto p = env.payload_as_ItemScheduled();
  int idx = 0;
  item_state& i = item_of(s, *e, p->step(), p->item(), idx);
  i.status = step_status::running;
  i.attempt = p->attempt();
  i.error.clear();
  if (p->child_execution() && p->child_execution()->size()) i.child = sv(p->child_execution());
  s.set_item_timer(*e, static_cast<uint16_t>(idx), p->item(), p->timer_at_ms());
}

void item_succeeded_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  auto p = env.payload_as_ItemSucceeded();
  int idx = 0;
  item_state& i = item_of(s, *e, p->step(), p->item(), idx);
  i.status = step_status::succeeded;
  i.output_json = sv(p->output_json());
  i.error.clear();
  s.set_item_timer(*e, static_cast<uint16_t>(idx), p->item(), 0);
}

void item_failed_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  auto p = env.payload_as_ItemFailed();
  int idx = 0;
  item_state& i = item_of(s, *e, p->step(), p->item(), idx);
  i.status = step_status::failed;
  i.error = sv(p->error());
  s.set_item_timer(*e, static_cast<uint16_t>(idx), p->item(), 0);
}

void item_retry_scheduled_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  auto p = env.payload_as_ItemRetryScheduled();
  int idx = 0;
  item_state& i = item_of(s, *e, p->step(), p->item(), idx);
  i.status = step_status::retry_wait;
  i.error = sv(p->error());
  s.set_item_timer(*e, static_cast<uint16_t>(idx), p->item(), p->retry_at_ms());
}

void item_timed_out_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  auto p = env.payload_as_ItemTimedOut();
  int idx = 0;
  item_state& i = item_of(s, *e, p->step(), p->item(), idx);
  i.status = step_status::timed_out;
  i.error = "timed out";
  s.set_item_timer(*e, static_cast<uint16_t>(idx), p->item(), 0);
}

void step_succeeded_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  auto p = env.payload_as_StepSucceeded();
  int idx = step_of(s, *e, p->step());
  const definition* d = s.find_definition(e->tenant, e->workflow, e->version);
  step_state& st = e->steps[idx];
  st.status = step_status::succeeded;
  st.output_json = sv(p->output_json());
  st.error.clear();
  s.set_timer(*e, idx, 0);
  if (d->steps[idx].kind == step_kind::wait_signal) {
    // A signal that arrived before the step started is consumed by it.
    const std::string& name = d->steps[idx].signal;
    for (auto it = e->signals.begin(); it != e->signals.end(); ++it) {
      if (it->first == name) {
        e->signals.erase(it);
        break;
      }
    }
  }
}

void step_failed_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  auto p = env.payload_as_StepFailed();
  int idx = step_of(s, *e, p->step());
  e->steps[idx].status = step_status::failed;
  e->steps[idx].error = sv(p->error());
  s.set_timer(*e, idx, 0);
  // A foreach that failed fast: its items still out are cancelled, their acks stale.
  for (uint32_t k = 0; k < e->steps[idx].items.size(); ++k) {
    item_state& item = e->steps[idx].items[k];
    if (step_resolved(item.status)) continue;
    item.status = step_status::cancelled;
    s.set_item_timer(*e, static_cast<uint16_t>(idx), k, 0);
  }
}

void step_retry_scheduled_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  auto p = env.payload_as_StepRetryScheduled();
  int idx = step_of(s, *e, p->step());
  e->steps[idx].status = step_status::retry_wait;
  e->steps[idx].error = sv(p->error());
  s.set_timer(*e, idx, p->retry_at_ms());
}

void step_timed_out_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  auto p = env.payload_as_StepTimedOut();
  int idx = step_of(s, *e, p->step());
  e->steps[idx].status = step_status::timed_out;
  e->steps[idx].error = "timed out";
  s.set_timer(*e, idx, 0);
}

void step_skipped_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  auto p = env.payload_as_StepSkipped();
  int idx = step_of(s, *e, p->step());
  e->steps[idx].status = step_status::skipped;
  e->steps[idx].error = sv(p->reason());
}

void signal_received_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  auto p = env.payload_as_SignalReceived();
  const definition* d = s.find_definition(e->tenant, e->workflow, e->version);
  for (size_t i = 0; i < d->steps.size(); ++i) {
    if (e->steps[i].status == step_status::waiting && d->steps[i].signal == sv(p->name())) {
      return;  // consumed by the waiting step (its StepSucceeded follows)
    }
  }
  e->signals.emplace_back(sv(p->name()), sv(p->payload_json()));
}

void timer_fired_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  auto p = env.payload_as_TimerFired();
  const int idx = step_of(s, *e, p->step());
  if (p->item() >= 0) {  // a foreach item's timer (absent before foreach: -1)
    s.set_item_timer(*e, static_cast<uint16_t>(idx), static_cast<uint32_t>(p->item()), 0);
    return;
  }
  s.set_timer(*e, idx, 0);
}

// Tenant-level: the signal's execution id has no history yet.
void signal_held_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state*) {
  auto p = env.payload_as_SignalHeld();
  held_signal h;
  h.name = sv(p->name());
  h.payload_json = sv(p->payload_json());
  h.command_id = sv(p->command_id());
  h.source_partition = p->source_partition();
  h.source_offset = p->source_offset();
  h.held_ms = env.timestamp_ms();
  h.expires_at_ms = p->expires_at_ms();
  s.hold_signal(sv(env.tenant_id()), sv(p->execution()), std::move(h));
}

// Tenant-level, for either outcome: what follows (SignalReceived events in the execution's
// history, or rejections) carries the signals themselves.
void held_signals_released_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state*) {
  auto p = env.payload_as_HeldSignalsReleased();
  const size_t released = s.release_held(sv(env.tenant_id()), sv(p->execution()));
  vassert(released == p->count(), "HeldSignalsReleased of {} names {} signals, {} were held",
          sv(p->execution()), p->count(), released);
}

void end_execution(orchestrator_state& s, const fbs::Envelope& env, execution_state* e,
                   exec_status status, std::string_view result) {
  e->status = status;
  e->ended_ms = env.timestamp_ms();
  e->result = result;
  for (size_t i = 0; i < e->steps.size(); ++i) {
    s.set_timer(*e, static_cast<uint16_t>(i), 0);
    if (!step_resolved(e->steps[i].status)) e->steps[i].status = step_status::cancelled;
    for (uint32_t k = 0; k < e->steps[i].items.size(); ++k) {
      item_state& item = e->steps[i].items[k];
      s.set_item_timer(*e, static_cast<uint16_t>(i), k, 0);
      if (!step_resolved(item.status)) item.status = step_status::cancelled;
    }
  }
  s.on_ended(*e);
}

void execution_succeeded_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  end_execution(s, env, e, exec_status::succeeded,
                sv(env.payload_as_ExecutionSucceeded()->output_json()));
}

void execution_failed_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  end_execution(s, env, e, exec_status::failed, sv(env.payload_as_ExecutionFailed()->reason()));
}

void execution_cancelled_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  end_execution(s, env, e, exec_status::cancelled,
                sv(env.payload_as_ExecutionCancelled()->reason()));
}

// ------------------------------------------------------------------------ tenant policy

void tenant_policy_published_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state*) {
  auto p = env.payload_as_TenantPolicyPublished();
  auto parsed = parse_tenant_policy(sv(p->policy_json()));
  vassert(parsed.has_value(), "published policy does not parse: {}", parsed.error().reason);
  s.put_policy(sv(env.tenant_id()), p->version(), *parsed);
}

void ai_routed_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  auto p = env.payload_as_AiRouted();
  if (sv(p->provider()).empty()) return;  // no candidate: the step's failure follows
  int idx = step_of(s, *e, p->step());
  ai_attempt a;
  a.attempt = p->attempt();
  a.provider = sv(p->provider());
  a.model = sv(p->model());
  a.input_per_1k_micros = p->input_per_1k_micros();
  a.output_per_1k_micros = p->output_per_1k_micros();
  a.failover = p->failover();
  e->steps[idx].ai.push_back(std::move(a));
}

void add_be64(orchestrator_state& s, const std::string& key, int64_t amount) {
  const std::optional<std::string>& old = s.value(key);
  const int64_t before = old && old->size() == 8 ? static_cast<int64_t>(keys::get_be64(*old)) : 0;
  const int64_t after = amount > 0 && before > std::numeric_limits<int64_t>::max() - amount
                            ? before
                            : before + amount;
  std::string v;
  keys::put_be64(v, static_cast<uint64_t>(after));
  s.put_value(key, std::move(v));
}

// ------------------------------------------------------------------------------ retention

std::optional<int> digits(std::string_view s) {
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// The oldest day kept when `day` ("YYYY-MM-DD") has usage: retention::spend_days_kept days
// before it. Empty: not a date (nothing is pruned).
std::string first_day_kept(std::string_view day) {
  using namespace std::chrono;
  if (day.size() != 10 || day[4] != '-' || day[7] != '-') return {};
  auto y = digits(day.substr(0, 4)), m = digits(day.substr(5, 2)), d = digits(day.substr(8, 2));
  if (!y || !m || !d) return {};
  const year_month_day ymd{year{*y}, month{static_cast<unsigned>(*m)},
                           std::chrono::day{static_cast<unsigned>(*d)}};
  if (!ymd.ok()) return {};
  const year_month_day first{sys_days(ymd) - days(retention::spend_days_kept)};
  return fmt::format("{:04}-{:02}-{:02}", static_cast<int>(first.year()),
                     static_cast<unsigned>(first.month()), static_cast<unsigned>(first.day()));
}

// The oldest month kept when `month` ("YYYY-MM") has usage. Empty: not a month.
std::string first_month_kept(std::string_view month) {
  if (month.size() != 7 || month[4] != '-') return {};
  auto y = digits(month.substr(0, 4)), m = digits(month.substr(5, 2));
  if (!y || !m || *m < 1 || *m > 12) return {};
  const int index = *y * 12 + (*m - 1) - retention::spend_months_kept;
  if (index < 0) return {};
  return fmt::format("{:04}-{:02}", index / 12, index % 12 + 1);
}

// Deletes the tenant's spend keys (days or months, ordered) before `first_kept`, at most
// spend_keys_pruned_per_event_max of them.
void prune_spend(orchestrator_state& s, const std::set<std::string>& stored,
                 const std::string& first_kept,
                 std::string (*key_of)(std::string_view, std::string_view),
                 std::string_view tenant) {
  if (first_kept.empty()) return;
  std::vector<std::string> old;
  for (auto it = stored.begin(); it != stored.end() && *it < first_kept &&
                                 old.size() < retention::spend_keys_pruned_per_event_max;
       ++it) {
    old.push_back(*it);
  }
  for (const std::string& when : old) s.del_value(key_of(tenant, when));
}

// Expired dedup entries (admitted at least `window_ms` before `now_ms`), oldest first and at
// most dedup_pruned_per_admission_max; then the oldest beyond dedup_entries_per_tenant_max - 1,
// making room for the admission being applied.
void prune_dedup(orchestrator_state& s, std::string_view tenant, int64_t now_ms,
                 int64_t window_ms) {
  const auto& entries = s.counters(tenant).dedup;
  std::vector<std::string> old;
  for (auto it = entries.begin(); it != entries.end() && it->first <= now_ms - window_ms &&
                                  old.size() < retention::dedup_pruned_per_admission_max;
       ++it) {
    old.push_back(it->second);
  }
  const size_t left = entries.size() - old.size();
  if (left >= retention::dedup_entries_per_tenant_max) {
    auto it = std::next(entries.begin(), static_cast<std::ptrdiff_t>(old.size()));
    for (size_t n = left - retention::dedup_entries_per_tenant_max + 1; n > 0; --n, ++it) {
      old.push_back(it->second);
    }
  }
  for (const std::string& key : old) s.del_value(key);
}

void ai_usage_recorded_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  auto p = env.payload_as_AiUsageRecorded();
  int idx = step_of(s, *e, p->step());
  for (ai_attempt& a : e->steps[idx].ai) {
    if (a.attempt == p->attempt()) a.usage_recorded = true;
  }
  const std::string_view tenant = sv(env.tenant_id());
  const std::string day(sv(p->day())), month(sv(p->month()));
  // The first usage of a new day (or month) prunes the ones past retention.
  const orchestrator_state::counter_index& stored = s.counters(tenant);
  if (!stored.days.contains(day)) {
    prune_spend(s, stored.days, first_day_kept(day), keys::ai_spend_day, tenant);
  }
  if (!stored.months.contains(month)) {
    prune_spend(s, stored.months, first_month_kept(month), keys::ai_spend_month, tenant);
  }
  add_be64(s, keys::ai_spend_day(tenant, day), p->cost_micros());
  add_be64(s, keys::ai_spend_month(tenant, month), p->cost_micros());
  s.note_ai_spend(tenant, day, month);
}

void notification_suppressed_v1(orchestrator_state& s, const fbs::Envelope& env,
                                execution_state* e) {
  step_of(s, *e, env.payload_as_NotificationSuppressed()->step());  // its StepSucceeded follows
}

void notification_deferred_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  auto p = env.payload_as_NotificationDeferred();
  int idx = step_of(s, *e, p->step());
  if (p->item() >= 0) {  // a foreach item (absent before foreach: -1)
    const auto item = static_cast<uint32_t>(p->item());
    vassert(item < e->steps[idx].items.size(), "deferral of unknown item {}", item);
    e->steps[idx].items[item].status = step_status::deferred;
    s.set_item_timer(*e, static_cast<uint16_t>(idx), item, p->until_ms());
    return;
  }
  e->steps[idx].status = step_status::deferred;
  s.set_timer(*e, idx, p->until_ms());
}

void notification_admitted_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state* e) {
  auto p = env.payload_as_NotificationAdmitted();
  int idx = step_of(s, *e, p->step());
  if (p->item() >= 0) {  // a foreach item (absent before foreach: -1)
    const auto item = static_cast<uint32_t>(p->item());
    vassert(item < e->steps[idx].items.size(), "admission of unknown item {}", item);
    e->steps[idx].items[item].status = step_status::running;
    s.set_item_timer(*e, static_cast<uint16_t>(idx), item, p->timer_at_ms());
  } else {
    e->steps[idx].status = step_status::running;
    s.set_timer(*e, idx, p->timer_at_ms());
  }
  const std::string_view tenant = sv(env.tenant_id());
  if (p->window_start_ms() != 0) {
    const std::string key = keys::notify_window(tenant, sv(p->channel()));
    const std::optional<std::string>& old = s.value(key);
    uint32_t count = 1;
    if (old && old->size() == 12 &&
        static_cast<int64_t>(keys::get_be64(*old)) == p->window_start_ms()) {
      count = keys::get_be32(std::string_view(*old).substr(8)) + 1;
    }
    std::string v;
    keys::put_be64(v, static_cast<uint64_t>(p->window_start_ms()));
    keys::put_be32(v, count);
    s.put_value(key, std::move(v));
  }
  // Entries past the window of this admission no longer suppress anything (a policy with a
  // longer window later starts from what is left).
  prune_dedup(s, tenant, env.timestamp_ms(), p->dedup_window_ms());
  if (p->dedup_window_ms() > 0 && p->content_hash() && p->content_hash()->size() == 32) {
    hash256 h;
    std::copy(p->content_hash()->begin(), p->content_hash()->end(), h.begin());
    std::string v;
    keys::put_be64(v, static_cast<uint64_t>(env.timestamp_ms()));
    v += sv(p->command_id());
    s.put_value(keys::notify_dedup(tenant, h), std::move(v));
  }
}

// --------------------------------------------------------------- tenant moves (tenant_move.h)

void tenant_moved_out_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state*) {
  auto p = env.payload_as_TenantMovedOut();
  const std::string_view tenant = sv(env.tenant_id());
  s.drop_tenant(tenant);
  placement_entry out;
  out.ph = placement_entry::phase::moved_out;
  out.partition = p->to_partition();
  out.epoch = p->epoch();
  s.put_placement(tenant, out);
}

hash256 hash_of(const flatbuffers::Vector<uint8_t>* v) {
  hash256 h{};
  if (v && v->size() == h.size()) std::copy(v->begin(), v->end(), h.begin());
  return h;
}

void tenant_state_installed_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state*) {
  const fbs::TenantStateChunk* c = env.payload_as_TenantStateInstalled()->chunk();
  const std::string_view tenant = sv(env.tenant_id());
  placement_entry p;
  const placement_entry* now = s.placement(tenant);
  // The decider installs chunks in order only; a log edited otherwise still replays (to a state
  // the comparison with the engine's then shows as different).
  if (c->seq() > 0 && now && now->ph == placement_entry::phase::installing &&
      now->next_seq == c->seq()) {
    p = *now;
  } else {
    s.drop_tenant(tenant);  // whatever an earlier stay left (nothing, normally)
    p.ph = placement_entry::phase::installing;
    p.partition = c->from_partition();
    p.epoch = c->epoch();
  }
  s.forget_tenant(tenant);
  if (c->entries()) {
    for (const fbs::StateEntry* e : *c->entries()) s.install(sv(e->key()), sv(e->value()));
  }
  std::string chained(p.rolling.begin(), p.rolling.end());
  const hash256 chunk = hash_of(c->digest());
  chained.append(chunk.begin(), chunk.end());
  p.rolling = sha256(chained);
  p.next_seq = c->seq() + 1;
  s.put_placement(tenant, p);
  if (c->seq() + 1 == c->count()) {
    s.set_chain(tenant, tenant_chain{c->chain_events(), hash_of(c->chain_hash())});
  }
}

void tenant_moved_in_v1(orchestrator_state& s, const fbs::Envelope& env, execution_state*) {
  auto p = env.payload_as_TenantMovedIn();
  placement_entry here;
  here.ph = placement_entry::phase::here;
  here.partition = p->to_partition();
  here.epoch = p->epoch();
  s.put_placement(sv(env.tenant_id()), here);
  s.load_installed(sv(env.tenant_id()));
}

constexpr size_t payload_slots = static_cast<size_t>(fbs::Payload::MAX) + 1;
constexpr size_t versions = schema_version_current + 1;

// appliers[type][version]; a null entry is a type that is not an event (or not in that
// version).
constexpr std::array<std::array<applier, versions>, payload_slots> make_table() {
  std::array<std::array<applier, versions>, payload_slots> t{};
  auto set = [&](fbs::Payload type, uint16_t version, applier a) {
    t[static_cast<size_t>(type)][version] = a;
  };
  set(fbs::Payload::DefinitionPublished, 1, definition_published_v1);
  set(fbs::Payload::ExecutionStarted, 1, execution_started_v1);
  set(fbs::Payload::ExecutionSucceeded, 1, execution_succeeded_v1);
  set(fbs::Payload::ExecutionFailed, 1, execution_failed_v1);
  set(fbs::Payload::ExecutionCancelled, 1, execution_cancelled_v1);
  set(fbs::Payload::StepScheduled, 1, step_scheduled_v1);
  set(fbs::Payload::StepSucceeded, 1, step_succeeded_v1);
  set(fbs::Payload::StepFailed, 1, step_failed_v1);
  set(fbs::Payload::StepRetryScheduled, 1, step_retry_scheduled_v1);
  set(fbs::Payload::StepTimedOut, 1, step_timed_out_v1);
  set(fbs::Payload::StepSkipped, 1, step_skipped_v1);
  set(fbs::Payload::SignalReceived, 1, signal_received_v1);
  set(fbs::Payload::TimerFired, 1, timer_fired_v1);
  set(fbs::Payload::TenantPolicyPublished, 1, tenant_policy_published_v1);
  set(fbs::Payload::AiRouted, 1, ai_routed_v1);
  set(fbs::Payload::AiUsageRecorded, 1, ai_usage_recorded_v1);
  set(fbs::Payload::NotificationSuppressed, 1, notification_suppressed_v1);
  set(fbs::Payload::NotificationDeferred, 1, notification_deferred_v1);
  set(fbs::Payload::NotificationAdmitted, 1, notification_admitted_v1);
  set(fbs::Payload::SignalHeld, 1, signal_held_v1);
  set(fbs::Payload::HeldSignalsReleased, 1, held_signals_released_v1);
  set(fbs::Payload::TenantMovedOut, 1, tenant_moved_out_v1);
  set(fbs::Payload::TenantStateInstalled, 1, tenant_state_installed_v1);
  set(fbs::Payload::TenantMovedIn, 1, tenant_moved_in_v1);
  set(fbs::Payload::ItemScheduled, 1, item_scheduled_v1);
  set(fbs::Payload::ItemSucceeded, 1, item_succeeded_v1);
  set(fbs::Payload::ItemFailed, 1, item_failed_v1);
  set(fbs::Payload::ItemRetryScheduled, 1, item_retry_scheduled_v1);
  set(fbs::Payload::ItemTimedOut, 1, item_timed_out_v1);
  return t;
}
constexpr auto appliers = make_table();

}  // namespace

bool has_applier(fbs::Payload type, uint16_t version) {
  const auto t = static_cast<size_t>(type);
  return t < payload_slots && version < versions && appliers[t][version] != nullptr;
}

void apply_record(orchestrator_state& s, record_position where, std::string_view bytes) {
  const uint64_t offset = where.value;  // for messages: an offset, or the batch ordinal
  std::string why;
  const fbs::Envelope* env = decode_envelope(bytes, &why);
  vassert(env != nullptr, "executions record at offset {} is not an envelope: {}", offset, why);
  if (env->kind() != fbs::RecordKind::Event) return;  // rejections do not change state
  const auto type = static_cast<size_t>(env->payload_type());
  const uint16_t version = env->schema_version();
  vassert(version < versions && appliers[type][version] != nullptr,
          "no applier for event {} version {} at offset {}", payload_name(env->payload_type()),
          version, offset);
  const hash256 hash = sha256(bytes);
  const std::string_view tenant = sv(env->tenant_id());
  const std::string_view id = sv(env->execution_id());
  s.note_event(tenant, env->timestamp_ms(), env->payload_type() == fbs::Payload::ExecutionStarted);

  if (env->payload_type() == fbs::Payload::TenantStateInstalled) {
    // Carries state into the tenant's range; not chained (the chain continues with the
    // TenantMovedIn that follows the last chunk).
    appliers[type][version](s, *env, nullptr);
    return;
  }
  if (env->payload_type() == fbs::Payload::TenantMovedOut) {
    // The last event of the tenant here: its chain head leaves with its state (the target's
    // TenantMovedIn links to it), and nothing of the tenant stays behind.
    appliers[type][version](s, *env, nullptr);
    return;
  }
  if (id.empty()) {  // tenant-level event: chained per tenant
    appliers[type][version](s, *env, nullptr);
    tenant_chain& c = s.chain(tenant);
    c.event_count++;
    c.last_hash = hash;
    s.mark_chain_dirty(tenant);
    return;
  }
  execution_state* e = nullptr;
  if (env->payload_type() != fbs::Payload::ExecutionStarted) {
    e = s.find_execution(tenant, id);
    vassert(e != nullptr, "event {} at offset {} for unknown execution {}",
            payload_name(env->payload_type()), offset, id);
  }
  appliers[type][version](s, *env, e);
  if (!e) e = s.find_execution(tenant, id);
  s.index_event(*e, e->event_count, where);
  e->event_count++;
  e->last_hash = hash;
  s.mark_dirty(*e);
}

}  // namespace auterity
