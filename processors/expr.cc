#include "processors/expr.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <limits>
#include <optional>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "processors/strict_json.h"

namespace auterity::expr {

using json = nlohmann::json;

std::string_view type_name(type t) {
  switch (t) {
    case type::any:
      return "any";
    case type::null:
      return "null";
    case type::boolean:
      return "bool";
    case type::number:
      return "number";
    case type::string:
      return "string";
    case type::list:
      return "list";
    case type::object:
      return "object";
  }
  return "any";
}

namespace {

type type_of(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return type::null;
    case json::value_t::boolean:
      return type::boolean;
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return type::number;
    case json::value_t::string:
      return type::string;
    case json::value_t::array:
      return type::list;
    case json::value_t::object:
      return type::object;
    default:
      return type::any;
  }
}

enum class op : uint8_t {
  literal,
  path,   // input..., steps..., execution...: text holds the dotted path
  var,    // a name bound by filter()/map()
  field,  // args[0].text
  index,  // args[0][args[1]]
  list,
  neg,
  not_,
  and_,
  or_,
  coalesce,
  eq,
  ne,
  lt,
  le,
  gt,
  ge,
  in,
  add,
  sub,
  mul,
  div,
  mod,
  cond,
  call,
};

enum class fn : uint8_t {
  lower,
  upper,
  trim,
  contains,
  starts_with,
  ends_with,
  format,
  length,
  filter,
  map,
  sum,
  join,
  min,
  max,
  round,
  exists,
  string,
  now,
  date,
  timestamp,
  parse_time,
  days,
  hours,
  minutes,
};

struct fn_info {
  std::string_view name;
  fn id;
  int args_min;
  int args_max;  // -1: any number
  type result;
};

constexpr std::array<fn_info, 24> functions = {{
    {"lower", fn::lower, 1, 1, type::string},
    {"upper", fn::upper, 1, 1, type::string},
    {"trim", fn::trim, 1, 1, type::string},
    {"contains", fn::contains, 2, 2, type::boolean},
    {"starts_with", fn::starts_with, 2, 2, type::boolean},
    {"ends_with", fn::ends_with, 2, 2, type::boolean},
    {"format", fn::format, 1, -1, type::string},
    {"length", fn::length, 1, 1, type::number},
    {"filter", fn::filter, 3, 3, type::list},
    {"map", fn::map, 3, 3, type::list},
    {"sum", fn::sum, 1, 1, type::number},
    {"join", fn::join, 2, 2, type::string},
    {"min", fn::min, 1, -1, type::number},
    {"max", fn::max, 1, -1, type::number},
    {"round", fn::round, 1, 1, type::number},
    {"exists", fn::exists, 1, 1, type::boolean},
    {"string", fn::string, 1, 1, type::string},
    {"now", fn::now, 0, 0, type::number},
    {"date", fn::date, 1, 1, type::string},
    {"timestamp", fn::timestamp, 1, 1, type::string},
    {"parse_time", fn::parse_time, 1, 1, type::number},
    {"days", fn::days, 1, 1, type::number},
    {"hours", fn::hours, 1, 1, type::number},
    {"minutes", fn::minutes, 1, 1, type::number},
}};

const fn_info* find_function(std::string_view name) {
  for (const fn_info& f : functions) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

std::string function_list() {
  std::string out;
  for (const fn_info& f : functions) {
    if (!out.empty()) out += ", ";
    out += f.name;
  }
  return out;
}

}  // namespace

struct node {
  op kind = op::literal;
  size_t column = 1;
  type t = type::any;
  json value;        // literal
  std::string text;  // path, var or field name
  fn function = fn::lower;
  std::vector<std::shared_ptr<const node>> args;
};

namespace {

using node_ptr = std::shared_ptr<node>;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_ident_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_ident(char c) { return is_ident_start(c) || is_digit(c); }

bool is_keyword(std::string_view w) {
  return w == "and" || w == "or" || w == "not" || w == "in" || w == "true" || w == "false" ||
         w == "null";
}

bool accepts(type have, std::initializer_list<type> allowed) {
  if (have == type::any) return true;
  return std::ranges::find(allowed, have) != allowed.end();
}

std::string allowed_text(std::initializer_list<type> allowed) {
  std::string out;
  size_t i = 0;
  for (type t : allowed) {
    if (i > 0) out += i + 1 == allowed.size() ? " or " : ", ";
    out += type_name(t);
    ++i;
  }
  return out;
}

struct parse_error {
  size_t column;
  std::string message;
};

// Recursive descent over the characters (paths need their own lexing: `items.0.1` is two
// indexes, not a number). Precedence, loosest first: ?:, or, and, not, comparisons and `in`,
// ??, + -, * / %, unary -, postfix (. [] calls), primaries.
class parser {
 public:
  parser(std::string_view text, const path_checker& check) : _s(text), _check(check) {}

  std::expected<node_ptr, parse_error> parse() {
    auto root = expression();
    if (!root) return root;
    skip();
    if (_i < _s.size()) return fail(_i, fmt::format("unexpected '{}'", rest_word()));
    return root;
  }

 private:
  using result = std::expected<node_ptr, parse_error>;

  std::unexpected<parse_error> fail(size_t at, std::string message) const {
    return std::unexpected(parse_error{at + 1, std::move(message)});
  }

  std::string rest_word() const {
    size_t n = 0;
    while (_i + n < _s.size() && n < 16 && !is_space(_s[_i + n])) ++n;
    return std::string(_s.substr(_i, std::max<size_t>(n, 1)));
  }

  void skip() {
    while (_i < _s.size() && is_space(_s[_i])) ++_i;
  }

  bool peek(std::string_view token) {
    skip();
    return _s.substr(_i, token.size()) == token;
  }

  // A keyword operator: the word and not the start of a longer name.
  bool peek_word(std::string_view word) {
    skip();
    if (_s.substr(_i, word.size()) != word) return false;
    const size_t end = _i + word.size();
    return end >= _s.size() || !is_ident(_s[end]);
  }

  node_ptr make(op kind, size_t at, type t) {
    auto n = std::make_shared<node>();
    n->kind = kind;
    n->column = at + 1;
    n->t = t;
    return n;
  }

  struct depth_guard {
    explicit depth_guard(int& d) : depth(d) { ++depth; }
    ~depth_guard() { --depth; }
    int& depth;
  };

  result expression() {
    depth_guard guard(_depth);
    if (_depth > expression_depth_max) {
      return fail(_i, fmt::format("nested deeper than {} levels (expression_depth_max)",
                                  expression_depth_max));
    }
    return conditional();
  }

  result conditional() {
    auto c = disjunction();
    if (!c) return c;
    if (!peek("?") || peek("??")) return c;
    const size_t at = _i;
    ++_i;
    if (auto bad = want(*c, {type::boolean}, "the condition of ?:")) return *bad;
    auto yes = expression();
    if (!yes) return yes;
    if (!peek(":")) return fail(_i, "expected ':' of ?:");
    ++_i;
    auto no = expression();
    if (!no) return no;
    auto n = make(op::cond, at, (*yes)->t == (*no)->t ? (*yes)->t : type::any);
    n->args = {*c, *yes, *no};
    return n;
  }

  std::optional<std::unexpected<parse_error>> want(const node_ptr& n,
                                                   std::initializer_list<type> allowed,
                                                   std::string_view what) {
    if (accepts(n->t, allowed)) return std::nullopt;
    return fail(n->column - 1,
                fmt::format("{} must be {}, not {}", what, allowed_text(allowed), type_name(n->t)));
  }

  result logical(op kind, std::string_view word, result (parser::*operand)()) {
    auto left = (this->*operand)();
    if (!left) return left;
    while (peek_word(word)) {
      const size_t at = _i;
      _i += word.size();
      auto right = (this->*operand)();
      if (!right) return right;
      for (const node_ptr& side : {*left, *right}) {
        if (auto bad = want(side, {type::boolean}, fmt::format("an operand of '{}'", word))) {
          return *bad;
        }
      }
      auto n = make(kind, at, type::boolean);
      n->args = {*left, *right};
      left = n;
    }
    return left;
  }

  result disjunction() { return logical(op::or_, "or", &parser::conjunction); }
  result conjunction() { return logical(op::and_, "and", &parser::negation); }

  result negation() {
    if (!peek_word("not")) return comparison();
    const size_t at = _i;
    _i += 3;
    depth_guard guard(_depth);
    if (_depth > expression_depth_max) {
      return fail(_i, fmt::format("nested deeper than {} levels (expression_depth_max)",
                                  expression_depth_max));
    }
    auto operand = negation();
    if (!operand) return operand;
    if (auto bad = want(*operand, {type::boolean}, "the operand of 'not'")) return *bad;
    auto n = make(op::not_, at, type::boolean);
    n->args = {*operand};
    return n;
  }

  result comparison() {
    auto left = coalescing();
    if (!left) return left;
    struct cmp {
      std::string_view token;
      op kind;
    };
    static constexpr std::array<cmp, 6> symbols = {{{"==", op::eq},
                                                    {"!=", op::ne},
                                                    {"<=", op::le},
                                                    {">=", op::ge},
                                                    {"<", op::lt},
                                                    {">", op::gt}}};
    std::optional<op> kind;
    size_t width = 0;
    for (const cmp& c : symbols) {
      if (peek(c.token)) {
        kind = c.kind;
        width = c.token.size();
        break;
      }
    }
    if (!kind && peek_word("in")) {
      kind = op::in;
      width = 2;
    }
    if (!kind) return left;
    const size_t at = _i;
    _i += width;
    auto right = coalescing();
    if (!right) return right;
    const node_ptr& l = *left;
    const node_ptr& r = *right;
    if (*kind == op::lt || *kind == op::le || *kind == op::gt || *kind == op::ge) {
      for (const node_ptr& side : {l, r}) {
        if (auto bad = want(side, {type::number, type::string}, "an operand of an ordering")) {
          return *bad;
        }
      }
      if (l->t != type::any && r->t != type::any && l->t != r->t) {
        return fail(at, fmt::format("cannot order {} and {}", type_name(l->t), type_name(r->t)));
      }
    } else if (*kind == op::in) {
      if (auto bad = want(r, {type::list, type::object}, "the right side of 'in'")) return *bad;
    }
    auto n = make(*kind, at, type::boolean);
    n->args = {l, r};
    for (const char* again : {"==", "!=", "<", ">"}) {
      if (peek(again)) {
        return fail(_i, "comparisons do not chain: use 'and' or brackets");
      }
    }
    return n;
  }

  result coalescing() {
    auto left = additive();
    if (!left) return left;
    while (peek("??")) {
      const size_t at = _i;
      _i += 2;
      auto right = additive();
      if (!right) return right;
      auto n = make(op::coalesce, at, (*left)->t == (*right)->t ? (*left)->t : type::any);
      n->args = {*left, *right};
      left = n;
    }
    return left;
  }

  result additive() {
    auto left = multiplicative();
    if (!left) return left;
    while (true) {
      skip();
      if (_i >= _s.size() || (_s[_i] != '+' && _s[_i] != '-')) return left;
      const size_t at = _i;
      const bool plus = _s[_i] == '+';
      ++_i;
      auto right = multiplicative();
      if (!right) return right;
      const type lt = (*left)->t;
      const type rt = (*right)->t;
      type t = type::number;
      if (plus) {
        for (const node_ptr& side : {*left, *right}) {
          if (auto bad =
                  want(side, {type::number, type::string, type::list}, "an operand of '+'")) {
            return *bad;
          }
        }
        if (lt != type::any && rt != type::any && lt != rt) {
          return fail(at, fmt::format("cannot add {} and {}", type_name(lt), type_name(rt)));
        }
        t = lt != type::any ? lt : rt;
      } else {
        for (const node_ptr& side : {*left, *right}) {
          if (auto bad = want(side, {type::number}, "an operand of '-'")) return *bad;
        }
      }
      auto n = make(plus ? op::add : op::sub, at, t);
      n->args = {*left, *right};
      left = n;
    }
  }

  result multiplicative() {
    auto left = unary();
    if (!left) return left;
    while (true) {
      skip();
      if (_i >= _s.size() || (_s[_i] != '*' && _s[_i] != '/' && _s[_i] != '%')) return left;
      const size_t at = _i;
      const char c = _s[_i++];
      auto right = unary();
      if (!right) return right;
      for (const node_ptr& side : {*left, *right}) {
        if (auto bad = want(side, {type::number}, fmt::format("an operand of '{}'", c))) {
          return *bad;
        }
      }
      auto n = make(c == '*' ? op::mul : c == '/' ? op::div : op::mod, at, type::number);
      n->args = {*left, *right};
      left = n;
    }
  }

  result unary() {
    skip();
    if (_i < _s.size() && _s[_i] == '-') {
      const size_t at = _i++;
      depth_guard guard(_depth);
      if (_depth > expression_depth_max) {
        return fail(at, fmt::format("nested deeper than {} levels (expression_depth_max)",
                                    expression_depth_max));
      }
      auto operand = unary();
      if (!operand) return operand;
      if (auto bad = want(*operand, {type::number}, "the operand of '-'")) return *bad;
      auto n = make(op::neg, at, type::number);
      n->args = {*operand};
      return n;
    }
    return postfix();
  }

  result postfix() {
    auto base = primary();
    if (!base) return base;
    while (true) {
      skip();
      if (_i < _s.size() && _s[_i] == '.') {
        const size_t at = _i++;
        const size_t begin = _i;
        while (_i < _s.size() && is_ident(_s[_i])) ++_i;
        if (_i == begin) return fail(at, "expected a field name after '.'");
        auto n = make(op::field, at, type::any);
        n->text = std::string(_s.substr(begin, _i - begin));
        n->args = {*base};
        base = n;
      } else if (_i < _s.size() && _s[_i] == '[') {
        const size_t at = _i++;
        auto key = expression();
        if (!key) return key;
        if (!peek("]")) return fail(_i, "expected ']'");
        ++_i;
        if (auto bad = want(*key, {type::number, type::string}, "an index")) return *bad;
        auto n = make(op::index, at, type::any);
        n->args = {*base, *key};
        base = n;
      } else {
        return base;
      }
    }
  }

  result primary() {
    skip();
    if (_i >= _s.size()) return fail(_i, "expected a value, found the end of the expression");
    const size_t at = _i;
    const char c = _s[_i];
    if (c == '(') {
      ++_i;
      auto inner = expression();
      if (!inner) return inner;
      if (!peek(")")) return fail(_i, "expected ')'");
      ++_i;
      return inner;
    }
    if (c == '[') return list_literal();
    if (c == '\'' || c == '"') return string_literal();
    if (is_digit(c)) return number_literal();
    if (!is_ident_start(c)) return fail(at, fmt::format("unexpected '{}'", rest_word()));
    while (_i < _s.size() && is_ident(_s[_i])) ++_i;
    const std::string word(_s.substr(at, _i - at));
    if (word == "true" || word == "false") {
      auto n = make(op::literal, at, type::boolean);
      n->value = word == "true";
      return n;
    }
    if (word == "null") {
      auto n = make(op::literal, at, type::null);
      n->value = nullptr;
      return n;
    }
    if (is_keyword(word)) return fail(at, fmt::format("unexpected '{}'", word));
    if (peek("(")) return call(word, at);
    if (word == "input" || word == "steps" || word == "execution" || word == "item" ||
        word == "index") {
      return path(word, at);
    }
    if (std::ranges::find(_bound, word) != _bound.end()) {
      auto n = make(op::var, at, type::any);
      n->text = word;
      return n;
    }
    size_t end = _i;  // name the whole dotted text: 'inptu.name', not 'inptu'
    while (end + 1 < _s.size() && _s[end] == '.' && is_ident(_s[end + 1])) {
      ++end;
      while (end < _s.size() && is_ident(_s[end])) ++end;
    }
    return fail(at, fmt::format("unknown name '{}': a path starts with input, steps, execution "
                                "(or item, index in a foreach); strings are quoted ('{}')",
                                _s.substr(at, end - at), word));
  }

  // input.a.0.b, steps.crm.lookup.output.id, steps['send-sms'].status: the static parts,
  // checked with the template path grammar. What follows ([expr], .x after it) is postfix.
  result path(const std::string& root, size_t at) {
    std::string text = root;
    while (true) {
      skip();
      if (_i < _s.size() && _s[_i] == '.') {
        const size_t begin = _i + 1;
        size_t end = begin;
        while (end < _s.size() && is_ident(_s[end])) ++end;
        if (end == begin) return fail(_i, "expected a field name after '.'");
        text += '.';
        text.append(_s.substr(begin, end - begin));
        _i = end;
        continue;
      }
      // A quoted key or a plain index in brackets is part of the path.
      if (_i + 1 < _s.size() && _s[_i] == '[') {
        const size_t save = _i;
        ++_i;
        skip();
        std::optional<std::string> part;
        if (_i < _s.size() && (_s[_i] == '\'' || _s[_i] == '"')) {
          auto s = string_literal();
          if (!s) return s;
          part = (*s)->value.get<std::string>();
        } else if (_i < _s.size() && is_digit(_s[_i])) {
          const size_t begin = _i;
          while (_i < _s.size() && is_digit(_s[_i])) ++_i;
          part = std::string(_s.substr(begin, _i - begin));
        }
        skip();
        if (part && _i < _s.size() && _s[_i] == ']' && part->find('.') == std::string::npos &&
            !part->empty()) {
          ++_i;
          text += '.';
          text += *part;
          continue;
        }
        _i = save;  // a computed index: postfix
      }
      break;
    }
    if (_check) {
      auto ok = _check(text);
      if (!ok) return fail(at, ok.error());
    }
    auto n = make(op::path, at, type::any);
    n->text = std::move(text);
    return n;
  }

  result call(const std::string& name, size_t at) {
    const fn_info* f = find_function(name);
    if (!f) {
      return fail(at, fmt::format("unknown function '{}' (functions: {})", name, function_list()));
    }
    ++_i;  // (
    std::vector<node_ptr> args;
    std::optional<std::string> bound;
    const bool binds = f->id == fn::filter || f->id == fn::map;
    if (!peek(")")) {
      while (true) {
        if (binds && args.size() == 1) {
          // filter(list, x, predicate): the second argument names the element.
          skip();
          const size_t begin = _i;
          while (_i < _s.size() && is_ident(_s[_i])) ++_i;
          const std::string var(_s.substr(begin, _i - begin));
          if (var.empty() || !is_ident_start(var[0]) || is_keyword(var) || var == "input" ||
              var == "steps" || var == "execution" || var == "item" || var == "index" ||
              find_function(var) != nullptr) {
            return fail(begin, fmt::format("{}() takes a list, a name for its element and an "
                                           "expression: {}(list, x, ...)",
                                           name, name));
          }
          if (std::ranges::find(_bound, var) != _bound.end()) {
            return fail(begin,
                        fmt::format("'{}' is already bound by an enclosing filter or map", var));
          }
          bound = var;
          args.push_back(nullptr);
          _bound.push_back(var);
        } else {
          auto arg = expression();
          if (!arg) return arg;
          args.push_back(*arg);
        }
        if (peek(",")) {
          ++_i;
          continue;
        }
        if (peek(")")) break;
        return fail(_i, fmt::format("expected ',' or ')' in the arguments of {}()", name));
      }
    }
    ++_i;  // )
    if (bound) _bound.pop_back();
    const int n = static_cast<int>(args.size());
    if (n < f->args_min || (f->args_max >= 0 && n > f->args_max)) {
      std::string expected = f->args_min == f->args_max ? fmt::format("{}", f->args_min)
                             : f->args_max < 0          ? fmt::format("at least {}", f->args_min)
                                               : fmt::format("{} to {}", f->args_min, f->args_max);
      return fail(at, fmt::format("{}() takes {} argument{}, not {}", name, expected,
                                  f->args_min == 1 && f->args_max == 1 ? "" : "s", n));
    }
    auto node = make(op::call, at, f->result);
    node->function = f->id;
    if (bound) node->text = *bound;
    for (auto& a : args) node->args.push_back(a);
    if (auto bad = check_arguments(*f, args)) return *bad;
    return node;
  }

  std::optional<std::unexpected<parse_error>> check_arguments(const fn_info& f,
                                                              const std::vector<node_ptr>& a) {
    auto arg = [&](size_t i, std::initializer_list<type> allowed) {
      return want(a[i], allowed, fmt::format("argument {} of {}()", i + 1, f.name));
    };
    switch (f.id) {
      case fn::lower:
      case fn::upper:
      case fn::trim:
      case fn::parse_time:
        return arg(0, {type::string});
      case fn::starts_with:
      case fn::ends_with:
        if (auto bad = arg(0, {type::string})) return bad;
        return arg(1, {type::string});
      case fn::contains:
        return arg(0, {type::string, type::list});
      case fn::format: {
        if (auto bad = arg(0, {type::string})) return bad;
        if (a[0]->kind == op::literal) {
          const std::string& text = a[0]->value.get_ref<const std::string&>();
          size_t holes = 0;
          for (size_t p = text.find("{}"); p != std::string::npos; p = text.find("{}", p + 2)) {
            ++holes;
          }
          if (holes != a.size() - 1) {
            return fail(a[0]->column - 1,
                        fmt::format("format() has {} '{{}}' and {} value{}", holes, a.size() - 1,
                                    a.size() == 2 ? "" : "s"));
          }
        }
        return std::nullopt;
      }
      case fn::length:
        return arg(0, {type::string, type::list, type::object});
      case fn::filter:
        if (auto bad = arg(0, {type::list})) return bad;
        return arg(2, {type::boolean});
      case fn::map:
      case fn::sum:
        return arg(0, {type::list});
      case fn::join:
        if (auto bad = arg(0, {type::list})) return bad;
        return arg(1, {type::string});
      case fn::min:
      case fn::max:
        for (size_t i = 0; i < a.size(); ++i) {
          if (auto bad = arg(i, a.size() == 1 ? std::initializer_list<type>{type::list}
                                              : std::initializer_list<type>{type::number})) {
            return bad;
          }
        }
        return std::nullopt;
      case fn::round:
      case fn::date:
      case fn::timestamp:
      case fn::days:
      case fn::hours:
      case fn::minutes:
        return arg(0, {type::number});
      case fn::exists:
        if (a[0]->kind != op::path && a[0]->kind != op::field && a[0]->kind != op::index) {
          return fail(a[0]->column - 1, "exists() takes a path, such as exists(input.phone)");
        }
        return std::nullopt;
      case fn::string:
      case fn::now:
        return std::nullopt;
    }
    return std::nullopt;
  }

  result list_literal() {
    const size_t at = _i++;
    auto n = make(op::list, at, type::list);
    if (peek("]")) {
      ++_i;
      return n;
    }
    while (true) {
      auto item = expression();
      if (!item) return item;
      n->args.push_back(*item);
      if (peek(",")) {
        ++_i;
        continue;
      }
      if (peek("]")) {
        ++_i;
        return n;
      }
      return fail(_i, "expected ',' or ']' in a list");
    }
  }

  result string_literal() {
    const size_t at = _i;
    const char quote = _s[_i++];
    std::string out;
    while (true) {
      if (_i >= _s.size()) return fail(at, "unclosed string");
      const char c = _s[_i++];
      if (c == quote) break;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (_i >= _s.size()) return fail(at, "unclosed string");
      const char e = _s[_i++];
      switch (e) {
        case '\\':
        case '\'':
        case '"':
          out += e;
          break;
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        default:
          return fail(_i - 2,
                      fmt::format("unknown escape '\\{}' (known: \\\\ \\' \\\" \\n \\t)", e));
      }
    }
    auto n = make(op::literal, at, type::string);
    n->value = std::move(out);
    return n;
  }

  result number_literal() {
    const size_t at = _i;
    while (_i < _s.size() && is_digit(_s[_i])) ++_i;
    bool fraction = false;
    if (_i + 1 < _s.size() && _s[_i] == '.' && is_digit(_s[_i + 1])) {
      fraction = true;
      ++_i;
      while (_i < _s.size() && is_digit(_s[_i])) ++_i;
    }
    if (_i < _s.size() && is_ident(_s[_i])) {
      return fail(at, fmt::format("malformed number '{}'", rest_word()));
    }
    const std::string text(_s.substr(at, _i - at));
    auto n = make(op::literal, at, type::number);
    if (fraction) {
      n->value = std::stod(text);
    } else {
      if (text.size() > 18) return fail(at, "integer literal too large");
      n->value = static_cast<int64_t>(std::stoll(text));
    }
    return n;
  }

  std::string_view _s;
  const path_checker& _check;
  size_t _i = 0;
  int _depth = 0;
  std::vector<std::string> _bound;
};

// ---- evaluation ----------------------------------------------------------------------------

struct value {
  value() = default;
  value(json v, bool absent = false, std::string where = {})  // NOLINT: implicit from json
      : j(std::move(v)), missing(absent), path(std::move(where)) {}
  json j;
  bool missing = false;
  std::string path;  // what was missing, for the error
};

using outcome = std::expected<value, std::string>;

std::unexpected<std::string> error_at(const node& n, std::string message) {
  return std::unexpected(fmt::format("column {}: {}", n.column, message));
}

bool is_int(const json& v) { return v.is_number_integer() || v.is_number_unsigned(); }

std::optional<int64_t> as_int(const json& v) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  return std::nullopt;
}

// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

class evaluator {
 public:
  explicit evaluator(const scope& s) : _scope(s) {}

  outcome eval(const node& n) {
    if (++_steps > expression_steps_max) {
      return std::unexpected(
          fmt::format("expression_steps_max ({}) evaluation steps exceeded", expression_steps_max));
    }
    switch (n.kind) {
      case op::literal:
        return value{n.value};
      case op::path:
        return path(n);
      case op::var:
        for (auto it = _vars.rbegin(); it != _vars.rend(); ++it) {
          if (it->first == n.text) return value{*it->second};
        }
        return error_at(n, fmt::format("'{}' is not bound", n.text));
      case op::field:
        return field(n);
      case op::index:
        return index(n);
      case op::list:
        return list(n);
      case op::neg:
        return negate(n);
      case op::not_: {
        auto v = boolean(*n.args[0], "the operand of 'not'");
        if (!v) return std::unexpected(v.error());
        return value{!*v};
      }
      case op::and_:
      case op::or_: {
        const bool is_and = n.kind == op::and_;
        auto l = boolean(*n.args[0], is_and ? "an operand of 'and'" : "an operand of 'or'");
        if (!l) return std::unexpected(l.error());
        if (*l != is_and) return value{*l};
        auto r = boolean(*n.args[1], is_and ? "an operand of 'and'" : "an operand of 'or'");
        if (!r) return std::unexpected(r.error());
        return value{*r};
      }
      case op::coalesce: {
        auto l = eval(*n.args[0]);
        if (!l || !l->missing) return l;
        auto r = eval(*n.args[1]);
        if (r && r->missing) r->path = l->path + "' nor '" + r->path;
        return r;
      }
      case op::eq:
      case op::ne: {
        auto l = eval(*n.args[0]);
        if (!l) return l;
        auto r = eval(*n.args[1]);
        if (!r) return r;
        const bool equal = !l->missing && !r->missing && l->j == r->j;
        return value{n.kind == op::eq ? equal : !equal};
      }
      case op::lt:
      case op::le:
      case op::gt:
      case op::ge:
        return order(n);
      case op::in:
        return membership(n);
      case op::add:
      case op::sub:
      case op::mul:
      case op::div:
      case op::mod:
        return arithmetic(n);
      case op::cond: {
        auto c = boolean(*n.args[0], "the condition of ?:");
        if (!c) return std::unexpected(c.error());
        return eval(*n.args[*c ? 1 : 2]);
      }
      case op::call:
        return call(n);
    }
    return error_at(n, "unknown operation");
  }

  // A value that must be present.
  outcome present(const node& n) {
    auto v = eval(n);
    if (v && v->missing) return error_at(n, fmt::format("path '{}' not found", v->path));
    return v;
  }

 private:
  std::expected<bool, std::string> boolean(const node& n, std::string_view what) {
    auto v = present(n);
    if (!v) return std::unexpected(v.error());
    if (!v->j.is_boolean()) {
      return error_at(n, fmt::format("{} must be bool, not {}", what, type_name(type_of(v->j))));
    }
    return v->j.get<bool>();
  }

  std::expected<void, std::string> charge(const node& n, size_t bytes) {
    _bytes += bytes;
    if (_bytes > expression_value_bytes_max) {
      return error_at(n, fmt::format("expression_value_bytes_max ({} bytes) exceeded",
                                     expression_value_bytes_max));
    }
    return {};
  }

  outcome path(const node& n) {
    auto found = _scope.find ? _scope.find(n.text) : std::expected<const json*, std::string>{};
    if (!found) return error_at(n, found.error());
    if (*found == nullptr) return value{json(), true, n.text};
    return value{**found};
  }

  outcome field(const node& n) {
    auto base = eval(*n.args[0]);
    if (!base || base->missing) {
      if (base) base->path += "." + n.text;
      return base;
    }
    const std::string path = base->path.empty() ? n.text : base->path + "." + n.text;
    if (base->j.is_object()) {
      auto it = base->j.find(n.text);
      if (it == base->j.end()) return value{json(), true, path};
      return value{*it, false, path};
    }
    return value{json(), true, path};
  }

  outcome index(const node& n) {
    auto base = eval(*n.args[0]);
    if (!base || base->missing) return base;
    auto key = present(*n.args[1]);
    if (!key) return key;
    const std::string path = fmt::format("{}[{}]", base->path, key->j.dump());
    if (base->j.is_array() && is_int(key->j)) {
      const auto i = as_int(key->j);
      if (!i || *i < 0 || static_cast<uint64_t>(*i) >= base->j.size()) {
        return value{json(), true, path};
      }
      return value{base->j[static_cast<size_t>(*i)], false, path};
    }
    if (base->j.is_object() && key->j.is_string()) {
      auto it = base->j.find(key->j.get_ref<const std::string&>());
      if (it == base->j.end()) return value{json(), true, path};
      return value{*it, false, path};
    }
    return value{json(), true, path};
  }

  outcome list(const node& n) {
    json out = json::array();
    for (const auto& item : n.args) {
      auto v = present(*item);
      if (!v) return v;
      out.push_back(std::move(v->j));
    }
    auto charged = charge(n, 16 * out.size());
    if (!charged) return std::unexpected(charged.error());
    return value{std::move(out)};
  }

  outcome negate(const node& n) {
    auto v = present(*n.args[0]);
    if (!v) return v;
    if (!v->j.is_number()) {
      return error_at(n, fmt::format("'-' takes a number, not {}", type_name(type_of(v->j))));
    }
    if (auto i = as_int(v->j); i && *i != std::numeric_limits<int64_t>::min()) {
      return value{-*i};
    }
    return value{-v->j.get<double>()};
  }

  outcome order(const node& n) {
    auto l = present(*n.args[0]);
    if (!l) return l;
    auto r = present(*n.args[1]);
    if (!r) return r;
    int cmp = 0;
    if (l->j.is_number() && r->j.is_number()) {
      const auto li = as_int(l->j);
      const auto ri = as_int(r->j);
      if (li && ri) {
        cmp = *li < *ri ? -1 : *li > *ri ? 1 : 0;
      } else {
        const double a = l->j.get<double>();
        const double b = r->j.get<double>();
        cmp = a < b ? -1 : a > b ? 1 : 0;
      }
    } else if (l->j.is_string() && r->j.is_string()) {
      const int c = l->j.get_ref<const std::string&>().compare(r->j.get_ref<const std::string&>());
      cmp = c < 0 ? -1 : c > 0 ? 1 : 0;
    } else {
      return error_at(n, fmt::format("cannot order {} and {}", type_name(type_of(l->j)),
                                     type_name(type_of(r->j))));
    }
    switch (n.kind) {
      case op::lt:
        return value{cmp < 0};
      case op::le:
        return value{cmp <= 0};
      case op::gt:
        return value{cmp > 0};
      default:
        return value{cmp >= 0};
    }
  }

  outcome membership(const node& n) {
    auto l = present(*n.args[0]);
    if (!l) return l;
    auto r = present(*n.args[1]);
    if (!r) return r;
    if (r->j.is_array()) {
      for (const json& item : r->j) {
        if (++_steps > expression_steps_max) break;
        if (item == l->j) return value{true};
      }
      if (_steps > expression_steps_max) {
        return std::unexpected(fmt::format("expression_steps_max ({}) evaluation steps exceeded",
                                           expression_steps_max));
      }
      return value{false};
    }
    if (r->j.is_object()) {
      if (!l->j.is_string()) return value{false};
      return value{r->j.contains(l->j.get_ref<const std::string&>())};
    }
    return error_at(n, fmt::format("the right side of 'in' must be a list or an object, not {}",
                                   type_name(type_of(r->j))));
  }

  outcome arithmetic(const node& n) {
    auto l = present(*n.args[0]);
    if (!l) return l;
    auto r = present(*n.args[1]);
    if (!r) return r;
    const json& a = l->j;
    const json& b = r->j;
    if (n.kind == op::add && a.is_string() && b.is_string()) {
      auto charged = charge(
          n, a.get_ref<const std::string&>().size() + b.get_ref<const std::string&>().size());
      if (!charged) return std::unexpected(charged.error());
      return value{a.get<std::string>() + b.get<std::string>()};
    }
    if (n.kind == op::add && a.is_array() && b.is_array()) {
      auto charged = charge(n, 16 * (a.size() + b.size()));
      if (!charged) return std::unexpected(charged.error());
      json out = a;
      for (const json& item : b) out.push_back(item);
      return value{std::move(out)};
    }
    static constexpr std::array<char, 5> symbol = {'+', '-', '*', '/', '%'};
    const char sym = symbol[static_cast<size_t>(n.kind) - static_cast<size_t>(op::add)];
    if (!a.is_number() || !b.is_number()) {
      return error_at(n, fmt::format("cannot apply '{}' to {} and {}", sym, type_name(type_of(a)),
                                     type_name(type_of(b))));
    }
    const auto ai = as_int(a);
    const auto bi = as_int(b);
    if (ai && bi) {
      int64_t out = 0;
      switch (n.kind) {
        case op::add:
          if (!__builtin_add_overflow(*ai, *bi, &out)) return value{out};
          break;
        case op::sub:
          if (!__builtin_sub_overflow(*ai, *bi, &out)) return value{out};
          break;
        case op::mul:
          if (!__builtin_mul_overflow(*ai, *bi, &out)) return value{out};
          break;
        case op::div:
        case op::mod:
          if (*bi == 0) return error_at(n, "division by zero");
          if (*bi == -1 && *ai == std::numeric_limits<int64_t>::min()) break;
          if (n.kind == op::mod) return value{*ai % *bi};
          if (*ai % *bi == 0) return value{*ai / *bi};
          return value{static_cast<double>(*ai) / static_cast<double>(*bi)};
        default:
          break;
      }
      if (n.kind == op::mod) return error_at(n, "integer overflow");
    }
    if (n.kind == op::mod) return error_at(n, "'%' takes integers");
    const double x = a.get<double>();
    const double y = b.get<double>();
    double out = 0;
    switch (n.kind) {
      case op::add:
        out = x + y;
        break;
      case op::sub:
        out = x - y;
        break;
      case op::mul:
        out = x * y;
        break;
      default:
        if (y == 0) return error_at(n, "division by zero");
        out = x / y;
        break;
    }
    if (!std::isfinite(out)) return error_at(n, "the result is not a finite number");
    return value{out};
  }

  std::expected<std::string, std::string> text_arg(const node& call, size_t i) {
    auto v = present(*call.args[i]);
    if (!v) return std::unexpected(v.error());
    if (!v->j.is_string()) {
      return error_at(*call.args[i], fmt::format("argument {} must be a string, not {}", i + 1,
                                                 type_name(type_of(v->j))));
    }
    return v->j.get<std::string>();
  }

  std::expected<json, std::string> list_arg(const node& call, size_t i) {
    auto v = present(*call.args[i]);
    if (!v) return std::unexpected(v.error());
    if (!v->j.is_array()) {
      return error_at(*call.args[i], fmt::format("argument {} must be a list, not {}", i + 1,
                                                 type_name(type_of(v->j))));
    }
    return std::move(v->j);
  }

  std::expected<json, std::string> number_arg(const node& call, size_t i) {
    auto v = present(*call.args[i]);
    if (!v) return std::unexpected(v.error());
    if (!v->j.is_number()) {
      return error_at(*call.args[i], fmt::format("argument {} must be a number, not {}", i + 1,
                                                 type_name(type_of(v->j))));
    }
    return std::move(v->j);
  }

  std::expected<void, std::string> tick(const node& n) {
    if (++_steps > expression_steps_max) {
      return error_at(n, fmt::format("expression_steps_max ({}) evaluation steps exceeded",
                                     expression_steps_max));
    }
    return {};
  }

  outcome call(const node& n);
  outcome fold(const node& n, const json& items);
  outcome time_call(const node& n);

  const scope& _scope;
  uint64_t _steps = 0;
  size_t _bytes = 0;
  std::vector<std::pair<std::string, const json*>> _vars;
};

outcome evaluator::fold(const node& n, const json& items) {
  // sum(), min(list), max(list)
  bool integral = true;
  int64_t isum = 0;
  double dsum = 0;
  std::optional<json> best;
  for (const json& item : items) {
    auto ok = tick(n);
    if (!ok) return std::unexpected(ok.error());
    if (!item.is_number()) {
      return error_at(
          n, fmt::format("{}() takes a list of numbers, found {}",
                         n.function == fn::sum ? "sum" : "min/max", type_name(type_of(item))));
    }
    if (n.function == fn::sum) {
      const auto i = as_int(item);
      if (integral && i && !__builtin_add_overflow(isum, *i, &isum)) {
        dsum += static_cast<double>(*i);
        continue;
      }
      if (integral) dsum = static_cast<double>(isum);
      integral = false;
      dsum += item.get<double>();
      continue;
    }
    if (!best || (n.function == fn::min ? item.get<double>() < best->get<double>()
                                        : item.get<double>() > best->get<double>())) {
      best = item;
    }
  }
  if (n.function == fn::sum) {
    if (integral) return value{isum};
    if (!std::isfinite(dsum)) return error_at(n, "the result is not a finite number");
    return value{dsum};
  }
  if (!best) return error_at(n, "min() and max() of an empty list");
  return value{*best};
}

outcome evaluator::time_call(const node& n) {
  constexpr int64_t day_ms = 86'400'000;
  if (n.function == fn::now) return value{_scope.now_ms};
  if (n.function == fn::parse_time) {
    auto s = text_arg(n, 0);
    if (!s) return std::unexpected(s.error());
    // YYYY-MM-DD, or YYYY-MM-DDTHH:MM:SS[.mmm]Z (UTC only: no local time exists here).
    const std::string& t = *s;
    auto digits = [&t](size_t at, size_t count) -> std::optional<int> {
      if (at + count > t.size()) return std::nullopt;
      int v = 0;
      for (size_t i = at; i < at + count; ++i) {
        if (!is_digit(t[i])) return std::nullopt;
        v = v * 10 + (t[i] - '0');
      }
      return v;
    };
    const auto y = digits(0, 4);
    const auto mo = digits(5, 2);
    const auto d = digits(8, 2);
    bool ok = y && mo && d && t.size() >= 10 && t[4] == '-' && t[7] == '-' && *mo >= 1 &&
              *mo <= 12 && *d >= 1 && *d <= 31;
    int64_t ms = 0;
    if (ok && t.size() > 10) {
      const auto h = digits(11, 2);
      const auto mi = digits(14, 2);
      const auto se = digits(17, 2);
      ok = t.size() >= 20 && t[10] == 'T' && t[13] == ':' && t[16] == ':' && h && mi && se &&
           *h < 24 && *mi < 60 && *se < 60;
      size_t end = 19;
      int frac = 0;
      if (ok && t[19] == '.') {
        const auto f = digits(20, 3);
        ok = f.has_value();
        frac = f.value_or(0);
        end = 23;
      }
      ok = ok && t.size() == end + 1 && t[end] == 'Z';
      if (ok) ms = ((*h * 60LL + *mi) * 60 + *se) * 1000 + frac;
    }
    if (!ok) {
      return error_at(n, fmt::format("parse_time() takes YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS[.mmm]Z, "
                                     "not \"{}\"",
                                     echo_text(t, 40)));
    }
    return value{
        days_from_civil(*y, static_cast<unsigned>(*mo), static_cast<unsigned>(*d)) * day_ms + ms};
  }
  auto v = number_arg(n, 0);
  if (!v) return std::unexpected(v.error());
  const double x = v->get<double>();
  if (n.function == fn::days || n.function == fn::hours || n.function == fn::minutes) {
    const double unit = n.function == fn::days    ? day_ms
                        : n.function == fn::hours ? 3'600'000
                                                  : 60'000;
    const double out = x * unit;
    if (!(std::fabs(out) < 9e15)) return error_at(n, "the result is out of range");
    if (out == std::floor(out)) return value{static_cast<int64_t>(out)};
    return value{out};
  }
  // date(ms), timestamp(ms): UTC.
  if (!(std::fabs(x) < 9e15)) return error_at(n, "the time is out of range");
  const auto ms = static_cast<int64_t>(std::floor(x));
  const std::chrono::sys_time<std::chrono::milliseconds> at{std::chrono::milliseconds(ms)};
  const auto day = std::chrono::floor<std::chrono::days>(at);
  const std::chrono::year_month_day ymd{day};
  const std::chrono::hh_mm_ss hms{at - day};
  if (n.function == fn::date) {
    return value{fmt::format("{:04}-{:02}-{:02}", static_cast<int>(ymd.year()),
                             static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()))};
  }
  return value{fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                           static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                           static_cast<unsigned>(ymd.day()), hms.hours().count(),
                           hms.minutes().count(), hms.seconds().count(), hms.subseconds().count())};
}

outcome evaluator::call(const node& n) {
  switch (n.function) {
    case fn::lower:
    case fn::upper:
    case fn::trim: {
      auto s = text_arg(n, 0);
      if (!s) return std::unexpected(s.error());
      auto charged = charge(n, s->size());
      if (!charged) return std::unexpected(charged.error());
      std::string out = std::move(*s);
      if (n.function == fn::trim) {
        const size_t b = out.find_first_not_of(" \t\n\r");
        const size_t e = out.find_last_not_of(" \t\n\r");
        return value{b == std::string::npos ? std::string() : out.substr(b, e - b + 1)};
      }
      // ASCII letters only: the result does not depend on a locale.
      for (char& c : out) {
        if (n.function == fn::lower && c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
        if (n.function == fn::upper && c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
      }
      return value{std::move(out)};
    }
    case fn::contains: {
      auto hay = present(*n.args[0]);
      if (!hay) return hay;
      auto needle = present(*n.args[1]);
      if (!needle) return needle;
      if (hay->j.is_string()) {
        if (!needle->j.is_string()) {
          return error_at(*n.args[1], fmt::format("contains() of a string takes a string, not {}",
                                                  type_name(type_of(needle->j))));
        }
        return value{hay->j.get_ref<const std::string&>().find(
                         needle->j.get_ref<const std::string&>()) != std::string::npos};
      }
      if (hay->j.is_array()) {
        for (const json& item : hay->j) {
          auto ok = tick(n);
          if (!ok) return std::unexpected(ok.error());
          if (item == needle->j) return value{true};
        }
        return value{false};
      }
      return error_at(*n.args[0], fmt::format("contains() takes a string or a list, not {}",
                                              type_name(type_of(hay->j))));
    }
    case fn::starts_with:
    case fn::ends_with: {
      auto s = text_arg(n, 0);
      if (!s) return std::unexpected(s.error());
      auto p = text_arg(n, 1);
      if (!p) return std::unexpected(p.error());
      return value{n.function == fn::starts_with ? s->starts_with(*p) : s->ends_with(*p)};
    }
    case fn::format: {
      auto f = text_arg(n, 0);
      if (!f) return std::unexpected(f.error());
      std::string out;
      size_t copied = 0;
      size_t used = 1;
      for (size_t p = f->find("{}"); p != std::string::npos; p = f->find("{}", copied)) {
        if (used >= n.args.size()) {
          return error_at(
              n, fmt::format("format() has more '{{}}' than values ({})", n.args.size() - 1));
        }
        auto v = present(*n.args[used++]);
        if (!v) return v;
        out.append(*f, copied, p - copied);
        out += v->j.is_string() ? v->j.get<std::string>() : v->j.dump();
        copied = p + 2;
        auto charged = charge(n, out.size());
        if (!charged) return std::unexpected(charged.error());
      }
      if (used != n.args.size()) {
        return error_at(
            n, fmt::format("format() has {} '{{}}' and {} values", used - 1, n.args.size() - 1));
      }
      out.append(*f, copied);
      return value{std::move(out)};
    }
    case fn::length: {
      auto v = present(*n.args[0]);
      if (!v) return v;
      if (v->j.is_string()) {
        // Characters, not bytes: UTF-8 continuation bytes do not count.
        int64_t count = 0;
        for (char c : v->j.get_ref<const std::string&>()) {
          if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++count;
        }
        return value{count};
      }
      if (v->j.is_array() || v->j.is_object()) return value{static_cast<int64_t>(v->j.size())};
      return error_at(*n.args[0], fmt::format("length() takes a string, list or object, not {}",
                                              type_name(type_of(v->j))));
    }
    case fn::filter:
    case fn::map: {
      auto items = list_arg(n, 0);
      if (!items) return std::unexpected(items.error());
      json out = json::array();
      for (const json& item : *items) {
        _vars.emplace_back(n.text, &item);
        auto v = n.function == fn::map ? present(*n.args[2]) : outcome(value{});
        std::expected<bool, std::string> keep = true;
        if (n.function == fn::filter) keep = boolean(*n.args[2], "the condition of filter()");
        _vars.pop_back();
        if (!v) return v;
        if (!keep) return std::unexpected(keep.error());
        if (n.function == fn::map || *keep) {
          auto charged = charge(n, 16);
          if (!charged) return std::unexpected(charged.error());
          out.push_back(n.function == fn::map ? std::move(v->j) : item);
        }
      }
      return value{std::move(out)};
    }
    case fn::sum:
    case fn::min:
    case fn::max: {
      if (n.function != fn::sum && n.args.size() > 1) {
        json items = json::array();
        for (size_t i = 0; i < n.args.size(); ++i) {
          auto v = number_arg(n, i);
          if (!v) return std::unexpected(v.error());
          items.push_back(std::move(*v));
        }
        return fold(n, items);
      }
      auto items = list_arg(n, 0);
      if (!items) return std::unexpected(items.error());
      return fold(n, *items);
    }
    case fn::join: {
      auto items = list_arg(n, 0);
      if (!items) return std::unexpected(items.error());
      auto sep = text_arg(n, 1);
      if (!sep) return std::unexpected(sep.error());
      std::string out;
      for (size_t i = 0; i < items->size(); ++i) {
        auto ok = tick(n);
        if (!ok) return std::unexpected(ok.error());
        if (i > 0) out += *sep;
        const json& item = (*items)[i];
        const size_t before = out.size();
        out += item.is_string() ? item.get<std::string>() : item.dump();
        auto charged = charge(n, out.size() - before + sep->size());
        if (!charged) return std::unexpected(charged.error());
      }
      return value{std::move(out)};
    }
    case fn::round: {
      auto v = number_arg(n, 0);
      if (!v) return std::unexpected(v.error());
      if (is_int(*v)) return value{std::move(*v)};
      const double r = std::round(v->get<double>());
      if (std::fabs(r) < 9e18) return value{static_cast<int64_t>(r)};
      return value{r};
    }
    case fn::exists: {
      auto v = eval(*n.args[0]);
      if (!v) return v;
      return value{!v->missing};
    }
    case fn::string: {
      auto v = present(*n.args[0]);
      if (!v) return v;
      if (v->j.is_string()) return v;
      std::string out = v->j.dump();
      auto charged = charge(n, out.size());
      if (!charged) return std::unexpected(charged.error());
      return value{std::move(out)};
    }
    case fn::now:
    case fn::date:
    case fn::timestamp:
    case fn::parse_time:
    case fn::days:
    case fn::hours:
    case fn::minutes:
      return time_call(n);
  }
  return error_at(n, "unknown function");
}

// Left-deep chains (a + b + c ...) are parsed in a loop, not by recursion: the tree's height
// is checked once parsed, since evaluation recurses along it.
int height(const node& n) {
  int h = 0;
  for (const auto& a : n.args) {
    if (a) h = std::max(h, height(*a));
  }
  return h + 1;
}

}  // namespace

program::program() = default;
program::~program() = default;
program::program(program&&) noexcept = default;
program& program::operator=(program&&) noexcept = default;
program::program(const program&) = default;
program& program::operator=(const program&) = default;

type program::result_type() const { return _root ? _root->t : type::any; }

std::expected<json, std::string> program::evaluate(const scope& s) const {
  if (!_root) return std::unexpected(std::string("empty expression"));
  try {
    evaluator e(s);
    auto v = e.present(*_root);
    if (!v) return std::unexpected(v.error());
    return std::move(v->j);
  } catch (const std::exception& ex) {
    // nlohmann throws only on a type mismatch the checks above rule out; a bug here must
    // fail one step, not the partition.
    return std::unexpected(fmt::format("expression failed: {}", json_error_text(ex.what())));
  }
}

std::expected<program, std::string> compile(std::string_view text, const path_checker& check) {
  if (text.size() > expression_bytes_max) {
    return std::unexpected(
        fmt::format("column 1: the expression is {} bytes, more than {} "
                    "(expression_bytes_max)",
                    text.size(), expression_bytes_max));
  }
  if (text.find_first_not_of(" \t\n\r") == std::string_view::npos) {
    return std::unexpected(std::string("column 1: empty expression"));
  }
  try {
    parser p(text, check);
    auto root = p.parse();
    if (!root) {
      return std::unexpected(
          fmt::format("column {}: {}", root.error().column, root.error().message));
    }
    if (height(**root) > expression_depth_max) {
      return std::unexpected(fmt::format(
          "column 1: nested deeper than {} levels (expression_depth_max): split a long chain "
          "of operators with brackets or into steps",
          expression_depth_max));
    }
    program out;
    out._root = std::move(*root);
    out._text = std::string(text);
    return out;
  } catch (const std::exception& ex) {
    return std::unexpected(
        fmt::format("column 1: expression could not be read: {}", json_error_text(ex.what())));
  }
}

}  // namespace auterity::expr
