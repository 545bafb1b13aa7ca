#pragma once
// Writing execution views (history.h) for people: a text block per execution, or a
// self-contained HTML page (one file, inline CSS and JS, no network) whose script draws each
// execution as a row with a bar per step attempt and a marker per event.

#include <cstdint>
#include <string>
#include <string_view>

#include "processors/execution_state.h"
#include "replay/history.h"

namespace auterity {

// "== acme-motors / lead-0001 · new-lead v1 · succeeded · partition 1" and one line per record.
std::string render_text(const execution_view& v);

// The page is html_head() + html_view_line() per execution + html_tail(). The data lines sit
// in a <script type="application/x-ndjson"> element (JSON escaped for HTML), one per
// execution, so the page can be written as the scan goes.
std::string html_head(std::string_view title, std::string_view scope_text);
std::string html_view_line(const execution_view& v);
std::string html_tail(uint64_t executions_shown, uint64_t executions_omitted);

// An execution's state (`auterity replay state`): a readable block, or one JSON object.
std::string render_state_text(const execution_state& e, const std::vector<std::string>& steps);
std::string render_state_json(const execution_state& e, const std::vector<std::string>& steps);

// Executions one page shows at most: a browser gets slow past a few thousand rows. Narrow the
// scope (--tenant, --workflow, --from/--to) to see the rest.
inline constexpr uint64_t html_executions_max = 5000;

}  // namespace auterity
