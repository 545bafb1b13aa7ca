#include "replay/state_replay.h"

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>

#include <fmt/core.h>

#include "processors/definition.h"
#include "processors/orchestrator.h"
#include "processors/tenant_policy.h"
#include "replay/chain_check.h"
#include "replay/scan.h"
#include "replay/time_text.h"

namespace auterity {

std::string printable_key(std::string_view key) {
  std::string out;
  for (unsigned char c : key) {
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  return out;
}

namespace {

constexpr size_t skipped_listed_max = 1000;  // skipped records kept for the report

std::string definition_key(std::string_view tenant, std::string_view workflow, uint32_t version) {
  return fmt::format("{}{}{}{}{}", tenant, '\0', workflow, '\0', version);
}

std::string execution_key(std::string_view tenant, std::string_view execution) {
  return fmt::format("{}{}{}", tenant, '\0', execution);
}

// The step an execution event names, for the event types whose applier looks one up.
const flatbuffers::String* step_of(const fbs::Envelope& e) {
  using P = fbs::Payload;
  switch (e.payload_type()) {
    case P::StepScheduled:
      return e.payload_as_StepScheduled()->step();
    case P::StepSucceeded:
      return e.payload_as_StepSucceeded()->step();
    case P::StepFailed:
      return e.payload_as_StepFailed()->step();
    case P::StepRetryScheduled:
      return e.payload_as_StepRetryScheduled()->step();
    case P::StepTimedOut:
      return e.payload_as_StepTimedOut()->step();
    case P::StepSkipped:
      return e.payload_as_StepSkipped()->step();
    case P::TimerFired:
      return e.payload_as_TimerFired()->step();
    case P::AiRouted:
      return e.payload_as_AiRouted()->step();
    case P::AiUsageRecorded:
      return e.payload_as_AiUsageRecorded()->step();
    case P::NotificationSuppressed:
      return e.payload_as_NotificationSuppressed()->step();
    case P::NotificationDeferred:
      return e.payload_as_NotificationDeferred()->step();
    case P::NotificationAdmitted:
      return e.payload_as_NotificationAdmitted()->step();
    default:
      return nullptr;
  }
}

bool ends_execution(fbs::Payload t) {
  return t == fbs::Payload::ExecutionSucceeded || t == fbs::Payload::ExecutionFailed ||
         t == fbs::Payload::ExecutionCancelled;
}

}  // namespace

// ----------------------------------------------------------------------------- rebuilder

result<std::unique_ptr<state_rebuilder>> state_rebuilder::open(const std::string& scratch_dir,
                                                               uint32_t partition,
                                                               uint32_t partitions,
                                                               std::string tenant,
                                                               const state_store_options& so) {
  std::error_code ec;
  std::filesystem::remove_all(scratch_dir, ec);
  if (ec) return fail(errc::io, fmt::format("cannot clear {}: {}", scratch_dir, ec.message()));
  auto store = state_store::open(scratch_dir, so);
  if (!store) return std::unexpected(store.error());
  std::unique_ptr<state_rebuilder> r(new state_rebuilder());
  r->_dir = scratch_dir;
  r->_tenant = std::move(tenant);
  r->_store = std::move(*store);
  if (auto o = r->open_orchestrator(partition, partitions); !o) return std::unexpected(o.error());
  return r;
}

// The appliers' orchestrator over the store (it loads what it keeps in memory from there).
result<void> state_rebuilder::open_orchestrator(uint32_t partition, uint32_t partitions) {
  orchestrator_options o;
  o.partitions = partitions;
  _orchestrator = std::make_unique<orchestrator>(std::move(o));
  return _orchestrator->open(*_store, partition);
}

result<std::unique_ptr<state_rebuilder>> state_rebuilder::open_resumable(const std::string& dir,
                                                                         uint32_t partition,
                                                                         uint32_t partitions) {
  auto r = open(dir, partition, partitions);
  if (r) (*r)->_resumable = true;
  return r;
}

result<std::unique_ptr<state_rebuilder>> state_rebuilder::reopen(const std::string& dir,
                                                                 uint32_t partition,
                                                                 uint32_t partitions) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return fail(errc::not_found, fmt::format("no state store in {}", dir));
  }
  state_store_options so;
  so.create_if_missing = false;
  auto store = state_store::open(dir, so);
  if (!store) return std::unexpected(store.error());
  std::unique_ptr<state_rebuilder> r(new state_rebuilder());
  r->_dir = dir;
  r->_resumable = true;
  r->_store = std::move(*store);
  if (auto l = r->load_indexes(); !l) return std::unexpected(l.error());
  if (auto o = r->open_orchestrator(partition, partitions); !o) return std::unexpected(o.error());
  return r;
}

// What add() checks records against, from the store: each tenant's definitions (found through
// the registry keys; the definitions section), the running executions and the executions with
// a skipped record (the rebuilder's own keys), and the last flush's meta. Bounded by what is
// published and running, not by the history or the executions that ended.
result<void> state_rebuilder::load_indexes() {
  auto meta = _store->get(meta_key);
  if (!meta) return std::unexpected(meta.error());
  _meta = meta->value_or("");
  std::vector<std::string> tenants;
  auto t =
      _store->scan_prefix(keys::tenant_registry(""), [&](std::string_view key, std::string_view) {
        tenants.emplace_back(key.substr(1));
        return true;
      });
  if (!t) return t;
  for (const std::string& tenant : tenants) {
    auto s = _store->scan_prefix(keys::tenant_prefix(tenant) + 'D',
                                 [&](std::string_view key, std::string_view value) {
                                   remember_state_entry(tenant, key, value);
                                   return true;
                                 });
    if (!s) return s;
  }
  auto o = _store->scan_prefix(open_prefix, [&](std::string_view key, std::string_view value) {
    _open.emplace(key.substr(open_prefix.size()), value);
    return true;
  });
  if (!o) return o;
  return _store->scan_prefix(dropped_prefix, [&](std::string_view key, std::string_view) {
    _dropped.emplace(key.substr(dropped_prefix.size()));
    return true;
  });
}

void state_rebuilder::mark_open(const std::string& exec, std::string definition) {
  if (_resumable) _own[std::string(open_prefix) + exec] = definition;
  _open[exec] = std::move(definition);
}

void state_rebuilder::mark_ended(const std::string& exec) {
  if (_open.erase(exec) && _resumable) _own[std::string(open_prefix) + exec] = std::nullopt;
}

state_rebuilder::~state_rebuilder() = default;

void state_rebuilder::remove() {
  _orchestrator.reset();
  _store.reset();
  std::error_code ec;
  std::filesystem::remove_all(_dir, ec);
}

void state_rebuilder::skip(uint64_t offset, std::string_view record_id, std::string reason) {
  ++_skipped_total;
  if (_skipped.size() < skipped_listed_max) {
    _skipped.push_back({offset, std::string(record_id), std::move(reason)});
  }
}

void state_rebuilder::remember_definition(const fbs::Envelope& e) {
  auto parsed = parse_definition(sv(e.payload_as_DefinitionPublished()->definition_json()), "");
  std::set<std::string, std::less<>> steps;
  for (const step_def& s : parsed->steps) steps.insert(s.id);
  const std::string_view tenant = sv(e.tenant_id());
  _definitions[definition_key(tenant, parsed->workflow, parsed->version)] = std::move(steps);
  uint32_t& latest = _latest[execution_key(tenant, parsed->workflow)];
  latest = std::max(latest, parsed->version);
}

// A chunk of a tenant moving here: its definitions and running executions, as if their
// events had been read here.
void state_rebuilder::remember_moved_in(const fbs::Envelope& e) {
  const fbs::TenantStateChunk* c = e.payload_as_TenantStateInstalled()->chunk();
  if (!c->entries()) return;
  for (const fbs::StateEntry* entry : *c->entries()) {
    remember_state_entry(sv(e.tenant_id()), sv(entry->key()), sv(entry->value()));
  }
}

void state_rebuilder::remember_state_entry(std::string_view tenant, std::string_view key,
                                           std::string_view value) {
  const std::string definitions = keys::tenant_prefix(tenant) + 'D';
  const std::string executions = keys::execution(tenant, "");
  if (key.starts_with(definitions)) {
    auto parsed = parse_definition(value, "");
    if (!parsed) return;
    std::set<std::string, std::less<>> steps;
    for (const step_def& st : parsed->steps) steps.insert(st.id);
    _definitions[definition_key(tenant, parsed->workflow, parsed->version)] = std::move(steps);
    uint32_t& latest = _latest[execution_key(tenant, parsed->workflow)];
    latest = std::max(latest, parsed->version);
  } else if (key.starts_with(executions)) {
    execution_state x;
    if (!decode_execution(value, x) || x.status != exec_status::running) return;
    mark_open(execution_key(tenant, x.id), definition_key(tenant, x.workflow, x.version));
  }
}

// The definition key an ExecutionStarted refers to (version 0: the latest published).
std::string state_rebuilder::started_definition(const fbs::Envelope& e) const {
  auto p = e.payload_as_ExecutionStarted();
  uint32_t version = p->version();
  if (version == 0) {
    auto it = _latest.find(execution_key(sv(e.tenant_id()), sv(p->workflow())));
    version = it == _latest.end() ? 0 : it->second;
  }
  return definition_key(sv(e.tenant_id()), sv(p->workflow()), version);
}

// Why the appliers would assert on this event, or nullopt if they will take it. Mirrors the
// appliers' own invariant checks (processors/appliers.cc), which hold for any history the
// engine wrote.
std::optional<std::string> state_rebuilder::precondition_failure(const fbs::Envelope& e) {
  const fbs::Payload type = e.payload_type();
  if (!has_applier(type, e.schema_version())) {
    return fmt::format("no applier for {} at schema version {}", payload_name(type),
                       e.schema_version());
  }
  const std::string_view tenant = sv(e.tenant_id());
  const std::string_view execution = sv(e.execution_id());
  const bool tenant_level =
      type == fbs::Payload::DefinitionPublished || type == fbs::Payload::TenantPolicyPublished ||
      type == fbs::Payload::SignalHeld || type == fbs::Payload::HeldSignalsReleased ||
      type == fbs::Payload::TenantMovedOut || type == fbs::Payload::TenantStateInstalled ||
      type == fbs::Payload::TenantMovedIn;
  if (execution.empty() != tenant_level) {
    return "only DefinitionPublished, TenantPolicyPublished, SignalHeld, HeldSignalsReleased and "
           "the tenant move events are tenant-level events";
  }
  if (type == fbs::Payload::SignalHeld || type == fbs::Payload::HeldSignalsReleased ||
      type == fbs::Payload::TenantMovedOut || type == fbs::Payload::TenantMovedIn) {
    return std::nullopt;  // a tenant chain that was intact up to here holds what they name
  }
  if (type == fbs::Payload::TenantStateInstalled) {
    const fbs::TenantStateChunk* c = e.payload_as_TenantStateInstalled()->chunk();
    if (!c || c->seq() >= c->count()) return "a state chunk with no chunk or a bad sequence";
    return std::nullopt;
  }
  if (type == fbs::Payload::TenantPolicyPublished) {
    auto parsed = parse_tenant_policy(sv(e.payload_as_TenantPolicyPublished()->policy_json()));
    if (!parsed) return "the published policy does not parse: " + parsed.error().reason;
    return std::nullopt;
  }
  if (type == fbs::Payload::DefinitionPublished) {
    auto parsed = parse_definition(sv(e.payload_as_DefinitionPublished()->definition_json()), "");
    if (!parsed) return "the published definition does not parse: " + parsed.error().reason;
    return std::nullopt;
  }
  const std::string exec = execution_key(tenant, execution);
  if (_dropped.contains(exec)) return "an earlier event of this execution was not applied";
  if (type == fbs::Payload::ExecutionStarted) {
    auto p = e.payload_as_ExecutionStarted();
    if (!_definitions.contains(started_definition(e))) {
      return fmt::format("starts {} v{}, which was never published", sv(p->workflow()),
                         p->version());
    }
    return std::nullopt;
  }
  auto open = _open.find(exec);
  if (open == _open.end()) return "an event of an execution that never started";
  const flatbuffers::String* step = step_of(e);
  if (step && !_definitions.at(open->second).contains(sv(step))) {
    return fmt::format("names step '{}', which its definition does not have", sv(step));
  }
  return std::nullopt;
}

void state_rebuilder::add(uint64_t offset, std::string_view bytes, bool trusted) {
  const fbs::Envelope* e = decode_envelope(bytes);
  if (!e || e->kind() != fbs::RecordKind::Event) return;  // only events change state
  if (!_tenant.empty() && sv(e->tenant_id()) != _tenant) return;
  const std::string exec = execution_key(sv(e->tenant_id()), sv(e->execution_id()));
  std::optional<std::string> why;
  if (!trusted) {
    why = "its history fails the chain check";
  } else {
    why = precondition_failure(*e);
  }
  if (why) {
    if (!sv(e->execution_id()).empty() && _dropped.insert(exec).second && _resumable) {
      _own[std::string(dropped_prefix) + exec] = "";
    }
    skip(offset, sv(e->record_id()), std::move(*why));
    return;
  }
  if (e->payload_type() == fbs::Payload::DefinitionPublished) remember_definition(*e);
  if (e->payload_type() == fbs::Payload::TenantStateInstalled) remember_moved_in(*e);
  if (e->payload_type() == fbs::Payload::ExecutionStarted) mark_open(exec, started_definition(*e));
  _orchestrator->replay(offset, bytes);
  ++_applied;
  if (ends_execution(e->payload_type())) mark_ended(exec);
}

result<void> state_rebuilder::flush(uint64_t next_offset, std::string_view meta) {
  _orchestrator->flush(_batch, {});  // replaces _batch with the orchestrator's changes
  for (const auto& [key, value] : _own) {
    if (value) {
      _batch.put(key, *value);
    } else {
      _batch.del(key);
    }
  }
  _own.clear();
  if (_resumable && !meta.empty() && meta != _meta) {
    _batch.put(meta_key, meta);
    _meta = meta;
  }
  return _store->write(_batch, next_offset);
}

result<rebuild_result> rebuild(log& l, uint32_t partition, state_rebuilder& r,
                               const rebuild_limit& limit) {
  auto log_end = l.end_offset(stream::executions, partition);
  if (!log_end) return std::unexpected(log_end.error());
  const uint64_t end = std::min(limit.end_offset, *log_end);
  stream_reader reader(l, stream::executions, partition, 0, end);
  chain_check_options o;
  o.tenant = r.tenant();
  chain_checker chains(partition, std::move(o));
  rebuild_result out;
  out.end_offset = end;
  uint64_t next = 0;
  for (bool stop = false; !stop;) {
    auto batch = reader.next();
    if (!batch) return std::unexpected(batch.error());
    if (batch->empty()) break;
    for (const record& rec : *batch) {
      const fbs::Envelope* e = decode_envelope(rec.value);
      if (limit.until_ms && e && e->timestamp_ms() > *limit.until_ms) {
        out.end_offset = rec.offset;
        stop = true;
        break;
      }
      auto trusted = chains.add(rec.offset, rec.value);
      if (!trusted) return std::unexpected(trusted.error());
      r.add(rec.offset, rec.value, *trusted);
      if (e) out.last_ms = e->timestamp_ms();
      next = rec.offset + 1;
    }
    if (auto f = r.flush(stop ? out.end_offset : next); !f) return std::unexpected(f.error());
  }
  out.chain_problems = chains.problems_total();
  return out;
}

// ---------------------------------------------------------------------------- comparing

namespace {

using kv_fn = std::function<bool(std::string_view key, std::string_view value)>;
using scan_fn = std::function<result<void>(const kv_fn&)>;

constexpr size_t chunk_entries_max = 1024;   // pairs handed over at once
constexpr size_t chunk_bytes_max = 1 << 20;  // bytes of keys + values handed over at once
constexpr size_t chunks_queued_max = 2;      // chunks waiting for the consumer

// Runs a store scan on a thread of its own and hands its pairs over in chunks, so a caller can
// walk two stores in key order side by side (the store offers callbacks, not iterators) with
// at most a few chunks in memory.
class kv_producer {
 public:
  using kv = std::pair<std::string, std::string>;

  explicit kv_producer(scan_fn scan) : _thread([this, scan = std::move(scan)] { run(scan); }) {}
  ~kv_producer() {
    {
      std::lock_guard lock(_mu);
      _cancelled = true;
    }
    _cv.notify_all();
    _thread.join();
  }

  // The next pair, or null at the end. Valid until pop().
  const kv* peek() {
    while (_pos >= _chunk.size()) {
      if (!take_chunk()) return nullptr;
    }
    return &_chunk[_pos];
  }
  void pop() { ++_pos; }
  result<void> status() {
    std::lock_guard lock(_mu);
    return _status;
  }

 private:
  void run(const scan_fn& scan) {
    std::vector<kv> chunk;
    size_t bytes = 0;
    auto r = scan([&](std::string_view k, std::string_view v) {
      chunk.emplace_back(k, v);
      bytes += k.size() + v.size();
      if (chunk.size() < chunk_entries_max && bytes < chunk_bytes_max) return true;
      bytes = 0;
      return hand_over(std::move(chunk));
    });
    if (!chunk.empty()) hand_over(std::move(chunk));
    std::lock_guard lock(_mu);
    _status = r;
    _done = true;
    _cv.notify_all();
  }

  bool hand_over(std::vector<kv>&& chunk) {
    std::unique_lock lock(_mu);
    _cv.wait(lock, [&] { return _cancelled || _queue.size() < chunks_queued_max; });
    if (_cancelled) return false;
    _queue.push_back(std::move(chunk));
    chunk.clear();
    _cv.notify_all();
    return true;
  }

  bool take_chunk() {
    std::unique_lock lock(_mu);
    _cv.wait(lock, [&] { return _done || !_queue.empty(); });
    if (_queue.empty()) return false;
    _chunk = std::move(_queue.front());
    _queue.pop_front();
    _pos = 0;
    _cv.notify_all();
    return true;
  }

  std::mutex _mu;
  std::condition_variable _cv;
  std::deque<std::vector<kv>> _queue;
  bool _done = false;
  bool _cancelled = false;
  result<void> _status;
  std::vector<kv> _chunk;
  size_t _pos = 0;
  std::thread _thread;  // last: starts after every other member exists
};

// Every key of a store, or only one tenant's: its registry key "R<tenant>" (exact: a prefix
// scan would also take "R<tenant>x") and then everything under "T<tenant>\0", in key order.
scan_fn store_scan(const state_store& s, std::string tenant) {
  return [&s, tenant = std::move(tenant)](const kv_fn& fn) -> result<void> {
    if (tenant.empty()) return s.scan_all(fn);
    auto reg = s.get(keys::tenant_registry(tenant));
    if (!reg) return std::unexpected(reg.error());
    if (*reg && !fn(keys::tenant_registry(tenant), **reg)) return {};
    return s.scan_prefix(keys::tenant_prefix(tenant), fn);
  };
}

struct key_parts {
  char kind = 0;  // 'R', or the letter after "T<tenant>\0"
  std::string tenant;
  std::string_view rest;  // after the kind letter
};

std::optional<key_parts> split_state_key(std::string_view key) {
  if (key.starts_with('R')) return key_parts{'R', std::string(key.substr(1)), {}};
  if (!key.starts_with('T')) return std::nullopt;
  const size_t nul = key.find('\0');
  if (nul == std::string_view::npos || nul + 1 >= key.size()) return std::nullopt;
  return key_parts{key[nul + 1], std::string(key.substr(1, nul - 1)), key.substr(nul + 2)};
}

std::string clip_value(std::string_view v) {
  constexpr size_t shown_max = 60;
  if (v.size() <= shown_max) return fmt::format("'{}'", printable_key(v));
  return fmt::format("'{}…' ({} bytes)", printable_key(v.substr(0, shown_max)), v.size());
}

template <typename T>
void diff_field(std::vector<std::string>& out, std::string_view name, const T& live,
                const T& rebuilt) {
  if (live == rebuilt) return;
  out.push_back(fmt::format("{}: {} (live) vs {} (rebuilt)", name,
                            clip_value(fmt::format("{}", live)),
                            clip_value(fmt::format("{}", rebuilt))));
}

void diff_steps(std::vector<std::string>& out, const std::vector<std::string>& names,
                const execution_state& a, const execution_state& b) {
  if (a.steps.size() != b.steps.size()) {
    diff_field(out, "step count", a.steps.size(), b.steps.size());
    return;
  }
  for (size_t i = 0; i < a.steps.size(); ++i) {
    const step_state& x = a.steps[i];
    const step_state& y = b.steps[i];
    const std::string step = "step " + names[i];
    diff_field(out, step + " status", step_status_name(x.status), step_status_name(y.status));
    diff_field(out, step + " attempt", x.attempt, y.attempt);
    diff_field(out, step + " timer", x.timer_at_ms, y.timer_at_ms);
    diff_field(out, step + " output", x.output_json, y.output_json);
    diff_field(out, step + " error", x.error, y.error);
    auto routed = [](const step_state& st) {
      std::string r;
      for (const ai_attempt& a : st.ai) {
        r += fmt::format("{}#{} {}/{}{}{}", r.empty() ? "" : ", ", a.attempt, a.provider, a.model,
                         a.failover ? " failover" : "", a.usage_recorded ? " priced" : "");
      }
      return r;
    };
    diff_field(out, step + " AI attempts", routed(x), routed(y));
  }
}

std::string execution_diff(const state_store& live, std::string_view a_bytes,
                           std::string_view b_bytes) {
  execution_state a, b;
  if (!decode_execution(a_bytes, a) || !decode_execution(b_bytes, b)) {
    return fmt::format("{} bytes (live, {}) vs {} bytes (rebuilt)", a_bytes.size(),
                       decode_execution(a_bytes, a) ? "decodes" : "does not decode",
                       b_bytes.size());
  }
  std::vector<std::string> d;
  diff_field(d, "workflow", a.workflow, b.workflow);
  diff_field(d, "version", a.version, b.version);
  diff_field(d, "status", exec_status_name(a.status), exec_status_name(b.status));
  diff_field(d, "input", a.input_json, b.input_json);
  diff_field(d, "event count", a.event_count, b.event_count);
  diff_field(d, "last event hash", hex(a.last_hash), hex(b.last_hash));
  diff_field(d, "started", a.started_ms, b.started_ms);
  diff_field(d, "ended", a.ended_ms, b.ended_ms);
  diff_field(d, "result", a.result, b.result);
  diff_steps(d, step_names_of(live, a), a, b);
  diff_field(d, "buffered signals", a.signals.size(), b.signals.size());
  if (d.empty()) return "same fields, different bytes";
  std::string out;
  for (const std::string& s : d) out += (out.empty() ? "" : "; ") + s;
  return out;
}

// How two values of `key` differ, in the key's own terms.
std::string value_diff(const state_store& live, std::string_view key, std::string_view a,
                       std::string_view b) {
  auto parts = split_state_key(key);
  const char kind = parts ? parts->kind : 0;
  if (kind == 'E') return execution_diff(live, a, b);
  if (kind == 'H' && a.size() == 8 && b.size() == 8) {
    return fmt::format("executions offset {} (live) vs {} (rebuilt)", keys::get_be64(a),
                       keys::get_be64(b));
  }
  if ((kind == 'U' || kind == 'V') && a.size() == 8 && b.size() == 8) {
    return fmt::format("{} micro-USD (live) vs {} (rebuilt)", keys::get_be64(a), keys::get_be64(b));
  }
  if (kind == 'L' && a.size() == 4 && b.size() == 4) {
    return fmt::format("version {} (live) vs {} (rebuilt)", keys::get_be32(a), keys::get_be32(b));
  }
  if (kind == 'C') {
    tenant_chain x, y;
    if (decode_chain(a, x) && decode_chain(b, y)) {
      std::vector<std::string> d;
      diff_field(d, "event count", x.event_count, y.event_count);
      diff_field(d, "last event hash", hex(x.last_hash), hex(y.last_hash));
      if (!d.empty()) return d.size() == 1 ? d[0] : d[0] + "; " + d[1];
    }
  }
  return fmt::format("{} (live) vs {} (rebuilt)", clip_value(a), clip_value(b));
}

class comparer {
 public:
  comparer(const state_store& live, state_comparison& out, size_t diffs_max)
      : _live(live), _out(out), _diffs_max(diffs_max) {}

  void add(state_diff::kind what, std::string_view key, std::string text) {
    ++_out.differences;
    if (_out.diffs.size() >= _diffs_max) return;
    _out.diffs.push_back(
        {what, printable_key(key), fmt::format("{}: {}", describe_state_key(key), text)});
  }
  void only_rebuilt(const kv_producer::kv& r) {
    add(state_diff::kind::only_rebuilt, r.first,
        "the replayed history has it, the engine's state does not");
  }
  void only_live(std::string_view k) {
    add(state_diff::kind::only_live, k, "the engine's state has it, the replayed history does not");
  }
  void differs(std::string_view k, std::string_view live, std::string_view rebuilt) {
    add(state_diff::kind::differs, k, value_diff(_live, k, live, rebuilt));
  }

 private:
  const state_store& _live;
  state_comparison& _out;
  size_t _diffs_max;
};

}  // namespace

std::vector<std::string> step_names_of(const state_store& s, const execution_state& e) {
  std::vector<std::string> names;
  auto stored = s.get(keys::definition(e.tenant, e.workflow, e.version));
  if (stored && *stored) {
    if (auto d = parse_definition(**stored, "")) {
      for (const step_def& st : d->steps) names.push_back(st.id);
    }
  }
  for (size_t i = names.size(); i < e.steps.size(); ++i) names.push_back(fmt::format("#{}", i));
  return names;
}

std::string describe_state_key(std::string_view key) {
  auto p = split_state_key(key);
  if (!p) return "key " + printable_key(key);
  const std::string_view rest = p->rest;
  const size_t nul = rest.find('\0');
  switch (p->kind) {
    case 'R':
      return fmt::format("tenant registry entry of {}", p->tenant);
    case 'C':
      return fmt::format("definition chain head of {}", p->tenant);
    case 'P':
      return fmt::format("tenant policy of {}", p->tenant);
    case 'U':
      return fmt::format("AI spend of {} on {}", p->tenant, rest);
    case 'V':
      return fmt::format("AI spend of {} in {}", p->tenant, rest);
    case 'N':
      return fmt::format("notification rate window of {} channel {}", p->tenant, rest);
    case 'X':
      return fmt::format("notification content {} of {}",
                         hex(reinterpret_cast<const uint8_t*>(rest.data()), rest.size()),
                         p->tenant);
    case 'L':
      return fmt::format("latest version of {}/{}", p->tenant, rest);
    case 'E':
      return fmt::format("execution {}/{}", p->tenant, rest);
    case 'D':
      if (nul != std::string_view::npos && rest.size() == nul + 5) {
        return fmt::format("definition {}/{} v{}", p->tenant, rest.substr(0, nul),
                           keys::get_be32(rest.substr(nul + 1)));
      }
      break;
    case 'H':
      if (nul != std::string_view::npos && rest.size() == nul + 5) {
        return fmt::format("event index {}/{} #{}", p->tenant, rest.substr(0, nul),
                           keys::get_be32(rest.substr(nul + 1)));
      }
      break;
    case 'M': {
      std::string tenant, execution;
      int64_t due = 0;
      uint16_t step = 0;
      if (keys::parse_timer(key, tenant, due, execution, step)) {
        return fmt::format("timer of {}/{} step #{} due {}", tenant, execution, step,
                           format_time_ms(due));
      }
      break;
    }
    default:
      break;
  }
  return "key " + printable_key(key);
}

result<state_comparison> compare_states(const state_store& live, const state_store& rebuilt,
                                        std::string_view tenant, size_t diffs_max) {
  state_comparison out;
  comparer cmp(live, out, diffs_max);
  kv_producer other(store_scan(rebuilt, std::string(tenant)));
  auto scanned = store_scan(live, std::string(tenant))([&](std::string_view k, std::string_view v) {
    ++out.keys_live;
    const kv_producer::kv* r = other.peek();
    for (; r && r->first < k; r = other.peek()) {
      cmp.only_rebuilt(*r);
      ++out.keys_rebuilt;
      other.pop();
    }
    if (r && r->first == k) {
      if (r->second != v) cmp.differs(k, v, r->second);
      ++out.keys_rebuilt;
      other.pop();
    } else {
      cmp.only_live(k);
    }
    return true;
  });
  if (!scanned) return std::unexpected(scanned.error());
  for (const kv_producer::kv* r = other.peek(); r; r = other.peek()) {
    cmp.only_rebuilt(*r);
    ++out.keys_rebuilt;
    other.pop();
  }
  if (auto s = other.status(); !s) return std::unexpected(s.error());
  return out;
}

}  // namespace auterity
