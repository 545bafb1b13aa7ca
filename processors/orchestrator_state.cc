#include "processors/orchestrator_state.h"

#include <algorithm>

#include "engine/assert.h"

namespace auterity {

namespace {
std::string exec_key(std::string_view tenant, std::string_view id) {
  return keys::execution(tenant, id);
}

// Entries of the tenant-value cache kept across batches; beyond this it is emptied after a
// flush (the store has every value; the cache only saves reads).
constexpr size_t values_cached_max = 65'536;

// The tenant counter kinds load_counters() holds completely (letters of execution_state.h).
constexpr std::string_view counter_kinds = "UVNX";

struct counter_key {
  std::string_view tenant;
  char kind = 0;
  std::string_view rest;  // after the kind letter
};

// "T<tenant>\0<kind><rest>" with a counter kind; tenant ids hold no NUL.
std::optional<counter_key> parse_counter_key(std::string_view key) {
  if (!key.starts_with('T')) return std::nullopt;
  const size_t nul = key.find('\0');
  if (nul == std::string_view::npos || nul + 1 >= key.size()) return std::nullopt;
  const char kind = key[nul + 1];
  if (counter_kinds.find(kind) == std::string_view::npos) return std::nullopt;
  return counter_key{key.substr(1, nul - 1), kind, key.substr(nul + 2)};
}

int64_t admitted_ms_of(const std::optional<std::string>& v) {
  return v && v->size() >= 8 ? static_cast<int64_t>(keys::get_be64(*v)) : 0;
}
}  // namespace

// The tenant whose range holds `key` ("T<tenant>\0..." or "R<tenant>"), or empty.
static std::string_view tenant_of_key(std::string_view key) {
  if (key.starts_with('R')) return key.substr(1);
  if (!key.starts_with('T')) return {};
  const size_t nul = key.find('\0');
  return nul == std::string_view::npos ? std::string_view() : key.substr(1, nul - 1);
}

result<std::optional<std::string>> orchestrator_state::read(std::string_view key) {
  if (!_installed.empty()) {
    if (auto it = _installed.find(key); it != _installed.end()) return it->second;
  }
  // A tenant dropped in this batch: the store still holds its keys until the flush.
  if (!_dropped.empty() && _dropped.contains(tenant_of_key(key))) return std::nullopt;
  if (_deciding && _decide_reads) _decide_reads->fetch_add(1, std::memory_order_relaxed);
  return _store->get(key);
}

std::string encode_placement(const placement_entry& p) {
  std::string v(1, static_cast<char>(p.ph));
  keys::put_be32(v, p.partition);
  keys::put_be32(v, p.epoch);
  keys::put_be32(v, p.next_seq);
  v.append(reinterpret_cast<const char*>(p.rolling.data()), p.rolling.size());
  return v;
}

bool decode_placement(std::string_view b, placement_entry& out) {
  if (b.size() != 1 + 12 + 32 || static_cast<uint8_t>(b[0]) > 2) return false;
  out.ph = static_cast<placement_entry::phase>(b[0]);
  out.partition = keys::get_be32(b.substr(1));
  out.epoch = keys::get_be32(b.substr(5));
  out.next_seq = keys::get_be32(b.substr(9));
  std::copy(b.begin() + 13, b.end(), out.rolling.begin());
  return true;
}

const placement_entry* orchestrator_state::placement(std::string_view tenant) const {
  auto it = _placements.find(std::string(tenant));
  return it == _placements.end() ? nullptr : &it->second;
}

void orchestrator_state::put_placement(std::string_view tenant, const placement_entry& p) {
  _placements[std::string(tenant)] = p;
  _pending.put(keys::placement(tenant), encode_placement(p));
}

namespace {
template <typename Map, typename Pred>
void erase_where(Map& m, Pred pred) {
  for (auto it = m.begin(); it != m.end();) it = pred(*it) ? m.erase(it) : std::next(it);
}
}  // namespace

void orchestrator_state::forget_tenant(std::string_view tenant) {
  const std::string prefix = keys::tenant_prefix(tenant);
  const std::string registry = keys::tenant_registry(tenant);
  auto in_range = [&](std::string_view key) { return key.starts_with(prefix) || key == registry; };
  erase_where(_executions, [&](const auto& kv) { return in_range(kv.first); });
  erase_where(_dirty, [&](const auto& k) { return in_range(k); });
  erase_where(_ended, [&](const auto& k) { return in_range(k); });
  erase_where(_absent, [&](const auto& k) { return in_range(k); });
  erase_where(_definitions, [&](const auto& kv) { return in_range(kv.first); });
  erase_where(_latest, [&](const auto& kv) { return in_range(kv.first); });
  erase_where(_chains, [&](const auto& kv) { return in_range(kv.first); });
  erase_where(_dirty_chains, [&](const auto& k) { return in_range(k); });
  erase_where(_policies, [&](const auto& kv) { return in_range(kv.first); });
  erase_where(_values, [&](const auto& kv) { return in_range(kv.first); });
  _unresolved.erase(std::remove_if(_unresolved.begin(), _unresolved.end(),
                                   [&](const auto& u) { return in_range(u.first); }),
                    _unresolved.end());
  _counters.erase(std::string(tenant));
  _tenants.erase(std::string(tenant));
  erase_where(_timers, [&](const timer_entry& t) { return t.tenant == tenant; });
  erase_where(_held, [&](const auto& kv) { return kv.first.first == tenant; });
  _held_totals.erase(std::string(tenant));
}

void orchestrator_state::drop_tenant(std::string_view tenant) {
  forget_tenant(tenant);
  _dropped.emplace(tenant);
  std::string end = "T";
  end.append(tenant);
  end.push_back('\x01');  // just past every "T<tenant>\0..." key
  _pending.delete_range(keys::tenant_prefix(tenant), end);
  _pending.del(keys::tenant_registry(tenant));
  set_spend(tenant, {});
  if (auto it = _activity.find(std::string(tenant)); it != _activity.end() && it->second.running) {
    it->second.running = 0;
    _activity_changed.emplace(tenant);
  }
  erase_where(_installed, [&](const auto& kv) {
    return std::string_view(kv.first).starts_with(keys::tenant_prefix(tenant));
  });
}

void orchestrator_state::install(std::string_view key, std::string_view value) {
  _pending.put(key, value);
  _installed.insert_or_assign(std::string(key), std::string(value));
}

void orchestrator_state::set_chain(std::string_view tenant, const tenant_chain& c) {
  _chains[keys::tenant_chain(tenant)] = c;
  mark_chain_dirty(tenant);
}

result<orchestrator_state::tenant_export> orchestrator_state::export_tenant(std::string_view tenant,
                                                                            uint32_t partition) {
  tenant_export out;
  const std::string chain_key = keys::tenant_chain(tenant);
  auto registry = _store->get(keys::tenant_registry(tenant));
  if (!registry) return std::unexpected(registry.error());
  if (*registry) out.entries.emplace_back(keys::tenant_registry(tenant), **registry);
  const std::string exec_prefix = keys::execution(tenant, "");
  const std::string index_prefix = keys::tenant_prefix(tenant) + 'H';
  auto scanned = _store->scan_prefix(
      keys::tenant_prefix(tenant), [&](std::string_view key, std::string_view value) {
        if (key == chain_key) return true;
        std::string v(value);
        // An event index entry names the partition whose executions stream holds the event.
        if (key.starts_with(index_prefix) && v.size() == 8) keys::put_be32(v, partition);
        if (key.starts_with(exec_prefix)) {
          execution_state e;
          if (decode_execution(value, e) && e.status == exec_status::running) ++out.running;
        }
        out.bytes += key.size() + v.size();
        out.entries.emplace_back(std::string(key), std::move(v));
        return true;
      });
  if (!scanned) return std::unexpected(scanned.error());
  return out;
}

// Keys of `prefix` as this batch sees them: the store's (unless the tenant was dropped in this
// batch) overlaid with what a move installed in it.
std::map<std::string, std::string> orchestrator_state::scan_seen(std::string_view tenant,
                                                                 const std::string& prefix) {
  std::map<std::string, std::string> out;
  if (!_dropped.contains(tenant)) {
    auto scanned = _store->scan_prefix(prefix, [&](std::string_view key, std::string_view value) {
      out.emplace(key, value);
      return true;
    });
    vassert(scanned.has_value(), "state scan failed: {}", scanned.error().message);
  }
  for (auto it = _installed.lower_bound(prefix);
       it != _installed.end() && std::string_view(it->first).starts_with(prefix); ++it) {
    out.insert_or_assign(it->first, it->second);
  }
  return out;
}

void orchestrator_state::load_installed(std::string_view tenant) {
  for (const auto& [key, value] : scan_seen(tenant, keys::timer_prefix(tenant))) {
    timer_entry t;
    vassert(keys::parse_timer(key, t.tenant, t.due_ms, t.execution, t.step),
            "malformed timer key in a moved tenant's state");
    _timers.insert(std::move(t));
  }
  for (const auto& [key, value] : scan_seen(tenant, keys::held_signal_prefix(tenant))) {
    std::string execution;
    held_signal h;
    vassert(keys::parse_held_signal(key, tenant, execution) && decode_held_signal(value, h),
            "malformed held signal in a moved tenant's state");
    held_totals& totals = _held_totals[std::string(tenant)];
    totals.signals++;
    totals.bytes += h.bytes();
    _held[{std::string(tenant), std::move(execution)}].push_back(std::move(h));
  }
  vassert(load_spend(tenant).has_value(), "AI spend of moved-in tenant {} unreadable", tenant);
  activity(tenant).running = count_running(tenant);
}

namespace {
int64_t be64_value(std::string_view v) {
  return v.size() == 8 ? static_cast<int64_t>(keys::get_be64(v)) : 0;
}
}  // namespace

result<void> orchestrator_state::load_spend(std::string_view tenant) {
  tenant_ai_spend out;
  // Keys sort by date: the last of each kind is the latest (the appliers prune the oldest).
  const std::string prefix = keys::tenant_prefix(tenant);
  const auto days = scan_seen(tenant, prefix + 'U');
  if (!days.empty()) {
    out.day = days.rbegin()->first.substr(prefix.size() + 1);
    out.day_spent_micros = be64_value(days.rbegin()->second);
  }
  const auto months = scan_seen(tenant, prefix + 'V');
  if (!months.empty()) {
    out.month = months.rbegin()->first.substr(prefix.size() + 1);
    out.month_spent_micros = be64_value(months.rbegin()->second);
  }
  if (days.empty() && months.empty()) {  // entries are for tenants with spend only
    set_spend(tenant, {});
    return {};
  }
  // The cached policy if there is one; else parsed here without caching it (open() reads it
  // for every tenant with spend, and most are never needed again).
  std::shared_ptr<const tenant_policy> policy;
  if (auto it = _policies.find(keys::policy(tenant)); it != _policies.end()) {
    policy = it->second.policy;
  } else {
    auto stored = read(keys::policy(tenant));
    if (!stored) return std::unexpected(stored.error());
    if (stored->has_value() && (*stored)->size() >= 4) {
      auto parsed = parse_tenant_policy(std::string_view(**stored).substr(4));
      vassert(parsed.has_value(), "stored policy of {} no longer parses: {}", tenant,
              parsed.error().reason);
      policy = std::make_shared<const tenant_policy>(std::move(*parsed));
    }
  }
  if (policy && policy->ai) {
    out.day_budget_micros = policy->ai->day_budget_micros;
    out.month_budget_micros = policy->ai->month_budget_micros;
  }
  set_spend(tenant, std::move(out));
  return {};
}

void orchestrator_state::set_spend(std::string_view tenant, tenant_ai_spend s) {
  const std::string t(tenant);
  auto it = _spend.find(t);
  if (s == tenant_ai_spend{}) {  // neither spend nor budget: no entry
    if (it == _spend.end()) return;
    _spend.erase(it);
  } else if (it == _spend.end() || it->second != s) {
    _spend.insert_or_assign(t, std::move(s));
  } else {
    return;
  }
  _spend_changed.insert(t);
}

void orchestrator_state::note_ai_spend(std::string_view tenant, const std::string& day,
                                       const std::string& month) {
  auto it = _spend.find(std::string(tenant));
  tenant_ai_spend s;
  if (it != _spend.end()) {
    s = it->second;
  } else if (const tenant_policy* p = policy(tenant); p && p->ai) {
    s.day_budget_micros = p->ai->day_budget_micros;
    s.month_budget_micros = p->ai->month_budget_micros;
  }
  const std::optional<std::string>& d = value(keys::ai_spend_day(tenant, day));
  const std::optional<std::string>& m = value(keys::ai_spend_month(tenant, month));
  // A late usage of an earlier day (an answer after midnight) adds to that day, not today's.
  if (day >= s.day) {
    s.day = day;
    s.day_spent_micros = d ? be64_value(*d) : 0;
  }
  if (month >= s.month) {
    s.month = month;
    s.month_spent_micros = m ? be64_value(*m) : 0;
  }
  set_spend(tenant, std::move(s));
}

result<void> orchestrator_state::open(state_store& store) {
  _store = &store;
  std::vector<std::string> tenants;
  auto listed = store.scan_prefix("R", [&](std::string_view key, std::string_view) {
    tenants.emplace_back(key.substr(1));
    return true;
  });
  if (!listed) return listed;
  auto placed = store.scan_prefix("O", [&](std::string_view key, std::string_view value) {
    placement_entry p;
    vassert(decode_placement(value, p), "malformed placement entry in state store");
    _placements[std::string(key.substr(1))] = p;
    return true;
  });
  if (!placed) return placed;
  for (const std::string& tenant : tenants) {
    _tenants[tenant] = true;
    if (auto spend = load_spend(tenant); !spend) return spend;
    // A tenant's timer keys sort as its entries do (due, execution, step): each goes right
    // after the one before, so the hint makes a restore's million inserts linear.
    auto hint = _timers.end();
    auto scanned =
        store.scan_prefix(keys::timer_prefix(tenant), [&](std::string_view key, std::string_view) {
          timer_entry t;
          vassert(keys::parse_timer(key, t.tenant, t.due_ms, t.execution, t.step),
                  "malformed timer key in state store");
          hint = std::next(_timers.insert(hint, std::move(t)));
          return true;
        });
    if (!scanned) return scanned;
    if (auto held = load_held(tenant); !held) return held;
    uint64_t running = 0;
    auto counted = store.scan_prefix(
        keys::execution(tenant, ""), [&](std::string_view, std::string_view value) {
          exec_status status;
          vassert(peek_execution_status(value, status), "malformed execution in state store");
          if (status == exec_status::running) ++running;
          return true;
        });
    if (!counted) return counted;
    if (running) activity(tenant).running = running;
  }
  return {};
}

tenant_activity& orchestrator_state::activity(std::string_view tenant) {
  auto [it, _] = _activity.try_emplace(std::string(tenant));
  _activity_changed.insert(it->first);
  return it->second;
}

uint64_t orchestrator_state::count_running(std::string_view tenant) {
  uint64_t running = 0;
  for (const auto& [key, value] : scan_seen(tenant, keys::execution(tenant, ""))) {
    exec_status status;
    vassert(peek_execution_status(value, status), "malformed execution in a moved tenant's state");
    if (status == exec_status::running) ++running;
  }
  return running;
}

void orchestrator_state::note_input(std::string_view tenant, int64_t now_ms) {
  tenant_activity& a = activity(tenant);
  a.inputs++;
  a.note_recent(now_ms, 1);
}

void orchestrator_state::note_event(std::string_view tenant, int64_t at_ms, bool started) {
  tenant_activity& a = activity(tenant);
  a.events++;
  a.note_recent(at_ms, 1);
  if (started) a.running++;
}

result<void> orchestrator_state::load_held(std::string_view tenant) {
  return _store->scan_prefix(
      keys::held_signal_prefix(tenant), [&](std::string_view key, std::string_view value) {
        std::string execution;
        held_signal h;
        vassert(keys::parse_held_signal(key, tenant, execution) && decode_held_signal(value, h),
                "malformed held signal in state store");
        held_totals& totals = _held_totals[std::string(tenant)];
        totals.signals++;
        totals.bytes += h.bytes();
        _held[{std::string(tenant), std::move(execution)}].push_back(std::move(h));
        return true;  // keys are in (execution, seq) order: each list in arrival order
      });
}

const std::vector<held_signal>* orchestrator_state::held(std::string_view tenant,
                                                         std::string_view execution) const {
  auto it = _held.find({std::string(tenant), std::string(execution)});
  return it == _held.end() ? nullptr : &it->second;
}

orchestrator_state::held_totals orchestrator_state::held_of_tenant(std::string_view tenant) const {
  auto it = _held_totals.find(std::string(tenant));
  return it == _held_totals.end() ? held_totals{} : it->second;
}

void orchestrator_state::hold_signal(std::string_view tenant, std::string_view execution,
                                     held_signal h) {
  std::vector<held_signal>& list = _held[{std::string(tenant), std::string(execution)}];
  if (list.empty()) {
    _timers.insert(timer_entry{h.expires_at_ms, std::string(tenant), std::string(execution),
                               timer_entry::hold_window});
    _pending.put(keys::timer(tenant, h.expires_at_ms, execution, timer_entry::hold_window), "");
  }
  _pending.put(keys::held_signal(tenant, execution, static_cast<uint32_t>(list.size())),
               encode_held_signal(h));
  held_totals& totals = _held_totals[std::string(tenant)];
  totals.signals++;
  totals.bytes += h.bytes();
  list.push_back(std::move(h));
}

size_t orchestrator_state::release_held(std::string_view tenant, std::string_view execution) {
  auto it = _held.find({std::string(tenant), std::string(execution)});
  if (it == _held.end()) return 0;
  const std::vector<held_signal>& list = it->second;
  const int64_t due = list.front().expires_at_ms;
  _timers.erase(
      timer_entry{due, std::string(tenant), std::string(execution), timer_entry::hold_window});
  _pending.del(keys::timer(tenant, due, execution, timer_entry::hold_window));
  auto totals = _held_totals.find(std::string(tenant));
  vassert(totals != _held_totals.end(), "held signals of {} without tenant totals", execution);
  for (uint32_t seq = 0; seq < list.size(); ++seq) {
    _pending.del(keys::held_signal(tenant, execution, seq));
    totals->second.signals--;
    totals->second.bytes -= list[seq].bytes();
  }
  if (totals->second.signals == 0) _held_totals.erase(totals);
  const size_t released = list.size();
  _held.erase(it);
  return released;
}

execution_state* orchestrator_state::find_execution(std::string_view tenant, std::string_view id) {
  std::string key = exec_key(tenant, id);
  if (auto it = _executions.find(key); it != _executions.end()) return it->second.get();
  if (_absent.contains(key)) return nullptr;
  auto stored = read(key);
  vassert(stored.has_value(), "state read failed: {}", stored.error().message);
  if (!stored->has_value()) {
    _absent.insert(std::move(key));
    return nullptr;
  }
  auto e = std::make_unique<execution_state>();
  vassert(decode_execution(**stored, *e), "undecodable execution state for {}", id);
  execution_state* raw = e.get();
  _executions.emplace(std::move(key), std::move(e));
  return raw;
}

void orchestrator_state::load_executions(
    std::vector<std::pair<std::string_view, std::string_view>> ids) {
  // A tenant installed or dropped in this batch reads differently from the store (read()).
  if (!_installed.empty() || !_dropped.empty()) {
    for (const auto& [tenant, id] : ids) find_execution(tenant, id);
    return;
  }
  std::vector<std::string> keys;
  keys.reserve(ids.size());
  for (const auto& [tenant, id] : ids) {
    std::string key = exec_key(tenant, id);
    if (!_executions.contains(key) && !_absent.contains(key)) keys.push_back(std::move(key));
  }
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());  // a timer per step or item
  std::vector<bool> found(keys.size(), false);
  auto loaded = _store->get_sorted(keys, [&](size_t i, std::string_view value) {
    auto e = std::make_unique<execution_state>();
    vassert(decode_execution(value, *e), "undecodable execution state at {}", keys[i]);
    _executions.emplace(keys[i], std::move(e));
    found[i] = true;
  });
  vassert(loaded.has_value(), "state read failed: {}", loaded.error().message);
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!found[i]) _absent.insert(std::move(keys[i]));
  }
}

const definition* orchestrator_state::find_definition(std::string_view tenant,
                                                      std::string_view workflow, uint32_t version) {
  if (version == 0) {
    std::string lk = keys::latest(tenant, workflow);
    auto it = _latest.find(lk);
    if (it == _latest.end()) {
      auto stored = read(lk);
      vassert(stored.has_value(), "state read failed: {}", stored.error().message);
      uint32_t v = stored->has_value() ? keys::get_be32(**stored) : 0;
      it = _latest.emplace(lk, v).first;
    }
    version = it->second;
    if (version == 0) return nullptr;
  }
  std::string key = keys::definition(tenant, workflow, version);
  if (auto it = _definitions.find(key); it != _definitions.end()) return it->second.get();
  if (_absent.contains(key)) return nullptr;
  auto stored = read(key);
  vassert(stored.has_value(), "state read failed: {}", stored.error().message);
  if (!stored->has_value()) {
    _absent.insert(std::move(key));
    return nullptr;
  }
  auto parsed = parse_definition(**stored, "");
  vassert(parsed.has_value(), "stored definition {} v{} no longer parses: {}", workflow, version,
          parsed.error().reason);
  auto d = std::make_shared<const definition>(std::move(*parsed));
  return _definitions.emplace(std::move(key), std::move(d)).first->second.get();
}

bool orchestrator_state::tenant_known(std::string_view tenant) {
  std::string t(tenant);
  if (auto it = _tenants.find(t); it != _tenants.end()) return it->second;
  auto stored = read(keys::tenant_registry(tenant));
  vassert(stored.has_value(), "state read failed: {}", stored.error().message);
  bool known = stored->has_value();
  _tenants.emplace(std::move(t), known);
  return known;
}

tenant_chain& orchestrator_state::chain(std::string_view tenant) {
  std::string key = keys::tenant_chain(tenant);
  if (auto it = _chains.find(key); it != _chains.end()) return it->second;
  tenant_chain c;
  auto stored = read(key);
  vassert(stored.has_value(), "state read failed: {}", stored.error().message);
  if (stored->has_value()) vassert(decode_chain(**stored, c), "undecodable tenant chain");
  return _chains.emplace(std::move(key), c).first->second;
}

orchestrator_state::versioned_policy& orchestrator_state::load_policy(std::string_view tenant) {
  std::string key = keys::policy(tenant);
  if (auto it = _policies.find(key); it != _policies.end()) return it->second;
  versioned_policy v;
  auto stored = read(key);
  vassert(stored.has_value(), "state read failed: {}", stored.error().message);
  if (stored->has_value()) {
    const std::string& bytes = **stored;
    vassert(bytes.size() >= 4, "malformed tenant policy of {}", tenant);
    v.version = keys::get_be32(bytes);
    auto parsed = parse_tenant_policy(std::string_view(bytes).substr(4));
    vassert(parsed.has_value(), "stored policy of {} no longer parses: {}", tenant,
            parsed.error().reason);
    v.policy = std::make_shared<const tenant_policy>(std::move(*parsed));
  }
  return _policies.emplace(std::move(key), std::move(v)).first->second;
}

const tenant_policy* orchestrator_state::policy(std::string_view tenant) {
  return load_policy(tenant).policy.get();
}

uint32_t orchestrator_state::policy_version(std::string_view tenant) {
  return load_policy(tenant).version;
}

const std::optional<std::string>& orchestrator_state::value(const std::string& key) {
  if (auto it = _values.find(key); it != _values.end()) return it->second;
  if (loaded_counters(key)) return _values.emplace(key, std::nullopt).first->second;
  auto stored = read(key);
  vassert(stored.has_value(), "state read failed: {}", stored.error().message);
  return _values.emplace(key, std::move(*stored)).first->second;
}

void orchestrator_state::put_policy(std::string_view tenant, uint32_t version,
                                    const tenant_policy& p) {
  std::string bytes;
  keys::put_be32(bytes, version);
  bytes += p.normalized_json;
  std::string key = keys::policy(tenant);
  _pending.put(key, bytes);
  _policies[key] = versioned_policy{version, std::make_shared<const tenant_policy>(p)};
  auto it = _spend.find(std::string(tenant));
  if (it == _spend.end()) return;  // no spend yet: its first usage reads the budgets
  tenant_ai_spend s = it->second;
  s.day_budget_micros = p.ai ? p.ai->day_budget_micros : 0;
  s.month_budget_micros = p.ai ? p.ai->month_budget_micros : 0;
  set_spend(tenant, std::move(s));
}

orchestrator_state::counter_index* orchestrator_state::loaded_counters(std::string_view key) {
  auto k = parse_counter_key(key);
  if (!k) return nullptr;
  auto it = _counters.find(std::string(k->tenant));
  return it == _counters.end() ? nullptr : &it->second;
}

void orchestrator_state::index_value(counter_index& idx, std::string_view key,
                                     const std::optional<std::string>& v, bool present) {
  auto k = parse_counter_key(key);
  vassert(k.has_value(), "not a counter key: {} bytes", key.size());
  switch (k->kind) {
    case 'U':
    case 'V': {
      std::set<std::string>& when = k->kind == 'U' ? idx.days : idx.months;
      if (present) {
        when.emplace(k->rest);
      } else {
        when.erase(std::string(k->rest));
      }
      break;
    }
    case 'X':
      if (present) {
        idx.dedup.emplace(admitted_ms_of(v), std::string(key));
      } else {
        idx.dedup.erase({admitted_ms_of(v), std::string(key)});
      }
      break;
    default:
      break;
  }
}

void orchestrator_state::load_counters(std::string_view tenant) { ensure_counters(tenant); }

orchestrator_state::counter_index& orchestrator_state::ensure_counters(std::string_view tenant) {
  if (auto it = _counters.find(std::string(tenant)); it != _counters.end()) return it->second;
  counter_index idx;
  for (char kind : counter_kinds) {
    const std::string prefix = keys::tenant_prefix(tenant) + kind;
    if (!_dropped.contains(tenant)) {
      if (_deciding && _decide_reads) _decide_reads->fetch_add(1, std::memory_order_relaxed);
      auto scanned = _store->scan_prefix(prefix, [&](std::string_view key, std::string_view value) {
        std::optional<std::string> v{std::string(value)};
        index_value(idx, key, v, true);
        _values[std::string(key)] = std::move(v);
        return true;
      });
      vassert(scanned.has_value(), "state scan failed: {}", scanned.error().message);
    }
    for (auto it = _installed.lower_bound(prefix);
         it != _installed.end() && std::string_view(it->first).starts_with(prefix); ++it) {
      std::optional<std::string> v{it->second};
      index_value(idx, it->first, v, true);
      _values[it->first] = std::move(v);
    }
  }
  return _counters.emplace(std::string(tenant), std::move(idx)).first->second;
}

const orchestrator_state::counter_index& orchestrator_state::counters(std::string_view tenant) {
  return ensure_counters(tenant);
}

void orchestrator_state::put_value(const std::string& key, std::string v) {
  if (auto k = parse_counter_key(key)) {
    // Loaded first, so the index never misses a change made before it was read.
    counter_index& idx = ensure_counters(k->tenant);
    if (auto it = _values.find(key); it != _values.end() && it->second) {
      index_value(idx, key, it->second, false);
    }
    index_value(idx, key, v, true);
  }
  _pending.put(key, v);
  _values[key] = std::move(v);
}

void orchestrator_state::del_value(const std::string& key) {
  if (auto k = parse_counter_key(key)) {
    counter_index& idx = ensure_counters(k->tenant);
    if (auto it = _values.find(key); it != _values.end() && it->second) {
      index_value(idx, key, it->second, false);
    }
  }
  _pending.del(key);
  _values[key] = std::nullopt;
}

execution_state& orchestrator_state::create_execution(execution_state e) {
  std::string key = exec_key(e.tenant, e.id);
  auto owned = std::make_unique<execution_state>(std::move(e));
  execution_state& ref = *owned;
  _absent.erase(key);
  _executions[key] = std::move(owned);
  _dirty.insert(std::move(key));
  return ref;
}

void orchestrator_state::mark_dirty(const execution_state& e) {
  _dirty.insert(exec_key(e.tenant, e.id));
}

void orchestrator_state::mark_chain_dirty(std::string_view tenant) {
  _dirty_chains.insert(keys::tenant_chain(tenant));
}

void orchestrator_state::set_timer(execution_state& e, uint16_t step, int64_t due_ms) {
  step_state& s = e.steps[step];
  if (s.timer_at_ms != 0) {
    _timers.erase(timer_entry{s.timer_at_ms, e.tenant, e.id, step});
    _pending.del(keys::timer(e.tenant, s.timer_at_ms, e.id, step));
  }
  s.timer_at_ms = due_ms;
  if (due_ms != 0) {
    _timers.insert(timer_entry{due_ms, e.tenant, e.id, step});
    _pending.put(keys::timer(e.tenant, due_ms, e.id, step), "");
  }
}

void orchestrator_state::set_item_timer(execution_state& e, uint16_t step, uint32_t item,
                                        int64_t due_ms) {
  item_state& i = e.steps[step].items[item];
  const uint16_t slot = timer_entry::item_slot(step, item);
  if (i.timer_at_ms != 0) {
    _timers.erase(timer_entry{i.timer_at_ms, e.tenant, e.id, slot});
    _pending.del(keys::timer(e.tenant, i.timer_at_ms, e.id, slot));
  }
  i.timer_at_ms = due_ms;
  if (due_ms != 0) {
    _timers.insert(timer_entry{due_ms, e.tenant, e.id, slot});
    _pending.put(keys::timer(e.tenant, due_ms, e.id, slot), "");
  }
}

void orchestrator_state::put_definition(std::string_view tenant, const definition& d) {
  std::string key = keys::definition(tenant, d.workflow, d.version);
  _pending.put(key, d.normalized_json);
  _absent.erase(key);
  _definitions[key] = std::make_shared<const definition>(d);
  std::string lk = keys::latest(tenant, d.workflow);
  auto known = _latest.find(lk);
  if (known == _latest.end()) {
    auto stored = read(lk);
    vassert(stored.has_value(), "state read failed: {}", stored.error().message);
    known = _latest.emplace(lk, stored->has_value() ? keys::get_be32(**stored) : 0).first;
  }
  uint32_t& latest = known->second;
  if (d.version > latest) {
    latest = d.version;
    std::string v;
    keys::put_be32(v, latest);
    _pending.put(lk, v);
  }
  if (!tenant_known(tenant)) {
    _tenants[std::string(tenant)] = true;
    _pending.put(keys::tenant_registry(tenant), "");
  }
}

void orchestrator_state::index_event(const execution_state& e, uint32_t seq,
                                     record_position where) {
  std::string key = keys::event_index(e.tenant, e.id, seq);
  if (!where.committed) {
    _unresolved.emplace_back(std::move(key), where.value);
    return;
  }
  std::string v;
  keys::put_be64(v, where.value);
  _pending.put(key, v);
}

void orchestrator_state::on_ended(const execution_state& e) {
  _ended.insert(exec_key(e.tenant, e.id));
  tenant_activity& a = activity(e.tenant);
  if (a.running) a.running--;
}

void orchestrator_state::stage() {
  vassert(_staged.size() < 2, "{} batches staged; a partition decides at most one ahead",
          _staged.size());
  staged_batch b;
  for (const std::string& key : _dirty) {
    auto it = _executions.find(key);
    vassert(it != _executions.end(), "dirty execution missing from cache");
    _pending.put(key, encode_execution(*it->second));
  }
  b.dirtied = std::exchange(_dirty, {});
  for (const std::string& key : _dirty_chains) _pending.put(key, encode_chain(_chains.at(key)));
  _dirty_chains.clear();
  b.ended = std::exchange(_ended, {});
  b.unresolved = std::exchange(_unresolved, {});
  b.changes = std::exchange(_pending, state_batch());
  // Keys found absent while deciding this batch: what it created is cached, so the next batch
  // never asks the store for it; emptied so unknown ids do not accumulate.
  _absent.clear();
  _staged.push_back(std::move(b));
}

bool orchestrator_state::may_decide_ahead() const {
  return _installed.empty() && _dropped.empty() && _values.size() <= values_cached_max;
}

void orchestrator_state::flush(state_batch& out, const std::vector<uint64_t>& event_offsets) {
  if (_staged.empty()) stage();
  staged_batch& b = _staged.front();
  for (const auto& [key, ordinal] : b.unresolved) {
    vassert(ordinal < event_offsets.size(), "event ordinal {} of a batch with {} events", ordinal,
            event_offsets.size());
    std::string v;
    keys::put_be64(v, event_offsets[ordinal]);
    b.changes.put(key, v);
  }
  // Ended executions live on in the store only: the cache holds what can still change. One a
  // later batch changed again stays until that batch is written.
  staged_batch* later = _staged.size() > 1 ? &_staged[1] : nullptr;
  for (const std::string& key : b.ended) {
    if (later && later->dirtied.contains(key)) {
      later->ended.insert(key);
    } else if (_dirty.contains(key)) {
      _ended.insert(key);
    } else {
      _executions.erase(key);
    }
  }
  out = std::move(b.changes);
  _staged.pop_front();
  if (!_staged.empty()) return;
  // Nothing staged is left: once `out` is written the store holds every change.
  if (_values.size() > values_cached_max) {
    _values.clear();
    _counters.clear();  // no longer complete in _values: loaded again by the next prefetch
  }
  _installed.clear();
  _dropped.clear();
}

}  // namespace auterity
