#include "replay/describe.h"

#include <array>

#include <fmt/core.h>

#include "processors/rejection.h"
#include "replay/record_json.h"
#include "replay/time_text.h"
#include "replay/timeline.h"

namespace auterity {

namespace {

// later - earlier for two times read from a record, which may be forged (fuzz_envelope found a
// signed overflow here): exact when it fits, never undefined.
std::string ms_between(int64_t later, int64_t earlier) {
  int64_t d = 0;
  if (!__builtin_sub_overflow(later, earlier, &d)) return std::to_string(d);
  return later > earlier ? "(more than 2^63)" : "(less than -2^63)";
}

using describer = std::string (*)(const fbs::Envelope&);

// ------------------------------------------------------------------------ upstream commands

std::string publish_definition(const fbs::Envelope& e) {
  auto p = e.payload_as_PublishDefinition();
  return fmt::format("request {}: publish a definition ({} bytes){}", sv(e.record_id()),
                     p->definition_json() ? p->definition_json()->size() : 0,
                     p->params_json() && p->params_json()->size()
                         ? " with params " + clip(sv(p->params_json()), 80)
                         : "");
}

std::string start_execution(const fbs::Envelope& e) {
  auto p = e.payload_as_StartExecution();
  return fmt::format("request {}: start {} {} with input {}", sv(e.record_id()), sv(p->workflow()),
                     p->version() ? fmt::format("v{}", p->version()) : "(latest)",
                     clip(sv(p->input_json()), 80));
}

std::string signal(const fbs::Envelope& e) {
  auto p = e.payload_as_Signal();
  return fmt::format("request {}: signal {} {}", sv(e.record_id()), sv(p->name()),
                     clip(sv(p->payload_json()), 80));
}

std::string cancel_execution(const fbs::Envelope& e) {
  return fmt::format("request {}: cancel ({})", sv(e.record_id()),
                     sv(e.payload_as_CancelExecution()->reason()));
}

std::string publish_tenant_policy(const fbs::Envelope& e) {
  auto p = e.payload_as_PublishTenantPolicy();
  return fmt::format("request {}: publish the tenant policy ({} bytes)", sv(e.record_id()),
                     p->policy_json() ? p->policy_json()->size() : 0);
}

// ----------------------------------------------------------------------------------- events

std::string definition_published(const fbs::Envelope& e) {
  auto p = e.payload_as_DefinitionPublished();
  return fmt::format("published {} v{} ({} steps)", sv(p->workflow()), p->version(),
                     p->step_count());
}

std::string execution_started(const fbs::Envelope& e) {
  auto p = e.payload_as_ExecutionStarted();
  std::string s = fmt::format("started {} v{} with input {}", sv(p->workflow()), p->version(),
                              clip(sv(p->input_json())));
  if (p->parent_execution() && p->parent_execution()->size()) {
    s += fmt::format(" as a sub-workflow of execution {} step {} (depth {})",
                     sv(p->parent_execution()), sv(p->parent_step()), p->depth());
  }
  return s;
}

std::string execution_succeeded(const fbs::Envelope& e) {
  return fmt::format("execution succeeded: {}",
                     clip(sv(e.payload_as_ExecutionSucceeded()->output_json())));
}

std::string execution_failed(const fbs::Envelope& e) {
  auto p = e.payload_as_ExecutionFailed();
  return fmt::format(
      "execution FAILED{}: {}",
      p->step() && p->step()->size() ? fmt::format(" at step {}", sv(p->step())) : "",
      sv(p->reason()));
}

std::string execution_cancelled(const fbs::Envelope& e) {
  return fmt::format("execution cancelled: {}", sv(e.payload_as_ExecutionCancelled()->reason()));
}

std::string step_scheduled(const fbs::Envelope& e) {
  auto p = e.payload_as_StepScheduled();
  std::string s = fmt::format("step {} attempt {} scheduled", sv(p->step()), p->attempt());
  if (p->command_id() && p->command_id()->size()) {
    s += fmt::format(" -> command {}", sv(p->command_id()));
  }
  if (p->child_execution() && p->child_execution()->size()) {
    s += fmt::format(" -> child execution {}", sv(p->child_execution()));
  }
  if (p->timer_at_ms())
    s += fmt::format(", timer at +{}ms", ms_between(p->timer_at_ms(), e.timestamp_ms()));
  return s;
}

std::string step_succeeded(const fbs::Envelope& e) {
  auto p = e.payload_as_StepSucceeded();
  return fmt::format("step {} succeeded: {}", sv(p->step()), clip(sv(p->output_json())));
}

std::string step_failed(const fbs::Envelope& e) {
  auto p = e.payload_as_StepFailed();
  return fmt::format("step {} failed: {}", sv(p->step()), sv(p->error()));
}

std::string step_retry_scheduled(const fbs::Envelope& e) {
  auto p = e.payload_as_StepRetryScheduled();
  return fmt::format("step {} attempt {} failed ({}); retry in {}ms", sv(p->step()), p->attempt(),
                     sv(p->error()), ms_between(p->retry_at_ms(), e.timestamp_ms()));
}

std::string step_timed_out(const fbs::Envelope& e) {
  auto p = e.payload_as_StepTimedOut();
  return fmt::format("step {} attempt {} timed out", sv(p->step()), p->attempt());
}

std::string step_skipped(const fbs::Envelope& e) {
  auto p = e.payload_as_StepSkipped();
  return fmt::format("step {} skipped ({})", sv(p->step()), sv(p->reason()));
}

std::string signal_received(const fbs::Envelope& e) {
  auto p = e.payload_as_SignalReceived();
  return fmt::format("signal {} received: {}", sv(p->name()), clip(sv(p->payload_json())));
}

std::string timer_fired(const fbs::Envelope& e) {
  auto p = e.payload_as_TimerFired();
  if (p->item() >= 0) {
    return fmt::format("timer fired: {} of step {} item {} attempt {}",
                       fbs::EnumNameTimerPurpose(p->purpose()), sv(p->step()), p->item(),
                       p->attempt());
  }
  return fmt::format("timer fired: {} of step {} attempt {}",
                     fbs::EnumNameTimerPurpose(p->purpose()), sv(p->step()), p->attempt());
}

// -------------------------------------------------------------------------- foreach items

std::string item_scheduled(const fbs::Envelope& e) {
  auto p = e.payload_as_ItemScheduled();
  std::string s =
      fmt::format("step {} item {} attempt {} scheduled", sv(p->step()), p->item(), p->attempt());
  if (p->command_id() && p->command_id()->size()) {
    s += fmt::format(" -> command {}", sv(p->command_id()));
  }
  if (p->child_execution() && p->child_execution()->size()) {
    s += fmt::format(" -> child execution {}", sv(p->child_execution()));
  }
  if (p->timer_at_ms())
    s += fmt::format(", timer at +{}ms", ms_between(p->timer_at_ms(), e.timestamp_ms()));
  return s;
}

std::string item_succeeded(const fbs::Envelope& e) {
  auto p = e.payload_as_ItemSucceeded();
  return fmt::format("step {} item {} succeeded: {}", sv(p->step()), p->item(),
                     clip(sv(p->output_json())));
}

std::string item_failed(const fbs::Envelope& e) {
  auto p = e.payload_as_ItemFailed();
  return fmt::format("step {} item {} failed: {}", sv(p->step()), p->item(), sv(p->error()));
}

std::string item_retry_scheduled(const fbs::Envelope& e) {
  auto p = e.payload_as_ItemRetryScheduled();
  return fmt::format("step {} item {} attempt {} failed ({}); retry in {}ms", sv(p->step()),
                     p->item(), p->attempt(), sv(p->error()),
                     ms_between(p->retry_at_ms(), e.timestamp_ms()));
}

std::string item_timed_out(const fbs::Envelope& e) {
  auto p = e.payload_as_ItemTimedOut();
  return fmt::format("step {} item {} attempt {} timed out", sv(p->step()), p->item(),
                     p->attempt());
}

// ------------------------------------------------------------------- tenant policy events

std::string tenant_policy_published(const fbs::Envelope& e) {
  auto p = e.payload_as_TenantPolicyPublished();
  return fmt::format("tenant policy v{} in force: {}", p->version(),
                     clip(sv(p->policy_json()), 160));
}

std::string budget_text(int64_t spent, int64_t budget) {
  return budget ? fmt::format("{} of {}", format_cost_micros(spent), format_cost_micros(budget))
                : fmt::format("{} (no budget)", format_cost_micros(spent));
}

std::string ai_routed(const fbs::Envelope& e) {
  auto p = e.payload_as_AiRouted();
  if (!p->provider() || p->provider()->size() == 0) {
    return fmt::format("step {} attempt {}: no AI model (tier {}): {}", sv(p->step()), p->attempt(),
                       sv(p->tier_requested()), sv(p->reason()));
  }
  return fmt::format(
      "step {} attempt {} routed to {}/{} ({} for {}): {}; estimate {} in + {} out tokens = {}; "
      "spent today {}, this month {}",
      sv(p->step()), p->attempt(), sv(p->provider()), sv(p->model()), sv(p->tier_chosen()),
      sv(p->tier_requested()), sv(p->reason()), p->estimated_input_tokens(),
      p->estimated_output_tokens(), format_cost_micros(p->estimated_cost_micros()),
      budget_text(p->day_spent_micros(), p->day_budget_micros()),
      budget_text(p->month_spent_micros(), p->month_budget_micros()));
}

std::string ai_usage_recorded(const fbs::Envelope& e) {
  auto p = e.payload_as_AiUsageRecorded();
  const std::string_view reported = sv(p->reported_model());
  return fmt::format(
      "step {} attempt {} used {}/{}{}: {} in + {} out tokens, cost {} (spend of {})",
      sv(p->step()), p->attempt(), sv(p->provider()), sv(p->model()),
      reported.empty() || reported == sv(p->model()) ? std::string()
                                                     : fmt::format(" (reported {})", reported),
      p->input_tokens(), p->output_tokens(), format_cost_micros(p->cost_micros()), sv(p->day()));
}

// "step x" or, for a foreach item's notification, "step x item 3".
std::string step_and_item(const flatbuffers::String* step, int32_t item) {
  return item >= 0 ? fmt::format("step {} item {}", sv(step), item)
                   : fmt::format("step {}", sv(step));
}

std::string notification_suppressed(const fbs::Envelope& e) {
  auto p = e.payload_as_NotificationSuppressed();
  return fmt::format("notification of {} attempt {} ({} to {}) suppressed: {}",
                     step_and_item(p->step(), p->item()), p->attempt(), sv(p->channel()),
                     sv(p->to()), sv(p->reason()));
}

std::string notification_deferred(const fbs::Envelope& e) {
  auto p = e.payload_as_NotificationDeferred();
  return fmt::format("notification of {} attempt {} ({}) deferred until {} (+{}ms): {}",
                     step_and_item(p->step(), p->item()), p->attempt(), sv(p->channel()),
                     format_time_ms(p->until_ms()), ms_between(p->until_ms(), e.timestamp_ms()),
                     sv(p->reason()));
}

std::string notification_admitted(const fbs::Envelope& e) {
  auto p = e.payload_as_NotificationAdmitted();
  std::string s =
      fmt::format("notification of {} attempt {} admitted ({} to {})",
                  step_and_item(p->step(), p->item()), p->attempt(), sv(p->channel()), sv(p->to()));
  if (p->window_start_ms()) {
    s += fmt::format("; counts in the rate window from {}", format_time_ms(p->window_start_ms()));
  }
  return s;
}

// ------------------------------------------------------------------------- held signals

std::string signal_held(const fbs::Envelope& e) {
  auto p = e.payload_as_SignalHeld();
  return fmt::format(
      "signal {} for execution {} held until {} (+{}ms): no such execution yet (request {}): {}",
      sv(p->name()), sv(p->execution()), format_time_ms(p->expires_at_ms()),
      ms_between(p->expires_at_ms(), e.timestamp_ms()), sv(p->command_id()),
      clip(sv(p->payload_json())));
}

std::string held_signals_released(const fbs::Envelope& e) {
  auto p = e.payload_as_HeldSignalsReleased();
  const std::string what = fmt::format("{} held signal{} of execution {}", p->count(),
                                       p->count() == 1 ? "" : "s", sv(p->execution()));
  if (p->outcome() == fbs::HeldSignalsOutcome::Delivered) {
    return what + " delivered: the execution started";
  }
  return what + " expired: no start arrived; rejected (unknown_execution)";
}

// ------------------------------------------------------------------ commands, acks, rejects

std::string run_step(const fbs::Envelope& e) {
  auto p = e.payload_as_RunStep();
  return fmt::format("command {}: task {} for step {} attempt {}", sv(e.record_id()),
                     sv(p->action()), sv(p->step()), p->attempt());
}

// "tier standard" or "tier standard, openai/gpt-4o-mini" when the router chose the model.
std::string ai_call_target(const fbs::CallAi& p) {
  if (!p.provider() || p.provider()->size() == 0) return fmt::format("tier {}", sv(p.tier()));
  return fmt::format("tier {}, {}/{}", sv(p.tier()), sv(p.provider()), sv(p.model()));
}

std::string call_ai(const fbs::Envelope& e) {
  auto p = e.payload_as_CallAi();
  return fmt::format("command {}: AI call ({}) for step {} attempt {}", sv(e.record_id()),
                     ai_call_target(*p), sv(p->step()), p->attempt());
}

std::string send_notification(const fbs::Envelope& e) {
  return fmt::format("command {}: {}", sv(e.record_id()), describe_command(e));
}

std::string step_ack(const fbs::Envelope& e) {
  auto p = e.payload_as_StepAck();
  return fmt::format("ack of {} (step {} attempt {}): {}", sv(p->command_id()), sv(p->step()),
                     p->attempt(), describe_ack(e));
}

std::string command_rejected(const fbs::Envelope& e) {
  auto p = e.payload_as_CommandRejected();
  return fmt::format("REJECTED {} ({}, code {}): {}", sv(e.causation_id()),
                     rejection_code_name(static_cast<rejection_code>(p->code())), p->code(),
                     sv(p->reason()));
}

std::string dead_letter(const fbs::Envelope& e) {
  auto p = e.payload_as_DeadLetter();
  return fmt::format("DEADLETTER {}/{}/{}: {}", sv(p->source_stream()), p->source_partition(),
                     p->source_offset(), sv(p->reason()));
}

constexpr size_t payload_slots = static_cast<size_t>(fbs::Payload::MAX) + 1;

constexpr std::array<describer, payload_slots> make_table() {
  std::array<describer, payload_slots> t{};
  auto set = [&](fbs::Payload type, describer d) { t[static_cast<size_t>(type)] = d; };
  set(fbs::Payload::PublishDefinition, publish_definition);
  set(fbs::Payload::StartExecution, start_execution);
  set(fbs::Payload::Signal, signal);
  set(fbs::Payload::CancelExecution, cancel_execution);
  set(fbs::Payload::DefinitionPublished, definition_published);
  set(fbs::Payload::ExecutionStarted, execution_started);
  set(fbs::Payload::ExecutionSucceeded, execution_succeeded);
  set(fbs::Payload::ExecutionFailed, execution_failed);
  set(fbs::Payload::ExecutionCancelled, execution_cancelled);
  set(fbs::Payload::StepScheduled, step_scheduled);
  set(fbs::Payload::StepSucceeded, step_succeeded);
  set(fbs::Payload::StepFailed, step_failed);
  set(fbs::Payload::StepRetryScheduled, step_retry_scheduled);
  set(fbs::Payload::StepTimedOut, step_timed_out);
  set(fbs::Payload::StepSkipped, step_skipped);
  set(fbs::Payload::SignalReceived, signal_received);
  set(fbs::Payload::TimerFired, timer_fired);
  set(fbs::Payload::RunStep, run_step);
  set(fbs::Payload::CallAi, call_ai);
  set(fbs::Payload::SendNotification, send_notification);
  set(fbs::Payload::StepAck, step_ack);
  set(fbs::Payload::CommandRejected, command_rejected);
  set(fbs::Payload::DeadLetter, dead_letter);
  set(fbs::Payload::PublishTenantPolicy, publish_tenant_policy);
  set(fbs::Payload::TenantPolicyPublished, tenant_policy_published);
  set(fbs::Payload::AiRouted, ai_routed);
  set(fbs::Payload::AiUsageRecorded, ai_usage_recorded);
  set(fbs::Payload::NotificationSuppressed, notification_suppressed);
  set(fbs::Payload::NotificationDeferred, notification_deferred);
  set(fbs::Payload::NotificationAdmitted, notification_admitted);
  set(fbs::Payload::SignalHeld, signal_held);
  set(fbs::Payload::HeldSignalsReleased, held_signals_released);
  set(fbs::Payload::ItemScheduled, item_scheduled);
  set(fbs::Payload::ItemSucceeded, item_succeeded);
  set(fbs::Payload::ItemFailed, item_failed);
  set(fbs::Payload::ItemRetryScheduled, item_retry_scheduled);
  set(fbs::Payload::ItemTimedOut, item_timed_out);
  return t;
}
constexpr auto describers = make_table();

}  // namespace

std::string clip(std::string_view s, size_t max) {
  if (s.size() <= max) return std::string(s);
  size_t cut = max;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xc0) == 0x80) --cut;  // UTF-8
  return fmt::format("{}… ({} bytes)", s.substr(0, cut), s.size());
}

std::string format_cost_micros(int64_t micros) {
  const char* sign = micros < 0 ? "-" : "";
  const uint64_t m = micros < 0 ? 0 - static_cast<uint64_t>(micros) : micros;
  return fmt::format("{}${}.{:06}", sign, m / 1'000'000, m % 1'000'000);
}

std::string describe(const fbs::Envelope& e) {
  const auto tag = static_cast<size_t>(e.payload_type());
  if (tag < describers.size() && describers[tag]) return describers[tag](e);
  return fmt::format("{} {}", payload_name(e.payload_type()), payload_summary(e));
}

std::string describe_command(const fbs::Envelope& e) {
  switch (e.payload_type()) {
    case fbs::Payload::RunStep:
      return fmt::format("task {}", sv(e.payload_as_RunStep()->action()));
    case fbs::Payload::CallAi:
      return fmt::format("AI call ({})", ai_call_target(*e.payload_as_CallAi()));
    case fbs::Payload::SendNotification: {
      auto p = e.payload_as_SendNotification();
      std::string s = fmt::format("{} to {}", sv(p->channel()), sv(p->to()));
      if (p->subject() && p->subject()->size()) {
        s += fmt::format(", subject \"{}\"", clip(sv(p->subject()), 60));
      }
      return s + fmt::format(": \"{}\"", clip(sv(p->body()), 60));
    }
    default:
      return describe(e);
  }
}

std::string describe_usage(const fbs::StepAck& ack) {
  const fbs::Usage* u = ack.usage();
  if (!u || !u->model() || u->model()->size() == 0) return {};
  return fmt::format("model {}, {} in + {} out tokens, cost {}", sv(u->model()), u->input_tokens(),
                     u->output_tokens(), format_cost_micros(u->cost_micros()));
}

std::string describe_ack(const fbs::Envelope& e) {
  if (e.payload_type() != fbs::Payload::StepAck) return describe(e);
  auto p = e.payload_as_StepAck();
  std::string s = fbs::EnumNameAckStatus(p->status());
  if (p->status() != fbs::AckStatus::Success && p->error() && p->error()->size()) {
    s += ": " + clip(sv(p->error()), 120);
  }
  if (std::string usage = describe_usage(*p); !usage.empty()) s += "; AI " + usage;
  return s;
}

std::string describe_record(std::string_view bytes) {
  std::string why;
  const fbs::Envelope* e = decode_envelope(bytes, &why);
  return e ? describe(*e) : "undecodable record: " + why;
}

}  // namespace auterity
