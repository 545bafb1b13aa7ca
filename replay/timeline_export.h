#pragma once
// `auterity replay timeline`: what happened in the selected executions, as text for people,
// JSON Lines for tools (record_json.h) or one self-contained HTML page (render.h).
//
// Partitions are read in parallel, each into a spool file, and the spools are appended in
// partition order, so the output is the same whatever the number of threads.

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include "engine/log.h"
#include "replay/history.h"

namespace auterity {

class progress;

enum class timeline_format { text, jsonl, html };
std::optional<timeline_format> parse_timeline_format(std::string_view name);

struct timeline_options {
  replay_scope scope;
  timeline_format format = timeline_format::text;
  unsigned threads = 0;  // partitions read at once; 0: one per core
  std::string title = "Auterity replay timeline";
  std::string scope_text;  // what was selected, shown on the HTML page
  collector_limits limits;
  progress* meter = nullptr;
};

struct timeline_stats {
  uint64_t records_in_scope = 0;   // records the scope selected
  uint64_t histories_shown = 0;    // executions (and tenant record groups) written
  uint64_t histories_omitted = 0;  // HTML: past html_executions_max
};

// Records the timeline will read (for a progress bar).
uint64_t timeline_records_total(log& l, const replay_scope& scope);

result<timeline_stats> write_timeline(log& l, const timeline_options& options, std::FILE* out);

}  // namespace auterity
