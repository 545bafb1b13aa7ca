// `auterity replay`: auditors' subcommands — timeline, state (as of a point), verify. The work
// is in replay/; this file parses the command line and prints results.
//
// Exit codes are part of the interface scripts rely on, so this file checks its own command
// lines: options are taken as text and validated here, and unknown arguments are collected
// rather than left to the parser, whose own errors exit with codes of its own (>= 100).

#include <stdlib.h>

#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>

#include <fmt/core.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "engine/anchors.h"
#include "engine/record.h"
#include "processors/execution_state.h"
#include "replay/json_text.h"
#include "replay/progress.h"
#include "replay/render.h"
#include "replay/source.h"
#include "replay/state_replay.h"
#include "replay/time_text.h"
#include "replay/timeline_export.h"
#include "replay/verify.h"

namespace auterity {

namespace {

// Exit codes of every replay subcommand.
constexpr int exit_ok = 0;     // done: verified / something shown
constexpr int exit_found = 1;  // verify: problems found; timeline/state: nothing selected
constexpr int exit_usage = 2;  // bad command line, unreadable data, IO error

constexpr const char* exit_codes_help =
    "Exit codes: 0 = verified (verify) / shown (timeline, state); 1 = problems found (verify) / "
    "nothing in scope (all: e.g. an unknown --tenant); 2 = usage, data or IO error.";

int fail_usage(const std::string& message) {
  fmt::print(stderr, "auterity replay: {}\n", message);
  return exit_usage;
}

int fail_error(const error& e) {
  fmt::print(stderr, "auterity replay: {} ({})\n", e.message, errc_name(e.code));
  return exit_usage;
}

// Options are text with an optional value, checked by the runner (see the top of the file).
CLI::Option* text_option(CLI::App* cmd, const std::string& name, std::string& into,
                         const std::string& help, const std::string& type = "TEXT") {
  return cmd->add_option(name, into, help)->expected(0, 1)->type_name(type);
}

struct common_options {
  std::string data = "auterity-data";
  std::string kafka;  // bootstrap servers: read the topics instead of <data>/log
  std::string topic_prefix;
  std::map<std::string, std::string> kafka_properties;  // the configuration's (SASL/TLS)
  std::string config;  // read by main() before parsing (load_effective_config)
  std::string threads;
  bool no_progress = false;
  std::vector<CLI::Option*> valued;  // options that need a value when given
};

// A replay subcommand with the options all of them take; the caller adds its own.
CLI::App* add_replay_subcommand(CLI::App* replay, const std::string& name,
                                const std::string& description, common_options& c) {
  auto* cmd = replay->add_subcommand(name, description);
  cmd->allow_extras();
  cmd->footer(exit_codes_help);
  c.valued.push_back(text_option(cmd, "--data", c.data,
                                 "Data directory (embedded log + state); default auterity-data",
                                 "DIR"));
  c.valued.push_back(text_option(cmd, "--kafka", c.kafka,
                                 "Read the history from this Kafka cluster (read-only, "
                                 "read_committed); --data then only holds engine state to "
                                 "compare with, if any",
                                 "BOOTSTRAP"));
  c.valued.push_back(
      text_option(cmd, "--topic-prefix", c.topic_prefix, "Kafka topic name prefix", "PREFIX"));
  c.valued.push_back(text_option(cmd, "--config", c.config,
                                 "Configuration file (TOML, cli/README.md; also AUTERITY_CONFIG): "
                                 "its kafka.properties (SASL/TLS) reach the Kafka readers",
                                 "FILE"));
  c.valued.push_back(text_option(cmd, "--threads", c.threads,
                                 "Partitions read at once (default: one per core)", "N"));
  cmd->add_flag("--no-progress", c.no_progress,
                "No progress bar (it is drawn on stderr only when stderr is a terminal)");
  return cmd;
}

// Checks what the parser let through: stray arguments and options given without a value.
std::optional<std::string> check_command_line(CLI::App* cmd, const common_options& c) {
  if (!cmd->remaining().empty()) {
    std::string extra;
    for (const std::string& s : cmd->remaining()) extra += " " + s;
    return fmt::format("unexpected argument(s):{} (see auterity replay {} --help)", extra,
                       cmd->get_name());
  }
  for (const CLI::Option* o : c.valued) {
    if (o->count() > 0 && o->as<std::string>().empty()) {
      return fmt::format("{} needs a value", o->get_name());
    }
  }
  return std::nullopt;
}

// Every replay command opens the log and the state read-only; damage found on the way is
// printed on stderr (verify also lists it in its report).
result<replay_source> open_source(const common_options& c, bool with_state) {
  auto src = c.kafka.empty() ? open_embedded_source(c.data, with_state)
                             : open_kafka_source(c.kafka, c.topic_prefix, c.data, with_state,
                                                 c.kafka_properties);
  if (src) {
    for (const log_damage& d : src->damage) {
      fmt::print(stderr, "auterity replay: warning: {}\n", damage_text(d));
    }
  }
  return src;
}

std::optional<unsigned> parse_count(const std::string& text) {
  unsigned v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || text.empty()) return std::nullopt;
  return v;
}

// A fresh scratch directory (the rebuilt state), removed when done unless the user named it.
class scratch_dir {
 public:
  explicit scratch_dir(const std::string& chosen) : _path(chosen), _owned(chosen.empty()) {
    if (!_owned) return;
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = fmt::format("{}/auterity-replay-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (::mkdtemp(tmpl.data())) _path = tmpl;
  }
  ~scratch_dir() {
    std::error_code ec;
    if (_owned && !_path.empty()) std::filesystem::remove_all(_path, ec);
  }
  const std::string& path() const { return _path; }

 private:
  std::string _path;
  bool _owned;
};

std::unique_ptr<progress> make_progress(const char* label, uint64_t total, bool disabled) {
  return std::make_unique<progress>(label, total, !disabled && progress::stderr_is_terminal());
}

// ------------------------------------------------------------------------------- timeline

struct timeline_flags {
  common_options c;
  std::string tenant, execution, workflow, from, to, format = "text", out, title;
  bool all_partitions = false;
};

std::string scope_text(const timeline_flags& f) {
  std::string s = "data " + f.c.data;
  if (!f.tenant.empty()) s += ", tenant " + f.tenant;
  if (!f.execution.empty()) s += ", execution " + f.execution;
  if (!f.workflow.empty()) s += ", workflow " + f.workflow;
  if (!f.from.empty()) s += ", from " + f.from;
  if (!f.to.empty()) s += ", to " + f.to;
  return s;
}

std::optional<std::string> timeline_options_of(const timeline_flags& f, timeline_options& o) {
  auto format = parse_timeline_format(f.format);
  if (!format) return "--format must be text, jsonl or html, not '" + f.format + "'";
  o.format = *format;
  o.scope = replay_scope{f.tenant, f.execution, f.workflow, {}, {}, f.all_partitions, {}};
  for (auto [text, into, name] : {std::tuple{&f.from, &o.scope.from_ms, "--from"},
                                  std::tuple{&f.to, &o.scope.to_ms, "--to"}}) {
    if (text->empty()) continue;
    *into = parse_time_ms(*text);
    if (!*into) {
      return fmt::format(
          "{} '{}' is not a time: use ISO 8601 (2024-05-01T10:00:00Z) or "
          "@<milliseconds since the epoch>",
          name, *text);
    }
  }
  if (!f.c.threads.empty() && !parse_count(f.c.threads)) return "--threads must be a number";
  o.threads = f.c.threads.empty() ? 0 : *parse_count(f.c.threads);
  if (!f.title.empty()) o.title = f.title;
  o.scope_text = scope_text(f);
  return std::nullopt;
}

int run_timeline(const timeline_flags& f) {
  timeline_options o;
  if (auto why = timeline_options_of(f, o)) return fail_usage(*why);
  auto src = open_source(f.c, false);
  if (!src) return fail_error(src.error());
  // A tenant's history is on every partition it lived on (docs/tenant-moves.md).
  if (auto r = resolve_partitions(*src->events, o.scope); !r) return fail_error(r.error());
  std::FILE* out = stdout;
  if (!f.out.empty()) {
    out = std::fopen(f.out.c_str(), "wb");
    if (!out) return fail_usage(fmt::format("cannot write {}: {}", f.out, std::strerror(errno)));
  }
  auto meter =
      make_progress("timeline", timeline_records_total(*src->events, o.scope), f.c.no_progress);
  o.meter = meter.get();
  auto stats = write_timeline(*src->events, o, out);
  meter->finish();
  if (out != stdout) std::fclose(out);
  if (!stats) return fail_error(stats.error());
  if (stats->records_in_scope == 0) {
    fmt::print(stderr, "auterity replay: no records in scope ({})\n", o.scope_text);
    return exit_found;
  }
  if (stats->histories_omitted) {
    fmt::print(stderr,
               "auterity replay: the page shows {} executions; {} more were left out "
               "(narrow the scope)\n",
               stats->histories_shown, stats->histories_omitted);
  }
  if (!f.out.empty()) {
    fmt::print(stderr, "auterity replay: wrote {} ({} records)\n", f.out, stats->records_in_scope);
  }
  return exit_ok;
}

CLI::App* add_timeline(CLI::App* replay, timeline_flags& f) {
  auto* cmd = add_replay_subcommand(
      replay, "timeline",
      "What happened, when and why: events with their causes, step outputs and "
      "errors, notifications sent, AI calls with model, tokens and cost",
      f.c);
  auto& v = f.c.valued;
  v.push_back(
      text_option(cmd, "--tenant", f.tenant, "Only this tenant (reads only its partition)"));
  v.push_back(text_option(cmd, "--execution", f.execution, "Only this execution"));
  v.push_back(text_option(cmd, "--workflow", f.workflow, "Only executions of this workflow"));
  v.push_back(text_option(cmd, "--from", f.from,
                          "Only records at or after TIME (ISO 8601 UTC, or @<epoch ms>)", "TIME"));
  v.push_back(text_option(cmd, "--to", f.to, "Only records at or before TIME", "TIME"));
  v.push_back(text_option(cmd, "--format", f.format,
                          "text (default), jsonl (one JSON object per record, for tools) or "
                          "html (one self-contained page)",
                          "FORMAT"));
  v.push_back(text_option(cmd, "--out", f.out, "Write to FILE instead of stdout", "FILE"));
  v.push_back(text_option(cmd, "--title", f.title, "Title of the HTML page"));
  cmd->add_flag("--all-partitions", f.all_partitions,
                "With --tenant: read every partition (a tenant moved between partitions)");
  return cmd;
}

// ---------------------------------------------------------------------------------- state

struct state_flags {
  common_options c;
  std::string tenant, execution, as_of, format = "text", scratch;
};

std::string state_of(const state_store& s, const execution_state& e, bool json) {
  const std::vector<std::string> steps = step_names_of(s, e);
  return json ? render_state_json(e, steps) + "\n" : render_state_text(e, steps);
}

// Every execution of the tenant in the rebuilt store, one line each (no --execution).
int list_executions(const state_store& s, const std::string& tenant, bool json) {
  int found = 0;
  auto scanned =
      s.scan_prefix(keys::tenant_prefix(tenant) + "E", [&](std::string_view, std::string_view v) {
        execution_state e;
        if (!decode_execution(v, e)) return true;
        ++found;
        if (json) {
          fmt::print("{}", state_of(s, e, true));
        } else {
          fmt::print("{:<28} {:<14} {:<10} {} events\n", e.id, e.workflow,
                     exec_status_name(e.status), e.event_count);
        }
        return true;
      });
  if (!scanned) return fail_error(scanned.error());
  return found ? exit_ok : exit_found;
}

int run_state(const state_flags& f) {
  if (f.tenant.empty()) return fail_usage("state needs --tenant");
  if (f.format != "text" && f.format != "json") return fail_usage("--format must be text or json");
  rebuild_limit limit;
  if (!f.as_of.empty()) {
    auto point = parse_as_of(f.as_of);
    if (!point) {
      return fail_usage(
          fmt::format("--as-of '{}' is neither an executions offset (a number) nor "
                      "a time (ISO 8601, or @<epoch ms>)",
                      f.as_of));
    }
    if (point->offset) limit.end_offset = *point->offset;
    limit.until_ms = point->time_ms;
  }
  auto src = open_source(f.c, false);
  if (!src) return fail_error(src.error());
  log& l = *src->events;
  // The partition the tenant was on at that point: its stays (docs/tenant-moves.md), the last
  // one it had not left by the time asked; an offset applies to the partition it is on now.
  auto stays = tenant_stays(l, f.tenant);
  if (!stays) return fail_error(stays.error());
  uint32_t p = stays->back().partition;
  if (limit.until_ms && limit.end_offset == UINT64_MAX) {
    for (const tenant_stay& s : *stays) {
      if (*limit.until_ms < s.left_ms) {
        p = s.partition;
        break;
      }
    }
  }
  scratch_dir scratch(f.scratch);
  auto r = state_rebuilder::open(scratch.path() + "/state", p, l.partition_count(), f.tenant);
  if (!r) return fail_error(r.error());
  auto done = rebuild(l, p, **r, limit);
  if (!done) return fail_error(done.error());
  const bool json = f.format == "json";
  if (!json) {
    fmt::print("as of executions offset {} of partition {}{}\n", done->end_offset, p,
               done->last_ms ? " (last record " + format_time_ms(done->last_ms) + ")" : "");
  }
  if (done->chain_problems) {
    fmt::print(stderr,
               "auterity replay: warning: {} hash-chain problem(s) on the way; their "
               "records were not applied (run `auterity replay verify`)\n",
               done->chain_problems);
  }
  const state_store& s = (*r)->store();
  if (f.execution.empty()) return list_executions(s, f.tenant, json);
  auto stored = s.get(keys::execution(f.tenant, f.execution));
  if (!stored) return fail_error(stored.error());
  execution_state e;
  if (!*stored || !decode_execution(**stored, e)) {
    fmt::print(stderr,
               "auterity replay: execution {} of tenant {} did not exist yet at that "
               "point\n",
               f.execution, f.tenant);
    return exit_found;
  }
  fmt::print("{}", state_of(s, e, json));
  return exit_ok;
}

CLI::App* add_state(CLI::App* replay, state_flags& f) {
  auto* cmd = add_replay_subcommand(
      replay, "state",
      "An execution's state at a point of its partition's history, rebuilt by "
      "replaying the executions records up to there through the appliers",
      f.c);
  auto& v = f.c.valued;
  v.push_back(text_option(cmd, "--tenant", f.tenant, "Tenant (required)"));
  v.push_back(text_option(cmd, "--execution", f.execution,
                          "Execution (without it: every execution of the tenant, one line each)"));
  v.push_back(text_option(cmd, "--as-of", f.as_of,
                          "OFFSET (replay executions records [0, OFFSET)) or TIME (up to the first "
                          "record later than TIME: ISO 8601 or @<epoch ms>); default: the end",
                          "OFFSET|TIME"));
  v.push_back(text_option(cmd, "--format", f.format, "text (default) or json", "FORMAT"));
  v.push_back(text_option(cmd, "--scratch", f.scratch,
                          "Directory for the rebuilt state (default: a temporary one, removed)",
                          "DIR"));
  return cmd;
}

// --------------------------------------------------------------------------------- verify

struct verify_flags {
  common_options c;
  std::string tenant, partition, format = "text", scratch;
  bool chains = false, state = false;
  std::vector<std::string> anchors;  // docs/anchors.md; several on Kafka (one per instance)
  std::string anchor_public_key;
};

// --anchors FILE... --anchor-public-key REF: the partition chains against the signed anchors
// of every file together.
result<std::optional<anchor_check>> check_anchors(log& l, const verify_flags& f) {
  if (f.anchors.empty() && f.anchor_public_key.empty()) return std::nullopt;
  if (f.anchors.empty() || f.anchor_public_key.empty()) {
    return fail(errc::invalid, "--anchors and --anchor-public-key go together");
  }
  auto key = anchor_key::load(f.anchor_public_key, /*need_private=*/false);
  if (!key) return std::unexpected(key.error());
  std::vector<anchor_line> lines;
  for (const std::string& file : f.anchors) {
    if (file.empty()) return fail(errc::invalid, "--anchors needs a value");
    auto read = read_anchors(file, &*key);
    if (!read) return std::unexpected(read.error());
    std::move(read->begin(), read->end(), std::back_inserter(lines));
  }
  auto check = verify_anchors(l, lines);
  if (!check) return std::unexpected(check.error());
  if (check->anchors == 0) check->problems.push_back("no anchor signed with this key to check");
  return check;
}

// Gaps declared by `auterity repair` (<data>/log/repairs/, docs/salvage.md), as notes on their
// partition: declared, so not problems, but never silent.
void add_repair_notes(const std::string& data, verify_report& report) {
  std::error_code ec;
  const std::string dir = data + "/log/repairs";
  if (!std::filesystem::is_directory(dir, ec)) return;
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".json") files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  for (const std::string& file : files) {
    std::ifstream in(file);
    const auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    std::string text;
    uint32_t partition = UINT32_MAX;
    if (j.is_object() && j.contains("partition") && j["partition"].is_number_unsigned()) {
      partition = j["partition"].get<uint32_t>();
      std::string histories;
      uint64_t events = 0, count = 0;
      for (const auto& h : j.value("histories", nlohmann::json::array())) {
        const uint64_t n = h.value("events_lost", uint64_t{0});
        if (n == 0) continue;
        events += n;
        if (count++ < 5) {
          histories += fmt::format("{}{}/{} from {}", count > 1 ? ", " : "", h.value("tenant", ""),
                                   h.value("execution", ""), h.value("first_lost_event", ""));
        }
      }
      if (count > 5) histories += fmt::format(" and {} more", count - 5);
      text = fmt::format(
          "DECLARED GAP (repair {}, {}{}): {} bytes cut from the partition's log after its "
          "last good commit ({} unreadable), executions kept up to offset {}; {} event(s) of {} "
          "histor{} lost{}{}; quarantined in {}",
          file, format_time_ms(j.value("time_ms", int64_t{0})),
          j.value("reason", "").empty() ? "" : ", reason: " + j.value("reason", ""),
          j.value("cut_bytes", uint64_t{0}), j.value("unreadable_bytes", uint64_t{0}),
          j.contains("kept") ? j["kept"].value("executions", uint64_t{0}) : 0, events, count,
          count == 1 ? "y" : "ies", histories.empty() ? "" : ": ", histories,
          j.value("quarantine", "(not recorded)"));
    } else {
      text = fmt::format("UNREADABLE repair declaration {}", file);
    }
    for (partition_verification& v : report.partitions) {
      if (partition == UINT32_MAX || v.partition == partition) v.notes.push_back(text);
    }
  }
}

std::string anchors_json(const anchor_check& a) {
  std::string out =
      fmt::format(",\"anchors\":{{\"checked\":{},\"partition_heads\":{},\"problems\":[", a.anchors,
                  a.partition_heads);
  for (size_t k = 0; k < a.problems.size(); ++k)
    out += (k ? "," : "") + json_text::quote(a.problems[k]);
  return out + "]}";
}

void print_partition(const partition_verification& v, bool chains, bool state) {
  std::string line = fmt::format("partition {}: {} records, {} events in {} histories", v.partition,
                                 v.records, v.events, v.chains);
  if (chains) {
    line += v.chain_problems_total
                ? fmt::format("; {} hash-chain problem(s)", v.chain_problems_total)
                : std::string(v.heads_compared ? "; chains OK (ends match the engine's state)"
                                               : "; chains OK");
  }
  if (state && v.state_compared) {
    line += v.state_differences ? fmt::format("; state: {} difference(s)", v.state_differences)
                                : fmt::format("; state OK ({} keys equal a replay)", v.state_keys);
  }
  fmt::print("{} [{:.2f}s]\n", line, v.seconds);
  for (const chain_problem& p : v.chain_problems) fmt::print("  CHAIN {}\n", p.text());
  if (v.chain_problems_total > v.chain_problems.size()) {
    fmt::print("  ... and {} more\n", v.chain_problems_total - v.chain_problems.size());
  }
  for (const state_diff& d : v.state_diffs) fmt::print("  STATE {}\n", d.text);
  if (v.state_differences > v.state_diffs.size()) {
    fmt::print("  ... and {} more differences\n", v.state_differences - v.state_diffs.size());
  }
  if (v.records_not_applied && chains) {
    fmt::print(
        "  note: {} record(s) were not applied to the rebuilt state (their history has a "
        "problem above)\n",
        v.records_not_applied);
  }
  for (const skipped_record& s : v.not_applied) {
    if (!chains) fmt::print("  NOT APPLIED {} at offset {}: {}\n", s.record_id, s.offset, s.reason);
  }
  for (const std::string& n : v.notes) fmt::print("  note: {}\n", n);
  for (const std::string& d : v.log_damage) fmt::print("  LOG {}\n", d);
}

std::string verify_json(const verify_report& r) {
  std::string out =
      fmt::format("{{\"ok\":{},\"problems\":{},\"partitions\":[", r.ok(), r.problems());
  for (size_t i = 0; i < r.partitions.size(); ++i) {
    const partition_verification& v = r.partitions[i];
    out += fmt::format(
        "{}{{\"partition\":{},\"records\":{},\"events\":{},\"histories\":{},"
        "\"chain_problems_total\":{},\"state_compared\":{},"
        "\"state_differences\":{},\"chain_problems\":[",
        i ? "," : "", v.partition, v.records, v.events, v.chains, v.chain_problems_total,
        v.state_compared, v.state_differences);
    for (size_t k = 0; k < v.chain_problems.size(); ++k) {
      const chain_problem& p = v.chain_problems[k];
      out += fmt::format(
          "{}{{\"offset\":{},\"kind\":{},\"tenant\":{},\"execution\":{},"
          "\"record_id\":{},\"detail\":{}}}",
          k ? "," : "", p.offset, json_text::quote(chain_problem_kind_name(p.kind)),
          json_text::quote(p.tenant), json_text::quote(p.execution), json_text::quote(p.record_id),
          json_text::quote(p.detail));
    }
    out += "],\"state_diffs\":[";
    for (size_t k = 0; k < v.state_diffs.size(); ++k) {
      out += fmt::format("{}{{\"key\":{},\"text\":{}}}", k ? "," : "",
                         json_text::quote(v.state_diffs[k].key),
                         json_text::quote(v.state_diffs[k].text));
    }
    out += "],\"notes\":[";
    for (size_t k = 0; k < v.notes.size(); ++k) {
      out += (k ? "," : "") + json_text::quote(v.notes[k]);
    }
    out += "],\"log_damage\":[";
    for (size_t k = 0; k < v.log_damage.size(); ++k) {
      out += (k ? "," : "") + json_text::quote(v.log_damage[k]);
    }
    out += "]}";
  }
  return out + "]}\n";
}

uint64_t executions_records(log& l, const verify_options& o) {
  uint64_t total = 0;
  if (!o.partitions.empty()) {
    for (uint32_t p : o.partitions) total += l.end_offset(stream::executions, p).value_or(0);
    return total;
  }
  replay_scope scope;
  scope.tenant = o.tenant;
  for (uint32_t p : scope_partitions(scope, l.partition_count(), l.placement().base)) {
    total += l.end_offset(stream::executions, p).value_or(0);  // progress only
  }
  return total;
}

int run_verify(const verify_flags& f) {
  if (f.format != "text" && f.format != "json") return fail_usage("--format must be text or json");
  verify_options o;
  o.chains = f.chains || !f.state;  // neither flag: both checks
  o.state = f.state || !f.chains;
  o.tenant = f.tenant;
  if (!f.c.threads.empty() && !parse_count(f.c.threads)) {
    return fail_usage("--threads must be a number");
  }
  o.threads = f.c.threads.empty() ? 0 : *parse_count(f.c.threads);
  auto src = open_source(f.c, true);
  if (!src) return fail_error(src.error());
  log& l = *src->events;
  if (!f.partition.empty()) {
    auto p = parse_count(f.partition);
    if (!p || *p >= l.partition_count()) {
      return fail_usage(fmt::format("--partition must be 0..{}", l.partition_count() - 1));
    }
    o.partitions = {*p};
  } else if (!o.tenant.empty()) {
    // Every partition the tenant lived on (docs/tenant-moves.md), found once here.
    replay_scope scope;
    scope.tenant = o.tenant;
    if (auto r = resolve_partitions(l, scope); !r) return fail_error(r.error());
    o.partitions = scope.partitions;
  }
  scratch_dir scratch(f.scratch);
  if (o.state && scratch.path().empty()) return fail_usage("cannot create a scratch directory");
  o.scratch_dir = scratch.path();
  auto meter = make_progress("verify", executions_records(l, o), f.c.no_progress);
  o.meter = meter.get();
  const auto start = std::chrono::steady_clock::now();
  const std::vector<state_store*> stores = src->store_ptrs();
  auto report = verify_log(l, stores, o);
  meter->finish();
  if (!report) return fail_error(report.error());
  for (const log_damage& d : src->damage) {
    for (partition_verification& v : report->partitions) {
      if (v.partition != d.partition) continue;
      v.log_damage.push_back(damage_text(d));
      if (d.committed) ++v.log_damage_problems;
    }
  }
  if (f.c.kafka.empty()) add_repair_notes(f.c.data, *report);
  auto anchors = check_anchors(l, f);
  if (!anchors) return fail_error(anchors.error());
  const bool anchors_ok = !*anchors || (*anchors)->problems.empty();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (f.format == "json") {
    std::string text = verify_json(*report);
    if (*anchors) {
      text.insert(text.size() - 2, anchors_json(**anchors));
      if (!anchors_ok) {
        text.replace(0, text.find(',', 0), "{\"ok\":false");
      }
    }
    fmt::print("{}", text);
    return report->ok() && anchors_ok ? exit_ok : exit_found;
  }
  uint64_t records = 0, events = 0;
  for (const partition_verification& v : report->partitions) {
    print_partition(v, o.chains, o.state);
    records += v.records;
    events += v.events;
  }
  if (*anchors) {
    const anchor_check& a = **anchors;
    fmt::print("anchors: {} signed anchor(s), {} partition head(s) compared{}\n", a.anchors,
               a.partition_heads, anchors_ok ? "; the log matches every anchor" : "");
    for (const std::string& p : a.problems) fmt::print("  ANCHOR {}\n", p);
  }
  if (!o.tenant.empty() && events == 0) {  // a mistyped tenant must not read as "verified"
    fmt::print(stderr,
               "auterity replay: nothing to verify: the log holds no event of tenant '{}'\n",
               o.tenant);
    return exit_found;
  }
  if (report->ok() && anchors_ok) {
    fmt::print("verified: {} executions records in {:.2f}s ({:.0f} records/s){}{}{}\n", records,
               seconds, seconds > 0 ? records / seconds : 0.0,
               o.chains ? "; hash chains intact" : "",
               o.state ? "; state equals a replay of the log" : "",
               *anchors ? "; signed anchors match" : "");
    return exit_ok;
  }
  fmt::print("PROBLEMS FOUND: {}\n",
             report->problems() + (*anchors ? (*anchors)->problems.size() : 0));
  return exit_found;
}

CLI::App* add_verify(CLI::App* replay, verify_flags& f) {
  auto* cmd = add_replay_subcommand(
      replay, "verify",
      "Prove the history was not altered (hash chains: the first removed, altered or "
      "reordered event of each execution) and that replaying it gives the engine's "
      "state (every differing key). Exit 0 = verified, 1 = problems found (listed), "
      "2 = usage or IO error",
      f.c);
  auto& v = f.c.valued;
  v.push_back(text_option(cmd, "--tenant", f.tenant,
                          "Only this tenant: its partition, its records, its state keys"));
  v.push_back(text_option(cmd, "--partition", f.partition, "Only this partition", "N"));
  cmd->add_flag("--chains", f.chains, "Check the hash chains (without --state: only them)");
  cmd->add_flag("--state", f.state, "Compare the state with a replay (without --chains: only it)");
  v.push_back(text_option(cmd, "--format", f.format, "text (default) or json", "FORMAT"));
  v.push_back(text_option(cmd, "--scratch", f.scratch,
                          "Directory for the rebuilt state (default: a temporary one, removed); "
                          "needs about the size of the engine's state",
                          "DIR"));
  cmd->add_option("--anchors", f.anchors,
                  "Also check the log against these signed anchors (the copy kept by "
                  "`auterity anchors export`; docs/anchors.md): a history rewritten before an "
                  "anchor, however consistently, is reported. Repeat it for the files of "
                  "several instances (Kafka): they are checked together")
      ->expected(1)
      ->take_all()  // one file per occurrence, every occurrence kept
      ->type_name("FILE");
  v.push_back(text_option(cmd, "--anchor-public-key", f.anchor_public_key,
                          "The anchors' Ed25519 key (PEM), by reference: file:/path or env:NAME",
                          "REF"));
  return cmd;
}

}  // namespace

command_runner add_replay_commands(CLI::App& app, const kafka_defaults& defaults) {
  auto* replay =
      app.add_subcommand("replay",
                         "Auditors' tools: timeline (text, JSON Lines, HTML), state as of a point, "
                         "verification of hash chains and state");
  replay->footer(exit_codes_help);
  replay->allow_extras();  // an unknown subcommand is reported by the runner (exit 2)
  auto tf = std::make_shared<timeline_flags>();
  auto sf = std::make_shared<state_flags>();
  auto vf = std::make_shared<verify_flags>();
  CLI::App* timeline = add_timeline(replay, *tf);
  CLI::App* state = add_state(replay, *sf);
  CLI::App* verify = add_verify(replay, *vf);
  return [=, &defaults]() -> std::optional<int> {
    if (!replay->parsed()) return std::nullopt;
    for (common_options* c : {&tf->c, &sf->c, &vf->c}) c->kafka_properties = defaults.properties;
    const std::vector<std::pair<CLI::App*, const common_options*>> commands = {
        {timeline, &tf->c}, {state, &sf->c}, {verify, &vf->c}};
    for (const auto& [cmd, common] : commands) {
      if (!cmd->parsed()) continue;
      if (auto why = check_command_line(cmd, *common)) return fail_usage(*why);
      if (cmd == timeline) return run_timeline(*tf);
      if (cmd == state) return run_state(*sf);
      return run_verify(*vf);
    }
    if (!replay->remaining().empty()) {
      fmt::print(stderr, "auterity replay: unknown subcommand '{}'\n", replay->remaining()[0]);
    }
    fmt::print(stderr, "{}", replay->help());
    return exit_usage;
  };
}

}  // namespace auterity
