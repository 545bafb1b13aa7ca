#pragma once
// The golden v1 history (tests/data/): where it is, and the one-line summary of an execution's
// state that the writer recorded from the live engine and the test recomputes by replay.

#include <filesystem>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "processors/execution_state.h"
#include "replay/json_text.h"
#include "replay/state_replay.h"
#include "replay/tests/history_file.h"

namespace auterity::testing {

inline constexpr const char* golden_history = "golden_v1.history";
inline constexpr const char* golden_expected = "golden_v1.expected";

// Fields that mean the same in every schema version: the summary must not change when the
// state encoding does (a v2 engine replaying this v1 history must produce these lines).
inline std::string state_summary(const execution_state& e, const std::vector<std::string>& steps) {
  std::string out = "{";
  bool first = true;
  auto str = [&](const char* k, std::string_view v) {
    json_text::append_key(out, k, first);
    json_text::append_string(out, v);
  };
  str("tenant", e.tenant);
  str("execution", e.id);
  str("workflow", fmt::format("{} v{}", e.workflow, e.version));
  str("status", exec_status_name(e.status));
  str("events", fmt::format("{}", e.event_count));
  str("last_hash", hex(e.last_hash));
  str("result", e.result);
  json_text::append_key(out, "steps", first);
  out += "[";
  for (size_t i = 0; i < e.steps.size(); ++i) {
    const step_state& s = e.steps[i];
    out += fmt::format("{}{}", i ? "," : "",
                       json_text::quote(fmt::format("{} {} attempt {} {}{}", steps.at(i),
                                                    step_status_name(s.status), s.attempt,
                                                    s.output_json, s.error)));
  }
  return out + "]}";
}

#ifdef AUTERITY_REPLAY_TEST_DATA
inline std::string test_data(const char* name) {
  return std::string(AUTERITY_REPLAY_TEST_DATA) + "/" + name;
}

inline history_file load_golden() {
  auto h = read_history(test_data(golden_history));
  if (!h) {
    fmt::print(stderr, "cannot load the golden history: {}\n", h.error().message);
    std::abort();
  }
  return std::move(*h);
}
#endif

// Builds the state stores the engine would hold for the log in <dir>/log, in
// <dir>/state/pNNN, by replaying it through the appliers (the engine's own state is, by the
// replay-equivalence property, exactly this).
inline result<void> build_engine_state(const std::string& dir, log& l) {
  for (uint32_t p = 0; p < l.partition_count(); ++p) {
    auto r = state_rebuilder::open(fmt::format("{}/state/p{:03}", dir, p), p, l.partition_count());
    if (!r) return std::unexpected(r.error());
    auto done = rebuild(l, p, **r, rebuild_limit{});
    if (!done) return std::unexpected(done.error());
  }
  return {};
}

// A data directory as the engine leaves it: the log of `records` and the state built from it.
inline result<void> build_data_dir(const std::string& dir, uint32_t partitions,
                                   const std::vector<logged_record>& records) {
  auto l = write_log(dir, partitions, records);
  if (!l) return std::unexpected(l.error());
  return build_engine_state(dir, **l);
}

// A data directory holding a rewritten log beside the engine's state of the original one (a
// copy of <clean_dir>/state): what an attacker who rewrites the log consistently leaves.
inline result<void> tampered_data_dir(const std::string& dir, uint32_t partitions,
                                      const std::vector<logged_record>& records,
                                      const std::string& clean_dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  std::filesystem::copy(clean_dir + "/state", dir + "/state",
                        std::filesystem::copy_options::recursive, ec);
  if (ec) return fail(errc::io, "copying the state: " + ec.message());
  auto l = write_log(dir, partitions, records);
  if (!l) return std::unexpected(l.error());
  return {};
}

}  // namespace auterity::testing
