#pragma once
// Step input templates: a JSON value in which strings may hold {{path}} expressions.
//   - a string that is exactly one expression takes the referenced JSON value (any type);
//   - otherwise each expression is replaced by its value as text (strings unquoted);
//   - "a ?? b ?? c" takes the first path that exists;
//   - a path that does not exist (and has no ?? alternative) is an error, never "".
// Paths: input.<...>, steps.<id>.output.<...>, steps.<id>.status, steps.<id>.error,
// execution.id, execution.tenant, execution.workflow. Array elements by number: items.0.name

#include <expected>
#include <functional>
#include <string>
#include <string_view>

#include "processors/definition.h"

namespace auterity {

struct template_scope {
  std::string_view tenant_id;
  std::string_view execution_id;
  std::string_view workflow;
  std::string_view input_json;  // the execution input (a JSON object)
  // Looks up a step of the execution: false if no such step. status is the step status name
  // ("pending", "running", "succeeded", "failed", "timed_out", "skipped", ...); output_json is
  // the step's output ("" if none); error its last error ("" if none).
  std::function<bool(std::string_view step_id, std::string_view& status,
                     std::string_view& output_json, std::string_view& error)>
      step;
};

// Renders `template_json` (compact JSON) to compact JSON, or returns a readable error.
std::expected<std::string, std::string> render_template(std::string_view template_json,
                                                        const template_scope& scope);

// Evaluates a step's `when` condition.
std::expected<bool, std::string> evaluate_condition(const condition& c,
                                                    const template_scope& scope);

}  // namespace auterity
