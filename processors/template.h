#pragma once
// Step input templates: a JSON value in which strings may hold {{path}} expressions.
//   - a string that is exactly one expression takes the referenced JSON value (any type);
//   - otherwise each expression is replaced by its value as text (strings unquoted);
//   - "a ?? b ?? c" takes the first path that exists;
//   - a path that does not exist (and has no ?? alternative) is an error, never "".
// Paths: input.<...>, steps.<id>.output.<...>, steps.<id>.status, steps.<id>.error,
// execution.id, execution.tenant, execution.workflow; in a foreach body also item.<...> and
// index. Array elements by number: items.0.name
//   - any other text between the braces is an expression (processors/expr.h,
//     docs/expressions.md): "{{ lower(trim(input.reply)) }}", "{{ input.budget ?? 0 }}".
//     A text that reads as "path ?? path" keeps the path meaning above.

#include <cstdint>
#include <expected>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

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
  int64_t now_ms = 0;  // now() in expressions: the decision's clock (batch time)
  // In a foreach item's input: the item (compact JSON) and its index; otherwise item_json is
  // empty and `item`/`index` name nothing.
  std::string_view item_json;
  int64_t item_index = -1;
};

enum class expression_use : uint8_t { template_value, condition };

// Checks the text between one template's braces (template_value) or a `when`/case expression
// (condition: it must be bool when its type is known) as evaluation will read it, collecting
// the step ids its paths name. Errors carry "column N: ", shifted by `column_offset`.
// `item_scope`: the text is in a foreach body, where item and index exist.
std::expected<void, std::string> check_expression(std::string_view text, size_t column_offset,
                                                  std::vector<std::string>& step_refs,
                                                  expression_use use, bool item_scope = false);

// Renders `template_json` (compact JSON) to compact JSON, or returns a readable error.
std::expected<std::string, std::string> render_template(std::string_view template_json,
                                                        const template_scope& scope);

// Evaluates an expression (a foreach's items) to compact JSON, or a readable error.
std::expected<std::string, std::string> evaluate_expression(std::string_view text,
                                                            const template_scope& scope);

// Evaluates a step's `when` condition (a legacy path form, or an expression: op::expression).
std::expected<bool, std::string> evaluate_condition(const condition& c,
                                                    const template_scope& scope);

}  // namespace auterity
