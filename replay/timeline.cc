#include "replay/timeline.h"

#include <fmt/core.h>

#include "engine/record.h"
#include "processors/execution_state.h"

namespace auterity {

namespace {

std::string clip(std::string_view s, size_t max = 100) {
  if (s.size() <= max) return std::string(s);
  return fmt::format("{}… ({} bytes)", s.substr(0, max), s.size());
}

std::string describe(const fbs::Envelope& e) {
  using P = fbs::Payload;
  switch (e.payload_type()) {
    case P::DefinitionPublished: {
      auto p = e.payload_as_DefinitionPublished();
      return fmt::format("published {} v{} ({} steps)", sv(p->workflow()), p->version(),
                         p->step_count());
    }
    case P::ExecutionStarted: {
      auto p = e.payload_as_ExecutionStarted();
      return fmt::format("started {} v{} with input {}", sv(p->workflow()), p->version(),
                         clip(sv(p->input_json())));
    }
    case P::ExecutionSucceeded:
      return fmt::format("execution succeeded: {}",
                         clip(sv(e.payload_as_ExecutionSucceeded()->output_json())));
    case P::ExecutionFailed:
      return fmt::format("execution FAILED: {}", sv(e.payload_as_ExecutionFailed()->reason()));
    case P::ExecutionCancelled:
      return fmt::format("execution cancelled: {}",
                         sv(e.payload_as_ExecutionCancelled()->reason()));
    case P::StepScheduled: {
      auto p = e.payload_as_StepScheduled();
      std::string s = fmt::format("step {} attempt {} scheduled", sv(p->step()), p->attempt());
      if (p->command_id() && p->command_id()->size()) {
        s += fmt::format(" -> command {}", sv(p->command_id()));
      }
      if (p->timer_at_ms()) s += fmt::format(", timer at +{}ms", p->timer_at_ms() - e.timestamp_ms());
      return s;
    }
    case P::StepSucceeded: {
      auto p = e.payload_as_StepSucceeded();
      return fmt::format("step {} succeeded: {}", sv(p->step()), clip(sv(p->output_json())));
    }
    case P::StepFailed: {
      auto p = e.payload_as_StepFailed();
      return fmt::format("step {} failed: {}", sv(p->step()), sv(p->error()));
    }
    case P::StepRetryScheduled: {
      auto p = e.payload_as_StepRetryScheduled();
      return fmt::format("step {} attempt {} failed ({}); retry in {}ms", sv(p->step()),
                         p->attempt(), sv(p->error()), p->retry_at_ms() - e.timestamp_ms());
    }
    case P::StepTimedOut: {
      auto p = e.payload_as_StepTimedOut();
      return fmt::format("step {} attempt {} timed out", sv(p->step()), p->attempt());
    }
    case P::StepSkipped: {
      auto p = e.payload_as_StepSkipped();
      return fmt::format("step {} skipped ({})", sv(p->step()), sv(p->reason()));
    }
    case P::SignalReceived: {
      auto p = e.payload_as_SignalReceived();
      return fmt::format("signal {} received: {}", sv(p->name()), clip(sv(p->payload_json())));
    }
    case P::TimerFired: {
      auto p = e.payload_as_TimerFired();
      return fmt::format("timer fired: {} of step {} attempt {}",
                         fbs::EnumNameTimerPurpose(p->purpose()), sv(p->step()), p->attempt());
    }
    case P::CommandRejected: {
      auto p = e.payload_as_CommandRejected();
      return fmt::format("REJECTED {} (code {}): {}", sv(e.causation_id()), p->code(),
                         sv(p->reason()));
    }
    default: return std::string(payload_name(e.payload_type()));
  }
}

}  // namespace

std::string describe_record(std::string_view bytes) {
  std::string why;
  const fbs::Envelope* e = decode_envelope(bytes, &why);
  return e ? describe(*e) : "undecodable record: " + why;
}

result<std::vector<timeline_entry>> load_timeline(log& l, uint32_t partition,
                                                  const state_store& store,
                                                  std::string_view tenant,
                                                  std::string_view execution) {
  std::vector<uint64_t> offsets;
  auto scanned = store.scan_prefix(keys::event_index_prefix(tenant, execution),
                                   [&](std::string_view, std::string_view v) {
                                     offsets.push_back(keys::get_be64(v));
                                     return true;
                                   });
  if (!scanned) return std::unexpected(scanned.error());
  std::vector<timeline_entry> out;
  std::vector<record> recs;
  for (uint64_t off : offsets) {
    recs.clear();
    auto n = l.read(stream::executions, partition, off, 1, 1 << 20, recs);
    if (!n) return std::unexpected(n.error());
    if (*n == 0) continue;  // indexed but not yet readable: cannot happen after a commit
    const fbs::Envelope* e = decode_envelope(recs[0].value);
    if (!e) continue;
    out.push_back({off, e->timestamp_ms(), std::string(payload_name(e->payload_type())),
                   std::string(sv(e->record_id())), std::string(sv(e->causation_id())),
                   describe(*e)});
  }
  return out;
}

std::string format_timeline(const std::vector<timeline_entry>& entries) {
  std::string out;
  if (entries.empty()) return out;
  const int64_t t0 = entries.front().timestamp_ms;
  for (const timeline_entry& e : entries) {
    out += fmt::format("  +{:7.3f}s  {:<20} {}\n", (e.timestamp_ms - t0) / 1000.0, e.type,
                       e.description);
  }
  return out;
}

}  // namespace auterity
