#include "processors/template.h"

#include <deque>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "processors/expr.h"
#include "processors/limits.h"
#include "processors/strict_json.h"

namespace auterity {
namespace {

using json = nlohmann::json;

// Nesting accepted in an input, output or template. Values are copied and dumped by
// recursive code; no real payload comes near this. The orchestrator checks starts and signals
// against the same limit when they arrive.
constexpr int json_depth_max = limits::json_value_depth_max;
// User text echoed in an error is cut to this many bytes.
constexpr size_t echo_bytes_max = 64;

std::string echo(std::string_view s) {
  if (s.size() <= echo_bytes_max) return std::string(s);
  size_t n = echo_bytes_max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return std::string(s.substr(0, n)) + "...";
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::expected<json, std::string> parse_limited(std::string_view text) {
  bool too_deep = false;
  json::parser_callback_t check = [&too_deep](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= json_depth_max) {
      too_deep = true;
    }
    return true;
  };
  try {
    json doc = json::parse(text.begin(), text.end(), check);
    if (too_deep) {
      return std::unexpected(fmt::format("nested deeper than {} levels", json_depth_max));
    }
    return doc;
  } catch (const json::parse_error& e) {
    return std::unexpected(json_error_text(e.what()));
  }
}

// ---- paths -------------------------------------------------------------------------------

enum class source : uint8_t {
  input,
  step_output,
  step_status,
  step_error,
  execution_id,
  execution_tenant,
  execution_workflow,
  item,        // a foreach item
  item_index,  // its index
};

struct path {
  source from = source::input;
  std::string step_id;
  std::vector<std::string> below;  // keys or array indexes under the input or a step's output
};

constexpr std::string_view path_grammar =
    "a path is input.<field>..., steps.<id>.output..., steps.<id>.status, steps.<id>.error, "
    "execution.id, execution.tenant or execution.workflow (and item..., index in a foreach)";

bool ends_step_id(std::string_view part) {
  return part == "output" || part == "status" || part == "error";
}

std::expected<path, std::string> parse_path(std::string_view text) {
  auto malformed = [text](std::string_view why) {
    return std::unexpected(fmt::format("malformed path '{}': {}", echo(text), why));
  };
  std::vector<std::string_view> parts;
  for (size_t begin = 0;;) {
    const size_t dot = text.find('.', begin);
    const std::string_view part =
        text.substr(begin, dot == std::string_view::npos ? dot : dot - begin);
    if (part.empty()) return malformed("empty part");
    for (char c : part) {
      if (is_space(c) || c == '{' || c == '}') return malformed("unexpected character");
    }
    parts.push_back(part);
    if (dot == std::string_view::npos) break;
    begin = dot + 1;
  }

  path p;
  if (parts[0] == "input") {
    p.from = source::input;
    p.below.assign(parts.begin() + 1, parts.end());
    return p;
  }
  if (parts[0] == "item") {
    p.from = source::item;
    p.below.assign(parts.begin() + 1, parts.end());
    return p;
  }
  if (parts[0] == "index") {
    if (parts.size() != 1) return malformed("index has no fields");
    p.from = source::item_index;
    return p;
  }
  if (parts[0] == "execution") {
    if (parts.size() == 2 && parts[1] == "id")
      p.from = source::execution_id;
    else if (parts.size() == 2 && parts[1] == "tenant")
      p.from = source::execution_tenant;
    else if (parts.size() == 2 && parts[1] == "workflow")
      p.from = source::execution_workflow;
    else
      return malformed("execution has id, tenant and workflow");
    return p;
  }
  if (parts[0] == "steps") {
    // Step ids may hold dots; the first output/status/error part ends the id (definitions
    // reject ids that contain such a part).
    size_t field = 2;
    while (field < parts.size() && !ends_step_id(parts[field])) ++field;
    if (field >= parts.size()) return malformed("expected steps.<id>.output, .status or .error");
    for (size_t i = 1; i < field; ++i) {
      if (i > 1) p.step_id += '.';
      p.step_id += parts[i];
    }
    if (parts[field] == "output") {
      p.from = source::step_output;
      p.below.assign(parts.begin() + static_cast<ptrdiff_t>(field) + 1, parts.end());
      return p;
    }
    if (field + 1 != parts.size()) {
      return malformed(fmt::format("steps.<id>.{} has no fields", parts[field]));
    }
    p.from = parts[field] == "status" ? source::step_status : source::step_error;
    return p;
  }
  return malformed(path_grammar);
}

// Missing keys, indexes past the end and fields of scalars all mean "not there".
const json* descend(const json* v, const std::vector<std::string>& below) {
  for (const std::string& part : below) {
    if (v->is_object()) {
      const auto it = v->find(part);
      if (it == v->end()) return nullptr;
      v = &*it;
    } else if (v->is_array()) {
      // Nine digits are more elements than a 64 KiB payload can hold.
      if (part.size() > 9 || part.find_first_not_of("0123456789") != std::string::npos) {
        return nullptr;
      }
      const size_t index = std::stoul(part);
      if (index >= v->size()) return nullptr;
      v = &(*v)[index];
    } else {
      return nullptr;
    }
  }
  return v;
}

// Looks paths up in one scope. Parses the input once and each step's output at most once.
class resolver {
 public:
  explicit resolver(const template_scope& scope)
      : _scope(scope),
        _execution_id(std::string(scope.execution_id)),
        _execution_tenant(std::string(scope.tenant_id)),
        _execution_workflow(std::string(scope.workflow)) {}

  // The value at the path `text`, or nullptr if there is none (expressions).
  std::expected<const json*, std::string> find(std::string_view text) {
    auto p = parse_path(text);
    if (!p) return std::unexpected(p.error());
    return find(*p);
  }

  expr::scope expression_scope() {
    expr::scope s;
    s.find = [this](std::string_view text) { return find(text); };
    s.now_ms = _scope.now_ms;
    return s;
  }

  // The value at `p`, or nullptr if there is none.
  std::expected<const json*, std::string> find(const path& p) {
    switch (p.from) {
      case source::input: {
        auto doc = input();
        if (!doc) return doc;
        return descend(*doc, p.below);
      }
      case source::execution_id:
        return &_execution_id;
      case source::execution_tenant:
        return &_execution_tenant;
      case source::execution_workflow:
        return &_execution_workflow;
      case source::item: {
        if (_scope.item_json.empty()) return nullptr;
        if (!_item) {
          auto doc = parse_limited(_scope.item_json);
          if (!doc) return std::unexpected("item is not valid JSON: " + doc.error());
          _item = std::move(*doc);
        }
        return descend(&*_item, p.below);
      }
      case source::item_index:
        if (_scope.item_index < 0) return nullptr;
        _index = _scope.item_index;
        return &_index;
      case source::step_status:
      case source::step_error:
      case source::step_output:
        break;
    }
    step_view& s = step(p.step_id);
    if (!s.exists) return nullptr;
    if (p.from == source::step_status) return &s.status;
    if (p.from == source::step_error) return s.error ? &*s.error : nullptr;
    if (!s.output_text) return nullptr;
    if (!s.output) {
      auto doc = parse_limited(*s.output_text);
      if (!doc) {
        return std::unexpected(
            fmt::format("output of step '{}' is not valid JSON: {}", p.step_id, doc.error()));
      }
      s.output = std::move(*doc);
    }
    return descend(&*s.output, p.below);
  }

 private:
  struct step_view {
    bool exists = false;
    json status;
    std::optional<json> error;               // absent when the step has none
    std::optional<std::string> output_text;  // only for succeeded steps with output
    std::optional<json> output;              // parsed on first use
  };

  std::expected<const json*, std::string> input() {
    if (!_input) {
      if (trim(_scope.input_json).empty()) {
        _input = json::object();
      } else {
        auto doc = parse_limited(_scope.input_json);
        if (!doc) {
          return std::unexpected(fmt::format("execution input is not valid JSON: {}", doc.error()));
        }
        _input = std::move(*doc);
      }
    }
    return &*_input;
  }

  step_view& step(const std::string& id) {
    const auto known = _steps.find(id);
    if (known != _steps.end()) return known->second;
    step_view& s = _steps[id];
    std::string_view status, output, error;
    s.exists = _scope.step && _scope.step(id, status, output, error);
    if (s.exists) {
      // Copied: the scope promises nothing about how long its views stay valid.
      s.status = std::string(status);
      if (!error.empty()) s.error = json(std::string(error));
      if (status == "succeeded" && !output.empty()) s.output_text = std::string(output);
    }
    return s;
  }

  const template_scope& _scope;
  json _execution_id;
  json _execution_tenant;
  json _execution_workflow;
  std::optional<json> _input;
  std::optional<json> _item;
  json _index;
  std::map<std::string, step_view, std::less<>> _steps;
};

// ---- expressions ---------------------------------------------------------------------------

// The template grammar before expressions: one or more paths separated by ??. Such a text is
// read exactly as it always was (a path part may hold '-' or '$', which an expression would
// read as operators), so every definition published before expressions renders the same.
struct legacy_expression {
  std::vector<path> alternatives;
  std::vector<std::string_view> texts;
};

std::optional<legacy_expression> legacy_paths(std::string_view inner) {
  legacy_expression out;
  std::string_view rest = inner;
  while (true) {
    const size_t split = rest.find("??");
    const std::string_view text = trim(rest.substr(0, split));
    if (text.empty()) return std::nullopt;
    auto p = parse_path(text);
    if (!p) return std::nullopt;
    out.alternatives.push_back(std::move(*p));
    out.texts.push_back(text);
    if (split == std::string_view::npos) break;
    rest.remove_prefix(split + 2);
  }
  return out;
}

// Compiles an expression with the template path grammar; `step_refs` (if given) collects the
// steps its paths name. Columns in errors are shifted by `column_offset`.
constexpr std::string_view item_outside_foreach =
    "item and index exist only in the do.input of a foreach step";

std::expected<expr::program, std::string> compile_expression(std::string_view text,
                                                             size_t column_offset,
                                                             std::vector<std::string>* step_refs,
                                                             bool item_scope = true) {
  auto checker = [step_refs,
                  item_scope](std::string_view text) -> std::expected<void, std::string> {
    auto p = parse_path(text);
    if (!p) return std::unexpected(p.error());
    if (!item_scope && (p->from == source::item || p->from == source::item_index)) {
      return std::unexpected(std::string(item_outside_foreach));
    }
    if (step_refs != nullptr && !p->step_id.empty()) step_refs->push_back(p->step_id);
    return {};
  };
  auto program = expr::compile(text, checker);
  if (program || column_offset == 0) return program;
  // "column N: ..." -> "column N+offset: ..."
  std::string_view why = program.error();
  size_t column = 0;
  size_t i = 7;
  if (!why.starts_with("column ")) return program;
  while (i < why.size() && why[i] >= '0' && why[i] <= '9') column = column * 10 + (why[i++] - '0');
  return std::unexpected(fmt::format("column {}{}", column + column_offset, why.substr(i)));
}

// ---- rendering ---------------------------------------------------------------------------

class renderer {
 public:
  explicit renderer(const template_scope& scope) : _resolver(scope) {}

  std::expected<void, std::string> render(json& node) {
    if (node.is_string()) return render_string(node);
    if (node.is_structured()) {
      for (auto& item : node) {  // object keys are literal
        auto done = render(item);
        if (!done) return done;
      }
    }
    return {};
  }

 private:
  std::expected<void, std::string> render_string(json& node) {
    const std::string& s = node.get_ref<const std::string&>();
    std::string text;
    size_t copied = 0;
    for (size_t open = s.find("{{"); open != std::string::npos; open = s.find("{{", copied)) {
      const size_t close = s.find("}}", open + 2);
      if (close == std::string::npos) {
        return std::unexpected(fmt::format("template: unclosed '{{{{' in \"{}\"", echo(s)));
      }
      auto value = evaluate(std::string_view(s).substr(open, close + 2 - open));
      if (!value) return std::unexpected(value.error());
      const json& found = **value;
      if (open == 0 && close + 2 == s.size()) {
        auto charged = charge(found.is_string() ? found.get_ref<const std::string&>().size()
                                                : found.dump().size());
        if (!charged) return charged;
        node = found;  // `found` lives in the resolver, not in `node`
        return {};
      }
      text.append(s, copied, open - copied);
      const size_t before = text.size();
      if (found.is_string()) {
        text += found.get_ref<const std::string&>();
      } else {
        text += found.dump();
      }
      auto charged = charge(text.size() - before);
      if (!charged) return charged;
      copied = close + 2;
    }
    if (copied == 0) return {};
    text.append(s, copied);
    node = std::move(text);
    return {};
  }

  // `expression` includes its braces. A legacy `path ?? path` expression is read as before;
  // anything else is an expression (docs/expressions.md).
  std::expected<const json*, std::string> evaluate(std::string_view expression) {
    const std::string_view inner = expression.substr(2, expression.size() - 4);
    auto legacy = legacy_paths(inner);
    if (!legacy) {
      auto program = compile_expression(inner, 0, nullptr);
      if (!program) return std::unexpected("template: " + program.error());
      auto value = program->evaluate(_resolver.expression_scope());
      if (!value) {
        return std::unexpected(
            fmt::format("template: {} in '{}'", value.error(), echo(expression)));
      }
      return &_results.emplace_back(std::move(*value));
    }
    for (const path& p : legacy->alternatives) {
      auto found = _resolver.find(p);
      if (!found) return std::unexpected("template: " + found.error());
      if (*found != nullptr) return *found;
    }
    const auto& texts = legacy->texts;
    std::string missing = fmt::format("template: path '{}' not found", echo(texts.front()));
    for (size_t i = 1; i < texts.size(); ++i) missing += fmt::format(", nor '{}'", echo(texts[i]));
    return std::unexpected(missing);
  }

  // Bounds memory: a large value referred to many times could otherwise build a huge result
  // before the final size check.
  std::expected<void, std::string> charge(size_t bytes) {
    _inserted_bytes += bytes;
    if (_inserted_bytes > limits::payload_bytes_max) {
      return std::unexpected(
          fmt::format("template: rendered input exceeds {} bytes (limits::payload_bytes_max)",
                      limits::payload_bytes_max));
    }
    return {};
  }

  resolver _resolver;
  std::deque<json> _results;  // values computed by expressions, referred to until rendered
  size_t _inserted_bytes = 0;
};

}  // namespace

std::expected<void, std::string> check_expression(std::string_view text, size_t column_offset,
                                                  std::vector<std::string>& step_refs,
                                                  expression_use use, bool item_scope) {
  try {
    if (use == expression_use::template_value) {
      if (auto legacy = legacy_paths(text)) {
        for (const path& p : legacy->alternatives) {
          if (!item_scope && (p.from == source::item || p.from == source::item_index)) {
            return std::unexpected(
                fmt::format("column {}: {}", column_offset + 1, item_outside_foreach));
          }
          if (!p.step_id.empty()) step_refs.push_back(p.step_id);
        }
        return {};
      }
    }
    auto program = compile_expression(text, column_offset, &step_refs, item_scope);
    if (!program) return std::unexpected(program.error());
    if (use == expression_use::condition && program->result_type() != expr::type::boolean &&
        program->result_type() != expr::type::any) {
      return std::unexpected(fmt::format("column {}: a condition must be bool, not {}",
                                         column_offset + 1,
                                         expr::type_name(program->result_type())));
    }
    return {};
  } catch (const std::exception& e) {
    return std::unexpected(json_error_text(e.what()));
  }
}

std::expected<std::string, std::string> render_template(std::string_view template_json,
                                                        const template_scope& scope) {
  try {
    // A default-constructed step_def has an empty template: no input.
    auto doc = parse_limited(trim(template_json).empty() ? std::string_view("{}") : template_json);
    if (!doc) return std::unexpected("template: not valid JSON: " + doc.error());
    renderer r(scope);
    auto done = r.render(*doc);
    if (!done) return std::unexpected(done.error());
    std::string out = doc->dump();
    if (out.size() > limits::payload_bytes_max) {
      return std::unexpected(
          fmt::format("template: rendered input is {} bytes, more than {} "
                      "(limits::payload_bytes_max)",
                      out.size(), limits::payload_bytes_max));
    }
    return out;
  } catch (const std::exception& e) {
    return std::unexpected("template: " + json_error_text(e.what()));
  }
}

std::expected<std::string, std::string> evaluate_expression(std::string_view text,
                                                            const template_scope& scope) {
  try {
    auto program = compile_expression(text, 0, nullptr);
    if (!program) return std::unexpected(program.error());
    resolver r(scope);
    auto value = program->evaluate(r.expression_scope());
    if (!value) return std::unexpected(value.error());
    return value->dump();
  } catch (const std::exception& e) {
    return std::unexpected(json_error_text(e.what()));
  }
}

std::expected<bool, std::string> evaluate_condition(const condition& c,
                                                    const template_scope& scope) {
  try {
    if (c.operation == condition::op::expression) {
      auto program = compile_expression(c.path, 0, nullptr);
      if (!program) return std::unexpected("condition: " + program.error());
      resolver r(scope);
      auto value = program->evaluate(r.expression_scope());
      if (!value) return std::unexpected("condition: " + value.error());
      if (!value->is_boolean()) {
        return std::unexpected(
            fmt::format("condition: the result must be bool, not {}", value->type_name()));
      }
      return value->get<bool>();
    }
    auto p = parse_path(c.path);
    if (!p) return std::unexpected("condition: " + p.error());
    std::optional<json> expected_value;
    if (c.operation == condition::op::equals || c.operation == condition::op::not_equals) {
      auto value = parse_limited(c.value_json);
      if (!value) return std::unexpected("condition: value is not valid JSON: " + value.error());
      expected_value = std::move(*value);
    }
    resolver r(scope);
    auto found = r.find(*p);
    if (!found) return std::unexpected("condition: " + found.error());
    const json* actual = *found;
    switch (c.operation) {
      case condition::op::exists:
        return actual != nullptr;
      case condition::op::not_exists:
        return actual == nullptr;
      case condition::op::equals:
        return actual != nullptr && *actual == *expected_value;
      case condition::op::not_equals:
        return actual == nullptr || *actual != *expected_value;
      case condition::op::expression:
        break;  // handled above
    }
    return std::unexpected(std::string("condition: unknown operation"));
  } catch (const std::exception& e) {
    return std::unexpected("condition: " + json_error_text(e.what()));
  }
}

}  // namespace auterity
