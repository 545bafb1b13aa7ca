// The orchestrator's decisions. Everything here reads state and returns records; state changes
// only through apply_record() (appliers.cc), called on each event as it is emitted, so later
// decisions of the same batch see it — and replay sees exactly the same.

#include "processors/orchestrator.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <set>
#include <unordered_set>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "engine/assert.h"
#include "engine/json_envelope.h"
#include "processors/ids.h"
#include "processors/limits.h"
#include "processors/orchestrator_state.h"
#include "processors/strict_json.h"
#include "processors/template.h"
#include "processors/tenant_policy.h"

namespace auterity {

using json = nlohmann::json;

namespace {

bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > limits::id_bytes_max) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

// An execution id as the orchestrator itself may make one: an upstream's id (valid_id), or a
// sub-workflow's "<parent>/<step>/<attempt>" (valid ids joined by '/'; no upstream can start
// one, so a child's id never collides with an upstream's).
bool valid_ref(std::string_view id) {
  if (id.size() > limits::subworkflow_id_bytes_max) return false;
  if (id.find('/') == std::string_view::npos) return valid_id(id);
  size_t from = 0;
  while (from <= id.size()) {
    const size_t slash = std::min(id.find('/', from), id.size());
    const std::string_view part = id.substr(from, slash - from);
    if (part.empty() || part.size() > limits::id_bytes_max || !valid_id(part)) return false;
    from = slash + 1;
  }
  return true;
}

// Parses an input or signal payload as a step will render from it: nesting deeper than
// json_value_depth_max is refused here, when the command arrives (template.cc applies the same
// limit when a step renders). Discarded if not JSON; `too_deep` says why otherwise.
json parse_value(std::string_view text, bool& too_deep) {
  too_deep = false;
  json::parser_callback_t check = [&too_deep](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= limits::json_value_depth_max) {
      too_deep = true;
    }
    return true;
  };
  return json::parse(text, check, /*allow_exceptions=*/false);
}

std::string source_ref(const input& in) {
  return fmt::format("{}/{}/{}", stream_name(in.s), in.partition, in.rec.offset);
}

fbs::TimerPurpose timer_purpose(step_status s) {
  switch (s) {
    case step_status::retry_wait:
      return fbs::TimerPurpose::Retry;
    case step_status::delaying:
      return fbs::TimerPurpose::Delay;
    case step_status::waiting:
      return fbs::TimerPurpose::SignalTimeout;
    case step_status::deferred:
      return fbs::TimerPurpose::NotifyDefer;
    default:
      return fbs::TimerPurpose::StepTimeout;
  }
}

// A notify step's rendered input as its SendNotification fields.
struct notification_fields {
  std::string channel, to, subject, body;
};

notification_fields notification_of(const std::string& input_json) {
  json in = json::parse(input_json, nullptr, false);
  auto field = [&](const char* name) {
    if (!in.is_object() || !in.contains(name)) return std::string();
    const json& v = in[name];
    return v.is_string() ? v.get<std::string>() : v.dump();
  };
  return {field("channel"), field("to"), field("subject"), field("body")};
}

int64_t stored_be64(const std::optional<std::string>& v) {
  return v && v->size() == 8 ? static_cast<int64_t>(keys::get_be64(*v)) : 0;
}

// Error text quoted in a routing reason.
constexpr size_t reason_error_bytes_max = 200;

std::string clip_error(std::string_view s) {
  if (s.size() <= reason_error_bytes_max) return std::string(s);
  size_t n = reason_error_bytes_max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return std::string(s.substr(0, n)) + "...";
}

}  // namespace

// "<step>[<item>]", the step name of a foreach item's command (step ids have no brackets).
std::optional<std::pair<std::string_view, uint32_t>> parse_item_step(std::string_view name) {
  const size_t open = name.find('[');
  if (open == std::string_view::npos || open == 0 || !name.ends_with(']')) return std::nullopt;
  const std::string_view digits = name.substr(open + 1, name.size() - open - 2);
  if (digits.empty() || digits.size() > 6) return std::nullopt;
  uint32_t item = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    item = item * 10 + static_cast<uint32_t>(c - '0');
  }
  return std::pair{name.substr(0, open), item};
}

// One decider per input: it carries the input's context (causation, time, outputs) so the
// decision code reads as the workflow semantics.
class orchestrator::decider {
 public:
  decider(orchestrator& o, batch_context& ctx, std::string causation)
      : _o(o), _s(*o._state), _ctx(ctx), _causation(std::move(causation)) {}

  void on_ingress(const input& in, const fbs::Envelope& env);
  std::optional<std::string> timestamp_problem(int64_t ts) const;
  void on_ack(const input& in, const fbs::Envelope& env);
  void on_timer(const timer_entry& t);

  void reject(const input& in, const fbs::Envelope* env, rejection_code code,
              std::string_view reason);

 private:
  // The ingress command a rejection answers: the input being decided, or a held signal.
  struct command_source {
    std::string_view tenant;
    std::string_view execution;
    std::string_view causation;  // the command's record id
    std::string_view stream;
    uint32_t partition = 0;
    uint64_t offset = 0;
  };
  void reject(const command_source& c, rejection_code code, std::string_view reason);
  static command_source held_source(std::string_view tenant, std::string_view execution,
                                    const held_signal& h);
  void publish_definition(const input& in, const fbs::Envelope& env);
  void publish_policy(const input& in, const fbs::Envelope& env);
  void start_execution(const input& in, const fbs::Envelope& env);
  void signal(const input& in, const fbs::Envelope& env);
  void deliver_signal(execution_state& e, const std::string& name, const std::string& payload);
  void hold_signal(const input& in, const fbs::Envelope& env, const std::string& name,
                   const std::string& payload);
  void deliver_held(execution_state& e);
  void expire_held(const timer_entry& t);
  void cancel(const input& in, const fbs::Envelope& env);
  execution_state* running_execution(const input& in, const fbs::Envelope& env);

  // Tenant moves (docs/tenant-moves.md). The partition that decides for the tenant: nullopt if
  // this one, else where its inputs go (while its state is being installed here: back to this
  // partition's own ingress, behind the chunks still to come).
  std::optional<uint32_t> owner_elsewhere(std::string_view tenant, uint32_t here) const;
  void forward(const input& in, uint32_t to);
  void move_tenant(const input& in, const fbs::Envelope& env);
  void install_chunk(const input& in, const fbs::Envelope& env);

  void advance(execution_state& e);
  // The AI router's choice for an attempt of an ai step (tenant_policy.h: route_ai).
  struct ai_choice {
    const ai_candidate* candidate = nullptr;  // null: none, the step fails with `reason`
    ai_route route;
    ai_estimate estimate;
    ai_spend spend;
    std::string reason;
    bool failover = false;
  };

  void schedule_attempt(execution_state& e, uint16_t idx, uint32_t attempt);
  // Sub-workflows (processors/DEFINITIONS.md): a workflow step's attempt starts a child
  // execution; an execution's end cancels its running children and answers its parent's step.
  void start_child(execution_state& e, uint16_t idx, uint32_t attempt);
  std::optional<std::string> child_problem(const execution_state& e, const step_def& sd,
                                           const std::string& child_id);
  void launch_child(const execution_state& e, const step_def& sd, const std::string& child_id,
                    std::string_view slot, const std::string& input);
  // Cancels a running child on its parent's behalf: its end is not reported back to the parent,
  // which is about to end (or fail the step) itself.
  void cancel_child(const std::string& tenant, const std::string& child_id,
                    const std::string& reason);
  void cancel_children(const execution_state& e, std::string_view ending);
  void ended(execution_state& e);
  void child_ended(const execution_state& child);
  void item_child_ended(execution_state& p, uint16_t idx, uint32_t item,
                        const execution_state& child);
  void decide_inline(execution_state& e, uint16_t idx, uint32_t attempt);
  // foreach (processors/DEFINITIONS.md, Fan-out)
  void start_foreach(execution_state& e, uint16_t idx);
  void foreach_progress(execution_state& e, uint16_t idx);
  void schedule_item(execution_state& e, uint16_t idx, uint32_t item, uint32_t attempt,
                     const json& items);
  void item_retry_or_fail(execution_state& e, uint16_t idx, uint32_t item, std::string_view error);
  void item_failed(execution_state& e, uint16_t idx, uint32_t item, uint32_t attempt,
                   std::string_view error);
  void emit_item_command(execution_state& e, uint16_t idx, uint32_t item, uint32_t attempt,
                         const std::string& rendered, int64_t timer_at);
  // Appends a command built in _fbb (its envelope: the execution's, caused by this input).
  void append_command(const execution_state& e, stream target, fbs::Payload type,
                      flatbuffers::Offset<void> payload, const std::string& command_id);
  void on_item_ack(const input& in, const fbs::Envelope& env, execution_state& e,
                   std::string_view step, uint32_t item);
  void on_item_timer(execution_state& e, uint16_t idx, uint32_t item);
  std::optional<std::string> branch_not_taken(const execution_state& e, const definition& d,
                                              uint16_t idx);
  static bool is_switch_target(const step_def& sw, uint16_t idx);
  static bool in_case(const step_def& sw, std::string_view taken, uint16_t idx);
  static std::string switch_taken(const step_state& st);
  void start_attempt(execution_state& e, uint16_t idx, uint32_t attempt,
                     const std::string& rendered, const ai_choice* choice);
  ai_choice choose_ai(const execution_state& e, uint16_t idx, const ai_policy& p,
                      const std::string& rendered, std::string_view failed_after,
                      std::string_view error);
  bool emit_ai_routed(execution_state& e, uint16_t idx, uint32_t attempt, const ai_choice& c);
  bool try_failover(execution_state& e, uint16_t idx, std::string_view error);
  void record_usage(execution_state& e, uint16_t idx, uint32_t attempt, const fbs::StepAck& ack);
  ai_spend spend_now(std::string_view tenant);
  // Asks the tenant's notification policy, then sends, suppresses or defers: a notify step's
  // attempt, or with `item` one item of a foreach step (its events carry the item's index).
  void notify_or_hold(execution_state& e, uint16_t idx, uint32_t attempt,
                      const std::string& rendered, const notify_policy& p,
                      std::optional<uint32_t> item = std::nullopt);
  void step_failed(execution_state& e, uint16_t idx, uint32_t attempt, std::string_view error);
  void after_failure(execution_state& e, uint16_t idx);
  void retry_or_fail(execution_state& e, uint16_t idx, std::string_view error);
  void succeed_step(execution_state& e, uint16_t idx, std::string_view output_json);
  bool emit_command(execution_state& e, uint16_t idx, uint32_t attempt,
                    const std::string& input_json, int64_t deadline,
                    const ai_candidate* model = nullptr);
  std::string execution_output(const execution_state& e, const definition& d);
  template_scope scope(const execution_state& e, const definition& d);

  // Builds the event with `build(fbb)` returning the payload offset, appends and applies it.
  // Returns false (and fails the execution instead) when events_per_execution_max is reached.
  template <typename F>
  bool emit(execution_state& e, fbs::Payload type, F&& build);
  void append_event(execution_state& e, fbs::Payload type, flatbuffers::Offset<void> payload);
  // Returns the event's hash (its place in the tenant chain).
  template <typename F>
  hash256 emit_tenant_event(std::string_view tenant, fbs::Payload type, F&& build);

  const definition& def(const execution_state& e) {
    const definition* d = _s.find_definition(e.tenant, e.workflow, e.version);
    vassert(d != nullptr, "definition {} v{} vanished", e.workflow, e.version);
    return *d;
  }
  flatbuffers::Offset<flatbuffers::String> str(std::string_view v) {
    return _fbb.CreateString(v.data(), v.size());
  }

  orchestrator& _o;
  orchestrator_state& _s;
  batch_context& _ctx;
  std::string _causation;
  std::unordered_set<std::string> _cancelled_by_parent;  // child ids (cancel_child)
  flatbuffers::FlatBufferBuilder _fbb{1024};
};

// ------------------------------------------------------------------------------------ emit

template <typename F>
bool orchestrator::decider::emit(execution_state& e, fbs::Payload type, F&& build) {
  const bool terminal = type == fbs::Payload::ExecutionSucceeded ||
                        type == fbs::Payload::ExecutionFailed ||
                        type == fbs::Payload::ExecutionCancelled;
  if (!terminal && e.event_count + 1 >= limits::events_per_execution_max) {
    const std::string reason =
        fmt::format("history limit reached: events_per_execution_max ({}) events",
                    limits::events_per_execution_max);
    cancel_children(e, "failed");
    append_event(e, fbs::Payload::ExecutionFailed,
                 fbs::CreateExecutionFailed(_fbb, str(reason), str("")).Union());
    ended(e);
    return false;
  }
  if (terminal) {
    cancel_children(e, type == fbs::Payload::ExecutionSucceeded ? "succeeded"
                       : type == fbs::Payload::ExecutionFailed  ? "failed"
                                                                : "cancelled");
  }
  append_event(e, type, build(_fbb));
  if (terminal) ended(e);
  return true;
}

void orchestrator::decider::append_event(execution_state& e, fbs::Payload type,
                                         flatbuffers::Offset<void> payload) {
  const std::string record_id = fmt::format("{}#{}", e.id, e.event_count);
  envelope_header h;
  h.kind = fbs::RecordKind::Event;
  h.tenant_id = e.tenant;
  h.execution_id = e.id;
  h.record_id = record_id;
  h.causation_id = _causation;
  h.timestamp_ms = _ctx.now_ms();
  h.prev_hash = e.event_count > 0 ? &e.last_hash : nullptr;
  std::string bytes = finish_envelope(_fbb, h, type, payload);
  const record_position where = _ctx.append_event(e.tenant, bytes);
  apply_record(_s, where, bytes);
}

template <typename F>
hash256 orchestrator::decider::emit_tenant_event(std::string_view tenant, fbs::Payload type,
                                                 F&& build) {
  tenant_chain& c = _s.chain(tenant);
  flatbuffers::Offset<void> payload = build(_fbb);
  const std::string record_id = fmt::format("tenant:{}#{}", tenant, c.event_count);
  envelope_header h;
  h.kind = fbs::RecordKind::Event;
  h.tenant_id = tenant;
  h.record_id = record_id;
  h.causation_id = _causation;
  h.timestamp_ms = _ctx.now_ms();
  h.prev_hash = c.event_count > 0 ? &c.last_hash : nullptr;
  std::string bytes = finish_envelope(_fbb, h, type, payload);
  const record_position where = _ctx.append_event(std::string(tenant), bytes);
  apply_record(_s, where, bytes);
  if (type == fbs::Payload::DefinitionPublished) {
    auto p = decode_envelope(bytes)->payload_as_DefinitionPublished();
    _ctx.append(stream::definitions,
                fmt::format("{}/{}/{}", tenant, sv(p->workflow()), p->version()), bytes);
  }
  return sha256(bytes);
}

void orchestrator::decider::reject(const input& in, const fbs::Envelope* env, rejection_code code,
                                   std::string_view reason) {
  reject(command_source{env ? sv(env->tenant_id()) : std::string_view(),
                        env ? sv(env->execution_id()) : std::string_view(), _causation,
                        stream_name(in.s), in.partition, in.rec.offset},
         code, reason);
}

orchestrator::decider::command_source orchestrator::decider::held_source(std::string_view tenant,
                                                                         std::string_view execution,
                                                                         const held_signal& h) {
  return {tenant,         execution, h.command_id, stream_name(stream::ingress), h.source_partition,
          h.source_offset};
}

// The record id is "rej/<stream>/<partition>/<offset>" of the command, whenever it is
// rejected: a held signal's late rejection has the id an immediate one would have had.
void orchestrator::decider::reject(const command_source& c, rejection_code code,
                                   std::string_view reason) {
  auto payload = fbs::CreateCommandRejected(_fbb, static_cast<uint16_t>(code), str(reason),
                                            str(c.stream), c.partition, c.offset);
  const std::string record_id = fmt::format("rej/{}/{}/{}", c.stream, c.partition, c.offset);
  envelope_header h;
  h.kind = fbs::RecordKind::Rejection;
  h.tenant_id = c.tenant;
  h.execution_id = c.execution;
  h.record_id = record_id;
  h.causation_id = c.causation;
  h.timestamp_ms = _ctx.now_ms();
  std::string bytes = finish_envelope(_fbb, h, fbs::Payload::CommandRejected, payload.Union());
  _ctx.append_event(std::string(h.tenant_id), std::move(bytes));
  _o._probe.rejections.fetch_add(1, std::memory_order_relaxed);
}

// --------------------------------------------------------------------------------- ingress

void orchestrator::decider::on_ingress(const input& in, const fbs::Envelope& env) {
  if (env.kind() != fbs::RecordKind::Command) {
    return reject(in, &env, rejection_code::wrong_record,
                  fmt::format("ingress takes commands; got a {} record",
                              fbs::EnumNameRecordKind(env.kind())));
  }
  const std::string_view tenant = sv(env.tenant_id());
  if (!valid_id(tenant)) {
    return reject(in, &env, rejection_code::missing_field,
                  fmt::format("tenant id '{}' is empty, longer than {} bytes or not made of "
                              "[A-Za-z0-9_.:-]",
                              tenant, limits::id_bytes_max));
  }
  if (env.payload_type() == fbs::Payload::TenantStateChunk) return install_chunk(in, env);
  if (env.payload_type() == fbs::Payload::MoveTenant) {
    const placement_entry* p = _s.placement(tenant);
    if (p && p->ph == placement_entry::phase::installing) {
      return reject(in, &env, rejection_code::invalid_move,
                    fmt::format("a move of tenant '{}' to partition {} (epoch {}) is in progress: "
                                "{} chunks of its state installed so far",
                                tenant, in.partition, p->epoch, p->next_seq));
    }
  }
  if (auto owner = owner_elsewhere(tenant, in.partition)) {
    if (_o._options.forward_misplaced) return forward(in, *owner);
    return reject(
        in, &env, rejection_code::wrong_record,
        fmt::format("tenant '{}' is placed on partition {}, not {}", tenant, *owner, in.partition));
  }
  if (auto why = ids::record_id_problem(sv(env.record_id()))) {
    return reject(in, &env, rejection_code::missing_field, *why);
  }
  if (auto why = timestamp_problem(env.timestamp_ms())) {
    return reject(in, &env, rejection_code::invalid_timestamp, *why);
  }
  switch (env.payload_type()) {
    case fbs::Payload::PublishDefinition:
      return publish_definition(in, env);
    case fbs::Payload::PublishTenantPolicy:
      return publish_policy(in, env);
    case fbs::Payload::StartExecution:
      return start_execution(in, env);
    case fbs::Payload::Signal:
      return signal(in, env);
    case fbs::Payload::CancelExecution:
      return cancel(in, env);
    case fbs::Payload::MoveTenant:
      return move_tenant(in, env);
    default:
      return reject(in, &env, rejection_code::wrong_record,
                    fmt::format("{} is not an upstream command", payload_name(env.payload_type())));
  }
}

// 0 is "not given" (FlatBuffers' default; a JSON envelope without one is stamped with the
// batch time): the engine's own time stamps what the command causes either way.
std::optional<std::string> orchestrator::decider::timestamp_problem(int64_t ts) const {
  if (ts == 0) return std::nullopt;
  if (ts < limits::timestamp_ms_min) {
    return fmt::format("timestamp_ms {} is before 2000-01-01T00:00:00Z (timestamp_ms_min {})", ts,
                       limits::timestamp_ms_min);
  }
  if (ts > _ctx.now_ms() && ts - _ctx.now_ms() > limits::timestamp_future_ms_max) {
    return fmt::format(
        "timestamp_ms {} is {} ms ahead of the partition's clock ({}); "
        "timestamp_future_ms_max is {}",
        ts, ts - _ctx.now_ms(), _ctx.now_ms(), limits::timestamp_future_ms_max);
  }
  return std::nullopt;
}

namespace {

bool calls_workflow(const step_def& sd) {
  return sd.kind == step_kind::workflow ||
         (sd.kind == step_kind::foreach && sd.body_kind == step_kind::workflow);
}

// The cycle of workflow calls that publishing `d` would close, as "ping v2 (step 'call') ->
// pong v1 (step 'back') -> ping v2"; nullopt if none. The graph is the tenant's published
// definitions as they will be once `d` is: a step with a pinned version calls that version,
// one without calls the latest (which `d` becomes if its version is the highest). Any new cycle
// passes through `d` (publishing adds d's calls and redirects the calls to its workflow's
// latest), so a breadth-first walk from `d` finds the shortest. It goes subworkflow_depth_max
// calls deep and then only asks whether the next call is `d` (without reading it): a longer
// cycle cannot recur at run time, since the depth limit fails the chain before it comes back
// (processors/DEFINITIONS.md, Sub-workflows). Reads only what prefetch_definition loaded.
std::optional<std::string> call_cycle(orchestrator_state& s, std::string_view tenant,
                                      const definition& d) {
  const definition* latest = s.find_definition(tenant, d.workflow, 0);
  const bool becomes_latest = latest == nullptr || d.version > latest->version;
  auto is_d = [&](const step_def& sd) {
    return sd.child_workflow == d.workflow &&
           (sd.child_version == d.version || (sd.child_version == 0 && becomes_latest));
  };
  struct node {
    const definition* def;
    size_t from;  // index of the node that calls it (npos: d)
    std::string step;
    uint32_t distance;
  };
  std::vector<node> nodes{{&d, std::string::npos, "", 0}};
  std::set<std::pair<std::string, uint32_t>> seen{{d.workflow, d.version}};
  for (size_t at = 0; at < nodes.size(); ++at) {
    for (const step_def& sd : nodes[at].def->steps) {
      if (!calls_workflow(sd)) continue;
      if (is_d(sd)) {
        // From the caller back to d, then printed forwards.
        std::vector<std::string> hops;
        hops.push_back(fmt::format("{} v{} (step '{}')", nodes[at].def->workflow,
                                   nodes[at].def->version, sd.id));
        for (size_t i = at; nodes[i].from != std::string::npos; i = nodes[i].from) {
          const node& caller = nodes[nodes[i].from];
          hops.push_back(fmt::format("{} v{} (step '{}')", caller.def->workflow,
                                     caller.def->version, nodes[i].step));
        }
        std::string out;
        for (auto it = hops.rbegin(); it != hops.rend(); ++it) out += *it + " -> ";
        return fmt::format(
            "{} v{} would close a cycle of workflow calls: {}{} v{}; a workflow that calls "
            "itself through others nests until subworkflow_depth_max ({} levels) and fails",
            d.workflow, d.version, out, d.workflow, d.version, limits::subworkflow_depth_max);
      }
      if (nodes[at].distance >= limits::subworkflow_depth_max) continue;
      const definition* next = s.find_definition(tenant, sd.child_workflow, sd.child_version);
      if (next == nullptr || !seen.emplace(next->workflow, next->version).second) continue;
      nodes.push_back({next, at, sd.id, nodes[at].distance + 1});
    }
  }
  return std::nullopt;
}

}  // namespace

void orchestrator::decider::publish_definition(const input& in, const fbs::Envelope& env) {
  auto p = env.payload_as_PublishDefinition();
  const std::string_view tenant = sv(env.tenant_id());
  if (sv(p->params_json()).size() > limits::payload_bytes_max) {
    return reject(in, &env, rejection_code::payload_too_large,
                  fmt::format("params_json is {} bytes; payload_bytes_max is {}",
                              sv(p->params_json()).size(), limits::payload_bytes_max));
  }
  auto parsed = parse_definition(sv(p->definition_json()), sv(p->params_json()));
  if (!parsed) return reject(in, &env, parsed.error().code, parsed.error().reason);
  const definition& d = *parsed;
  if (const definition* existing = _s.find_definition(tenant, d.workflow, d.version)) {
    return reject(
        in, &env, rejection_code::version_conflict,
        existing->normalized_json == d.normalized_json
            ? fmt::format("{} v{} is already published with this content", d.workflow, d.version)
            : fmt::format("{} v{} is already published with other content; publish "
                          "a new version",
                          d.workflow, d.version));
  }
  if (auto cycle = call_cycle(_s, tenant, d)) {
    return reject(in, &env, rejection_code::definition_cycle, *cycle);
  }
  emit_tenant_event(tenant, fbs::Payload::DefinitionPublished, [&](auto& b) {
    return fbs::CreateDefinitionPublished(b, str(d.workflow), d.version, str(d.normalized_json),
                                          static_cast<uint32_t>(d.steps.size()))
        .Union();
  });
}

void orchestrator::decider::publish_policy(const input& in, const fbs::Envelope& env) {
  const std::string_view tenant = sv(env.tenant_id());
  auto parsed = parse_tenant_policy(sv(env.payload_as_PublishTenantPolicy()->policy_json()));
  if (!parsed) return reject(in, &env, parsed.error().code, parsed.error().reason);
  const uint32_t version = _s.policy_version(tenant) + 1;
  emit_tenant_event(tenant, fbs::Payload::TenantPolicyPublished, [&](auto& b) {
    return fbs::CreateTenantPolicyPublished(b, version, str(parsed->normalized_json)).Union();
  });
}

void orchestrator::decider::start_execution(const input& in, const fbs::Envelope& env) {
  auto p = env.payload_as_StartExecution();
  const std::string_view tenant = sv(env.tenant_id());
  const std::string_view id = sv(env.execution_id());
  if (!valid_id(id)) {
    return reject(in, &env, rejection_code::missing_field,
                  fmt::format("execution id '{}' is empty, longer than {} bytes or not made of "
                              "[A-Za-z0-9_.:-]",
                              id, limits::id_bytes_max));
  }
  if (!_s.tenant_known(tenant)) {
    return reject(in, &env, rejection_code::unknown_tenant,
                  fmt::format("tenant '{}' has no published workflows", tenant));
  }
  const definition* d = _s.find_definition(tenant, sv(p->workflow()), p->version());
  if (!d) {
    return reject(in, &env, rejection_code::unknown_workflow,
                  p->version() == 0
                      ? fmt::format("workflow '{}' is not published for tenant '{}'",
                                    sv(p->workflow()), tenant)
                      : fmt::format("workflow '{}' v{} is not published for tenant '{}'",
                                    sv(p->workflow()), p->version(), tenant));
  }
  if (_s.find_execution(tenant, id)) {
    return reject(in, &env, rejection_code::duplicate_execution,
                  fmt::format("execution '{}' already exists", id));
  }
  const std::string_view input_json = sv(p->input_json());
  if (input_json.size() > limits::payload_bytes_max) {
    return reject(in, &env, rejection_code::payload_too_large,
                  fmt::format("input is {} bytes; payload_bytes_max is {}", input_json.size(),
                              limits::payload_bytes_max));
  }
  bool too_deep = false;
  json parsed = parse_value(input_json.empty() ? std::string_view("{}") : input_json, too_deep);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return reject(in, &env, rejection_code::invalid_input, "input is not a JSON object");
  }
  if (too_deep) {
    return reject(in, &env, rejection_code::invalid_input,
                  fmt::format("input is nested deeper than {} levels (json_value_depth_max)",
                              limits::json_value_depth_max));
  }
  const std::string normalized_input = parsed.dump();
  execution_state probe_exec;
  probe_exec.tenant = tenant;
  probe_exec.id = id;
  // ExecutionStarted's applier creates the execution; emit it through a temporary whose
  // chain starts empty.
  execution_state* e = &probe_exec;
  emit(*e, fbs::Payload::ExecutionStarted, [&](auto& b) {
    return fbs::CreateExecutionStarted(b, str(d->workflow), d->version, str(normalized_input))
        .Union();
  });
  e = _s.find_execution(tenant, id);
  vassert(e != nullptr, "ExecutionStarted did not create {}", id);
  _o._probe.executions_started.fetch_add(1, std::memory_order_relaxed);
  advance(*e);
  deliver_held(*e);
}

// The running execution a cancel names, or null after rejecting the command. A cancel for an
// unknown execution is not held (processors/README.md, Signals before their start).
execution_state* orchestrator::decider::running_execution(const input& in,
                                                          const fbs::Envelope& env) {
  execution_state* e = _s.find_execution(sv(env.tenant_id()), sv(env.execution_id()));
  if (!e) {
    reject(in, &env, rejection_code::unknown_execution,
           fmt::format("no execution '{}' for tenant '{}'", sv(env.execution_id()),
                       sv(env.tenant_id())));
    return nullptr;
  }
  if (e->status != exec_status::running) {
    reject(in, &env, rejection_code::execution_finished,
           fmt::format("execution '{}' has {}", e->id, exec_status_name(e->status)));
    return nullptr;
  }
  return e;
}

void orchestrator::decider::signal(const input& in, const fbs::Envelope& env) {
  auto p = env.payload_as_Signal();
  execution_state* e = _s.find_execution(sv(env.tenant_id()), sv(env.execution_id()));
  if (e && e->status != exec_status::running) {
    return reject(in, &env, rejection_code::execution_finished,
                  fmt::format("execution '{}' has {}", e->id, exec_status_name(e->status)));
  }
  const std::string_view payload = sv(p->payload_json());
  if (payload.size() > limits::payload_bytes_max) {
    return reject(in, &env, rejection_code::payload_too_large,
                  fmt::format("signal payload is {} bytes; payload_bytes_max is {}", payload.size(),
                              limits::payload_bytes_max));
  }
  bool too_deep = false;
  json parsed = parse_value(payload.empty() ? std::string_view("{}") : payload, too_deep);
  if (parsed.is_discarded()) {
    return reject(in, &env, rejection_code::invalid_input, "signal payload is not JSON");
  }
  if (too_deep) {
    return reject(in, &env, rejection_code::invalid_input,
                  fmt::format("signal payload is nested deeper than {} levels "
                              "(json_value_depth_max)",
                              limits::json_value_depth_max));
  }
  if (sv(p->name()).empty()) {
    return reject(in, &env, rejection_code::missing_field, "signal has no name");
  }
  if (!ids::valid_name(sv(p->name()))) {
    return reject(in, &env, rejection_code::missing_field,
                  fmt::format("signal name {:?} is invalid: {}, as in definitions",
                              echo_text(sv(p->name()), 64), ids::name_rule));
  }
  const std::string normalized = parsed.dump();
  const std::string name(sv(p->name()));
  if (!e) return hold_signal(in, env, name, normalized);
  deliver_signal(*e, name, normalized);
}

void orchestrator::decider::deliver_signal(execution_state& e, const std::string& name,
                                           const std::string& payload) {
  if (!emit(e, fbs::Payload::SignalReceived, [&](auto& b) {
        return fbs::CreateSignalReceived(b, str(name), str(payload)).Union();
      })) {
    return;
  }
  const definition& d = def(e);
  for (uint16_t i = 0; i < d.steps.size(); ++i) {
    if (e.steps[i].status == step_status::waiting && d.steps[i].signal == name) {
      succeed_step(e, i, payload);
      return;
    }
  }
}

// A signal for an execution id this partition does not know: its start may be on its way
// (forwarded from the wrong partition), so it is held for limits::signal_hold_ms rather than
// rejected. Not held (rejected at once, unknown_execution as before): an id no start could
// have, a tenant with no published workflow (no start can be accepted), or over a limit.
void orchestrator::decider::hold_signal(const input& in, const fbs::Envelope& env,
                                        const std::string& name, const std::string& payload) {
  const std::string_view tenant = sv(env.tenant_id());
  const std::string_view id = sv(env.execution_id());
  const std::string unknown = fmt::format("no execution '{}' for tenant '{}'", id, tenant);
  if (!valid_id(id) || !_s.tenant_known(tenant)) {
    return reject(in, &env, rejection_code::unknown_execution, unknown);
  }
  const std::vector<held_signal>* held = _s.held(tenant, id);
  const orchestrator_state::held_totals totals = _s.held_of_tenant(tenant);
  if (held && held->size() >= limits::signals_held_per_execution_max) {
    return reject(in, &env, rejection_code::unknown_execution,
                  fmt::format("{}; not held: {} signals are held for it already "
                              "(signals_held_per_execution_max)",
                              unknown, held->size()));
  }
  if (totals.signals >= limits::signals_held_per_tenant_max) {
    return reject(in, &env, rejection_code::unknown_execution,
                  fmt::format("{}; not held: the tenant has {} signals held for executions not "
                              "started yet (signals_held_per_tenant_max)",
                              unknown, totals.signals));
  }
  const size_t bytes = name.size() + payload.size();
  if (totals.bytes + bytes > limits::signals_held_bytes_per_tenant_max) {
    return reject(
        in, &env, rejection_code::unknown_execution,
        fmt::format("{}; not held: the tenant's held signals would take {} bytes, more "
                    "than {} (signals_held_bytes_per_tenant_max)",
                    unknown, totals.bytes + bytes, limits::signals_held_bytes_per_tenant_max));
  }
  // One window per execution id, opened by its first held signal.
  const int64_t expires_at =
      held ? held->front().expires_at_ms : _ctx.now_ms() + limits::signal_hold_ms;
  emit_tenant_event(tenant, fbs::Payload::SignalHeld, [&](auto& b) {
    return fbs::CreateSignalHeld(b, str(id), str(name), str(payload), str(_causation), in.partition,
                                 in.rec.offset, expires_at)
        .Union();
  });
}

// Right after a start: the signals held for the new execution, in arrival order, each decided
// as if it had arrived now (and caused by its own command).
void orchestrator::decider::deliver_held(execution_state& e) {
  const std::vector<held_signal>* held = _s.held(e.tenant, e.id);
  if (!held) return;
  const std::vector<held_signal> signals = *held;  // the release empties the hold
  emit_tenant_event(e.tenant, fbs::Payload::HeldSignalsReleased, [&](auto& b) {
    return fbs::CreateHeldSignalsReleased(b, str(e.id), static_cast<uint32_t>(signals.size()),
                                          fbs::HeldSignalsOutcome::Delivered)
        .Union();
  });
  const std::string start_causation = std::move(_causation);
  for (const held_signal& h : signals) {
    _causation = h.command_id;
    if (e.status != exec_status::running) {
      reject(held_source(e.tenant, e.id, h), rejection_code::execution_finished,
             fmt::format("execution '{}' has {}", e.id, exec_status_name(e.status)));
      continue;
    }
    deliver_signal(e, h.name, h.payload_json);
  }
  _causation = start_causation;
}

// The hold window of an execution id ended before its start arrived: each signal held for it
// is rejected as it would have been on arrival, referencing its own command.
void orchestrator::decider::expire_held(const timer_entry& t) {
  const std::vector<held_signal>* held = _s.held(t.tenant, t.execution);
  vassert(held != nullptr, "hold window timer of {} without held signals", t.execution);
  const std::vector<held_signal> signals = *held;  // the release empties the hold
  emit_tenant_event(t.tenant, fbs::Payload::HeldSignalsReleased, [&](auto& b) {
    return fbs::CreateHeldSignalsReleased(b, str(t.execution),
                                          static_cast<uint32_t>(signals.size()),
                                          fbs::HeldSignalsOutcome::Expired)
        .Union();
  });
  for (const held_signal& h : signals) {
    reject(held_source(t.tenant, t.execution, h), rejection_code::unknown_execution,
           fmt::format("no execution '{}' for tenant '{}': the signal was held {} ms "
                       "(signal_hold_ms {}) and no start arrived",
                       t.execution, t.tenant, _ctx.now_ms() - h.held_ms, limits::signal_hold_ms));
  }
}

void orchestrator::decider::cancel(const input& in, const fbs::Envelope& env) {
  execution_state* e = running_execution(in, env);
  if (!e) return;
  const std::string reason(sv(env.payload_as_CancelExecution()->reason()));
  emit(*e, fbs::Payload::ExecutionCancelled,
       [&](auto& b) { return fbs::CreateExecutionCancelled(b, str(reason)).Union(); });
  _o._probe.executions_ended.fetch_add(1, std::memory_order_relaxed);
}

// ------------------------------------------------------------------------------------ acks

void orchestrator::decider::on_ack(const input& in, const fbs::Envelope& env) {
  if (env.payload_type() != fbs::Payload::StepAck) {
    return reject(
        in, &env, rejection_code::wrong_record,
        fmt::format("acks takes StepAck records; got {}", payload_name(env.payload_type())));
  }
  if (_o._options.forward_misplaced && valid_id(sv(env.tenant_id()))) {
    // An ack of a command issued before its tenant moved away follows the tenant.
    if (auto owner = owner_elsewhere(sv(env.tenant_id()), in.partition)) return forward(in, *owner);
  }
  auto ack = env.payload_as_StepAck();
  execution_state* e = _s.find_execution(sv(env.tenant_id()), sv(env.execution_id()));
  if (!e) {
    return reject(in, &env, rejection_code::unknown_execution,
                  fmt::format("ack for unknown execution '{}'", sv(env.execution_id())));
  }
  const definition& d = def(*e);
  if (auto item = parse_item_step(sv(ack->step()))) {
    return on_item_ack(in, env, *e, item->first, item->second);
  }
  const int idx = d.step_index(sv(ack->step()));
  if (idx < 0) {
    return reject(in, &env, rejection_code::wrong_record,
                  fmt::format("ack names step '{}', which workflow {} v{} does not have",
                              sv(ack->step()), d.workflow, d.version));
  }
  const step_state& st = e->steps[idx];
  const uint16_t i = static_cast<uint16_t>(idx);
  if (e->status != exec_status::running || st.status != step_status::running ||
      st.attempt != ack->attempt()) {
    // Duplicate (redelivered) or stale (old attempt, finished step): the first ack won. A
    // late answer of an earlier routed attempt still cost money: its usage is recorded once.
    if (e->status == exec_status::running) record_usage(*e, i, ack->attempt(), *ack);
    _o._probe.stale_acks.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  _o._probe.step_transitions.fetch_add(1, std::memory_order_relaxed);
  record_usage(*e, i, ack->attempt(), *ack);
  if (e->status != exec_status::running) return;  // the history limit ended it
  const std::string_view output = sv(ack->output_json());
  switch (ack->status()) {
    case fbs::AckStatus::Success: {
      if (output.size() > limits::payload_bytes_max) {
        return step_failed(*e, i, st.attempt,
                           fmt::format("output is {} bytes; payload_bytes_max is {}", output.size(),
                                       limits::payload_bytes_max));
      }
      json parsed = json::parse(output.empty() ? std::string_view("{}") : output, nullptr, false);
      if (parsed.is_discarded()) return step_failed(*e, i, st.attempt, "output is not JSON");
      return succeed_step(*e, i, parsed.dump());
    }
    case fbs::AckStatus::RetryableFailure:
      if (try_failover(*e, i, sv(ack->error()))) return;
      return retry_or_fail(*e, i, sv(ack->error()));
    case fbs::AckStatus::PermanentFailure:
      if (try_failover(*e, i, sv(ack->error()))) return;
      return step_failed(*e, i, st.attempt, sv(ack->error()));
  }
}

// ---------------------------------------------------------------------------- tenant moves

std::optional<uint32_t> orchestrator::decider::owner_elsewhere(std::string_view tenant,
                                                               uint32_t here) const {
  if (const placement_entry* p = _s.placement(tenant)) {
    switch (p->ph) {
      case placement_entry::phase::here:
        return std::nullopt;
      case placement_entry::phase::moved_out:
        return p->partition;
      case placement_entry::phase::installing:
        return here;
    }
  }
  const uint32_t base = _o._options.base ? _o._options.base : _o._options.partitions;
  const uint32_t home = tenant_partition(tenant, base);
  if (home == here) return std::nullopt;
  return home;
}

// The record goes on, as it came, to the partition that decides for its tenant (which may send
// it on again, if the tenant moved on from there). Committed with this batch's positions, so it
// is forwarded exactly once.
void orchestrator::decider::forward(const input& in, uint32_t to) {
  _ctx.append_to(in.s, to, in.rec.key, in.rec.value);
  _o._probe.forwarded.fetch_add(1, std::memory_order_relaxed);
}

struct orchestrator::move_export {
  std::string tenant;
  result<orchestrator_state::tenant_export> state;
};

namespace {

hash256 chunk_digest(const std::vector<std::pair<std::string, std::string>>& entries, size_t from,
                     size_t to) {
  std::string bytes;
  for (size_t i = from; i < to; ++i) {
    keys::put_be32(bytes, static_cast<uint32_t>(entries[i].first.size()));
    bytes += entries[i].first;
    keys::put_be32(bytes, static_cast<uint32_t>(entries[i].second.size()));
    bytes += entries[i].second;
  }
  return sha256(bytes);
}

hash256 chain_digest(const hash256& rolling, const hash256& chunk) {
  std::string bytes(rolling.begin(), rolling.end());
  bytes.append(chunk.begin(), chunk.end());
  return sha256(bytes);
}

bool same_hash(const flatbuffers::Vector<uint8_t>* v, const hash256& h) {
  return v && v->size() == h.size() && std::equal(h.begin(), h.end(), v->begin());
}

}  // namespace

// Runs alone in its batch (a barrier): everything decided before it is in the store, which is
// what the prefetch exported. In one commit: TenantMovedOut here (the tenant's state is dropped
// from this partition), and the state, in chunks, on the target's ingress.
void orchestrator::decider::move_tenant(const input& in, const fbs::Envelope& env) {
  const std::string tenant(sv(env.tenant_id()));
  const uint32_t to = env.payload_as_MoveTenant()->to_partition();
  const uint32_t partitions = _o._options.partitions;
  if (to >= partitions) {
    return reject(in, &env, rejection_code::invalid_move,
                  fmt::format("partition {} does not exist: the log has {} partitions (0..{})", to,
                              partitions, partitions - 1));
  }
  if (std::ranges::find(_o._options.retired, to) != _o._options.retired.end()) {
    return reject(
        in, &env, rejection_code::invalid_move,
        fmt::format("partition {} is retired (partitions scale): it takes no tenants", to));
  }
  if (to == in.partition) {
    return reject(in, &env, rejection_code::invalid_move,
                  fmt::format("tenant '{}' is already on partition {}", tenant, to));
  }
  const move_export* ex = _o._export.get();
  vassert(ex && ex->tenant == tenant, "move of {} decided without its prefetched state", tenant);
  if (!ex->state) {
    return reject(
        in, &env, rejection_code::invalid_move,
        fmt::format("reading tenant '{}''s state failed: {}", tenant, ex->state.error().message));
  }
  const auto& entries = ex->state->entries;
  if (ex->state->bytes > limits::move_state_bytes_max) {
    return reject(in, &env, rejection_code::invalid_move,
                  fmt::format("tenant '{}' holds {} bytes of state; move_state_bytes_max is {}",
                              tenant, ex->state->bytes, limits::move_state_bytes_max));
  }
  // Chunks: [first entry, end) ranges of about move_chunk_bytes_max.
  std::vector<std::pair<size_t, size_t>> chunks;
  size_t from = 0, bytes = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const size_t n = entries[i].first.size() + entries[i].second.size();
    if (n > limits::move_entry_bytes_max) {
      return reject(in, &env, rejection_code::invalid_move,
                    fmt::format("an entry of tenant '{}''s state is {} bytes; "
                                "move_entry_bytes_max is {}",
                                tenant, n, limits::move_entry_bytes_max));
    }
    if (i > from && bytes + n > limits::move_chunk_bytes_max) {
      chunks.emplace_back(from, i);
      from = i;
      bytes = 0;
    }
    bytes += n;
  }
  chunks.emplace_back(from, entries.size());  // at least one, maybe empty
  std::vector<hash256> digests;
  hash256 rolling{};
  for (const auto& [a, b] : chunks) {
    digests.push_back(chunk_digest(entries, a, b));
    rolling = chain_digest(rolling, digests.back());
  }
  const placement_entry* was = _s.placement(tenant);
  const uint32_t epoch = (was ? was->epoch : 0) + 1;
  const uint32_t chain_before = _s.chain(tenant).event_count;
  const auto count = static_cast<uint32_t>(chunks.size());
  const hash256 moved_out = emit_tenant_event(tenant, fbs::Payload::TenantMovedOut, [&](auto& b) {
    return fbs::CreateTenantMovedOut(b, to, epoch, count, static_cast<uint32_t>(entries.size()),
                                     ex->state->bytes, ex->state->running,
                                     b.CreateVector(rolling.data(), rolling.size()))
        .Union();
  });
  for (uint32_t seq = 0; seq < count; ++seq) {
    flatbuffers::FlatBufferBuilder fbb(limits::move_chunk_bytes_max + 4096);
    std::vector<flatbuffers::Offset<fbs::StateEntry>> list;
    for (size_t i = chunks[seq].first; i < chunks[seq].second; ++i) {
      const auto& [k, v] = entries[i];
      list.push_back(fbs::CreateStateEntry(
          fbb, fbb.CreateVector(reinterpret_cast<const uint8_t*>(k.data()), k.size()),
          fbb.CreateVector(reinterpret_cast<const uint8_t*>(v.data()), v.size())));
    }
    const bool last = seq + 1 == count;
    using bytes_offset = flatbuffers::Offset<flatbuffers::Vector<uint8_t>>;
    auto payload = fbs::CreateTenantStateChunk(
        fbb, in.partition, to, epoch, seq, count, fbb.CreateVector(list),
        fbb.CreateVector(digests[seq].data(), digests[seq].size()),
        last ? fbb.CreateVector(rolling.data(), rolling.size()) : bytes_offset(),
        last ? chain_before + 1 : 0,
        last ? fbb.CreateVector(moved_out.data(), moved_out.size()) : bytes_offset());
    const std::string record_id = fmt::format("move/{}/{}/{}", tenant, epoch, seq);
    envelope_header h;
    h.kind = fbs::RecordKind::Command;
    h.tenant_id = tenant;
    h.record_id = record_id;
    h.causation_id = _causation;
    h.timestamp_ms = _ctx.now_ms();
    _ctx.append_to(stream::ingress, to, tenant,
                   finish_envelope(fbb, h, fbs::Payload::TenantStateChunk, payload.Union()));
  }
  _o._probe.tenants_moved_out.fetch_add(1, std::memory_order_relaxed);
}

// A chunk of a tenant moving here. Chunks arrive in order, right behind each other in the
// source's transaction; each is checked against its digest and installed with an event that
// carries it; the last one completes the move.
void orchestrator::decider::install_chunk(const input& in, const fbs::Envelope& env) {
  const std::string tenant(sv(env.tenant_id()));
  const fbs::TenantStateChunk* c = env.payload_as_TenantStateChunk();
  if (c->to_partition() != in.partition || c->count() == 0 || c->seq() >= c->count()) {
    return reject(in, &env, rejection_code::wrong_record,
                  fmt::format("state chunk {} of {} for partition {} arrived on partition {}",
                              c->seq(), c->count(), c->to_partition(), in.partition));
  }
  const placement_entry* p = _s.placement(tenant);
  const bool installing = p && p->ph == placement_entry::phase::installing;
  const bool expected = c->seq() == 0
                            ? !installing && (!p || p->epoch < c->epoch())
                            : installing && p->epoch == c->epoch() && p->next_seq == c->seq();
  if (!expected) {
    return reject(in, &env, rejection_code::wrong_record,
                  fmt::format("state chunk {} of tenant '{}' epoch {} out of order (placement "
                              "here: {})",
                              c->seq(), tenant, c->epoch(),
                              p ? fmt::format("phase {} epoch {} next chunk {}",
                                              static_cast<int>(p->ph), p->epoch, p->next_seq)
                                : std::string("none")));
  }
  std::vector<std::pair<std::string, std::string>> entries;
  if (c->entries()) {
    for (const fbs::StateEntry* e : *c->entries()) {
      entries.emplace_back(std::string(sv(e->key())), std::string(sv(e->value())));
    }
  }
  const hash256 digest = chunk_digest(entries, 0, entries.size());
  const bool last = c->seq() + 1 == c->count();
  if (!same_hash(c->digest(), digest) ||
      (last &&
       !same_hash(c->state_digest(), chain_digest(installing ? p->rolling : hash256{}, digest)))) {
    return reject(in, &env, rejection_code::wrong_record,
                  fmt::format("state chunk {} of tenant '{}' epoch {} fails its digest check",
                              c->seq(), tenant, c->epoch()));
  }
  // The event carries the chunk as it came (a verbatim copy of the table).
  flatbuffers::FlatBufferBuilder fbb(in.rec.value.size() + 1024);
  std::vector<flatbuffers::Offset<fbs::StateEntry>> list;
  for (const auto& [k, v] : entries) {
    list.push_back(fbs::CreateStateEntry(
        fbb, fbb.CreateVector(reinterpret_cast<const uint8_t*>(k.data()), k.size()),
        fbb.CreateVector(reinterpret_cast<const uint8_t*>(v.data()), v.size())));
  }
  auto bytes_of = [&](const flatbuffers::Vector<uint8_t>* v) {
    return v ? fbb.CreateVector(v->data(), v->size())
             : flatbuffers::Offset<flatbuffers::Vector<uint8_t>>();
  };
  auto chunk = fbs::CreateTenantStateChunk(fbb, c->from_partition(), c->to_partition(), c->epoch(),
                                           c->seq(), c->count(), fbb.CreateVector(list),
                                           bytes_of(c->digest()), bytes_of(c->state_digest()),
                                           c->chain_events(), bytes_of(c->chain_hash()));
  auto payload = fbs::CreateTenantStateInstalled(fbb, chunk);
  const std::string record_id = fmt::format("move/{}/{}/{}", tenant, c->epoch(), c->seq());
  envelope_header h;
  h.kind = fbs::RecordKind::Event;
  h.tenant_id = tenant;
  h.record_id = record_id;
  h.causation_id = _causation;
  h.timestamp_ms = _ctx.now_ms();
  std::string event = finish_envelope(fbb, h, fbs::Payload::TenantStateInstalled, payload.Union());
  const record_position where = _ctx.append_event(tenant, event);
  apply_record(_s, where, event);
  if (!last) return;
  emit_tenant_event(tenant, fbs::Payload::TenantMovedIn, [&](auto& b) {
    return fbs::CreateTenantMovedIn(
               b, c->from_partition(), in.partition, c->epoch(), c->count(),
               b.CreateVector(c->state_digest()->data(), c->state_digest()->size()))
        .Union();
  });
  _o._probe.tenants_moved_in.fetch_add(1, std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------------- timers

void orchestrator::decider::on_timer(const timer_entry& t) {
  if (t.step == timer_entry::hold_window) return expire_held(t);
  execution_state* e = _s.find_execution(t.tenant, t.execution);
  vassert(e != nullptr && e->status == exec_status::running,
          "timer for execution {} that is not running", t.execution);
  if (t.is_item()) return on_item_timer(*e, t.item_step(), t.item_index());
  const definition& d = def(*e);
  const uint16_t i = t.step;
  const step_state& st = e->steps[i];
  const step_status status = st.status;
  const uint32_t attempt = st.attempt;
  const std::string step_id = d.steps[i].id;
  if (!emit(*e, fbs::Payload::TimerFired, [&](auto& b) {
        return fbs::CreateTimerFired(b, str(step_id), attempt, timer_purpose(status)).Union();
      })) {
    return;
  }
  _o._probe.step_transitions.fetch_add(1, std::memory_order_relaxed);
  switch (status) {
    case step_status::retry_wait:
      return schedule_attempt(*e, i, attempt + 1);
    case step_status::delaying:
      return succeed_step(*e, i, fmt::format("{{\"delayed_ms\":{}}}", d.steps[i].delay_ms));
    case step_status::deferred: {
      // The deferral ended: ask the policy again (it may have changed meanwhile).
      auto rendered = render_template(d.steps[i].input_template, scope(*e, d));
      if (!rendered) return step_failed(*e, i, attempt, rendered.error());
      const tenant_policy* tp = _s.policy(e->tenant);
      const notify_policy none;
      return notify_or_hold(*e, i, attempt, *rendered, tp && tp->notify ? *tp->notify : none);
    }
    case step_status::running:
    case step_status::waiting:
      if (!emit(*e, fbs::Payload::StepTimedOut, [&](auto& b) {
            return fbs::CreateStepTimedOut(b, str(step_id), attempt).Union();
          })) {
        return;
      }
      if (status == step_status::running && try_failover(*e, i, "timed out")) return;
      if (status == step_status::running &&
          e->steps[i].retry_attempts() < d.steps[i].retry.max_attempts) {
        return retry_or_fail(*e, i, "timed out");
      }
      return after_failure(*e, i);
    default:
      vassert(false, "timer for step {} in state {}", step_id, step_status_name(status));
  }
}

// ------------------------------------------------------------------------- step lifecycle

template_scope orchestrator::decider::scope(const execution_state& e, const definition& d) {
  template_scope sc;
  sc.tenant_id = e.tenant;
  sc.execution_id = e.id;
  sc.workflow = e.workflow;
  sc.input_json = e.input_json;
  sc.now_ms = _ctx.now_ms();
  sc.step = [&e, &d](std::string_view id, std::string_view& status, std::string_view& output,
                     std::string_view& error) {
    const int idx = d.step_index(id);
    if (idx < 0) return false;
    const step_state& st = e.steps[idx];
    status = step_status_name(st.status);
    output = st.status == step_status::succeeded ? std::string_view(st.output_json) : "";
    error = st.error;
    return true;
  };
  return sc;
}

void orchestrator::decider::advance(execution_state& e) {
  const definition& d = def(e);
  bool progressed = true;
  while (progressed && e.status == exec_status::running) {
    progressed = false;
    for (uint16_t idx : d.topo_order) {
      if (e.status != exec_status::running) return;
      if (e.steps[idx].status != step_status::pending) continue;
      const step_def& sd = d.steps[idx];
      bool ready = true;
      for (uint16_t dep : sd.after) ready = ready && step_resolved(e.steps[dep].status);
      if (!ready) continue;
      progressed = true;
      if (auto why = branch_not_taken(e, d, idx)) {
        emit(e, fbs::Payload::StepSkipped,
             [&](auto& b) { return fbs::CreateStepSkipped(b, str(sd.id), str(*why)).Union(); });
        continue;
      }
      if (sd.when) {
        auto holds = evaluate_condition(*sd.when, scope(e, d));
        if (!holds) {
          step_failed(e, idx, 0, holds.error());
          continue;
        }
        if (!*holds) {
          const std::string reason =
              sd.when->operation == condition::op::expression
                  ? fmt::format("condition not met: {}", clip_error(sd.when->path))
                  : fmt::format("condition on {} not met", sd.when->path);
          emit(e, fbs::Payload::StepSkipped,
               [&](auto& b) { return fbs::CreateStepSkipped(b, str(sd.id), str(reason)).Union(); });
          continue;
        }
      }
      schedule_attempt(e, idx, 1);
    }
  }
  if (e.status != exec_status::running) return;
  for (const step_state& st : e.steps) {
    if (!step_resolved(st.status)) return;
  }
  const std::string output = execution_output(e, d);
  emit(e, fbs::Payload::ExecutionSucceeded,
       [&](auto& b) { return fbs::CreateExecutionSucceeded(b, str(output)).Union(); });
  _o._probe.executions_ended.fetch_add(1, std::memory_order_relaxed);
}

// Why step `idx` (whose dependencies are all resolved) is skipped for a branch not taken, or
// nullopt if it is not (processors/DEFINITIONS.md, Branches):
//   - a target of a switch that did not take its case (or did not succeed) is not taken;
//   - a step any of whose dependencies was skipped that way is not taken either, unless it
//     joins: a join is not taken only when all of its dependencies were skipped that way.
// A skip by `when` does not propagate, as before switches existed. Computed from the resolved
// dependencies' state alone, so it gives the same answer whenever it is asked.
std::optional<std::string> orchestrator::decider::branch_not_taken(const execution_state& e,
                                                                   const definition& d,
                                                                   uint16_t idx) {
  const step_def& sd = d.steps[idx];
  size_t not_taken = 0;
  std::optional<std::string> first;
  for (uint16_t dep : sd.after) {
    const step_def& dd = d.steps[dep];
    std::optional<std::string> why;
    if (dd.kind == step_kind::switch_ && is_switch_target(dd, idx)) {
      const std::string taken = switch_taken(e.steps[dep]);
      if (taken.empty()) {
        why = fmt::format("branch not taken: switch '{}' ended {}", dd.id,
                          step_status_name(e.steps[dep].status));
      } else if (!in_case(dd, taken, idx)) {
        why = fmt::format("branch not taken: switch '{}' took case '{}'", dd.id, taken);
      }
    }
    if (!why && e.steps[dep].status == step_status::skipped && branch_not_taken(e, d, dep)) {
      why = fmt::format("branch not taken: '{}' was on a branch not taken", dd.id);
    }
    if (why) {
      ++not_taken;
      if (!first) first = std::move(why);
    }
  }
  if (not_taken == 0) return std::nullopt;
  if (sd.join && not_taken < sd.after.size()) return std::nullopt;
  return first;
}

bool orchestrator::decider::is_switch_target(const step_def& sw, uint16_t idx) {
  if (std::ranges::find(sw.default_then, idx) != sw.default_then.end()) return true;
  return std::ranges::any_of(sw.cases, [idx](const switch_case& c) {
    return std::ranges::find(c.then, idx) != c.then.end();
  });
}

bool orchestrator::decider::in_case(const step_def& sw, std::string_view taken, uint16_t idx) {
  if (taken == default_case_name) {
    return std::ranges::find(sw.default_then, idx) != sw.default_then.end();
  }
  for (const switch_case& c : sw.cases) {
    if (c.name == taken) return std::ranges::find(c.then, idx) != c.then.end();
  }
  return false;
}

// The case a succeeded switch took ({"case": name}), "" if it did not succeed.
std::string orchestrator::decider::switch_taken(const step_state& st) {
  if (st.status != step_status::succeeded) return "";
  const json out = json::parse(st.output_json, nullptr, false);
  if (!out.is_object() || !out.contains("case") || !out["case"].is_string()) return "";
  return out["case"].get<std::string>();
}

std::string orchestrator::decider::execution_output(const execution_state& e, const definition& d) {
  // The outputs of the succeeded steps nothing depends on: the workflow's results.
  std::vector<bool> has_dependent(d.steps.size(), false);
  for (const step_def& s : d.steps) {
    for (uint16_t dep : s.after) has_dependent[dep] = true;
  }
  json out = json::object();
  for (size_t i = 0; i < d.steps.size(); ++i) {
    if (has_dependent[i] || e.steps[i].status != step_status::succeeded) continue;
    json v = json::parse(e.steps[i].output_json, nullptr, false);
    out[d.steps[i].id] = v.is_discarded() ? json(e.steps[i].output_json) : v;
  }
  return out.dump();
}

void orchestrator::decider::schedule_attempt(execution_state& e, uint16_t idx, uint32_t attempt) {
  const definition& d = def(e);
  const step_def& sd = d.steps[idx];
  if (sd.kind == step_kind::compute || sd.kind == step_kind::switch_) {
    return decide_inline(e, idx, attempt);
  }
  if (sd.kind == step_kind::foreach) return start_foreach(e, idx);
  if (sd.kind == step_kind::workflow) return start_child(e, idx, attempt);
  auto rendered = render_template(sd.input_template, scope(e, d));
  if (!rendered) return step_failed(e, idx, attempt, rendered.error());
  if (sd.kind == step_kind::ai) {
    if (const tenant_policy* tp = _s.policy(e.tenant); tp && tp->ai) {
      const ai_choice c = choose_ai(e, idx, *tp->ai, *rendered, "", "");
      if (!c.candidate) {
        // Recorded so an auditor sees the budget (or the candidate list) stopped the step.
        if (!emit_ai_routed(e, idx, attempt, c)) return;
        return step_failed(e, idx, attempt, c.reason);
      }
      return start_attempt(e, idx, attempt, *rendered, &c);
    }
  }
  start_attempt(e, idx, attempt, *rendered, nullptr);
}

// compute and switch steps decide here and now: StepScheduled then StepSucceeded (or
// StepFailed) in the same decision, with no command and no timer.
void orchestrator::decider::decide_inline(execution_state& e, uint16_t idx, uint32_t attempt) {
  const definition& d = def(e);
  const step_def& sd = d.steps[idx];
  std::string output;
  std::string error;
  if (sd.kind == step_kind::compute) {
    auto rendered = render_template(sd.output_template, scope(e, d));
    if (rendered) {
      output = std::move(*rendered);
    } else {
      error = rendered.error();
    }
  } else {
    std::string taken(default_case_name);
    for (const switch_case& c : sd.cases) {
      auto holds =
          evaluate_condition(condition{c.when, condition::op::expression, ""}, scope(e, d));
      if (!holds) {
        error = fmt::format("case '{}': {}", c.name, holds.error());
        break;
      }
      if (*holds) {
        taken = c.name;
        break;
      }
    }
    output = json{{"case", taken}}.dump();
  }
  if (!emit(e, fbs::Payload::StepScheduled, [&](auto& b) {
        return fbs::CreateStepScheduled(b, str(sd.id), attempt, str(""),
                                        str(error.empty() ? output : "{}"), 0)
            .Union();
      })) {
    return;
  }
  if (!error.empty()) return step_failed(e, idx, attempt, error);
  succeed_step(e, idx, output);
}

void orchestrator::decider::start_attempt(execution_state& e, uint16_t idx, uint32_t attempt,
                                          const std::string& rendered, const ai_choice* choice) {
  const step_def& sd = def(e).steps[idx];
  const int64_t now = _ctx.now_ms();
  int64_t timer_at = 0;
  switch (sd.kind) {
    case step_kind::delay:
      timer_at = now + static_cast<int64_t>(sd.delay_ms);
      break;
    default: {
      uint64_t limit = sd.timeout_ms;
      if (choice && choice->candidate->latency_ms_max) {
        limit = limit ? std::min(limit, choice->candidate->latency_ms_max)
                      : choice->candidate->latency_ms_max;
      }
      timer_at = limit ? now + static_cast<int64_t>(limit) : 0;
      break;
    }
  }
  const bool has_command =
      sd.kind == step_kind::task || sd.kind == step_kind::ai || sd.kind == step_kind::notify;
  const std::string command_id =
      has_command ? fmt::format("{}/{}/{}", e.id, sd.id, attempt) : std::string();
  if (!emit(e, fbs::Payload::StepScheduled, [&](auto& b) {
        return fbs::CreateStepScheduled(b, str(sd.id), attempt, str(command_id), str(rendered),
                                        timer_at)
            .Union();
      })) {
    return;
  }
  if (choice && !emit_ai_routed(e, idx, attempt, *choice)) return;
  if (sd.kind == step_kind::notify) {
    if (const tenant_policy* tp = _s.policy(e.tenant); tp && tp->notify) {
      return notify_or_hold(e, idx, attempt, rendered, *tp->notify);
    }
  }
  if (has_command) {
    emit_command(e, idx, attempt, rendered, timer_at, choice ? choice->candidate : nullptr);
    return;
  }
  if (sd.kind == step_kind::wait_signal) {
    for (const auto& [name, payload] : e.signals) {
      if (name == sd.signal) {
        const std::string consumed = payload;
        return succeed_step(e, idx, consumed);
      }
    }
  }
}

// ------------------------------------------------------------------------------ sub-workflows

// The child runs in this partition (the same tenant), started and decided in this decision: the
// parent's StepScheduled names it, its own history begins with an ExecutionStarted that names the
// parent, and its first steps follow. Its end is answered in the decision that ends it
// (child_ended), so nothing crosses partitions and nothing waits on a message.
void orchestrator::decider::start_child(execution_state& e, uint16_t idx, uint32_t attempt) {
  const definition& d = def(e);
  const step_def& sd = d.steps[idx];
  auto rendered = render_template(sd.input_template, scope(e, d));
  if (!rendered) return step_failed(e, idx, attempt, rendered.error());
  const std::string child_id = fmt::format("{}/{}/{}", e.id, sd.id, attempt);
  if (auto why = child_problem(e, sd, child_id)) return step_failed(e, idx, attempt, *why);
  if (!emit(e, fbs::Payload::StepScheduled, [&](auto& b) {
        return fbs::CreateStepScheduled(b, str(sd.id), attempt, str(""), str(*rendered), 0,
                                        str(child_id))
            .Union();
      })) {
    return;
  }
  launch_child(e, sd, child_id, sd.id, *rendered);
}

// Why `e` cannot start a child of step `sd` with id `child_id`, or nullopt if it can.
std::optional<std::string> orchestrator::decider::child_problem(const execution_state& e,
                                                                const step_def& sd,
                                                                const std::string& child_id) {
  const std::string target =
      sd.child_version == 0 ? fmt::format("workflow '{}'", sd.child_workflow)
                            : fmt::format("workflow '{}' v{}", sd.child_workflow, sd.child_version);
  if (e.depth + 1 > limits::subworkflow_depth_max) {
    return fmt::format(
        "{} would run at depth {}: subworkflow_depth_max is {} (a recursion "
        "through workflows?)",
        target, e.depth + 1, limits::subworkflow_depth_max);
  }
  if (!_s.find_definition(e.tenant, sd.child_workflow, sd.child_version)) {
    return fmt::format("{} is not published for tenant '{}'", target, e.tenant);
  }
  if (child_id.size() > limits::subworkflow_id_bytes_max) {
    return fmt::format("the child execution id would be {} bytes; subworkflow_id_bytes_max is {}",
                       child_id.size(), limits::subworkflow_id_bytes_max);
  }
  return std::nullopt;
}

// Starts the child (its ExecutionStarted, then its first steps) once the parent's event that
// names it is written. `slot` is the parent's step, or "<step>[<item>]" for a foreach item.
void orchestrator::decider::launch_child(const execution_state& e, const step_def& sd,
                                         const std::string& child_id, std::string_view slot,
                                         const std::string& input) {
  const definition* cd = _s.find_definition(e.tenant, sd.child_workflow, sd.child_version);
  vassert(cd != nullptr, "child definition {} vanished", sd.child_workflow);
  // As for a start from ingress: ExecutionStarted's applier creates the child.
  execution_state start;
  start.tenant = e.tenant;
  start.id = child_id;
  const std::string child_workflow = cd->workflow;
  const uint32_t child_version = cd->version;
  emit(start, fbs::Payload::ExecutionStarted, [&](auto& b) {
    return fbs::CreateExecutionStarted(b, str(child_workflow), child_version, str(input), str(e.id),
                                       str(slot), e.depth + 1)
        .Union();
  });
  execution_state* child = _s.find_execution(e.tenant, child_id);
  vassert(child != nullptr, "ExecutionStarted did not create {}", child_id);
  _o._probe.executions_started.fetch_add(1, std::memory_order_relaxed);
  advance(*child);
}

void orchestrator::decider::cancel_child(const std::string& tenant, const std::string& child_id,
                                         const std::string& reason) {
  execution_state* child = _s.find_execution(tenant, child_id);
  if (!child || child->status != exec_status::running) return;
  _cancelled_by_parent.insert(child_id);
  emit(*child, fbs::Payload::ExecutionCancelled,
       [&](auto& b) { return fbs::CreateExecutionCancelled(b, str(reason)).Union(); });
  _o._probe.executions_ended.fetch_add(1, std::memory_order_relaxed);
}

// Right before `e`'s terminal event: its running children are cancelled (and theirs, through
// their own end). A running child's step or item is running: it resolves only when the child
// ends, and every end cancels the children still out; so ended children, possibly many, are
// never looked up.
void orchestrator::decider::cancel_children(const execution_state& e, std::string_view ending) {
  const std::string reason = fmt::format("parent execution '{}' {}", e.id, ending);
  for (const step_state& st : e.steps) {
    if (st.status == step_status::running && !st.child.empty()) {
      cancel_child(e.tenant, st.child, reason);
    }
    for (const item_state& item : st.items) {
      if (item.status == step_status::running && !item.child.empty()) {
        cancel_child(e.tenant, item.child, reason);
      }
    }
  }
}

// Right after `e`'s terminal event: its parent's step learns the outcome, unless the parent
// itself cancelled it.
void orchestrator::decider::ended(execution_state& e) {
  if (!e.parent.empty() && !_cancelled_by_parent.contains(e.id)) child_ended(e);
}

// The parent's step takes the child's outcome: its output on success; a failure goes through
// the step's retry policy (a new child per attempt) and then its on_failure; a cancelled child
// fails the step at once (someone meant to stop it; retrying would undo that).
void orchestrator::decider::child_ended(const execution_state& child) {
  execution_state* p = _s.find_execution(child.tenant, child.parent);
  // The parent ended first (it cancelled this child), or the link is to an older attempt.
  if (!p || p->status != exec_status::running) return;
  const definition& d = def(*p);
  const auto slot = parse_item_step(child.parent_step);
  const int idx = d.step_index(slot ? slot->first : std::string_view(child.parent_step));
  vassert(idx >= 0, "child {} names step {} its parent's workflow lacks", child.id,
          child.parent_step);
  const auto i = static_cast<uint16_t>(idx);
  if (slot) return item_child_ended(*p, i, slot->second, child);
  const step_state& st = p->steps[i];
  if (st.status != step_status::running || st.child != child.id) return;
  _o._probe.step_transitions.fetch_add(1, std::memory_order_relaxed);
  switch (child.status) {
    case exec_status::succeeded:
      if (child.result.size() > limits::payload_bytes_max) {
        return step_failed(*p, i, st.attempt,
                           fmt::format("child execution '{}' output is {} bytes; "
                                       "payload_bytes_max is {}",
                                       child.id, child.result.size(), limits::payload_bytes_max));
      }
      return succeed_step(*p, i, child.result);
    case exec_status::failed:
      return retry_or_fail(*p, i,
                           fmt::format("child execution '{}' failed: {}", child.id, child.result));
    case exec_status::cancelled:
      return step_failed(
          *p, i, st.attempt,
          fmt::format("child execution '{}' was cancelled: {}", child.id, child.result));
    case exec_status::running:
      vassert(false, "child {} ended running", child.id);
  }
}

// A foreach item's child ended: the item takes its outcome as an item takes an ack's.
void orchestrator::decider::item_child_ended(execution_state& p, uint16_t idx, uint32_t item,
                                             const execution_state& child) {
  const step_state& st = p.steps[idx];
  if (st.status != step_status::running || item >= st.items.size() ||
      st.items[item].status != step_status::running || st.items[item].child != child.id) {
    return;
  }
  _o._probe.step_transitions.fetch_add(1, std::memory_order_relaxed);
  const uint32_t attempt = st.items[item].attempt;
  switch (child.status) {
    case exec_status::succeeded: {
      if (child.result.size() > limits::payload_bytes_max) {
        return item_failed(p, idx, item, attempt,
                           fmt::format("child execution '{}' output is {} bytes; "
                                       "payload_bytes_max is {}",
                                       child.id, child.result.size(), limits::payload_bytes_max));
      }
      const std::string step_id = def(p).steps[idx].id;
      if (!emit(p, fbs::Payload::ItemSucceeded, [&](auto& b) {
            return fbs::CreateItemSucceeded(b, str(step_id), item, attempt, str(child.result))
                .Union();
          })) {
        return;
      }
      return foreach_progress(p, idx);
    }
    case exec_status::failed:
      return item_retry_or_fail(
          p, idx, item, fmt::format("child execution '{}' failed: {}", child.id, child.result));
    case exec_status::cancelled:
      return item_failed(
          p, idx, item, attempt,
          fmt::format("child execution '{}' was cancelled: {}", child.id, child.result));
    case exec_status::running:
      vassert(false, "child {} ended running", child.id);
  }
}

// ----------------------------------------------------------------------------------- foreach

void orchestrator::decider::start_foreach(execution_state& e, uint16_t idx) {
  const definition& d = def(e);
  const step_def& sd = d.steps[idx];
  auto value = evaluate_expression(sd.items, scope(e, d));
  if (!value) return step_failed(e, idx, 1, "items: " + value.error());
  json items = json::parse(*value, nullptr, false);
  if (!items.is_array()) {
    return step_failed(e, idx, 1, fmt::format("items must be a list, not {}", items.type_name()));
  }
  if (items.size() > limits::foreach_items_max) {
    return step_failed(e, idx, 1,
                       fmt::format("items has {} elements; foreach_items_max is {}", items.size(),
                                   limits::foreach_items_max));
  }
  const std::string scheduled = json{{"items", items}}.dump();
  if (scheduled.size() > limits::payload_bytes_max) {
    return step_failed(e, idx, 1,
                       fmt::format("items are {} bytes; payload_bytes_max is {}", scheduled.size(),
                                   limits::payload_bytes_max));
  }
  if (!emit(e, fbs::Payload::StepScheduled, [&](auto& b) {
        return fbs::CreateStepScheduled(b, str(sd.id), 1, str(""), str(scheduled), 0).Union();
      })) {
    return;
  }
  foreach_progress(e, idx);
}

// After any change of an item: fail fast, finish, or start items up to the concurrency limit
// in item order.
void orchestrator::decider::foreach_progress(execution_state& e, uint16_t idx) {
  const step_def& sd = def(e).steps[idx];
  const step_state& st = e.steps[idx];
  size_t running = 0;
  size_t done = 0;
  for (uint32_t k = 0; k < st.items.size(); ++k) {
    const item_state& item = st.items[k];
    if (item.status == step_status::failed && !sd.collect_failures) {
      return step_failed(e, idx, 1, fmt::format("item {} failed: {}", k, item.error));
    }
    if (item.status == step_status::running || item.status == step_status::retry_wait ||
        item.status == step_status::deferred) {
      ++running;
    }
    if (item.status == step_status::succeeded || item.status == step_status::failed) ++done;
  }
  if (done == st.items.size()) {
    json outputs = json::array();
    json failed = json::array();
    for (uint32_t k = 0; k < st.items.size(); ++k) {
      const item_state& item = st.items[k];
      if (item.status == step_status::succeeded) {
        json v = json::parse(item.output_json, nullptr, false);
        outputs.push_back(v.is_discarded() ? json(item.output_json) : v);
      } else {
        outputs.push_back(nullptr);
        failed.push_back({{"index", k}, {"error", item.error}});
      }
    }
    const std::string output = json{{"items", outputs}, {"failed", failed}}.dump();
    if (output.size() > limits::payload_bytes_max) {
      return step_failed(e, idx, 1,
                         fmt::format("the items' outputs are {} bytes; payload_bytes_max is {}",
                                     output.size(), limits::payload_bytes_max));
    }
    return succeed_step(e, idx, output);
  }
  if (running >= sd.concurrency) return;
  const json items = json::parse(st.items_json);
  for (uint32_t k = 0; k < e.steps[idx].items.size() && running < sd.concurrency; ++k) {
    if (e.status != exec_status::running || e.steps[idx].status != step_status::running) return;
    if (e.steps[idx].items[k].status != step_status::pending) continue;
    schedule_item(e, idx, k, 1, items);
    // An item that ended at once (a child workflow that finished, a suppressed notification,
    // a render error) ran this function again, which filled the window from a fresh count.
    const step_status now = e.steps[idx].items[k].status;
    if (now != step_status::running && now != step_status::retry_wait &&
        now != step_status::deferred) {
      return;
    }
    ++running;
  }
}

void orchestrator::decider::schedule_item(execution_state& e, uint16_t idx, uint32_t item,
                                          uint32_t attempt, const json& items) {
  const definition& d = def(e);
  const step_def& sd = d.steps[idx];
  template_scope sc = scope(e, d);
  const std::string item_json = items.at(item).dump();
  sc.item_json = item_json;
  sc.item_index = item;
  auto rendered = render_template(sd.input_template, sc);
  if (!rendered) return item_failed(e, idx, item, attempt, rendered.error());
  if (sd.body_kind == step_kind::workflow) {
    // "<step>:<item>": ':' is in no step id, so no other child of the execution has this id.
    const std::string child_id = fmt::format("{}/{}:{}/{}", e.id, sd.id, item, attempt);
    if (auto why = child_problem(e, sd, child_id)) {
      return item_failed(e, idx, item, attempt, *why);
    }
    if (!emit(e, fbs::Payload::ItemScheduled, [&](auto& b) {
          return fbs::CreateItemScheduled(b, str(sd.id), item, attempt, str(""), str(*rendered), 0,
                                          str(child_id))
              .Union();
        })) {
      return;
    }
    return launch_child(e, sd, child_id, fmt::format("{}[{}]", sd.id, item), *rendered);
  }
  const std::string command_id = fmt::format("{}/{}[{}]/{}", e.id, sd.id, item, attempt);
  const tenant_policy* tp = _s.policy(e.tenant);
  const bool policed = sd.body_kind == step_kind::notify && tp && tp->notify;
  // Under a notification policy the attempt's timeout starts when the message is admitted.
  const int64_t timer_at =
      sd.timeout_ms && !policed ? _ctx.now_ms() + static_cast<int64_t>(sd.timeout_ms) : 0;
  if (!emit(e, fbs::Payload::ItemScheduled, [&](auto& b) {
        return fbs::CreateItemScheduled(b, str(sd.id), item, attempt, str(command_id),
                                        str(*rendered), timer_at)
            .Union();
      })) {
    return;
  }
  if (policed) return notify_or_hold(e, idx, attempt, *rendered, *tp->notify, item);
  emit_item_command(e, idx, item, attempt, *rendered, timer_at);
}

void orchestrator::decider::emit_item_command(execution_state& e, uint16_t idx, uint32_t item,
                                              uint32_t attempt, const std::string& rendered,
                                              int64_t timer_at) {
  const step_def& sd = def(e).steps[idx];
  const std::string name = fmt::format("{}[{}]", sd.id, item);
  const std::string command_id = fmt::format("{}/{}/{}", e.id, name, attempt);
  flatbuffers::Offset<void> payload;
  fbs::Payload type;
  stream target;
  if (sd.body_kind == step_kind::task) {
    type = fbs::Payload::RunStep;
    target = stream::commands_step;
    payload = fbs::CreateRunStep(_fbb, str(name), attempt, str(sd.action), str(rendered),
                                 str(command_id), timer_at)
                  .Union();
  } else {
    type = fbs::Payload::SendNotification;
    target = stream::commands_notify;
    const notification_fields f = notification_of(rendered);
    payload = fbs::CreateSendNotification(_fbb, str(name), attempt, str(f.channel), str(f.to),
                                          str(f.subject), str(f.body), str(command_id), timer_at)
                  .Union();
  }
  append_command(e, target, type, payload, command_id);
}

void orchestrator::decider::item_failed(execution_state& e, uint16_t idx, uint32_t item,
                                        uint32_t attempt, std::string_view error) {
  const step_def& sd = def(e).steps[idx];
  if (!emit(e, fbs::Payload::ItemFailed, [&](auto& b) {
        return fbs::CreateItemFailed(b, str(sd.id), item, attempt, str(error)).Union();
      })) {
    return;
  }
  foreach_progress(e, idx);
}

void orchestrator::decider::item_retry_or_fail(execution_state& e, uint16_t idx, uint32_t item,
                                               std::string_view error) {
  const step_def& sd = def(e).steps[idx];
  const uint32_t attempt = e.steps[idx].items[item].attempt;
  if (attempt >= sd.retry.max_attempts) {
    return item_failed(
        e, idx, item, attempt,
        fmt::format("{} (after {} attempt{})", error, attempt, attempt == 1 ? "" : "s"));
  }
  const int64_t retry_at = _ctx.now_ms() + static_cast<int64_t>(sd.retry.delay_after(attempt));
  emit(e, fbs::Payload::ItemRetryScheduled, [&](auto& b) {
    return fbs::CreateItemRetryScheduled(b, str(sd.id), item, attempt, str(error), retry_at)
        .Union();
  });
}

void orchestrator::decider::on_item_ack(const input& in, const fbs::Envelope& env,
                                        execution_state& e, std::string_view step, uint32_t item) {
  auto ack = env.payload_as_StepAck();
  const definition& d = def(e);
  const int idx = d.step_index(step);
  if (idx < 0 || d.steps[idx].kind != step_kind::foreach) {
    return reject(in, &env, rejection_code::wrong_record,
                  fmt::format("ack names item '{}', which workflow {} v{} has no foreach for",
                              sv(ack->step()), d.workflow, d.version));
  }
  const uint16_t i = static_cast<uint16_t>(idx);
  const step_state& st = e.steps[i];
  if (e.status != exec_status::running || st.status != step_status::running ||
      item >= st.items.size() || st.items[item].status != step_status::running ||
      st.items[item].attempt != ack->attempt()) {
    _o._probe.stale_acks.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  _o._probe.step_transitions.fetch_add(1, std::memory_order_relaxed);
  const std::string_view output = sv(ack->output_json());
  switch (ack->status()) {
    case fbs::AckStatus::Success: {
      if (output.size() > limits::payload_bytes_max) {
        return item_failed(e, i, item, ack->attempt(),
                           fmt::format("output is {} bytes; payload_bytes_max is {}", output.size(),
                                       limits::payload_bytes_max));
      }
      json parsed = json::parse(output.empty() ? std::string_view("{}") : output, nullptr, false);
      if (parsed.is_discarded())
        return item_failed(e, i, item, ack->attempt(), "output is not JSON");
      const std::string normalized = parsed.dump();
      if (!emit(e, fbs::Payload::ItemSucceeded, [&](auto& b) {
            return fbs::CreateItemSucceeded(b, str(step), item, ack->attempt(), str(normalized))
                .Union();
          })) {
        return;
      }
      return foreach_progress(e, i);
    }
    case fbs::AckStatus::RetryableFailure:
      return item_retry_or_fail(e, i, item, sv(ack->error()));
    case fbs::AckStatus::PermanentFailure:
      return item_failed(e, i, item, ack->attempt(), sv(ack->error()));
  }
}

void orchestrator::decider::on_item_timer(execution_state& e, uint16_t idx, uint32_t item) {
  const definition& d = def(e);
  const item_state& it = e.steps[idx].items[item];
  const step_status status = it.status;
  const uint32_t attempt = it.attempt;
  const std::string step_id = d.steps[idx].id;
  if (!emit(e, fbs::Payload::TimerFired, [&](auto& b) {
        return fbs::CreateTimerFired(b, str(step_id), attempt, timer_purpose(status),
                                     static_cast<int32_t>(item))
            .Union();
      })) {
    return;
  }
  _o._probe.step_transitions.fetch_add(1, std::memory_order_relaxed);
  if (status == step_status::retry_wait) {
    const json items = json::parse(e.steps[idx].items_json);
    return schedule_item(e, idx, item, attempt + 1, items);
  }
  if (status == step_status::deferred) {
    // The deferral ended: render again and ask the policy again (it may have changed).
    const json items = json::parse(e.steps[idx].items_json);
    template_scope sc = scope(e, d);
    const std::string item_json = items.at(item).dump();
    sc.item_json = item_json;
    sc.item_index = item;
    auto rendered = render_template(d.steps[idx].input_template, sc);
    if (!rendered) return item_failed(e, idx, item, attempt, rendered.error());
    const tenant_policy* tp = _s.policy(e.tenant);
    const notify_policy none;
    return notify_or_hold(e, idx, attempt, *rendered, tp && tp->notify ? *tp->notify : none, item);
  }
  vassert(status == step_status::running, "timer for item {} of {} in state {}", item, step_id,
          step_status_name(status));
  if (!emit(e, fbs::Payload::ItemTimedOut, [&](auto& b) {
        return fbs::CreateItemTimedOut(b, str(step_id), item, attempt).Union();
      })) {
    return;
  }
  item_retry_or_fail(e, idx, item, "timed out");
}

// ------------------------------------------------------------------------------ AI routing

ai_spend orchestrator::decider::spend_now(std::string_view tenant) {
  const int64_t now = _ctx.now_ms();
  ai_spend s;
  s.day_spent_micros = stored_be64(_s.value(keys::ai_spend_day(tenant, utc_day(now))));
  s.month_spent_micros = stored_be64(_s.value(keys::ai_spend_month(tenant, utc_month(now))));
  return s;
}

orchestrator::decider::ai_choice orchestrator::decider::choose_ai(const execution_state& e,
                                                                  uint16_t idx, const ai_policy& p,
                                                                  const std::string& rendered,
                                                                  std::string_view failed_after,
                                                                  std::string_view error) {
  const step_def& sd = def(e).steps[idx];
  ai_choice c;
  c.failover = !failed_after.empty();
  c.estimate = estimate_ai_tokens(p, rendered);
  c.spend = spend_now(e.tenant);
  const std::vector<std::string> tried =
      c.failover ? e.steps[idx].ai_tried_in_round() : std::vector<std::string>();
  const ai_tier tier = parse_ai_tier(sd.tier).value_or(ai_tier::standard);
  c.route = route_ai(p, tier, c.estimate, c.spend, tried);
  if (c.route.candidate) c.candidate = &p.candidates[*c.route.candidate];
  c.reason = c.failover ? fmt::format("failover after {}: {}; {}", failed_after, clip_error(error),
                                      c.route.reason)
                        : c.route.reason;
  return c;
}

bool orchestrator::decider::emit_ai_routed(execution_state& e, uint16_t idx, uint32_t attempt,
                                           const ai_choice& c) {
  const step_def& sd = def(e).steps[idx];
  const tenant_policy* tp = _s.policy(e.tenant);
  const ai_policy& p = *tp->ai;
  const ai_candidate none;
  const ai_candidate& k = c.candidate ? *c.candidate : none;
  const std::string tier_chosen(c.candidate ? ai_tier_name(k.tier) : "");
  return emit(e, fbs::Payload::AiRouted, [&](auto& b) {
    return fbs::CreateAiRouted(
               b, str(sd.id), attempt, str(k.provider), str(k.model), str(sd.tier),
               str(tier_chosen), str(c.reason), c.estimate.input_tokens, c.estimate.output_tokens,
               c.route.estimated_cost_micros, c.spend.day_spent_micros, p.day_budget_micros,
               c.spend.month_spent_micros, p.month_budget_micros, c.route.candidates_considered,
               c.failover, k.input_per_1k_micros, k.output_per_1k_micros)
        .Union();
  });
}

// A failed attempt of a routed ai step goes to the next untried candidate at once, without
// using a retry. False: no candidate left (or no routing), the retry policy decides.
bool orchestrator::decider::try_failover(execution_state& e, uint16_t idx, std::string_view error) {
  const step_def& sd = def(e).steps[idx];
  if (sd.kind != step_kind::ai) return false;
  const tenant_policy* tp = _s.policy(e.tenant);
  if (!tp || !tp->ai) return false;
  const step_state& st = e.steps[idx];
  const ai_attempt* current = st.ai_of(st.attempt);
  if (!current) return false;
  const std::string failed = current->provider + "/" + current->model;
  const uint32_t next = st.attempt + 1;
  auto rendered = render_template(sd.input_template, scope(e, def(e)));
  if (!rendered) return false;
  const ai_choice c = choose_ai(e, idx, *tp->ai, *rendered, failed, error);
  if (!c.candidate) return false;
  start_attempt(e, idx, next, *rendered, &c);
  return true;
}

// Prices the usage an ack reports with the routed candidate's prices and adds it to the
// tenant's spend, once per attempt. Steps that were not routed record nothing (as before).
void orchestrator::decider::record_usage(execution_state& e, uint16_t idx, uint32_t attempt,
                                         const fbs::StepAck& ack) {
  const fbs::Usage* u = ack.usage();
  if (!u || (u->input_tokens() == 0 && u->output_tokens() == 0 && sv(u->model()).empty())) {
    return;
  }
  const ai_attempt* a = e.steps[idx].ai_of(attempt);
  if (!a || a->usage_recorded) return;
  const std::string provider = a->provider, model = a->model;
  const int64_t cost = price_micros(u->input_tokens(), a->input_per_1k_micros) +
                       price_micros(u->output_tokens(), a->output_per_1k_micros);
  const int64_t now = _ctx.now_ms();
  const std::string step = def(e).steps[idx].id, day = utc_day(now), month = utc_month(now);
  const std::string reported(sv(u->model()));
  emit(e, fbs::Payload::AiUsageRecorded, [&](auto& b) {
    return fbs::CreateAiUsageRecorded(b, str(step), attempt, str(provider), str(model),
                                      u->input_tokens(), u->output_tokens(), cost, str(day),
                                      str(month), str(reported))
        .Union();
  });
}

// --------------------------------------------------------------------------- notifications

void orchestrator::decider::notify_or_hold(execution_state& e, uint16_t idx, uint32_t attempt,
                                           const std::string& rendered, const notify_policy& p,
                                           std::optional<uint32_t> item) {
  const step_def& sd = def(e).steps[idx];
  const notification_fields f = notification_of(rendered);
  const hash256 hash = notification_hash(f.channel, f.to, f.subject, f.body);
  std::optional<dedup_entry> previous;
  if (const auto& v = _s.value(keys::notify_dedup(e.tenant, hash)); v && v->size() >= 8) {
    previous = dedup_entry{static_cast<int64_t>(keys::get_be64(*v)), v->substr(8)};
  }
  std::optional<window_count> window;
  if (const auto& v = _s.value(keys::notify_window(e.tenant, f.channel)); v && v->size() == 12) {
    window = window_count{static_cast<int64_t>(keys::get_be64(*v)),
                          keys::get_be32(std::string_view(*v).substr(8))};
  }
  // An earlier attempt of the same step (or item) is its retry, not a duplicate.
  const std::string own_prefix =
      item ? fmt::format("{}/{}[{}]/", e.id, sd.id, *item) : fmt::format("{}/{}/", e.id, sd.id);
  const int32_t slot = item ? static_cast<int32_t>(*item) : -1;  // the events' `item`
  const int64_t now = _ctx.now_ms();
  const notify_decision d = decide_notification(
      p, notification{f.channel, f.to, f.subject, f.body, own_prefix}, now, previous, window);
  switch (d.v) {
    case notify_decision::verdict::suppress:
      if (!emit(e, fbs::Payload::NotificationSuppressed, [&](auto& b) {
            return fbs::CreateNotificationSuppressed(b, str(sd.id), attempt, str(f.channel),
                                                     str(f.to), str(d.reason), slot)
                .Union();
          })) {
        return;
      }
      if (!item) return succeed_step(e, idx, d.output_json);
      if (!emit(e, fbs::Payload::ItemSucceeded, [&](auto& b) {
            return fbs::CreateItemSucceeded(b, str(sd.id), *item, attempt, str(d.output_json))
                .Union();
          })) {
        return;
      }
      return foreach_progress(e, idx);
    case notify_decision::verdict::defer:
      emit(e, fbs::Payload::NotificationDeferred, [&](auto& b) {
        return fbs::CreateNotificationDeferred(b, str(sd.id), attempt, str(f.channel), d.until_ms,
                                               str(d.reason), slot)
            .Union();
      });
      return;
    case notify_decision::verdict::admit:
      break;
  }
  // The attempt's timeout starts now, when the notification really goes out.
  const int64_t timer_at = sd.timeout_ms ? now + static_cast<int64_t>(sd.timeout_ms) : 0;
  const std::string command_id = item ? fmt::format("{}/{}[{}]/{}", e.id, sd.id, *item, attempt)
                                      : fmt::format("{}/{}/{}", e.id, sd.id, attempt);
  if (!emit(e, fbs::Payload::NotificationAdmitted, [&](auto& b) {
        auto h = b.CreateVector(hash.data(), hash.size());
        return fbs::CreateNotificationAdmitted(
                   b, str(sd.id), attempt, str(f.channel), str(f.to), h, d.window_start_ms,
                   timer_at, static_cast<int64_t>(p.dedup_window_ms), str(command_id), slot)
            .Union();
      })) {
    return;
  }
  if (item) return emit_item_command(e, idx, *item, attempt, rendered, timer_at);
  emit_command(e, idx, attempt, rendered, timer_at);
}

void orchestrator::decider::append_command(const execution_state& e, stream target,
                                           fbs::Payload type, flatbuffers::Offset<void> payload,
                                           const std::string& command_id) {
  envelope_header h;
  h.kind = fbs::RecordKind::Command;
  h.tenant_id = e.tenant;
  h.execution_id = e.id;
  h.record_id = command_id;
  h.causation_id = _causation;
  h.timestamp_ms = _ctx.now_ms();
  _ctx.append(target, e.tenant, finish_envelope(_fbb, h, type, payload));
  _o._probe.commands_out.fetch_add(1, std::memory_order_relaxed);
}

bool orchestrator::decider::emit_command(execution_state& e, uint16_t idx, uint32_t attempt,
                                         const std::string& input_json, int64_t deadline,
                                         const ai_candidate* model) {
  const step_def& sd = def(e).steps[idx];
  const std::string command_id = fmt::format("{}/{}/{}", e.id, sd.id, attempt);
  flatbuffers::Offset<void> payload;
  fbs::Payload type;
  stream target;
  switch (sd.kind) {
    case step_kind::task:
      type = fbs::Payload::RunStep;
      target = stream::commands_step;
      payload = fbs::CreateRunStep(_fbb, str(sd.id), attempt, str(sd.action), str(input_json),
                                   str(command_id), deadline)
                    .Union();
      break;
    case step_kind::ai:
      type = fbs::Payload::CallAi;
      target = stream::commands_ai;
      payload = fbs::CreateCallAi(_fbb, str(sd.id), attempt, str(sd.tier), str(input_json),
                                  str(command_id), deadline, str(model ? model->provider : ""),
                                  str(model ? model->model : ""))
                    .Union();
      break;
    default: {
      type = fbs::Payload::SendNotification;
      target = stream::commands_notify;
      const notification_fields f = notification_of(input_json);
      payload = fbs::CreateSendNotification(_fbb, str(sd.id), attempt, str(f.channel), str(f.to),
                                            str(f.subject), str(f.body), str(command_id), deadline)
                    .Union();
      break;
    }
  }
  append_command(e, target, type, payload, command_id);
  return true;
}

void orchestrator::decider::succeed_step(execution_state& e, uint16_t idx,
                                         std::string_view output_json) {
  const step_def& sd = def(e).steps[idx];
  const uint32_t attempt = e.steps[idx].attempt;
  if (!emit(e, fbs::Payload::StepSucceeded, [&](auto& b) {
        return fbs::CreateStepSucceeded(b, str(sd.id), attempt, str(output_json)).Union();
      })) {
    return;
  }
  advance(e);
}

void orchestrator::decider::retry_or_fail(execution_state& e, uint16_t idx,
                                          std::string_view error) {
  const step_def& sd = def(e).steps[idx];
  const uint32_t attempt = e.steps[idx].attempt;
  // AI failovers do not use the retry budget.
  const uint32_t used = e.steps[idx].retry_attempts();
  if (used >= sd.retry.max_attempts) {
    return step_failed(
        e, idx, attempt,
        fmt::format("{} (after {} attempt{})", error, attempt, attempt == 1 ? "" : "s"));
  }
  const int64_t retry_at = _ctx.now_ms() + static_cast<int64_t>(sd.retry.delay_after(used));
  emit(e, fbs::Payload::StepRetryScheduled, [&](auto& b) {
    return fbs::CreateStepRetryScheduled(b, str(sd.id), attempt, str(error), retry_at).Union();
  });
}

void orchestrator::decider::step_failed(execution_state& e, uint16_t idx, uint32_t attempt,
                                        std::string_view error) {
  const step_def& sd = def(e).steps[idx];
  // A foreach failing fast: the children of its items still out are cancelled with them.
  const std::string reason = fmt::format("step '{}' of parent execution '{}' failed", sd.id, e.id);
  for (const item_state& item : e.steps[idx].items) {
    if (item.status == step_status::running && !item.child.empty()) {
      cancel_child(e.tenant, item.child, reason);
    }
  }
  if (!emit(e, fbs::Payload::StepFailed, [&](auto& b) {
        return fbs::CreateStepFailed(b, str(sd.id), attempt, str(error)).Union();
      })) {
    return;
  }
  after_failure(e, idx);
}

void orchestrator::decider::after_failure(execution_state& e, uint16_t idx) {
  const step_def& sd = def(e).steps[idx];
  if (sd.on_failure == failure_mode::continue_) return advance(e);
  const std::string reason = fmt::format("step '{}' {}: {}", sd.id,
                                         step_status_name(e.steps[idx].status), e.steps[idx].error);
  emit(e, fbs::Payload::ExecutionFailed,
       [&](auto& b) { return fbs::CreateExecutionFailed(b, str(reason), str(sd.id)).Union(); });
  _o._probe.executions_ended.fetch_add(1, std::memory_order_relaxed);
}

// ------------------------------------------------------------------------------ processor

orchestrator::orchestrator(orchestrator_options options)
    : _options(options), _state(std::make_unique<orchestrator_state>()) {
  _state->count_decide_reads(&_probe.decide_reads);
}

// Marks the state as deciding for its lifetime: store reads then count as decide_reads.
class orchestrator::deciding_scope {
 public:
  explicit deciding_scope(orchestrator_state& s) : _s(s) { _s.set_deciding(true); }
  ~deciding_scope() { _s.set_deciding(false); }
  deciding_scope(const deciding_scope&) = delete;
  deciding_scope& operator=(const deciding_scope&) = delete;

 private:
  orchestrator_state& _s;
};

orchestrator::~orchestrator() = default;

result<void> orchestrator::open(state_store& store, uint32_t) {
  // Timers, held signals and placements come into memory; executions do not: fire_timers()
  // loads a timer's execution when it comes due (design note 20), so a restore costs a scan of
  // the timers, not a read of every running execution.
  auto r = _state->open(store);
  _published_next_timer.store(next_timer_ms());
  publish_views();
  return r;
}

void orchestrator::replay(uint64_t offset, std::string_view bytes) {
  apply_record(*_state, record_position::offset(offset), bytes);
}

namespace {

// Ingress also takes the envelope as JSON (engine/json_envelope.h). The conversion is a pure
// function of the record and the batch time (which stamps a missing timestamp), so deciding
// stays deterministic; the ingress record itself stays as published.
const fbs::Envelope* decode_input(const input& in, int64_t now_ms, std::string& converted,
                                  std::string& why) {
  const fbs::Envelope* env = decode_envelope(in.rec.value, &why);
  if (env || in.s != stream::ingress || !looks_like_json_object(in.rec.value)) return env;
  auto json = envelope_from_json(in.rec.value, now_ms);
  if (!json) {
    why = "JSON envelope rejected: " + json.error().message;
    return nullptr;
  }
  converted = std::move(*json);
  return decode_envelope(converted);
}

}  // namespace

bool orchestrator::barrier(const input& in) const {
  if (in.s != stream::ingress) return false;
  std::string converted, why;
  const fbs::Envelope* env = decode_input(in, 0, converted, why);
  return env && env->payload_type() == fbs::Payload::MoveTenant;
}

void orchestrator::prefetch(std::span<const input> inputs) {
  _export.reset();
  std::string converted, why;
  for (const input& in : inputs) {
    // JSON envelopes are converted here too (their time stamp does not matter for loading).
    const fbs::Envelope* env = decode_input(in, 0, converted, why);
    if (!env) continue;
    const std::string_view tenant = sv(env->tenant_id());
    const std::string_view id = sv(env->execution_id());
    if (!valid_id(tenant)) continue;
    prefetch_tenant(tenant);
    if (!id.empty() && valid_ref(id)) {
      if (execution_state* e = _state->find_execution(tenant, id)) {
        _state->find_definition(e->tenant, e->workflow, e->version);
        prefetch_family(*e);
      } else if (env->payload_type() == fbs::Payload::Signal) {
        _state->tenant_known(tenant);  // to hold it, with a tenant-level SignalHeld
        _state->chain(tenant);
      }
    }
    if (env->payload_type() == fbs::Payload::StartExecution) {
      auto p = env->payload_as_StartExecution();
      _state->tenant_known(tenant);
      prefetch_callees(tenant, sv(p->workflow()), p->version(), 0);
      if (_state->held(tenant, id)) _state->chain(tenant);  // HeldSignalsReleased
    }
    if (env->payload_type() == fbs::Payload::PublishDefinition ||
        env->payload_type() == fbs::Payload::PublishTenantPolicy) {
      _state->chain(tenant);  // tenant-level events extend the tenant's chain
      _state->tenant_known(tenant);
    }
    if (auto p = env->payload_as_PublishDefinition()) prefetch_definition(tenant, *p);
    if (env->payload_type() == fbs::Payload::MoveTenant && inputs.size() == 1) {
      // A barrier: the store holds everything decided so far.
      _state->chain(tenant);
      _export = std::make_unique<move_export>(
          move_export{std::string(tenant), _state->export_tenant(tenant, in.partition)});
    }
  }
}

// The tenant's policy and all its policy counters: AI spend (any day: the batch's own time is
// not known here), rate windows and dedup entries (the content hash is only known once a step
// input is rendered). Loaded whether or not a policy is in force, since one published earlier
// in the same batch applies at once; for a tenant without policy state the scans find nothing.
void orchestrator::prefetch_tenant(std::string_view tenant) {
  _state->policy(tenant);
  _state->load_counters(tenant);
}

// The published workflow's existing version and latest one (a cheap look at the JSON: the
// full validation runs when deciding).
void orchestrator::prefetch_definition(std::string_view tenant, const fbs::PublishDefinition& p) {
  const json doc = json::parse(sv(p.definition_json()), nullptr, false);
  if (!doc.is_object() || !doc.contains("workflow") || !doc["workflow"].is_string()) return;
  const std::string workflow = doc["workflow"].get<std::string>();
  _state->find_definition(tenant, workflow, 0);
  if (doc.contains("version") && doc["version"].is_number_unsigned()) {
    const uint64_t v = doc["version"].get<uint64_t>();
    if (v > 0 && v <= std::numeric_limits<uint32_t>::max()) {
      _state->find_definition(tenant, workflow, static_cast<uint32_t>(v));
    }
  }
  // The workflows its workflow steps call, subworkflow_depth_max deep: the publish's check for
  // a cycle of calls (call_cycle) walks them, and an execution of it may start in the same
  // batch.
  if (!doc.contains("steps") || !doc["steps"].is_array()) return;
  for (const json& listed : doc["steps"]) {
    if (!listed.is_object()) continue;
    const json body = listed.value("do", json());
    const json& step =
        listed.value("kind", json()) == "foreach" && body.is_object() ? body : listed;
    if (step.value("kind", json()) != "workflow") continue;
    const json called = step.value("workflow", json());
    const json version = step.value("version", json(0u));  // absent: the latest
    if (!called.is_string() || !version.is_number_unsigned() ||
        version.get<uint64_t>() > std::numeric_limits<uint32_t>::max()) {
      continue;
    }
    prefetch_callees(tenant, called.get<std::string>(), version.get<uint32_t>(), 1);
  }
}

void orchestrator::prefetch_callees(std::string_view tenant, std::string_view workflow,
                                    uint32_t version, uint32_t depth, std::set<std::string>* seen) {
  const definition* d = _state->find_definition(tenant, workflow, version);
  if (!d || depth >= limits::subworkflow_depth_max) return;
  std::set<std::string> own;
  if (!seen) seen = &own;
  // Each definition once per depth: workflows calling each other stay linear, not exponential.
  if (!seen->insert(fmt::format("{}\n{}\n{}", workflow, version, depth)).second) return;
  for (const step_def& sd : d->steps) {
    if (calls_workflow(sd))
      prefetch_callees(tenant, sd.child_workflow, sd.child_version, depth + 1, seen);
  }
}

void orchestrator::prefetch_family(const execution_state& e) {
  const execution_state* top = &e;
  for (uint32_t up = 0; !top->parent.empty() && up < limits::subworkflow_depth_max; ++up) {
    const execution_state* p = _state->find_execution(top->tenant, top->parent);
    if (!p) break;
    top = p;
  }
  // Down from the top: every running execution of the tree, with what each may start.
  std::vector<const execution_state*> todo{top};
  while (!todo.empty()) {
    const execution_state* x = todo.back();
    todo.pop_back();
    prefetch_callees(x->tenant, x->workflow, x->version, x->depth);
    // A running child's step or item is running (it resolves when the child ends, and every
    // end cancels the children still out): ended children, possibly many, are not read.
    auto below = [&](const std::string& id, step_status slot) {
      if (id.empty() || slot != step_status::running) return;
      const execution_state* c = _state->find_execution(x->tenant, id);
      if (c && c->status == exec_status::running) todo.push_back(c);
    };
    for (const step_state& st : x->steps) {
      below(st.child, st.status);
      for (const item_state& item : st.items) below(item.child, item.status);
    }
  }
}

void orchestrator::process(const input& in, batch_context& ctx) {
  deciding_scope deciding(*_state);
  std::string why;
  std::string converted;  // a JSON envelope's bytes; `env` points into them
  const fbs::Envelope* env = decode_input(in, ctx.now_ms(), converted, why);
  if (!env) {
    // Not decodable: keep the bytes with the reason where an operator will look.
    flatbuffers::FlatBufferBuilder fbb(in.rec.value.size() + 256);
    const std::string source(stream_name(in.s));
    auto original = fbb.CreateVector(reinterpret_cast<const uint8_t*>(in.rec.value.data()),
                                     in.rec.value.size());
    auto payload = fbs::CreateDeadLetter(fbb, fbb.CreateString(why), fbb.CreateString(source),
                                         in.partition, in.rec.offset, original);
    const std::string record_id = "dlq/" + source_ref(in);
    envelope_header h;
    h.kind = fbs::RecordKind::Rejection;
    h.record_id = record_id;
    h.causation_id =
        std::string_view(record_id).substr(4);  // a view of record_id, not of a temporary
    h.timestamp_ms = ctx.now_ms();
    ctx.append(stream::deadletter, in.rec.key,
               finish_envelope(fbb, h, fbs::Payload::DeadLetter, payload.Union()));
    _probe.deadletters.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  _state->note_input(sv(env->tenant_id()), ctx.now_ms());
  // A record id refused at the door (ids::record_id_problem) is not carried on as the cause:
  // the rejection names the command by its position instead.
  const std::string_view record_id = sv(env->record_id());
  decider d(*this, ctx,
            ids::record_id_problem(record_id) ? source_ref(in) : std::string(record_id));
  if (env->schema_version() > schema_version_current) {
    return d.reject(in, env, rejection_code::unsupported_version,
                    fmt::format("schema version {} is newer than this engine's {}",
                                env->schema_version(), schema_version_current));
  }
  if (in.s == stream::acks) return d.on_ack(in, *env);
  d.on_ingress(in, *env);
}

int64_t orchestrator::next_timer_ms() const {
  const auto& timers = _state->timers();
  return timers.empty() ? std::numeric_limits<int64_t>::max() : timers.begin()->due_ms;
}

void orchestrator::fire_timers(batch_context& ctx, size_t max_timers) {
  // Prefetch for the timers due now: their executions (one ordered pass over the store for
  // those not cached), definitions and families, and their tenants' policies and counters. A
  // timer set while firing these is for an execution loaded here (or by its batch), and one that
  // comes due meanwhile fires in a later batch, so deciding reads nothing.
  size_t due = 0;
  std::vector<std::pair<std::string_view, std::string_view>> ids;  // views into _timers
  for (const timer_entry& t : _state->timers()) {
    if (t.due_ms > ctx.now_ms() || due++ >= max_timers) break;
    prefetch_tenant(t.tenant);
    if (t.step == timer_entry::hold_window) {
      _state->chain(t.tenant);  // HeldSignalsReleased
    } else {
      ids.emplace_back(t.tenant, t.execution);
    }
  }
  _state->load_executions(ids);
  for (const auto& [tenant, id] : ids) {
    if (execution_state* e = _state->find_execution(tenant, id)) {
      _state->find_definition(e->tenant, e->workflow, e->version);
      prefetch_family(*e);
    }
  }
  deciding_scope deciding(*_state);
  for (size_t fired = 0; fired < max_timers; ++fired) {
    const auto& timers = _state->timers();
    if (timers.empty() || timers.begin()->due_ms > ctx.now_ms()) return;
    const timer_entry t = *timers.begin();
    decider d(*this, ctx,
              t.step == timer_entry::hold_window
                  ? fmt::format("hold/{}/{}", t.execution, t.due_ms)
                  : fmt::format("timer/{}/{}/{}", t.execution, t.step, t.due_ms));
    d.on_timer(t);
  }
}

// Copies the entries that changed (few per batch: a usage, a policy, the tenants decided for).
void orchestrator::stage() {
  _state->stage();
  staged_views v;
  v.spend_changed = _state->take_ai_spend_changes();
  for (const std::string& tenant : v.spend_changed) {
    const auto& all = _state->ai_spend_all();
    if (auto it = all.find(tenant); it != all.end()) v.spend.emplace(tenant, it->second);
  }
  v.load_changed = _state->take_activity_changes();
  for (const std::string& tenant : v.load_changed) {
    const auto& all = _state->activity_all();
    if (auto it = all.find(tenant); it != all.end()) v.load.emplace(tenant, it->second);
  }
  v.next_timer_ms = next_timer_ms();
  _staged_views.push_back(std::move(v));
}

// At open: everything loaded (no batch is staged).
void orchestrator::publish_views() {
  _spend_published.publish(_state->take_ai_spend_changes(), _state->ai_spend_all());
  _load_published.publish(_state->take_activity_changes(), _state->activity_all());
}

bool orchestrator::may_decide_ahead() const { return _state->may_decide_ahead(); }

void orchestrator::flush(state_batch& out, const std::vector<uint64_t>& event_offsets) {
  if (_state->staged() == 0) stage();
  _state->flush(out, event_offsets);
  const staged_views v = std::move(_staged_views.front());
  _staged_views.pop_front();
  _published_next_timer.store(v.next_timer_ms);
  _spend_published.publish(v.spend_changed, v.spend);
  _load_published.publish(v.load_changed, v.load);
}

double ai_spend_sample::budget_used() const {
  double used = -1;
  if (day_budget_micros > 0) {
    used = std::max(used, static_cast<double>(day_spent_micros) / day_budget_micros);
  }
  if (month_budget_micros > 0) {
    used = std::max(used, static_cast<double>(month_spent_micros) / month_budget_micros);
  }
  return used;
}

std::vector<ai_spend_sample> orchestrator::ai_spend_top(int64_t now_ms, size_t k) const {
  const std::string day = utc_day(now_ms), month = utc_month(now_ms);
  std::vector<ai_spend_sample> out;
  out.reserve(_spend_published.size());
  _spend_published.for_each([&](const std::string& tenant, const tenant_ai_spend& s) {
    out.push_back({tenant, s.day == day ? s.day_spent_micros : 0,
                   s.month == month ? s.month_spent_micros : 0, s.day_budget_micros,
                   s.month_budget_micros});
  });
  top_k(out, k, [](const ai_spend_sample& a, const ai_spend_sample& b) {
    const double ua = a.budget_used(), ub = b.budget_used();
    if (ua != ub) return ua > ub;
    if (a.month_spent_micros != b.month_spent_micros) {
      return a.month_spent_micros > b.month_spent_micros;
    }
    return a.tenant < b.tenant;  // a stable choice between equals, scrape after scrape
  });
  return out;
}

partition_load orchestrator::tenant_load_top(int64_t now_ms, size_t k) const {
  std::vector<tenant_load_sample> all;
  all.reserve(_load_published.size());
  _load_published.for_each([&](const std::string& tenant, const tenant_activity& a) {
    all.push_back({tenant, a.inputs, a.events, a.running, a.recent(now_ms)});
  });
  partition_load out;
  // Ranked in full only up to k: the others are summed whatever their order.
  auto busier = [](const tenant_load_sample& a, const tenant_load_sample& b) {
    if (a.recent != b.recent) return a.recent > b.recent;
    if (a.running != b.running) return a.running > b.running;
    return a.tenant < b.tenant;
  };
  const size_t kept = std::min(k, all.size());
  std::partial_sort(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(kept), all.end(),
                    busier);
  for (size_t i = kept; i < all.size(); ++i) {
    out.others.inputs += all[i].inputs;
    out.others.events += all[i].events;
    out.others.running += all[i].running;
    out.others.recent += all[i].recent;
  }
  out.other_tenants = all.size() - kept;
  all.resize(kept);
  out.busiest = std::move(all);
  return out;
}

}  // namespace auterity
