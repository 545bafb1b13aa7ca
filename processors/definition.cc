#include "processors/definition.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <span>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "processors/ids.h"
#include "processors/limits.h"
#include "processors/strict_json.h"
#include "processors/template.h"

namespace auterity {

std::string_view step_kind_name(step_kind k) {
  switch (k) {
    case step_kind::task:
      return "task";
    case step_kind::ai:
      return "ai";
    case step_kind::notify:
      return "notify";
    case step_kind::wait_signal:
      return "wait_signal";
    case step_kind::delay:
      return "delay";
    case step_kind::compute:
      return "compute";
    case step_kind::switch_:
      return "switch";
    case step_kind::foreach:
      return "foreach";
    case step_kind::workflow:
      return "workflow";
  }
  return "unknown";
}

uint64_t retry_policy::delay_after(uint32_t failed_attempt) const {
  // In double: the product may exceed 2^64 long before the cap is compared; inf and NaN (a
  // multiplier that was never validated) both fail `delay < cap` and yield the cap.
  const uint32_t exponent = failed_attempt == 0 ? 0 : failed_attempt - 1;
  const double delay =
      static_cast<double>(backoff_ms) * std::pow(backoff_multiplier, static_cast<double>(exponent));
  const double rounded = std::floor(delay + 0.5);
  if (!(rounded < static_cast<double>(backoff_max_ms))) return backoff_max_ms;
  return rounded <= 0 ? 0 : static_cast<uint64_t>(rounded);
}

int definition::step_index(std::string_view id) const {
  for (size_t i = 0; i < steps.size(); ++i) {
    if (steps[i].id == id) return static_cast<int>(i);
  }
  return -1;
}

namespace {

using json = nlohmann::json;

// Nesting a definition may use. Bounds the recursive walks below and nlohmann's recursive
// dump(); real definitions need about 6 levels.
constexpr int json_depth_max = 32;
// User text echoed in a reason is cut to this many bytes so reasons stay readable.
constexpr size_t echo_bytes_max = 64;

static_assert(limits::steps_per_definition_max <= 64, "ancestor sets are uint64_t masks");

template <typename T>
using outcome = std::expected<T, definition_error>;
using checked = std::expected<void, definition_error>;

std::unexpected<definition_error> reject(rejection_code code, std::string reason) {
  return std::unexpected(definition_error{code, std::move(reason)});
}

std::unexpected<definition_error> invalid(std::string reason) {
  return reject(rejection_code::invalid_definition, std::move(reason));
}

// Cuts user text for a reason without splitting a UTF-8 sequence.
std::string echo(std::string_view s) { return echo_text(s, echo_bytes_max); }

std::string echo_json(const json& v) { return echo(v.dump()); }

bool is_ascii_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// The rule signals are checked against at the door too (ids.h).
bool valid_id(std::string_view s) { return ids::valid_name(s); }

constexpr std::string_view id_rule = ids::name_rule;

// Step ids appear inside template paths (steps.<id>.output...), where a path component named
// output, status or error ends the id; an id made of such components, or with an empty
// component, could not be referred to.
bool referable_step_id(std::string_view id) {
  size_t begin = 0;
  while (true) {
    const size_t dot = id.find('.', begin);
    const std::string_view part =
        id.substr(begin, dot == std::string_view::npos ? dot : dot - begin);
    if (part.empty() || part == "output" || part == "status" || part == "error") return false;
    if (dot == std::string_view::npos) return true;
    begin = dot + 1;
  }
}

bool valid_param_name(std::string_view s) {
  if (s.empty() || s.size() > limits::id_bytes_max) return false;
  return std::ranges::all_of(s, [](char c) { return is_ascii_alnum(c) || c == '_' || c == '-'; });
}

const json* member(const json& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

std::string join(std::span<const std::string_view> names) {
  std::string out;
  for (std::string_view n : names) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out;
}

// ---- parameters --------------------------------------------------------------------------

struct param_ref {
  size_t begin = 0;  // of "{{"
  size_t end = 0;    // one past "}}"
  std::string_view name;
};

// Looks at the "{{" at `open`: a parameter reference, nullopt for any other expression, or an
// error for "{{params." that is not exactly {{params.NAME}} (which would otherwise be left
// unsubstituted and fail only at run time).
std::expected<std::optional<param_ref>, std::string> param_ref_at(std::string_view s, size_t open) {
  size_t i = open + 2;
  while (i < s.size() && is_space(s[i])) ++i;
  if (s.substr(i, 7) != "params.") return std::nullopt;
  i += 7;
  const size_t name_begin = i;
  while (i < s.size() && (is_ascii_alnum(s[i]) || s[i] == '_' || s[i] == '-')) ++i;
  const std::string_view name = s.substr(name_begin, i - name_begin);
  while (i < s.size() && is_space(s[i])) ++i;
  if (name.empty() || s.substr(i, 2) != "}}") {
    const size_t close = s.find("}}", open);
    const std::string_view shown =
        s.substr(open, close == std::string_view::npos ? close : close + 2 - open);
    return std::unexpected(fmt::format(
        "malformed parameter reference '{}': a parameter is referred to as {} alone, without "
        "?? or other text inside the braces",
        echo(shown), "{{params.NAME}}"));
  }
  return param_ref{open, i + 2, name};
}

bool refers_to_params(const json& value) {
  if (value.is_string()) {
    const std::string& s = value.get_ref<const std::string&>();
    for (size_t open = s.find("{{"); open != std::string::npos; open = s.find("{{", open + 1)) {
      auto ref = param_ref_at(s, open);
      if (!ref || *ref) return true;
    }
    return false;
  }
  if (value.is_structured()) {
    for (const auto& item : value) {
      if (refers_to_params(item)) return true;
    }
  }
  return false;
}

// Replaces {{params.NAME}} in every string value of a document.
class param_substitution {
 public:
  explicit param_substitution(const json& values) : _values(values) {
    for (const auto& [name, value] : values.items()) {
      _texts.emplace(name, value.is_string() ? value.get<std::string>() : value.dump());
    }
  }

  // `owner` is "step 'x': " (empty at top level) and `field` the path within it; both only
  // feed reasons.
  checked walk(json& node, const std::string& owner, const std::string& field) {
    if (node.is_string()) return substitute(node, owner, field);
    if (node.is_array()) {
      for (size_t i = 0; i < node.size(); ++i) {
        auto done = walk(node[i], owner, fmt::format("{}[{}]", field, i));
        if (!done) return done;
      }
    } else if (node.is_object()) {
      for (auto& [key, value] : node.items()) {
        auto done = walk(value, owner, field.empty() ? key : field + "." + key);
        if (!done) return done;
      }
    }
    return {};
  }

 private:
  checked substitute(json& node, const std::string& owner, const std::string& field) {
    const std::string& s = node.get_ref<const std::string&>();
    std::string out;
    size_t copied = 0;
    for (size_t open = s.find("{{"); open != std::string::npos;) {
      auto ref = param_ref_at(s, open);
      if (!ref) return invalid(fmt::format("{}field {}: {}", owner, field, ref.error()));
      if (!*ref) {
        // Advance by one so "{{{params.x}}" still finds the reference at offset 1.
        open = s.find("{{", open + 1);
        continue;
      }
      const auto text = _texts.find((*ref)->name);
      if (text == _texts.end()) {
        return invalid(fmt::format(
            "{}field {}: unknown parameter '{}' (declare it with a default under \"params\")",
            owner, field, echo((*ref)->name)));
      }
      auto charged = charge(text->second.size());
      if (!charged) return charged;
      if ((*ref)->begin == 0 && (*ref)->end == s.size()) {
        json value = _values.at(std::string((*ref)->name));  // before `s` goes away
        node = std::move(value);
        return {};
      }
      out.append(s, copied, (*ref)->begin - copied);
      out += text->second;
      copied = (*ref)->end;
      open = s.find("{{", copied);
    }
    if (copied == 0) return {};
    out.append(s, copied);
    node = std::move(out);
    return {};
  }

  // Bounds the work and memory of substitution: a large value referred to many times could
  // otherwise grow a 64 KiB definition without limit before the final size check.
  checked charge(size_t bytes) {
    _added_bytes += bytes;
    if (_added_bytes > limits::payload_bytes_max) {
      return reject(rejection_code::payload_too_large,
                    fmt::format("parameter substitution makes the definition larger than {} "
                                "bytes (limits::payload_bytes_max)",
                                limits::payload_bytes_max));
    }
    return {};
  }

  const json& _values;
  std::map<std::string, std::string, std::less<>> _texts;
  size_t _added_bytes = 0;
};

// The declared parameters with the values of `params_json` in place of their defaults.
outcome<json> effective_params(const json* declared, std::string_view params_json) {
  json values = json::object();
  if (declared != nullptr) {
    if (!declared->is_object()) return invalid("params must be an object of name: default value");
    for (const auto& [name, value] : declared->items()) {
      if (!valid_param_name(name)) {
        return invalid(fmt::format(
            "parameter name '{}' is invalid: use 1 to 128 characters from A-Z a-z 0-9 _ -",
            echo(name)));
      }
      values[name] = value;
    }
  }
  if (params_json.find_first_not_of(" \t\n\r") != std::string_view::npos) {
    auto given = parse_strict_json(params_json, json_depth_max);
    if (!given) return invalid("parameter values " + given.error());
    if (!given->is_object()) return invalid("parameter values must be a JSON object");
    for (auto& [name, value] : given->items()) {
      if (!values.contains(name)) {
        return invalid(
            fmt::format("parameter '{}' is not declared in the definition's params", echo(name)));
      }
      values[name] = std::move(value);
    }
  }
  for (const auto& [name, value] : values.items()) {
    if (refers_to_params(value)) {
      return invalid(
          fmt::format("the value of parameter '{}' must not refer to parameters", echo(name)));
    }
  }
  return values;
}

std::string step_label(const json& step, size_t index) {
  if (step.is_object()) {
    const json* id = member(step, "id");
    if (id != nullptr && id->is_string() && valid_id(id->get_ref<const std::string&>())) {
      return fmt::format("step '{}'", id->get_ref<const std::string&>());
    }
  }
  return fmt::format("steps[{}]", index);
}

checked substitute_params(json& doc, const json& values) {
  param_substitution substitution(values);
  for (auto& [key, value] : doc.items()) {
    if (key == "params") continue;  // defaults are values, not templates
    if (key == "steps" && value.is_array()) {
      for (size_t i = 0; i < value.size(); ++i) {
        const std::string owner = step_label(value[i], i) + ": ";
        auto done = value[i].is_object()
                        ? substitution.walk(value[i], owner, "")
                        : substitution.walk(value[i], "", fmt::format("steps[{}]", i));
        if (!done) return done;
      }
      continue;
    }
    auto done = substitution.walk(value, "", key);
    if (!done) return done;
  }
  return {};
}

// ---- field readers -----------------------------------------------------------------------

outcome<uint64_t> read_integer(const json& v, uint64_t min, uint64_t max, std::string_view what) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u >= min && u <= max) return u;
  } else if (v.is_number_integer()) {
    const auto s = v.get<int64_t>();
    if (s >= 0 && static_cast<uint64_t>(s) >= min && static_cast<uint64_t>(s) <= max) {
      return static_cast<uint64_t>(s);
    }
  }
  return invalid(
      fmt::format("{} must be an integer from {} to {}, not {}", what, min, max, echo_json(v)));
}

outcome<uint64_t> read_ms(const json& v, uint64_t min, std::string_view what) {
  return read_integer(v, min, limits::timer_ms_max, what);
}

outcome<std::string> read_string(const json& v, std::string_view what) {
  if (!v.is_string()) {
    return invalid(fmt::format("{} must be a string, not {}", what, echo_json(v)));
  }
  return v.get<std::string>();
}

outcome<std::string> read_name(const json& v, std::string_view what) {
  auto s = read_string(v, what);
  if (s && !valid_id(*s)) {
    return invalid(fmt::format("{} '{}' is invalid: {}", what, echo(*s), id_rule));
  }
  return s;
}

// ---- templates ---------------------------------------------------------------------------

// Checks a path with the run-time path grammar (template.cc) by evaluating it against an
// empty scope, collecting the step ids it names; publish time and run time cannot disagree.
std::expected<void, std::string> check_path(std::string_view path,
                                            std::vector<std::string>& step_refs) {
  template_scope scope;
  scope.input_json = "{}";
  scope.step = [&step_refs](std::string_view id, std::string_view&, std::string_view&,
                            std::string_view&) {
    step_refs.emplace_back(id);
    return false;
  };
  auto checked_path =
      evaluate_condition(condition{std::string(path), condition::op::exists, ""}, scope);
  if (checked_path) return {};
  std::string_view why = checked_path.error();
  if (why.starts_with("condition: ")) why.remove_prefix(11);
  return std::unexpected(std::string(why));
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Finds the {{...}} expressions of one template string as render_template will.
std::expected<void, std::string> check_template_string(std::string_view s,
                                                       std::vector<std::string>& step_refs,
                                                       bool item_scope) {
  for (size_t open = s.find("{{"); open != std::string_view::npos; open = s.find("{{", open)) {
    const size_t close = s.find("}}", open + 2);
    if (close == std::string_view::npos) {
      return std::unexpected(fmt::format("unclosed '{{{{' in \"{}\"", echo(s)));
    }
    const std::string_view expression = s.substr(open + 2, close - open - 2);
    if (trim(expression).empty()) {
      return std::unexpected(
          fmt::format("empty path in '{}'", echo(s.substr(open, close + 2 - open))));
    }
    auto ok = check_expression(expression, open + 2, step_refs, expression_use::template_value,
                               item_scope);
    if (!ok) {
      return std::unexpected(fmt::format("{} in \"{}\"", ok.error(), echo(s)));
    }
    open = close + 2;
  }
  return {};
}

std::expected<void, std::string> check_template(const json& node, const std::string& field,
                                                std::vector<std::string>& step_refs,
                                                bool item_scope = false) {
  if (node.is_string()) {
    auto ok = check_template_string(node.get_ref<const std::string&>(), step_refs, item_scope);
    if (!ok) return std::unexpected(fmt::format("field {}: {}", field, ok.error()));
  } else if (node.is_array()) {
    for (size_t i = 0; i < node.size(); ++i) {
      auto ok = check_template(node[i], fmt::format("{}[{}]", field, i), step_refs, item_scope);
      if (!ok) return ok;
    }
  } else if (node.is_object()) {
    for (const auto& [key, value] : node.items()) {
      auto ok = check_template(value, field + "." + key, step_refs, item_scope);
      if (!ok) return ok;
    }
  }
  return {};
}

// ---- steps -------------------------------------------------------------------------------

struct parsed_case {
  std::string name;
  std::string when;
  std::vector<std::string> then_names;
};

struct parsed_step {
  step_def def;
  std::vector<std::string> after_names;
  std::vector<std::string> step_refs;  // steps.<id> named by input templates and `when`
  std::vector<parsed_case> cases;      // switch, `then` by name until all ids are known
  std::vector<std::string> default_names;
};

constexpr std::array<std::string_view, 22> step_fields = {
    "id",       "kind",       "after",       "action",          "tier",
    "input",    "when",       "retry",       "timeout_ms",      "delay_ms",
    "signal",   "on_failure", "output",      "cases",           "default",
    "join",     "items",      "concurrency", "on_item_failure", "do",
    "workflow", "version"};

std::optional<step_kind> kind_from_name(std::string_view name) {
  for (step_kind k :
       {step_kind::task, step_kind::ai, step_kind::notify, step_kind::wait_signal, step_kind::delay,
        step_kind::compute, step_kind::switch_, step_kind::foreach, step_kind::workflow}) {
    if (step_kind_name(k) == name) return k;
  }
  return std::nullopt;
}

// Fields that only some kinds use; on another kind they would be silently ignored.
bool field_applies(std::string_view field, step_kind kind) {
  if (field == "action") return kind == step_kind::task;
  if (field == "tier") return kind == step_kind::ai;
  if (field == "signal") return kind == step_kind::wait_signal;
  if (field == "delay_ms") return kind == step_kind::delay;
  if (field == "input" || field == "retry") {
    return kind == step_kind::task || kind == step_kind::ai || kind == step_kind::notify ||
           kind == step_kind::workflow;
  }
  if (field == "timeout_ms") {
    return kind != step_kind::delay && kind != step_kind::compute && kind != step_kind::switch_ &&
           kind != step_kind::foreach && kind != step_kind::workflow;
  }
  if (field == "workflow" || field == "version") return kind == step_kind::workflow;
  if (field == "items" || field == "concurrency" || field == "on_item_failure" || field == "do") {
    return kind == step_kind::foreach;
  }
  if (field == "output") return kind == step_kind::compute;
  if (field == "cases" || field == "default") return kind == step_kind::switch_;
  return true;
}

outcome<retry_policy> read_retry(const json& v, const std::string& owner) {
  if (!v.is_object()) return invalid(fmt::format("{}: retry must be an object", owner));
  retry_policy retry;
  for (const auto& [key, value] : v.items()) {
    const std::string what = fmt::format("{}: retry.{}", owner, key);
    if (key == "max_attempts") {
      auto n = read_integer(value, 1, limits::retry_attempts_max, what);
      if (!n) return std::unexpected(n.error());
      retry.max_attempts = static_cast<uint32_t>(*n);
    } else if (key == "backoff_ms" || key == "backoff_max_ms") {
      auto ms = read_ms(value, 0, what);
      if (!ms) return std::unexpected(ms.error());
      (key == "backoff_ms" ? retry.backoff_ms : retry.backoff_max_ms) = *ms;
    } else if (key == "backoff_multiplier") {
      if (!value.is_number() || !std::isfinite(value.get<double>()) || value.get<double>() < 1.0) {
        return invalid(fmt::format("{} must be a number >= 1, not {}", what, echo_json(value)));
      }
      retry.backoff_multiplier = value.get<double>();
    } else {
      return invalid(fmt::format(
          "{}: unknown field 'retry.{}' (allowed: max_attempts, backoff_ms, backoff_multiplier, "
          "backoff_max_ms)",
          owner, echo(key)));
    }
  }
  return retry;
}

outcome<condition> read_when(const json& v, const std::string& owner,
                             std::vector<std::string>& step_refs) {
  constexpr std::string_view shape =
      R"(when must be an expression such as "input.budget >= 40000", or {"path": p, "equals": v}, )"
      R"({"path": p, "not_equals": v} or {"path": p, "exists": true|false})";
  if (v.is_string()) {
    condition c;
    c.operation = condition::op::expression;
    c.path = v.get<std::string>();
    if (c.path.find("{{") != std::string::npos) {
      return invalid(
          fmt::format("{}: when: an expression has no {{{{ }}}}: write {}", owner, "input.x == 1"));
    }
    auto ok = check_expression(c.path, 0, step_refs, expression_use::condition);
    if (!ok) return invalid(fmt::format("{}: when: {}", owner, ok.error()));
    return c;
  }
  if (!v.is_object()) return invalid(fmt::format("{}: {}", owner, shape));
  const json* path = member(v, "path");
  if (path == nullptr || !path->is_string() || v.size() != 2) {
    return invalid(fmt::format("{}: {}", owner, shape));
  }
  condition c;
  c.path = path->get<std::string>();
  if (const json* equals = member(v, "equals")) {
    c.operation = condition::op::equals;
    c.value_json = equals->dump();
  } else if (const json* not_equals = member(v, "not_equals")) {
    c.operation = condition::op::not_equals;
    c.value_json = not_equals->dump();
  } else if (const json* exists = member(v, "exists"); exists != nullptr && exists->is_boolean()) {
    c.operation = exists->get<bool>() ? condition::op::exists : condition::op::not_exists;
  } else {
    return invalid(fmt::format("{}: {}", owner, shape));
  }
  if (c.path.find("{{") != std::string::npos) {
    return invalid(
        fmt::format("{}: when.path '{}' is a plain path such as steps.x.status, "
                    "without {{{{ }}}}",
                    owner, echo(c.path)));
  }
  auto ok = check_path(c.path, step_refs);
  if (!ok) return invalid(fmt::format("{}: when.path: {}", owner, ok.error()));
  return c;
}

outcome<std::vector<std::string>> read_step_names(const json& v, const std::string& what) {
  std::vector<std::string> names;
  if (!v.is_array()) return invalid(fmt::format("{} must be an array of step ids", what));
  for (const json& name : v) {
    if (!name.is_string()) {
      return invalid(fmt::format("{} must be an array of step ids, not {}", what, echo_json(v)));
    }
    names.push_back(name.get<std::string>());
  }
  return names;
}

checked read_behaviour(const json& v, step_def& def, const std::string& owner);
checked read_kind_fields(const json& v, step_def& def, const std::string& owner);
checked read_input(const json& v, parsed_step& step, const std::string& owner, bool item_scope);

// items, concurrency, on_item_failure and do (a task or notify body: action, input, retry,
// timeout_ms), kept in the foreach step's own fields.
checked read_foreach(const json& v, parsed_step& step, const std::string& owner) {
  const json* items = member(v, "items");
  if (items == nullptr || !items->is_string()) {
    return invalid(
        fmt::format("{}: foreach steps need field 'items', an expression giving a list, such as "
                    "\"input.leads\"",
                    owner));
  }
  step.def.items = items->get<std::string>();
  auto items_ok =
      check_expression(step.def.items, 0, step.step_refs, expression_use::template_value);
  if (!items_ok) return invalid(fmt::format("{}: items: {}", owner, items_ok.error()));
  if (const json* c = member(v, "concurrency")) {
    auto n = read_integer(*c, 1, limits::foreach_concurrency_max, owner + ": concurrency");
    if (!n) return std::unexpected(n.error());
    step.def.concurrency = static_cast<uint32_t>(*n);
  }
  if (const json* f = member(v, "on_item_failure")) {
    if (*f == "fail_fast") {
      step.def.collect_failures = false;
    } else if (*f == "collect") {
      step.def.collect_failures = true;
    } else {
      return invalid(fmt::format("{}: on_item_failure must be \"fail_fast\" or \"collect\", not {}",
                                 owner, echo_json(*f)));
    }
  }
  const json* body = member(v, "do");
  if (body == nullptr || !body->is_object()) {
    return invalid(fmt::format(
        "{}: foreach steps need field 'do', the step to run per item: {{\"kind\": \"task\", "
        "\"notify\" or \"workflow\", \"action\", \"workflow\", \"input\", \"retry\", "
        "\"timeout_ms\"}}",
        owner));
  }
  constexpr std::array<std::string_view, 7> body_fields = {
      "kind", "action", "workflow", "version", "input", "retry", "timeout_ms"};
  for (const auto& [key, value] : body->items()) {
    if (std::ranges::find(body_fields, key) == body_fields.end()) {
      return invalid(fmt::format("{}: unknown field 'do.{}' (allowed: {})", owner, echo(key),
                                 join(body_fields)));
    }
  }
  const json* kind = member(*body, "kind");
  if (kind == nullptr || (*kind != "task" && *kind != "notify" && *kind != "workflow")) {
    return invalid(fmt::format("{}: do.kind must be \"task\", \"notify\" or \"workflow\", not {}",
                               owner, kind ? echo_json(*kind) : std::string("missing")));
  }
  parsed_step inner;
  inner.def.kind = *kind == "task"     ? step_kind::task
                   : *kind == "notify" ? step_kind::notify
                                       : step_kind::workflow;
  for (const auto& [key, value] : body->items()) {
    if (key != "kind" && !field_applies(key, inner.def.kind)) {
      return invalid(fmt::format("{}: field 'do.{}' does not apply to {} steps", owner, key,
                                 step_kind_name(inner.def.kind)));
    }
  }
  const std::string body_owner = owner + ": do";
  checked ok = read_kind_fields(*body, inner.def, body_owner);
  if (ok) {
    const json* input = member(*body, "input");
    ok = read_input(input != nullptr ? *input : json::object(), inner, owner, true);
  }
  if (ok) ok = read_behaviour(*body, inner.def, body_owner);
  if (!ok) return ok;
  step.def.body_kind = inner.def.kind;
  step.def.action = inner.def.action;
  step.def.input_template = inner.def.input_template;
  step.def.retry = inner.def.retry;
  step.def.timeout_ms = inner.def.timeout_ms;
  step.def.child_workflow = inner.def.child_workflow;
  step.def.child_version = inner.def.child_version;
  for (std::string& ref : inner.step_refs) step.step_refs.push_back(std::move(ref));
  return {};
}

checked read_switch(const json& v, parsed_step& step, const std::string& owner) {
  const json* cases = member(v, "cases");
  if (cases == nullptr || !cases->is_array() || cases->empty()) {
    return invalid(
        fmt::format("{}: switch steps need field 'cases', a non-empty array of "
                    R"({{"name": n, "when": expression, "then": [step ids]}})",
                    owner));
  }
  if (cases->size() > limits::switch_cases_max) {
    return invalid(fmt::format("{}: {} cases, more than {} (switch_cases_max)", owner,
                               cases->size(), limits::switch_cases_max));
  }
  std::set<std::string> names;
  for (size_t i = 0; i < cases->size(); ++i) {
    const json& c = (*cases)[i];
    const std::string where = fmt::format("{}: cases[{}]", owner, i);
    if (!c.is_object()) return invalid(where + " must be an object");
    for (const auto& [key, value] : c.items()) {
      if (key != "name" && key != "when" && key != "then") {
        return invalid(
            fmt::format("{}: unknown field '{}' (allowed: name, when, then)", where, echo(key)));
      }
    }
    parsed_case pc;
    const json* name = member(c, "name");
    if (name == nullptr) return invalid(where + ": missing required field 'name'");
    auto n = read_name(*name, where + ": name");
    if (!n) return std::unexpected(n.error());
    if (*n == default_case_name) {
      return invalid(where +
                     ": the name 'default' is the default branch's; use 'default' "
                     "beside 'cases'");
    }
    if (!names.insert(*n).second) return invalid(fmt::format("{}: case '{}' twice", owner, *n));
    pc.name = *n;
    const json* when = member(c, "when");
    if (when == nullptr || !when->is_string()) {
      return invalid(where +
                     ": needs 'when', an expression such as \"steps.score.output.score "
                     ">= 70\"");
    }
    pc.when = when->get<std::string>();
    auto ok = check_expression(pc.when, 0, step.step_refs, expression_use::condition);
    if (!ok) return invalid(fmt::format("{}: case '{}': when: {}", owner, pc.name, ok.error()));
    const json* then = member(c, "then");
    if (then == nullptr) return invalid(where + ": missing required field 'then'");
    auto targets = read_step_names(*then, fmt::format("{}: case '{}': then", owner, pc.name));
    if (!targets) return std::unexpected(targets.error());
    pc.then_names = std::move(*targets);
    step.cases.push_back(std::move(pc));
  }
  if (const json* d = member(v, "default")) {
    auto targets = read_step_names(*d, owner + ": default");
    if (!targets) return std::unexpected(targets.error());
    step.default_names = std::move(*targets);
  }
  return {};
}

checked read_input(const json& v, parsed_step& step, const std::string& owner, bool item_scope) {
  if (!v.is_object()) return invalid(fmt::format("{}: input must be an object", owner));
  const char* required = step.def.kind == step_kind::ai       ? "prompt"
                         : step.def.kind == step_kind::notify ? "channel"
                                                              : nullptr;
  if (required != nullptr) {
    const json* field = member(v, required);
    if (field == nullptr || !field->is_string()) {
      return invalid(fmt::format("{}: {} steps need a string input.{}", owner,
                                 step_kind_name(step.def.kind), required));
    }
  }
  auto ok = check_template(v, item_scope ? "do.input" : "input", step.step_refs, item_scope);
  if (!ok) return invalid(fmt::format("{}: {}", owner, ok.error()));
  step.def.input_template = v.dump();
  return {};
}

outcome<std::string> read_step_id(const json& v, size_t index) {
  const json* id = member(v, "id");
  if (id == nullptr) return invalid(fmt::format("steps[{}]: missing required field 'id'", index));
  auto text = read_name(*id, fmt::format("steps[{}]: id", index));
  if (text && !referable_step_id(*text)) {
    return invalid(fmt::format(
        "steps[{}]: step id '{}' cannot be used in paths: its dot-separated parts must not be "
        "empty, 'output', 'status' or 'error'",
        index, *text));
  }
  return text;
}

// The kind, once every field is known and applies to it.
outcome<step_kind> read_kind(const json& v, const std::string& owner) {
  for (const auto& [key, value] : v.items()) {
    if (std::ranges::find(step_fields, key) == step_fields.end()) {
      return invalid(
          fmt::format("{}: unknown field '{}' (allowed: {})", owner, echo(key), join(step_fields)));
    }
  }
  const json* kind = member(v, "kind");
  if (kind == nullptr) return invalid(fmt::format("{}: missing required field 'kind'", owner));
  const auto known =
      kind->is_string() ? kind_from_name(kind->get_ref<const std::string&>()) : std::nullopt;
  if (!known) {
    return invalid(
        fmt::format("{}: kind must be one of task, ai, notify, wait_signal, delay, compute, "
                    "switch, foreach, workflow, not {}",
                    owner, echo_json(*kind)));
  }
  for (const auto& [key, value] : v.items()) {
    if (!field_applies(key, *known)) {
      return invalid(fmt::format("{}: field '{}' does not apply to {} steps", owner, key,
                                 step_kind_name(*known)));
    }
  }
  return *known;
}

checked read_after(const json& v, parsed_step& step, const std::string& owner) {
  const json* after = member(v, "after");
  if (after == nullptr) return {};
  if (!after->is_array()) {
    return invalid(fmt::format("{}: after must be an array of step ids", owner));
  }
  for (const json& name : *after) {
    if (!name.is_string()) {
      return invalid(
          fmt::format("{}: after must be an array of step ids, not {}", owner, echo_json(*after)));
    }
    step.after_names.push_back(name.get<std::string>());
  }
  return {};
}

// action, tier, delay_ms and signal: each belongs to one kind (field_applies has checked).
checked read_kind_fields(const json& v, step_def& def, const std::string& owner) {
  if (def.kind == step_kind::task) {
    const json* action = member(v, "action");
    if (action == nullptr) return invalid(fmt::format("{}: task steps need field 'action'", owner));
    auto name = read_name(*action, owner + ": action");
    if (!name) return std::unexpected(name.error());
    def.action = std::move(*name);
  } else if (def.kind == step_kind::ai) {
    def.tier = "standard";
    if (const json* tier = member(v, "tier")) {
      if (*tier != "basic" && *tier != "standard" && *tier != "premium") {
        return invalid(fmt::format("{}: tier must be basic, standard or premium, not {}", owner,
                                   echo_json(*tier)));
      }
      def.tier = tier->get<std::string>();
    }
  } else if (def.kind == step_kind::delay) {
    const json* delay = member(v, "delay_ms");
    if (delay == nullptr) {
      return invalid(fmt::format("{}: delay steps need field 'delay_ms'", owner));
    }
    auto ms = read_ms(*delay, 1, owner + ": delay_ms");
    if (!ms) return std::unexpected(ms.error());
    def.delay_ms = *ms;
  } else if (def.kind == step_kind::wait_signal) {
    const json* signal = member(v, "signal");
    if (signal == nullptr) {
      return invalid(fmt::format("{}: wait_signal steps need field 'signal'", owner));
    }
    auto name = read_name(*signal, owner + ": signal");
    if (!name) return std::unexpected(name.error());
    def.signal = std::move(*name);
  } else if (def.kind == step_kind::workflow) {
    const json* workflow = member(v, "workflow");
    if (workflow == nullptr) {
      return invalid(fmt::format(
          "{}: workflow steps need field 'workflow', the id of the workflow to run", owner));
    }
    auto name = read_name(*workflow, owner + ": workflow");
    if (!name) return std::unexpected(name.error());
    def.child_workflow = std::move(*name);
    if (const json* version = member(v, "version")) {
      auto n = read_integer(*version, 1, std::numeric_limits<uint32_t>::max(), owner + ": version");
      if (!n) return std::unexpected(n.error());
      def.child_version = static_cast<uint32_t>(*n);
    }
  }
  return {};
}

checked read_behaviour(const json& v, step_def& def, const std::string& owner) {
  if (const json* retry = member(v, "retry")) {
    auto r = read_retry(*retry, owner);
    if (!r) return std::unexpected(r.error());
    def.retry = *r;
  }
  if (const json* timeout = member(v, "timeout_ms")) {
    auto ms = read_ms(*timeout, 0, owner + ": timeout_ms");
    if (!ms) return std::unexpected(ms.error());
    def.timeout_ms = *ms;
  }
  if (const json* on_failure = member(v, "on_failure")) {
    if (*on_failure == "fail") {
      def.on_failure = failure_mode::fail;
    } else if (*on_failure == "continue") {
      def.on_failure = failure_mode::continue_;
    } else {
      return invalid(fmt::format("{}: on_failure must be \"fail\" or \"continue\", not {}", owner,
                                 echo_json(*on_failure)));
    }
  }
  return {};
}

// Reads every field; `after` stays by name until all step ids are known.
outcome<parsed_step> read_step(const json& v, size_t index) {
  if (!v.is_object()) return invalid(fmt::format("steps[{}] must be an object", index));
  parsed_step step;
  auto id = read_step_id(v, index);
  if (!id) return std::unexpected(id.error());
  step.def.id = std::move(*id);
  const std::string owner = fmt::format("step '{}'", step.def.id);
  auto kind = read_kind(v, owner);
  if (!kind) return std::unexpected(kind.error());
  step.def.kind = *kind;

  checked ok = read_after(v, step, owner);
  if (ok) ok = read_kind_fields(v, step.def, owner);
  step.def.input_template = "{}";
  if (ok && field_applies("input", step.def.kind)) {
    const json* input = member(v, "input");
    ok = read_input(input != nullptr ? *input : json::object(), step, owner, false);
  }
  if (ok && step.def.kind == step_kind::compute) {
    const json* output = member(v, "output");
    if (output == nullptr) {
      return invalid(fmt::format("{}: compute steps need field 'output', an object", owner));
    }
    if (!output->is_object()) return invalid(fmt::format("{}: output must be an object", owner));
    auto checked_output = check_template(*output, "output", step.step_refs);
    if (!checked_output) return invalid(fmt::format("{}: {}", owner, checked_output.error()));
    step.def.output_template = output->dump();
  }
  if (ok && step.def.kind == step_kind::switch_) ok = read_switch(v, step, owner);
  if (ok && step.def.kind == step_kind::foreach) ok = read_foreach(v, step, owner);
  if (const json* join = member(v, "join"); ok && join != nullptr) {
    if (!join->is_boolean()) {
      return invalid(
          fmt::format("{}: join must be true or false, not {}", owner, echo_json(*join)));
    }
    step.def.join = join->get<bool>();
  }
  if (const json* when = member(v, "when"); ok && when != nullptr) {
    auto c = read_when(*when, owner, step.step_refs);
    if (!c) return std::unexpected(c.error());
    step.def.when = std::move(*c);
  }
  if (ok) ok = read_behaviour(v, step.def, owner);
  if (!ok) return std::unexpected(ok.error());
  return step;
}

// ---- graph -------------------------------------------------------------------------------

checked resolve_after(std::vector<parsed_step>& steps, const std::map<std::string, uint16_t>& ids) {
  for (parsed_step& step : steps) {
    for (const std::string& name : step.after_names) {
      const auto it = ids.find(name);
      if (it == ids.end()) {
        return invalid(
            fmt::format("step '{}': after names unknown step '{}'", step.def.id, echo(name)));
      }
      if (std::ranges::find(step.def.after, it->second) != step.def.after.end()) {
        return invalid(fmt::format("step '{}': after lists '{}' twice", step.def.id, name));
      }
      step.def.after.push_back(it->second);
    }
  }
  // A switch's targets wait for it: the switch is added to their `after` if not listed.
  for (size_t s = 0; s < steps.size(); ++s) {
    parsed_step& sw = steps[s];
    if (sw.def.kind != step_kind::switch_) continue;
    std::set<uint16_t> seen;
    auto resolve = [&](const std::vector<std::string>& names, std::string_view branch,
                       std::vector<uint16_t>& out) -> checked {
      for (const std::string& name : names) {
        const auto it = ids.find(name);
        if (it == ids.end()) {
          return invalid(
              fmt::format("step '{}': {} names unknown step '{}'", sw.def.id, branch, echo(name)));
        }
        if (it->second == s) {
          return invalid(fmt::format("step '{}': {} names the switch itself", sw.def.id, branch));
        }
        if (!seen.insert(it->second).second) {
          return invalid(
              fmt::format("step '{}': step '{}' is in two branches (a step belongs to one case)",
                          sw.def.id, name));
        }
        out.push_back(it->second);
        auto& after = steps[it->second].def.after;
        if (std::ranges::find(after, static_cast<uint16_t>(s)) == after.end()) {
          after.push_back(static_cast<uint16_t>(s));
        }
      }
      return {};
    };
    for (const parsed_case& pc : sw.cases) {
      switch_case c{pc.name, pc.when, {}};
      auto ok = resolve(pc.then_names, fmt::format("case '{}': then", pc.name), c.then);
      if (!ok) return ok;
      sw.def.cases.push_back(std::move(c));
    }
    auto ok = resolve(sw.default_names, "default", sw.def.default_then);
    if (!ok) return ok;
  }
  return {};
}

// A cycle among `blocked` (steps Kahn's algorithm could not order), as "a -> b -> a" where each
// arrow points from a step to one that runs after it, starting at the earliest step.
std::string describe_cycle(const std::vector<step_def>& steps, const std::vector<bool>& blocked) {
  // Every blocked step waits for another blocked step, so walking dependencies from any of
  // them must revisit a step.
  std::vector<uint16_t> walk;
  std::vector<int> position(steps.size(), -1);
  auto current =
      static_cast<uint16_t>(std::find(blocked.begin(), blocked.end(), true) - blocked.begin());
  while (position[current] < 0) {
    position[current] = static_cast<int>(walk.size());
    walk.push_back(current);
    for (uint16_t dependency : steps[current].after) {
      if (blocked[dependency]) {
        current = dependency;
        break;
      }
    }
  }
  std::vector<uint16_t> cycle(walk.begin() + position[current], walk.end());
  std::ranges::reverse(cycle);
  std::ranges::rotate(cycle, std::ranges::min_element(cycle));
  std::string text = "cycle: ";
  for (uint16_t i : cycle) text += steps[i].id + " -> ";
  return text + steps[cycle.front()].id;
}

// Kahn's algorithm; among ready steps the earliest in the steps array goes first.
outcome<std::vector<uint16_t>> order_steps(const std::vector<step_def>& steps) {
  std::vector<size_t> waiting_for(steps.size());
  std::vector<std::vector<uint16_t>> dependents(steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    waiting_for[i] = steps[i].after.size();
    for (uint16_t d : steps[i].after) dependents[d].push_back(static_cast<uint16_t>(i));
  }
  std::set<uint16_t> ready;
  for (size_t i = 0; i < steps.size(); ++i) {
    if (waiting_for[i] == 0) ready.insert(static_cast<uint16_t>(i));
  }
  std::vector<uint16_t> order;
  while (!ready.empty()) {
    const uint16_t next = *ready.begin();
    ready.erase(ready.begin());
    order.push_back(next);
    for (uint16_t d : dependents[next]) {
      if (--waiting_for[d] == 0) ready.insert(d);
    }
  }
  if (order.size() < steps.size()) {
    std::vector<bool> blocked(steps.size());
    for (size_t i = 0; i < steps.size(); ++i) blocked[i] = waiting_for[i] > 0;
    return reject(rejection_code::definition_cycle, describe_cycle(steps, blocked));
  }
  return order;
}

checked check_step_refs(const std::vector<parsed_step>& steps,
                        const std::map<std::string, uint16_t>& ids,
                        const std::vector<uint16_t>& order) {
  std::vector<uint64_t> ancestors(steps.size(), 0);
  for (uint16_t i : order) {
    for (uint16_t d : steps[i].def.after) ancestors[i] |= ancestors[d] | (uint64_t{1} << d);
  }
  for (size_t i = 0; i < steps.size(); ++i) {
    for (const std::string& ref : steps[i].step_refs) {
      const auto it = ids.find(ref);
      if (it == ids.end()) {
        return invalid(
            fmt::format("step '{}' refers to steps.{} which is not a step of this "
                        "workflow",
                        steps[i].def.id, echo(ref)));
      }
      if ((ancestors[i] & (uint64_t{1} << it->second)) == 0) {
        return invalid(
            fmt::format("step '{}' refers to steps.{} which is not one of its "
                        "dependencies",
                        steps[i].def.id, ref));
      }
    }
  }
  return {};
}

// ---- top level ---------------------------------------------------------------------------

constexpr std::array<std::string_view, 5> top_fields = {"workflow", "version", "description",
                                                        "params", "steps"};

checked read_header(const json& doc, definition& def) {
  const json* workflow = member(doc, "workflow");
  if (workflow == nullptr) return invalid("missing required field 'workflow'");
  auto name = read_name(*workflow, "workflow");
  if (!name) return std::unexpected(name.error());
  def.workflow = std::move(*name);

  const json* version = member(doc, "version");
  if (version == nullptr) return invalid("missing required field 'version'");
  auto number = read_integer(*version, 1, std::numeric_limits<uint32_t>::max(), "version");
  if (!number) return std::unexpected(number.error());
  def.version = static_cast<uint32_t>(*number);

  if (const json* description = member(doc, "description")) {
    if (!description->is_string()) return invalid("description must be a string");
  }
  return {};
}

checked read_steps(const json& doc, definition& def) {
  const json* steps = member(doc, "steps");
  if (steps == nullptr) return invalid("missing required field 'steps'");
  if (!steps->is_array()) return invalid("steps must be an array");
  if (steps->empty()) return invalid("steps must not be empty");
  if (steps->size() > limits::steps_per_definition_max) {
    return reject(rejection_code::too_many_steps,
                  fmt::format("{} steps, more than the {} allowed "
                              "(limits::steps_per_definition_max)",
                              steps->size(), limits::steps_per_definition_max));
  }
  std::vector<parsed_step> parsed;
  std::map<std::string, uint16_t> ids;
  for (size_t i = 0; i < steps->size(); ++i) {
    auto step = read_step((*steps)[i], i);
    if (!step) return std::unexpected(step.error());
    const auto [it, fresh] = ids.emplace(step->def.id, static_cast<uint16_t>(i));
    if (!fresh) {
      return invalid(fmt::format("duplicate step id '{}' (steps[{}] and steps[{}])", step->def.id,
                                 it->second, i));
    }
    parsed.push_back(std::move(*step));
  }
  auto resolved = resolve_after(parsed, ids);
  if (!resolved) return resolved;
  for (parsed_step& step : parsed) def.steps.push_back(step.def);
  auto order = order_steps(def.steps);
  if (!order) return std::unexpected(order.error());
  auto refs = check_step_refs(parsed, ids, *order);
  if (!refs) return refs;
  def.topo_order = std::move(*order);
  return {};
}

outcome<definition> parse(std::string_view text, std::string_view params_json) {
  if (text.size() > limits::payload_bytes_max || params_json.size() > limits::payload_bytes_max) {
    return reject(rejection_code::payload_too_large,
                  fmt::format("definition of {} bytes or parameters of {} bytes exceed {} "
                              "bytes (limits::payload_bytes_max)",
                              text.size(), params_json.size(), limits::payload_bytes_max));
  }
  auto parsed = parse_strict_json(text, json_depth_max);
  if (!parsed) return invalid("definition " + parsed.error());
  json& doc = *parsed;
  if (!doc.is_object()) return invalid("definition must be a JSON object");
  for (const auto& [key, value] : doc.items()) {
    if (std::ranges::find(top_fields, key) == top_fields.end()) {
      return invalid(fmt::format("unknown field '{}' at top level (allowed: {})", echo(key),
                                 join(top_fields)));
    }
  }

  auto values = effective_params(member(doc, "params"), params_json);
  if (!values) return std::unexpected(values.error());
  auto substituted = substitute_params(doc, *values);
  if (!substituted) return std::unexpected(substituted.error());
  // What gets stored carries the values used, so re-parsing it alone gives the same result.
  if (doc.contains("params")) doc["params"] = std::move(*values);

  definition def;
  auto header = read_header(doc, def);
  if (!header) return std::unexpected(header.error());
  auto steps = read_steps(doc, def);
  if (!steps) return std::unexpected(steps.error());
  for (const step_def& step : def.steps) {
    // Recursion through other workflows is stopped at run time by subworkflow_depth_max.
    const bool calls = step.kind == step_kind::workflow ||
                       (step.kind == step_kind::foreach && step.body_kind == step_kind::workflow);
    if (calls && step.child_workflow == def.workflow) {
      return invalid(fmt::format(
          "step '{}' calls workflow '{}', the workflow itself: a sub-workflow cannot call its own "
          "workflow (it would nest until subworkflow_depth_max, {} levels)",
          step.id, def.workflow, limits::subworkflow_depth_max));
    }
  }
  def.normalized_json = doc.dump();
  if (def.normalized_json.size() > limits::payload_bytes_max) {
    return reject(rejection_code::payload_too_large,
                  fmt::format("definition is {} bytes after parameter substitution, more than "
                              "{} (limits::payload_bytes_max)",
                              def.normalized_json.size(), limits::payload_bytes_max));
  }
  return def;
}

}  // namespace

std::expected<definition, definition_error> parse_definition(std::string_view json,
                                                             std::string_view params_json) {
  try {
    return parse(json, params_json);
  } catch (const std::exception& e) {
    // Every nlohmann access above is type-checked first; reaching here is a bug in this file,
    // but a publish request must not take the partition down with it.
    return invalid(fmt::format("definition could not be read: {}", json_error_text(e.what())));
  }
}

}  // namespace auterity
