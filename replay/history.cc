#include "replay/history.h"

#include <algorithm>
#include <map>
#include <numeric>

#include <fmt/core.h>

#include "replay/describe.h"

namespace auterity {

std::vector<uint32_t> scope_partitions(const replay_scope& scope, uint32_t partition_count,
                                       uint32_t base) {
  if (!scope.tenant.empty() && !scope.all_partitions) {
    if (!scope.partitions.empty()) return scope.partitions;
    return {tenant_partition(scope.tenant, base ? base : partition_count)};
  }
  std::vector<uint32_t> all(partition_count);
  std::iota(all.begin(), all.end(), 0u);
  return all;
}

result<std::vector<tenant_stay>> tenant_stays(log& l, std::string_view tenant) {
  std::vector<tenant_stay> stays;
  std::map<uint32_t, uint64_t> resume;  // where a partition's stream is read on from
  uint32_t p = home_partition(l, tenant);
  for (;;) {
    if (stays.size() >= tenant_stays_max) {
      return fail(errc::invalid, fmt::format("tenant {} moved more than tenant_stays_max ({}) "
                                             "times; read it with --all-partitions",
                                             tenant, tenant_stays_max));
    }
    tenant_stay stay;
    stay.partition = p;
    auto end = l.end_offset(stream::executions, p);
    if (!end) return std::unexpected(end.error());
    stream_reader reader(l, stream::executions, p, resume[p], *end);
    std::optional<uint32_t> next;
    while (!next) {
      auto batch = reader.next();
      if (!batch) return std::unexpected(batch.error());
      if (batch->empty()) break;
      for (const record& rec : *batch) {
        if (rec.key != tenant) continue;  // executions records are keyed by tenant
        const fbs::Envelope* e = decode_envelope(rec.value);
        if (!e || e->payload_type() != fbs::Payload::TenantMovedOut || sv(e->tenant_id()) != tenant)
          continue;
        stay.moved_out_offset = rec.offset;
        stay.left_ms = e->timestamp_ms();
        resume[p] = rec.offset + 1;
        next = e->payload_as_TenantMovedOut()->to_partition();
        break;
      }
    }
    stays.push_back(stay);
    if (!next || *next >= l.partition_count()) return stays;
    p = *next;
  }
}

result<void> resolve_partitions(log& l, replay_scope& scope) {
  if (scope.tenant.empty() || scope.all_partitions) return {};
  auto stays = tenant_stays(l, scope.tenant);
  if (!stays) return std::unexpected(stays.error());
  scope.partitions.clear();
  for (const tenant_stay& s : *stays) {
    if (std::ranges::find(scope.partitions, s.partition) == scope.partitions.end()) {
      scope.partitions.push_back(s.partition);
    }
  }
  return {};
}

namespace {

bool is_terminal(fbs::Payload t) {
  return t == fbs::Payload::ExecutionSucceeded || t == fbs::Payload::ExecutionFailed ||
         t == fbs::Payload::ExecutionCancelled;
}

std::string entry_key(std::string_view tenant, std::string_view execution) {
  std::string k(tenant);
  k.push_back('\0');
  k.append(execution);
  return k;
}

}  // namespace

// ----------------------------------------------------------------------------- collector

history_collector::history_collector(uint32_t partition, const replay_scope& scope,
                                     history_sink on_history, collector_limits limits)
    : _partition(partition), _scope(scope), _on_history(std::move(on_history)), _limits(limits) {}

history_collector::history_collector(uint32_t partition, const replay_scope& scope,
                                     record_sink on_record)
    : _partition(partition), _scope(scope), _on_record(std::move(on_record)) {}

bool history_collector::tenant_selected(const scanned_record& r) const {
  if (_scope.tenant.empty()) return true;
  // An undecodable record is filed under its key (the producer's tenant key).
  return r.env ? sv(r.env->tenant_id()) == _scope.tenant : r.rec->key == _scope.tenant;
}

history_collector::entry& history_collector::entry_for(const scanned_record& r) {
  const std::string_view tenant = r.env ? sv(r.env->tenant_id()) : std::string_view(r.rec->key);
  const std::string_view execution = r.env ? sv(r.env->execution_id()) : std::string_view();
  auto [it, created] = _entries.try_emplace(entry_key(tenant, execution));
  if (created) {
    it->second.order = _next_order++;
    it->second.h.partition = _partition;
    it->second.h.tenant = tenant;
    it->second.h.execution = execution;
  }
  return it->second;
}

// Remembers what the scope needs to know about an execution: its workflow and its end.
void history_collector::learn(entry& e, const fbs::Envelope& env) {
  const fbs::Payload type = env.payload_type();
  if (type == fbs::Payload::ExecutionStarted && env.kind() == fbs::RecordKind::Event) {
    e.h.workflow = sv(env.payload_as_ExecutionStarted()->workflow());
    e.started = true;
  } else if (type == fbs::Payload::StartExecution && e.h.workflow.empty()) {
    e.h.workflow = sv(env.payload_as_StartExecution()->workflow());  // until the event says
  } else if (is_terminal(type) && env.kind() == fbs::RecordKind::Event && !e.ended_ms) {
    e.ended_ms = env.timestamp_ms();
    _ended.emplace(env.timestamp_ms(), entry_key(e.h.tenant, e.h.execution));
  }
}

bool history_collector::workflow_selected(const entry& e, const fbs::Envelope* env) const {
  if (_scope.workflow.empty()) return true;
  if (!e.h.execution.empty()) return e.h.workflow == _scope.workflow;
  // A tenant's own records: only the publication of this workflow.
  return env && env->payload_type() == fbs::Payload::DefinitionPublished &&
         sv(env->payload_as_DefinitionPublished()->workflow()) == _scope.workflow;
}

result<void> history_collector::keep(entry& e, const scanned_record& r) {
  ++_in_scope;
  if (_on_record) return _on_record(r);
  e.h.records.push_back({r.s, r.rec->offset, r.rec->key, r.rec->value});
  const size_t bytes = r.rec->key.size() + r.rec->value.size() + sizeof(history_record);
  e.h.bytes += bytes;
  _buffered += bytes;
  return {};
}

result<void> history_collector::add(const scanned_record& r) {
  if (!tenant_selected(r)) return {};
  if (!_scope.execution.empty() && (!r.env || sv(r.env->execution_id()) != _scope.execution)) {
    return {};
  }
  entry& e = entry_for(r);
  if (r.env) learn(e, *r.env);
  const bool in_window = !r.env || _scope.in_window(r.env->timestamp_ms());
  if (in_window && workflow_selected(e, r.env)) {
    if (auto k = keep(e, r); !k) return k;
  }
  if (r.env) {
    if (auto h = hand_over_ended(r.env->timestamp_ms()); !h) return h;
  }
  return trim_memory();
}

result<void> history_collector::hand_over(const std::string& key, bool more_follows) {
  auto it = _entries.find(key);
  if (it == _entries.end()) return {};
  history& h = it->second.h;
  _buffered -= h.bytes;
  if (_on_history && !h.records.empty()) {
    history out = h;
    out.more_follows = more_follows;
    if (auto r = _on_history(std::move(out)); !r) return r;
  }
  if (!more_follows) {
    _entries.erase(it);
    return {};
  }
  h.records.clear();
  h.bytes = 0;
  h.continued = true;
  return {};
}

result<void> history_collector::hand_over_ended(int64_t now_ms) {
  while (!_ended.empty() && _ended.begin()->first + _limits.late_grace_ms < now_ms) {
    const std::string key = std::move(_ended.begin()->second);
    _ended.erase(_ended.begin());
    if (auto r = hand_over(key, false); !r) return r;
  }
  return {};
}

result<void> history_collector::trim_memory() {
  while (_buffered > _limits.buffered_bytes_max) {
    const std::string* oldest = nullptr;
    uint64_t order = UINT64_MAX;
    for (const auto& [key, e] : _entries) {
      if (!e.h.records.empty() && e.order < order) oldest = &key, order = e.order;
    }
    if (!oldest) break;
    if (auto r = hand_over(std::string(*oldest), true); !r) return r;
  }
  return {};
}

result<void> history_collector::finish() {
  std::vector<std::pair<uint64_t, std::string>> rest;
  for (const auto& [key, e] : _entries) rest.emplace_back(e.order, key);
  std::sort(rest.begin(), rest.end());
  for (const auto& [order, key] : rest) {
    if (auto r = hand_over(key, false); !r) return r;
  }
  _ended.clear();
  return {};
}

// ---------------------------------------------------------------------------------- views

std::string_view stream_tag(stream s) {
  switch (s) {
    case stream::ingress:
      return "in";
    case stream::executions:
      return "ex";
    case stream::commands_step:
      return "step";
    case stream::commands_ai:
      return "ai";
    case stream::commands_notify:
      return "notify";
    case stream::acks:
      return "ack";
    default:
      return stream_name(s);
  }
}

namespace {

struct decoded {
  const history_record* rec;
  const fbs::Envelope* env;  // null: undecodable
  std::string why;
};

// Which command and ack records the events refer to (a StepScheduled names its command; an
// event caused by a worker's answer has causation "ack/<command id>").
struct references {
  std::unordered_map<std::string, size_t> commands;           // record id -> index
  std::unordered_map<std::string, std::vector<size_t>> acks;  // record id -> indexes
  std::vector<bool> used;

  explicit references(const std::vector<decoded>& d) : used(d.size(), false) {
    for (size_t i = 0; i < d.size(); ++i) {
      if (!d[i].env) continue;
      const std::string id(sv(d[i].env->record_id()));
      if (d[i].rec->s == stream::acks) {
        acks[id].push_back(i);
      } else if (d[i].rec->s != stream::executions && d[i].rec->s != stream::ingress) {
        commands.emplace(id, i);
      }
    }
  }
  std::optional<size_t> command(std::string_view id) {
    auto it = commands.find(std::string(id));
    if (it == commands.end()) return std::nullopt;
    used[it->second] = true;
    return it->second;
  }
  std::optional<size_t> ack(std::string_view id) {
    auto it = acks.find(std::string(id));
    if (it == acks.end()) return std::nullopt;
    for (size_t i : it->second) {
      if (!used[i]) return used[i] = true, i;
    }
    return std::nullopt;
  }
};

class view_builder {
 public:
  explicit view_builder(const history& h) {
    _v.partition = h.partition;
    _v.tenant = h.tenant;
    _v.execution = h.execution;
    _v.workflow = h.workflow;
    _v.continued = h.continued;
    _v.more_follows = h.more_follows;
    for (const history_record& r : h.records) {
      decoded d{&r, nullptr, {}};
      d.env = decode_envelope(r.bytes, &d.why);
      _d.push_back(std::move(d));
    }
  }

  execution_view build() {
    references refs(_d);
    std::vector<timeline_line> attached(_d.size());
    // First pass: events take their command and ack, so what is left over shows on its own.
    for (size_t i = 0; i < _d.size(); ++i) {
      if (_d[i].env && _d[i].rec->s == stream::executions) attached[i] = event_line(i, refs);
    }
    for (size_t i = 0; i < _d.size(); ++i) {
      if (_d[i].rec->s == stream::executions && _d[i].env) {
        _v.lines.push_back(std::move(attached[i]));
      } else if (!refs.used[i]) {
        _v.lines.push_back(other_line(i));
      }
    }
    close_bars(_v.last_ms, "running");
    if (!_v.lines.empty()) {
      _v.first_ms = _v.lines.front().ts_ms;
      for (const timeline_line& l : _v.lines) _v.first_ms = std::min(_v.first_ms, l.ts_ms);
    }
    return std::move(_v);
  }

 private:
  timeline_line base_line(size_t i, std::string kind) {
    const decoded& d = _d[i];
    timeline_line l;
    l.s = d.rec->s;
    l.offset = d.rec->offset;
    l.kind = std::move(kind);
    if (!d.env) {
      l.ts_ms = _v.last_ms;
      l.type = "?";
      l.text = "undecodable record: " + d.why;
      return l;
    }
    l.ts_ms = d.env->timestamp_ms();
    _v.last_ms = std::max(_v.last_ms, l.ts_ms);
    l.type = payload_name(d.env->payload_type());
    l.record_id = sv(d.env->record_id());
    l.causation_id = sv(d.env->causation_id());
    l.text = describe(*d.env);
    return l;
  }

  timeline_line other_line(size_t i) {
    const decoded& d = _d[i];
    if (!d.env) return base_line(i, "undecodable");
    switch (d.rec->s) {
      case stream::ingress:
        return base_line(i, "request");
      case stream::acks: {
        timeline_line l = base_line(i, "ack");
        count_usage(*d.env);
        l.details.push_back("no event answers to it: a duplicate or stale ack, ignored");
        return l;
      }
      default: {
        timeline_line l = base_line(i, "command");
        l.details.push_back("no event in this timeline scheduled it");
        return l;
      }
    }
  }

  timeline_line event_line(size_t i, references& refs) {
    const fbs::Envelope& e = *_d[i].env;
    const bool event = e.kind() == fbs::RecordKind::Event;
    timeline_line l = base_line(i, event ? "event" : "rejection");
    if (!event) {
      ++_v.rejections;
      return l;
    }
    ++_v.events;
    std::string command_text;
    if (auto p = e.payload_as_StepScheduled(); p && p->command_id() && p->command_id()->size()) {
      if (auto c = refs.command(sv(p->command_id()))) {
        command_text = describe_command(*_d[*c].env);
        l.details.push_back(fmt::format("{} {}", command_label(*_d[*c].env), command_text));
      }
    }
    std::string ack_text;
    if (const std::string_view cause = sv(e.causation_id()); cause.starts_with("ack/")) {
      if (auto a = refs.ack(cause)) {
        const fbs::Envelope& ack = *_d[*a].env;
        ack_text = describe_ack(ack);
        count_usage(ack);
        count_notification(ack, refs);
        l.details.push_back("worker: " + ack_text);
      }
    }
    track_state(e, command_text, ack_text);
    return l;
  }

  static std::string command_label(const fbs::Envelope& c) {
    return c.payload_type() == fbs::Payload::SendNotification ? "notification:" : "command:";
  }

  void count_usage(const fbs::Envelope& ack) {
    auto p = ack.payload_as_StepAck();
    if (!p || describe_usage(*p).empty()) return;
    ++_v.ai_calls;
    _v.ai_tokens_in += p->usage()->input_tokens();
    _v.ai_tokens_out += p->usage()->output_tokens();
    _v.ai_cost_micros += p->usage()->cost_micros();
  }

  // A notification counts as sent when its command's ack says Success.
  void count_notification(const fbs::Envelope& ack, references& refs) {
    auto p = ack.payload_as_StepAck();
    if (!p || p->status() != fbs::AckStatus::Success) return;
    auto it = refs.commands.find(std::string(sv(p->command_id())));
    if (it == refs.commands.end()) return;
    if (_d[it->second].env->payload_type() == fbs::Payload::SendNotification) {
      ++_v.notifications_sent;
    }
  }

  // Execution status and step bars, from the events in order.
  void track_state(const fbs::Envelope& e, const std::string& command, const std::string& ack) {
    const int64_t t = e.timestamp_ms();
    using P = fbs::Payload;
    switch (e.payload_type()) {
      case P::ExecutionStarted: {
        auto p = e.payload_as_ExecutionStarted();
        _v.workflow = sv(p->workflow());
        _v.version = p->version();
        _v.status = "running";
        return;
      }
      case P::ExecutionSucceeded:
        return end_execution(t, "succeeded");
      case P::ExecutionFailed:
        return end_execution(t, "failed");
      case P::ExecutionCancelled:
        return end_execution(t, "cancelled");
      case P::StepScheduled: {
        auto p = e.payload_as_StepScheduled();
        close_bar(sv(p->step()), t, "cancelled", "");
        _open.push_back({std::string(sv(p->step())), p->attempt(), t, t, "", command});
        return;
      }
      case P::StepSucceeded:
        return close_bar(sv(e.payload_as_StepSucceeded()->step()), t, "succeeded", ack);
      case P::StepFailed: {
        auto p = e.payload_as_StepFailed();
        return close_bar(sv(p->step()), t, "failed",
                         ack.empty() ? std::string(sv(p->error())) : ack);
      }
      case P::StepRetryScheduled: {
        auto p = e.payload_as_StepRetryScheduled();
        return close_bar(sv(p->step()), t, "retry",
                         ack.empty() ? std::string(sv(p->error())) : ack);
      }
      case P::StepTimedOut:
        return close_bar(sv(e.payload_as_StepTimedOut()->step()), t, "timed_out", "timed out");
      case P::AiUsageRecorded: {
        auto p = e.payload_as_AiUsageRecorded();
        ++_v.ai_priced_calls;
        _v.ai_priced_tokens_in += p->input_tokens();
        _v.ai_priced_tokens_out += p->output_tokens();
        _v.ai_priced_cost_micros += p->cost_micros();
        return;
      }
      case P::StepSkipped: {
        auto p = e.payload_as_StepSkipped();
        _v.bars.push_back(
            {std::string(sv(p->step())), 0, t, t, "skipped", std::string(sv(p->reason()))});
        return;
      }
      default:
        return;
    }
  }

  void close_bar(std::string_view step, int64_t t, std::string outcome, const std::string& why) {
    for (auto it = _open.begin(); it != _open.end(); ++it) {
      if (it->step != step) continue;
      step_bar b = std::move(*it);
      _open.erase(it);
      b.end_ms = t;
      b.outcome = std::move(outcome);
      if (!why.empty()) b.detail += (b.detail.empty() ? "" : " — ") + why;
      _v.bars.push_back(std::move(b));
      return;
    }
  }

  void close_bars(int64_t t, const char* outcome) {
    while (!_open.empty()) close_bar(std::string(_open.front().step), t, outcome, "");
  }

  void end_execution(int64_t t, const char* status) {
    _v.status = status;
    close_bars(t, "cancelled");
  }

  std::vector<decoded> _d;
  std::vector<step_bar> _open;
  execution_view _v;
};

}  // namespace

execution_view build_view(const history& h) { return view_builder(h).build(); }

}  // namespace auterity
