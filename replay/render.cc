#include "replay/render.h"

#include <fmt/core.h>

#include "engine/assert.h"
#include "replay/describe.h"
#include "replay/json_text.h"
#include "replay/time_text.h"

extern const unsigned char auterity_timeline_page[];  // generated: replay/CMakeLists.txt
extern const size_t auterity_timeline_page_size;

namespace auterity {

namespace {

constexpr std::string_view data_marker = "<!--AUTERITY:DATA-->";
constexpr std::string_view meta_marker = "{{AUTERITY:META}}";

std::string_view page() {
  return {reinterpret_cast<const char*>(auterity_timeline_page), auterity_timeline_page_size};
}

std::string html_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

std::string replace_all(std::string s, std::string_view from, std::string_view to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
  return s;
}

std::string seq_of(const timeline_line& l) {
  if (l.kind != "event") return "";
  const size_t hash = l.record_id.rfind('#');
  return hash == std::string::npos ? "" : l.record_id.substr(hash);
}

std::string header(const execution_view& v) {
  std::string h = fmt::format("== {}", v.tenant);
  if (v.execution.empty()) {
    h += " · records of the tenant itself (definitions)";
  } else {
    h += " / " + v.execution;
    if (!v.workflow.empty()) {
      h += fmt::format(" · {}{}", v.workflow, v.version ? fmt::format(" v{}", v.version) : "");
    }
    h += " · " + (v.status.empty() ? std::string("start not in this timeline") : v.status);
  }
  h += fmt::format(" · partition {}{}\n", v.partition, v.continued ? " (continued)" : "");
  return h;
}

std::string summary(const execution_view& v) {
  std::string s = fmt::format("   {} → {} ({:.3f}s) · {} events", format_time_ms(v.first_ms),
                              format_time_ms(v.last_ms),
                              (double(v.last_ms) - double(v.first_ms)) / 1000.0, v.events);
  if (v.rejections) s += fmt::format(" · {} rejected", v.rejections);
  if (v.notifications_sent)
    s += fmt::format(" · {} notification{} sent", v.notifications_sent,
                     v.notifications_sent == 1 ? "" : "s");
  if (v.ai_priced_calls) {  // priced by the engine's router (tenant AI policy)
    s += fmt::format(" · AI: {} call{}, {} in + {} out tokens, {}", v.ai_priced_calls,
                     v.ai_priced_calls == 1 ? "" : "s", v.ai_priced_tokens_in,
                     v.ai_priced_tokens_out, format_cost_micros(v.ai_priced_cost_micros));
  } else if (v.ai_calls) {
    s += fmt::format(" · AI: {} call{}, {} in + {} out tokens, {}", v.ai_calls,
                     v.ai_calls == 1 ? "" : "s", v.ai_tokens_in, v.ai_tokens_out,
                     format_cost_micros(v.ai_cost_micros));
  }
  return s + "\n";
}

}  // namespace

std::string render_text(const execution_view& v) {
  std::string out = header(v) + summary(v);
  // Details sit under the type column: 2 + "+" + 8 + "s" + 2 + where 8 + 1 + seq 5 + 1.
  const std::string indent = std::string(29, ' ') + "↳ ";
  for (const timeline_line& l : v.lines) {
    const std::string where = fmt::format("{}@{}", stream_tag(l.s), l.offset);
    out += fmt::format("  +{:8.3f}s  {:<8} {:<5} {:<19} {}",
                       (double(l.ts_ms) - double(v.first_ms)) / 1000.0, where, seq_of(l), l.type,
                       l.text);
    if ((l.kind == "event" || l.kind == "rejection") && !l.causation_id.empty()) {
      out += "  <- " + l.causation_id;
    }
    out += "\n";
    for (const std::string& d : l.details) out += fmt::format("{}{}\n", indent, d);
  }
  if (v.more_follows) out += "  … continues in a later block (the timeline's memory limit)\n";
  return out + "\n";
}

// ------------------------------------------------------------------------------------ HTML

std::string html_head(std::string_view title, std::string_view scope_text) {
  const std::string_view p = page();
  const size_t at = p.find(data_marker);
  vassert(at != std::string_view::npos, "timeline page template lacks {}", data_marker);
  std::string head(p.substr(0, at));
  head = replace_all(std::move(head), "{{AUTERITY:TITLE}}", html_escape(title));
  return replace_all(std::move(head), "{{AUTERITY:SCOPE}}", html_escape(scope_text));
}

std::string html_tail(uint64_t executions_shown, uint64_t executions_omitted) {
  const std::string_view p = page();
  const size_t at = p.find(data_marker);
  vassert(at != std::string_view::npos, "timeline page template lacks {}", data_marker);
  std::string tail(p.substr(at + data_marker.size()));
  return replace_all(std::move(tail), meta_marker,
                     fmt::format("{{\"shown\":{},\"omitted\":{},\"limit\":{}}}", executions_shown,
                                 executions_omitted, html_executions_max));
}

namespace {

void add_string(std::string& out, std::string_view key, std::string_view v, bool& first) {
  json_text::append_key(out, key, first, true);
  json_text::append_string(out, v, true);
}

void add_number(std::string& out, std::string_view key, int64_t v, bool& first) {
  json_text::append_key(out, key, first, true);
  out += fmt::format("{}", v);
}

// Appends ,"key":[{...},...]: one object per item, whose fields add_fields(item, first) writes.
template <typename T, typename F>
void add_objects(std::string& out, std::string_view key, const std::vector<T>& items,
                 F add_fields) {
  out += fmt::format(",\"{}\":[", key);
  for (size_t i = 0; i < items.size(); ++i) {
    bool first = true;
    out += i ? ",{" : "{";
    add_fields(items[i], first);
    out += "}";
  }
  out += "]";
}

void add_bars(std::string& out, const execution_view& v) {
  add_objects(out, "bars", v.bars, [&](const step_bar& b, bool& first) {
    add_string(out, "step", b.step, first);
    add_number(out, "attempt", b.attempt, first);
    add_number(out, "start", b.start_ms, first);
    add_number(out, "end", b.end_ms, first);
    add_string(out, "outcome", b.outcome, first);
    add_string(out, "detail", b.detail, first);
  });
}

void add_events(std::string& out, const execution_view& v) {
  add_objects(out, "events", v.lines, [&](const timeline_line& l, bool& first) {
    add_number(out, "t", l.ts_ms, first);
    add_string(out, "where", fmt::format("{}@{}", stream_name(l.s), l.offset), first);
    add_string(out, "kind", l.kind, first);
    add_string(out, "type", l.type, first);
    add_string(out, "id", l.record_id, first);
    add_string(out, "cause", l.causation_id, first);
    add_string(out, "text", l.text, first);
    json_text::append_key(out, "details", first, true);
    out += "[";
    for (size_t d = 0; d < l.details.size(); ++d) {
      if (d) out += ",";
      json_text::append_string(out, l.details[d], true);
    }
    out += "]";
  });
}

}  // namespace

std::string html_view_line(const execution_view& v) {
  std::string out = "{";
  bool first = true;
  add_number(out, "partition", v.partition, first);
  add_string(out, "tenant", v.tenant, first);
  add_string(out, "execution", v.execution, first);
  add_string(out, "workflow", v.workflow, first);
  add_number(out, "version", v.version, first);
  add_string(out, "status", v.status, first);
  add_number(out, "start", v.first_ms, first);
  add_number(out, "end", v.last_ms, first);
  add_string(out, "summary", summary(v), first);
  add_number(out, "continued", v.continued, first);
  add_bars(out, v);
  add_events(out, v);
  return out + "}\n";
}

}  // namespace auterity

// ---------------------------------------------------------------------------------- state

namespace auterity {

std::string render_state_text(const execution_state& e, const std::vector<std::string>& steps) {
  std::string out = fmt::format("{} / {}: {} {} v{}\n", e.tenant, e.id, exec_status_name(e.status),
                                e.workflow, e.version);
  out += fmt::format("  started {}", format_time_ms(e.started_ms));
  if (e.ended_ms) out += fmt::format(", ended {}", format_time_ms(e.ended_ms));
  out += fmt::format("; {} events, last event hash {}\n", e.event_count, hex(e.last_hash));
  out += fmt::format("  input  {}\n", clip(e.input_json, 200));
  if (!e.result.empty()) out += fmt::format("  result {}\n", clip(e.result, 200));
  out += "  steps:\n";
  for (size_t i = 0; i < e.steps.size(); ++i) {
    const step_state& s = e.steps[i];
    out += fmt::format("    {:<18} {:<10} attempt {}", i < steps.size() ? steps[i] : "?",
                       step_status_name(s.status), s.attempt);
    if (s.timer_at_ms) out += fmt::format(", timer at {}", format_time_ms(s.timer_at_ms));
    if (!s.output_json.empty()) out += ", output " + clip(s.output_json, 120);
    if (!s.error.empty()) out += ", error: " + clip(s.error, 120);
    out += "\n";
  }
  for (const auto& [name, payload] : e.signals) {
    out += fmt::format("  buffered signal {}: {}\n", name, clip(payload, 120));
  }
  return out;
}

std::string render_state_json(const execution_state& e, const std::vector<std::string>& steps) {
  std::string out = "{";
  bool first = true;
  auto str = [&](std::string_view k, std::string_view v) {
    json_text::append_key(out, k, first);
    json_text::append_string(out, v);
  };
  auto num = [&](std::string_view k, int64_t v) {
    json_text::append_key(out, k, first);
    out += fmt::format("{}", v);
  };
  str("tenant", e.tenant);
  str("execution", e.id);
  str("workflow", e.workflow);
  num("version", e.version);
  str("status", exec_status_name(e.status));
  str("input_json", e.input_json);
  num("event_count", e.event_count);
  str("last_hash", hex(e.last_hash));
  num("started_ms", e.started_ms);
  num("ended_ms", e.ended_ms);
  str("result", e.result);
  json_text::append_key(out, "steps", first);
  out += "[";
  for (size_t i = 0; i < e.steps.size(); ++i) {
    const step_state& s = e.steps[i];
    out += i ? ",{" : "{";
    bool f = true;
    json_text::append_key(out, "step", f);
    json_text::append_string(out, i < steps.size() ? steps[i] : "?");
    json_text::append_key(out, "status", f);
    json_text::append_string(out, step_status_name(s.status));
    out += fmt::format(",\"attempt\":{},\"timer_at_ms\":{}", s.attempt, s.timer_at_ms);
    json_text::append_key(out, "output_json", f);
    json_text::append_string(out, s.output_json);
    json_text::append_key(out, "error", f);
    json_text::append_string(out, s.error);
    out += "}";
  }
  out += "]";
  json_text::append_key(out, "signals", first);
  out += "[";
  for (size_t i = 0; i < e.signals.size(); ++i) {
    out += i ? ",{" : "{";
    bool f = true;
    json_text::append_key(out, "name", f);
    json_text::append_string(out, e.signals[i].first);
    json_text::append_key(out, "payload_json", f);
    json_text::append_string(out, e.signals[i].second);
    out += "}";
  }
  return out + "]}";
}

}  // namespace auterity
