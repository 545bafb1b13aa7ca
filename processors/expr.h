#pragma once
// The expression language of workflow definitions (docs/expressions.md is the specification):
// `when` conditions, switch cases, template values and compute outputs.
//
//   input.budget ?? 0 >= 40000 and lower(input.reply) in ['yes', 'y']
//   format('{} {}', input.first, upper(input.last))
//   sum(map(filter(input.leads, l, l.model == 'F-150'), l, l.budget))
//
// An expression is compiled once (parsed and type-checked: errors name the 1-based column)
// and evaluated against a scope. Evaluation is deterministic: no wall clock (now() is the
// scope's clock, the batch time), no randomness, no IO; the same scope gives the same value
// or the same error. It is bounded by the named limits below; exceeding one is an error,
// never a hang or an unbounded allocation.
//
// Values are JSON values. A path that names nothing (absent key, index past the end, a step
// with no output) is *missing*: `??` replaces it, exists() tests it, `==` finds it unequal to
// everything and `!=` unequal; any other use is an error naming the path.

#include <cstddef>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace auterity::expr {

// Bytes of one expression's text. Real conditions are well under 200 bytes.
inline constexpr size_t expression_bytes_max = 4096;
// Height of the parsed expression (operators, calls, brackets; `a and b and c` is 3 levels):
// bounds the recursive parser's and evaluator's stack.
inline constexpr int expression_depth_max = 64;
// Evaluation steps: one per node evaluated, plus one per list element a function visits.
// 64 KiB of input holds at most ~32 000 list elements, so a few passes over any list fit;
// 200 000 steps take a few milliseconds.
inline constexpr uint64_t expression_steps_max = 200'000;
// Bytes of the values one evaluation builds (strings, lists, objects; 16 bytes per scalar or
// element): bounds memory, e.g. a string doubled in a map().
inline constexpr size_t expression_value_bytes_max = 256 * 1024;

enum class type : uint8_t { any, null, boolean, number, string, list, object };
std::string_view type_name(type t);

struct node;

// Where paths come from at evaluation. find() returns the value at a dotted path such as
// "input.contact.phone" or "steps.draft.output.text" (the template path grammar, see
// processors/DEFINITIONS.md), nullptr when it is missing, or an error (a step output that is
// not JSON).
struct scope {
  std::function<std::expected<const nlohmann::json*, std::string>(std::string_view path)> find;
  int64_t now_ms = 0;  // now(): the clock of the decision (the batch time), never the wall clock
};

// Called at compile time for every path, to check it with the path grammar and collect the
// steps it names. Returns an error text for a malformed path.
using path_checker = std::function<std::expected<void, std::string>(std::string_view path)>;

class program {
 public:
  program();
  ~program();
  program(program&&) noexcept;
  program& operator=(program&&) noexcept;
  program(const program&);
  program& operator=(const program&);

  type result_type() const;
  // Evaluates; the error text names the problem ("path 'input.x' not found", "lower() takes a
  // string, not number", "expression_steps_max (200000) evaluation steps exceeded").
  std::expected<nlohmann::json, std::string> evaluate(const scope& s) const;

 private:
  friend std::expected<program, std::string> compile(std::string_view, const path_checker&);
  std::shared_ptr<const node> _root;
  std::string _text;
};

// Parses and type-checks. The error starts with "column N: ".
std::expected<program, std::string> compile(std::string_view text, const path_checker& check);

}  // namespace auterity::expr
