#pragma once
// Workflow definitions as data: parsing, validation and parameter substitution of the JSON a
// tenant publishes. The format is documented in processors/README.md.

#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "processors/rejection.h"

namespace auterity {

enum class step_kind : uint8_t {
  task = 0,
  ai = 1,
  notify = 2,
  wait_signal = 3,
  delay = 4,
  compute = 5,   // its output is its rendered `output` template; no command, no attempt to retry
  switch_ = 6,   // takes the first case whose condition holds, or the default
  foreach = 7,   // runs its body (a task, notify or workflow) once per item of a list
  workflow = 8,  // runs another definition of the tenant as a child execution, waits for it
};
std::string_view step_kind_name(step_kind k);

enum class failure_mode : uint8_t {
  fail = 0,      // the execution fails (default)
  continue_ = 1  // the step ends failed; dependents still run and may test its status
};

struct retry_policy {
  uint32_t max_attempts = 1;  // 1 = no retry
  uint64_t backoff_ms = 1000;
  double backoff_multiplier = 2.0;
  uint64_t backoff_max_ms = 300'000;

  // Delay before attempt `failed_attempt + 1`: backoff_ms * multiplier^(failed_attempt-1),
  // capped at backoff_max_ms.
  uint64_t delay_after(uint32_t failed_attempt) const;
};

struct condition {
  // expression: `path` holds an expression of the expression language (docs/expressions.md)
  enum class op : uint8_t { equals, not_equals, exists, not_exists, expression };
  std::string path;  // e.g. "input.contact.preferred", "steps.draft.status"; or the expression
  op operation = op::equals;
  std::string value_json;  // compared value as compact JSON (equals / not_equals)
};

// One branch of a switch step.
struct switch_case {
  std::string name;            // in the switch's output: {"case": "<name>"}
  std::string when;            // expression (docs/expressions.md), bool
  std::vector<uint16_t> then;  // steps that run only when this case is taken
};

struct step_def {
  std::string id;
  step_kind kind = step_kind::task;
  std::vector<uint16_t> after;    // indexes into definition::steps
  std::string action;             // task: connector action ("transform", "lead_score", ...)
  std::string tier;               // ai: required quality tier ("basic", "standard", "premium")
  std::string input_template;     // compact JSON of the "input" object (may hold {{...}})
  std::optional<condition> when;  // step runs only if true; otherwise skipped
  retry_policy retry;
  uint64_t timeout_ms = 0;  // task/ai/notify: per attempt; wait_signal: overall; 0 = none
  uint64_t delay_ms = 0;    // delay steps
  std::string signal;       // wait_signal steps: signal name
  failure_mode on_failure = failure_mode::fail;
  std::string output_template;         // compute: compact JSON of "output" (a template)
  std::vector<switch_case> cases;      // switch: tried in order
  std::vector<uint16_t> default_then;  // switch: steps of the default branch
  // Runs when any of its `after` steps was not skipped for a branch not taken; without it a
  // step whose dependency was skipped that way is skipped too (processors/DEFINITIONS.md,
  // Branches).
  bool join = false;
  // foreach: `items` is an expression giving the list; the body's kind is `body_kind`, and
  // its action, input_template (may use item and index), retry and timeout_ms are the fields
  // above.
  std::string items;
  step_kind body_kind = step_kind::task;
  uint32_t concurrency = 1;       // items running at once, 1..limits::foreach_concurrency_max
  bool collect_failures = false;  // false: the first item to fail for good fails the step
  // workflow: the definition the child execution runs (version 0: the latest published when
  // the step starts); its input is input_template rendered (processors/DEFINITIONS.md,
  // Sub-workflows).
  std::string child_workflow;
  uint32_t child_version = 0;
};

// The name a switch reports when no case holds.
inline constexpr std::string_view default_case_name = "default";

struct definition {
  std::string workflow;
  uint32_t version = 0;
  std::vector<step_def> steps;
  std::vector<uint16_t> topo_order;  // step indexes, dependencies first, stable by position
  std::string normalized_json;       // parameters substituted, compact; what gets stored
  int step_index(std::string_view id) const;  // -1 if absent
};

struct definition_error {
  rejection_code code;
  std::string reason;
};

// Parses `json`, substitutes "{{params.NAME}}" from `params_json` (or the declared defaults),
// validates, and orders the steps. Never throws.
std::expected<definition, definition_error> parse_definition(std::string_view json,
                                                             std::string_view params_json);

}  // namespace auterity
