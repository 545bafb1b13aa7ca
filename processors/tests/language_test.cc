// The workflow language: expressions (processors/expr.h, docs/expressions.md), `when`
// expressions, compute and switch steps, from publish-time errors to golden timelines.

#include <cstdio>
#include <regex>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>

#include "processors/definition.h"
#include "processors/expr.h"
#include "processors/limits.h"
#include "processors/template.h"
#include "processors/tests/harness.h"
#include "replay/timeline_export.h"
#include "replay/verify.h"

namespace auterity {
namespace {

using json = nlohmann::json;
using testing::harness;

constexpr const char* tenant = "acme";

// ---- the expression language ----------------------------------------------------------------

class expressions : public ::testing::Test {
 protected:
  json input = json::parse(R"({
    "name": "Ann", "budget": 45000, "reply": "  YES ", "first-name": "Ann",
    "contact": {"preferred": "email", "phone": "+15550100", "email": "ann@example.com"},
    "leads": [{"name": "A", "model": "F-150", "budget": 30000},
              {"name": "B", "model": "Ranger", "budget": 20000},
              {"name": "C", "model": "F-150", "budget": 50000}],
    "seen": "2026-11-30", "nothing": null})");

  std::expected<json, std::string> run(std::string_view text, int64_t now_ms = 0) {
    auto p = expr::compile(text, nullptr);
    if (!p) return std::unexpected(p.error());
    expr::scope s;
    s.now_ms = now_ms;
    s.find = [this](std::string_view path) -> std::expected<const json*, std::string> {
      // input.<a>.<b>...: enough of the path grammar for these tests.
      const json* v = &input;
      std::string_view rest = path;
      if (!rest.starts_with("input")) return nullptr;
      rest.remove_prefix(5);
      while (!rest.empty()) {
        rest.remove_prefix(1);
        const size_t dot = rest.find('.');
        const std::string part(rest.substr(0, dot));
        rest = dot == std::string_view::npos ? "" : rest.substr(dot);
        if (v->is_object() && v->contains(part)) {
          v = &(*v)[part];
        } else if (v->is_array() && !part.empty() && std::isdigit(part[0]) &&
                   std::stoul(part) < v->size()) {
          v = &(*v)[std::stoul(part)];
        } else {
          return nullptr;
        }
      }
      return v;
    };
    return p->evaluate(s);
  }

  json value(std::string_view text, int64_t now_ms = 0) {
    auto v = run(text, now_ms);
    EXPECT_TRUE(v.has_value()) << text << ": " << v.error();
    return v ? *v : json();
  }

  std::string error(std::string_view text) {
    auto v = run(text);
    EXPECT_FALSE(v.has_value()) << text << " gave " << v->dump();
    return v ? "" : v.error();
  }
};

TEST_F(expressions, comparisons_logic_and_membership) {
  EXPECT_EQ(value("input.budget >= 40000 and input.contact.preferred == 'email'"), true);
  EXPECT_EQ(value("input.budget < 40000 or not (input.name != 'Ann')"), true);
  EXPECT_EQ(value("input.contact.preferred in ['sms', 'email']"), true);
  EXPECT_EQ(value("'phone' in input.contact"), true);
  EXPECT_EQ(value("'fax' in input.contact"), false);
  EXPECT_EQ(value("'a' < 'b' and 2.5 > 2"), true);
  EXPECT_EQ(value("1 == 1.0"), true);
  // `and` short-circuits: the right side is not evaluated.
  EXPECT_EQ(value("false and input.missing > 1"), false);
}

TEST_F(expressions, missing_paths_defaults_and_exists) {
  EXPECT_EQ(value("input.score ?? 0"), 0);
  EXPECT_EQ(value("input.nickname ?? input.name"), "Ann");
  EXPECT_EQ(value("input.budget ?? 0 >= 40000"), true) << "?? binds tighter than comparisons";
  EXPECT_EQ(value("exists(input.contact.phone) and not exists(input.contact.fax)"), true);
  EXPECT_EQ(value("input.nothing == null"), true) << "a field holding null exists";
  EXPECT_EQ(value("input.missing == 1"), false);
  EXPECT_EQ(value("input.missing != 1"), true);
  EXPECT_NE(error("input.missing > 1").find("path 'input.missing' not found"), std::string::npos);
  EXPECT_NE(error("input.a ?? input.b").find("'input.a' nor 'input.b'"), std::string::npos);
}

TEST_F(expressions, arithmetic) {
  EXPECT_EQ(value("1 + 2 * 3 - 4 / 2"), 5);
  EXPECT_EQ(value("7 / 2"), 3.5);
  EXPECT_EQ(value("7 % 3"), 1);
  EXPECT_EQ(value("-input.budget + 5000"), -40000);
  EXPECT_EQ(value("'a' + 'b'"), "ab");
  EXPECT_EQ(value("[1] + [2]"), json::array({1, 2}));
  EXPECT_NE(error("1 / 0").find("division by zero"), std::string::npos);
  EXPECT_TRUE(value("3037000500 * 3037000500 * 4").is_number_float())
      << "past int64 the result is a double, never a wrapped integer";
  EXPECT_NE(error("input.name * 2").find("cannot apply '*' to string and number"),
            std::string::npos);
}

TEST_F(expressions, string_functions) {
  EXPECT_EQ(value("lower(trim(input.reply)) == 'yes'"), true);
  EXPECT_EQ(value("upper(input.name)"), "ANN");
  EXPECT_EQ(value("contains(input.contact.email, '@')"), true);
  EXPECT_EQ(value("starts_with(input.contact.phone, '+1') and ends_with(input.name, 'nn')"), true);
  EXPECT_EQ(value("format('{} has {}', input.name, input.budget)"), "Ann has 45000");
  EXPECT_EQ(value("length('é!')"), 2) << "characters, not bytes";
  EXPECT_EQ(value("string(12) + '!'"), "12!");
  EXPECT_EQ(value("input.contact.preferred == 'sms' ? input.contact.phone : input.contact.email"),
            "ann@example.com");
  EXPECT_EQ(value("input['first-name']"), "Ann") << "a key that is not a name, in brackets";
}

TEST_F(expressions, list_functions) {
  EXPECT_EQ(value("length(input.leads)"), 3);
  EXPECT_EQ(value("map(filter(input.leads, l, l.model == 'F-150'), l, l.name)"),
            json::array({"A", "C"}));
  EXPECT_EQ(value("sum(map(input.leads, l, l.budget))"), 100000);
  EXPECT_EQ(value("max(map(input.leads, l, l.budget))"), 50000);
  EXPECT_EQ(value("min(3, 1, 2)"), 1);
  EXPECT_EQ(value("join(map(input.leads, l, l.name), ', ')"), "A, B, C");
  EXPECT_EQ(value("input.leads[1].model"), "Ranger");
  EXPECT_EQ(value("input.leads.2.name"), "C");
  EXPECT_EQ(value("contains(['a', 'b'], 'b')"), true);
  EXPECT_EQ(value("round(2.5)"), 3);
}

TEST_F(expressions, time_comes_from_the_scope_clock) {
  const int64_t now = 1'764'979'200'000;  // 2025-12-06T00:00:00Z
  EXPECT_EQ(value("date(now())", now), "2025-12-06");
  EXPECT_EQ(value("timestamp(now() + hours(1) + 5)", now), "2025-12-06T01:00:00.005Z");
  EXPECT_EQ(value("parse_time('2025-12-06T00:00:00Z') == now()", now), true);
  EXPECT_EQ(value("(now() - parse_time(input.seen)) / days(1)", now), -359)
      << "2026-11-30 is 359 days after 2025-12-06";
  EXPECT_EQ(value("date(now())", 0), "1970-01-01") << "the same scope, the same answer";
  EXPECT_NE(error("parse_time('yesterday')").find("YYYY-MM-DD"), std::string::npos);
}

TEST_F(expressions, compile_errors_name_the_column) {
  auto compile_error = [](std::string_view text) {
    auto p = expr::compile(text, nullptr);
    EXPECT_FALSE(p.has_value()) << text;
    return p ? "" : p.error();
  };
  EXPECT_EQ(compile_error("lowr(input.name)").substr(0, 10), "column 1: ");
  EXPECT_NE(compile_error("lowr(input.name)").find("unknown function 'lowr'"), std::string::npos);
  EXPECT_NE(compile_error("input.a == 'x' and lower(5)")
                .find("column 26: argument 1 of lower() "
                      "must be string, not number"),
            std::string::npos);
  EXPECT_NE(compile_error("1 + 'a'").find("column 3: cannot add number and string"),
            std::string::npos);
  EXPECT_NE(compile_error("input.a ==").find("column 11: expected a value"), std::string::npos);
  EXPECT_NE(compile_error("input.a == 1 == 2").find("do not chain"), std::string::npos);
  EXPECT_NE(compile_error("customer.name").find("unknown name 'customer.name'"), std::string::npos);
  EXPECT_NE(compile_error("'open").find("unclosed string"), std::string::npos);
  EXPECT_NE(compile_error("format('{} {}', 1)").find("format() has 2 '{}' and 1 value"),
            std::string::npos);
  EXPECT_NE(compile_error("filter(input.l, input, true)").find("a name for its element"),
            std::string::npos);
  EXPECT_NE(compile_error("input.a and 3").find("must be bool, not number"), std::string::npos);
}

TEST_F(expressions, limits_are_named_and_enforced) {
  // Deep nesting: rejected at compile time, by name.
  std::string deep(100, '(');
  deep += "1";
  deep += std::string(100, ')');
  auto p = expr::compile(deep, nullptr);
  ASSERT_FALSE(p.has_value());
  EXPECT_NE(p.error().find("expression_depth_max"), std::string::npos) << p.error();
  std::string chain = "1";
  for (int i = 0; i < 100; ++i) chain += " + 1";
  p = expr::compile(chain, nullptr);
  ASSERT_FALSE(p.has_value());
  EXPECT_NE(p.error().find("expression_depth_max"), std::string::npos) << p.error();
  // Long text.
  p = expr::compile(std::string(expr::expression_bytes_max + 1, '1'), nullptr);
  ASSERT_FALSE(p.has_value());
  EXPECT_NE(p.error().find("expression_bytes_max"), std::string::npos);
  // Unbounded work: a list of 3 000 elements filtered against itself is 9 000 000 steps.
  input["big"] = json::array();
  for (int i = 0; i < 3000; ++i) input["big"].push_back(i);
  EXPECT_NE(error("length(filter(input.big, a, length(filter(input.big, b, a < 0)) > 0))")
                .find("expression_steps_max"),
            std::string::npos);
  // Unbounded memory: a string doubled in every element.
  input["text"] = std::string(1000, 'x');
  EXPECT_NE(error("length(map(input.big, a, input.text + input.text))")
                .find("expression_value_bytes_max"),
            std::string::npos);
}

// ---- definitions -----------------------------------------------------------------------------

std::string workflow(const json& steps) {
  return json{{"workflow", "wf"}, {"version", 1}, {"steps", steps}}.dump();
}

std::string publish_error(const json& steps) {
  auto d = parse_definition(workflow(steps), "");
  EXPECT_FALSE(d.has_value()) << steps.dump();
  return d ? "" : d.error().reason;
}

TEST(language_definitions, when_expressions_are_checked_at_publish) {
  auto d = parse_definition(
      workflow(json::array({{{"id", "a"}, {"kind", "delay"}, {"delay_ms", 1}},
                            {{"id", "b"},
                             {"kind", "delay"},
                             {"delay_ms", 1},
                             {"after", {"a"}},
                             {"when", "steps.a.status == 'succeeded' and input.x >= 3"}}})),
      "");
  ASSERT_TRUE(d.has_value()) << d.error().reason;
  EXPECT_EQ(d->steps[1].when->operation, condition::op::expression);

  EXPECT_EQ(publish_error(json::array(
                {{{"id", "a"}, {"kind", "delay"}, {"delay_ms", 1}, {"when", "input.x >= "}}})),
            "step 'a': when: column 12: expected a value, found the end of the expression");
  EXPECT_EQ(publish_error(json::array(
                {{{"id", "a"}, {"kind", "delay"}, {"delay_ms", 1}, {"when", "input.x + 1"}}})),
            "step 'a': when: column 1: a condition must be bool, not number");
  EXPECT_NE(publish_error(json::array({{{"id", "a"},
                                        {"kind", "delay"},
                                        {"delay_ms", 1},
                                        {"when", "steps.b.status == 'failed'"}},
                                       {{"id", "b"}, {"kind", "delay"}, {"delay_ms", 1}}}))
                .find("step 'a' refers to steps.b which is not one of its dependencies"),
            std::string::npos);
}

TEST(language_definitions, template_expressions_are_checked_at_publish_with_the_column) {
  EXPECT_EQ(publish_error(json::array({{{"id", "a"},
                                        {"kind", "task"},
                                        {"action", "t"},
                                        {"input", {{"x", "Hi {{ lowr(input.name) }}"}}}}})),
            "step 'a': field input.x: column 7: unknown function 'lowr' (functions: lower, upper, "
            "trim, contains, starts_with, ends_with, format, length, filter, map, sum, join, min, "
            "max, round, exists, string, now, date, timestamp, parse_time, days, hours, minutes) "
            "in \"Hi {{ lowr(input.name) }}\"");
  // Legacy path templates are read as they always were: '-' in a key is part of the path.
  auto d = parse_definition(workflow(json::array({{{"id", "a"},
                                                   {"kind", "task"},
                                                   {"action", "t"},
                                                   {"input", {{"x", "{{input.first-name}}"}}}}})),
                            "");
  ASSERT_TRUE(d.has_value()) << d.error().reason;
}

TEST(language_definitions, compute_and_switch_errors) {
  EXPECT_EQ(publish_error(json::array({{{"id", "c"}, {"kind", "compute"}}})),
            "step 'c': compute steps need field 'output', an object");
  EXPECT_EQ(
      publish_error(json::array(
          {{{"id", "c"}, {"kind", "compute"}, {"output", {{"x", 1}}}, {"retry", json::object()}}})),
      "step 'c': field 'retry' does not apply to compute steps");
  EXPECT_NE(
      publish_error(json::array({{{"id", "s"}, {"kind", "switch"}}})).find("need field 'cases'"),
      std::string::npos);
  const json target = {{"id", "t"}, {"kind", "delay"}, {"delay_ms", 1}};
  EXPECT_EQ(publish_error(json::array(
                {{{"id", "s"},
                  {"kind", "switch"},
                  {"cases", {{{"name", "hot"}, {"when", "input.score >"}, {"then", {"t"}}}}}},
                 target})),
            "step 's': case 'hot': when: column 14: expected a value, found the end of the "
            "expression");
  EXPECT_EQ(publish_error(
                json::array({{{"id", "s"},
                              {"kind", "switch"},
                              {"cases", {{{"name", "hot"}, {"when", "true"}, {"then", {"nope"}}}}}},
                             target})),
            "step 's': case 'hot': then names unknown step 'nope'");
  EXPECT_EQ(
      publish_error(json::array({{{"id", "s"},
                                  {"kind", "switch"},
                                  {"cases", {{{"name", "hot"}, {"when", "true"}, {"then", {"t"}}}}},
                                  {"default", {"t"}}},
                                 target})),
      "step 's': step 't' is in two branches (a step belongs to one case)");
  EXPECT_EQ(publish_error(json::array(
                {{{"id", "s"},
                  {"kind", "switch"},
                  {"cases", {{{"name", "default"}, {"when", "true"}, {"then", json::array()}}}}}})),
            "step 's': cases[0]: the name 'default' is the default branch's; use 'default' beside "
            "'cases'");
  // A target that comes before its switch forms a cycle.
  EXPECT_NE(publish_error(
                json::array({{{"id", "s"},
                              {"kind", "switch"},
                              {"after", {"t"}},
                              {"cases", {{{"name", "hot"}, {"when", "true"}, {"then", {"t"}}}}}},
                             target}))
                .find("cycle"),
            std::string::npos);
}

// ---- execution: golden timelines -------------------------------------------------------------

std::string execution_timeline(harness& h, std::string_view execution) {
  timeline_options o;
  o.scope.tenant = tenant;
  o.scope.execution = std::string(execution);
  o.format = timeline_format::text;
  o.threads = 1;
  char* buf = nullptr;
  size_t size = 0;
  std::FILE* out = open_memstream(&buf, &size);
  auto r = write_timeline(h.n->get_log(), o, out);
  std::fclose(out);
  std::string text(buf, size);
  std::free(buf);
  EXPECT_TRUE(r.has_value()) << r.error().message;
  return text;
}

// The event descriptions of a timeline and the commands they sent, without times, offsets and
// causes: "StepScheduled step x attempt 1 scheduled".
std::string events_only(const std::string& timeline) {
  static const std::regex event(R"(^\s*\+\s+\S+\s+ex@\d+\s+#\d+\s+(\S+)\s+(.*?)  <- .*$)");
  std::string out;
  std::istringstream lines(timeline);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (std::regex_match(line, m, event)) {
      out += m[2].str() + "\n";
    } else if (const size_t at = line.find("\u21b3 command"); at != std::string::npos) {
      out += line.substr(at) + "\n";
    }
  }
  return out;
}

// score (compute) -> route (switch: hot / warm / default) -> call_now | offer | nurture;
// offer -> offer_followup (propagates the skip); log joins all three branches.
json routing_workflow() {
  return json::parse(R"({"workflow": "route", "version": 1, "steps": [
    {"id": "score", "kind": "compute",
     "output": {"score": "{{ (input.budget ?? 0 >= 40000 ? 40 : 10) + (input.timeline == 'now' ? 30 : 0) }}"}},
    {"id": "route", "kind": "switch", "after": ["score"],
     "cases": [{"name": "hot", "when": "steps.score.output.score >= 70", "then": ["call_now"]},
               {"name": "warm", "when": "steps.score.output.score >= 40", "then": ["offer"]}],
     "default": ["nurture"]},
    {"id": "call_now", "kind": "task", "action": "transform", "input": {"who": "{{ upper(input.name) }}"}},
    {"id": "offer", "kind": "task", "action": "transform", "input": {"x": 1}},
    {"id": "offer_followup", "kind": "delay", "delay_ms": 5, "after": ["offer"]},
    {"id": "nurture", "kind": "delay", "delay_ms": 5},
    {"id": "log", "kind": "task", "action": "transform", "join": true,
     "after": ["call_now", "offer_followup", "nurture"],
     "input": {"branch": "{{ steps.route.output.case }}"}}
  ]})");
}

TEST(language_execution, switch_takes_one_case_and_skips_propagate_to_a_join) {
  harness h("switch", 1);
  h.publish(tenant, routing_workflow().dump());
  h.start(tenant, "hot", "route", R"({"name": "ann", "budget": 50000, "timeline": "now"})");
  h.start(tenant, "warm", "route", R"({"name": "bo", "budget": 50000})");
  h.start(tenant, "cold", "route", R"({"name": "cy"})");
  h.settle();
  h.run_for(20, 5);
  for (const char* id : {"hot", "warm", "cold"}) {
    auto e = h.exec(tenant, id);
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->status, exec_status::succeeded) << id << ": " << e->result;
  }
  EXPECT_EQ(events_only(execution_timeline(h, "hot")),
            "started route v1 with input {\"budget\":50000,\"name\":\"ann\",\"timeline\":\"now\"}\n"
            "step score attempt 1 scheduled\n"
            "step score succeeded: {\"score\":70}\n"
            "step route attempt 1 scheduled\n"
            "step route succeeded: {\"case\":\"hot\"}\n"
            "step call_now attempt 1 scheduled -> command hot/call_now/1\n"
            "\u21b3 command: task transform\n"
            "step offer skipped (branch not taken: switch 'route' took case 'hot')\n"
            "step offer_followup skipped (branch not taken: 'offer' was on a branch not taken)\n"
            "step nurture skipped (branch not taken: switch 'route' took case 'hot')\n"
            "step call_now succeeded: {\"who\":\"ANN\"}\n"
            "step log attempt 1 scheduled -> command hot/log/1\n"
            "\u21b3 command: task transform\n"
            "step log succeeded: {\"branch\":\"hot\"}\n"
            "execution succeeded: {\"log\":{\"branch\":\"hot\"}}\n");
  EXPECT_EQ(events_only(execution_timeline(h, "cold")),
            "started route v1 with input {\"name\":\"cy\"}\n"
            "step score attempt 1 scheduled\n"
            "step score succeeded: {\"score\":10}\n"
            "step route attempt 1 scheduled\n"
            "step route succeeded: {\"case\":\"default\"}\n"
            "step call_now skipped (branch not taken: switch 'route' took case 'default')\n"
            "step offer skipped (branch not taken: switch 'route' took case 'default')\n"
            "step offer_followup skipped (branch not taken: 'offer' was on a branch not taken)\n"
            "step nurture attempt 1 scheduled, timer at +5ms\n"
            "timer fired: Delay of step nurture attempt 1\n"
            "step nurture succeeded: {\"delayed_ms\":5}\n"
            "step log attempt 1 scheduled -> command cold/log/1\n"
            "\u21b3 command: task transform\n"
            "step log succeeded: {\"branch\":\"default\"}\n"
            "execution succeeded: {\"log\":{\"branch\":\"default\"}}\n");
  auto warm = h.exec(tenant, "warm");
  EXPECT_EQ(warm->steps[3].status, step_status::succeeded) << "offer ran";
  EXPECT_EQ(warm->steps[4].status, step_status::succeeded) << "offer_followup ran";
  EXPECT_EQ(warm->steps[2].status, step_status::skipped) << "call_now did not";
}

TEST(language_execution, a_when_skip_does_not_propagate_and_a_bad_case_fails_the_switch) {
  harness h("switch-errors", 1);
  h.publish(tenant, json::parse(R"({"workflow": "w", "version": 1, "steps": [
    {"id": "maybe", "kind": "delay", "delay_ms": 1, "when": "input.go ?? false"},
    {"id": "after_maybe", "kind": "compute", "after": ["maybe"], "output": {"ran": true}},
    {"id": "route", "kind": "switch", "after": ["after_maybe"],
     "cases": [{"name": "big", "when": "input.n > 10", "then": ["big_step"]}]},
    {"id": "big_step", "kind": "compute", "output": {"big": true}}
  ]})")
                        .dump());
  h.start(tenant, "e1", "w", R"({"n": 50})");
  h.start(tenant, "e2", "w", R"({"n": "fifty"})");
  h.settle();
  auto e1 = h.exec(tenant, "e1");
  ASSERT_EQ(e1->status, exec_status::succeeded) << e1->result;
  EXPECT_EQ(e1->steps[0].status, step_status::skipped);
  EXPECT_EQ(e1->steps[1].status, step_status::succeeded) << "a skip by when lets dependents run";
  EXPECT_EQ(e1->steps[3].status, step_status::succeeded);
  auto e2 = h.exec(tenant, "e2");
  ASSERT_EQ(e2->status, exec_status::failed);
  EXPECT_NE(e2->result.find("case 'big': condition: column 9: cannot order string and number"),
            std::string::npos)
      << e2->result;
}

// ---- foreach -----------------------------------------------------------------------------------

TEST(language_definitions, foreach_errors) {
  const json body = {{"kind", "task"}, {"action", "transform"}, {"input", {{"x", "{{ item }}"}}}};
  EXPECT_EQ(publish_error(json::array({{{"id", "f"}, {"kind", "foreach"}, {"do", body}}})),
            "step 'f': foreach steps need field 'items', an expression giving a list, such as "
            "\"input.leads\"");
  EXPECT_EQ(publish_error(json::array(
                {{{"id", "f"}, {"kind", "foreach"}, {"items", "input.leads +"}, {"do", body}}})),
            "step 'f': items: column 14: expected a value, found the end of the expression");
  EXPECT_EQ(publish_error(json::array({{{"id", "f"},
                                        {"kind", "foreach"},
                                        {"items", "input.leads"},
                                        {"concurrency", 500},
                                        {"do", body}}})),
            "step 'f': concurrency must be an integer from 1 to 100, not 500");
  EXPECT_EQ(publish_error(json::array({{{"id", "f"},
                                        {"kind", "foreach"},
                                        {"items", "input.leads"},
                                        {"on_item_failure", "ignore"},
                                        {"do", body}}})),
            "step 'f': on_item_failure must be \"fail_fast\" or \"collect\", not \"ignore\"");
  EXPECT_EQ(publish_error(json::array({{{"id", "f"},
                                        {"kind", "foreach"},
                                        {"items", "input.leads"},
                                        {"do", {{"kind", "delay"}}}}})),
            "step 'f': do.kind must be \"task\", \"notify\" or \"workflow\", not \"delay\"");
  EXPECT_EQ(publish_error(json::array({{{"id", "f"},
                                        {"kind", "foreach"},
                                        {"items", "input.leads"},
                                        {"do", {{"kind", "task"}, {"input", json::object()}}}}})),
            "step 'f': do: task steps need field 'action'");
  EXPECT_EQ(
      publish_error(json::array({{{"id", "f"},
                                  {"kind", "foreach"},
                                  {"items", "input.leads"},
                                  {"do", {{"kind", "task"}, {"action", "t"}, {"when", "true"}}}}})),
      "step 'f': unknown field 'do.when' (allowed: kind, action, workflow, version, input, retry, "
      "timeout_ms)");
  // item and index exist only in the body.
  EXPECT_EQ(publish_error(json::array({{{"id", "t"},
                                        {"kind", "task"},
                                        {"action", "t"},
                                        {"input", {{"x", "{{ item.name }}"}}}}})),
            "step 't': field input.x: column 3: item and index exist only in the do.input of a "
            "foreach step in \"{{ item.name }}\"");
  EXPECT_NE(
      publish_error(
          json::array({{{"id", "f"}, {"kind", "foreach"}, {"items", "item.list"}, {"do", body}}}))
          .find("item and index exist only"),
      std::string::npos);
}

json fanout_workflow(std::string_view policy, int concurrency) {
  return json{
      {"workflow", "fan"},
      {"version", 1},
      {"steps",
       json::array({{{"id", "each"},
                     {"kind", "foreach"},
                     {"items", "filter(input.leads, l, l.model == input.model)"},
                     {"concurrency", concurrency},
                     {"on_item_failure", policy},
                     {"do",
                      {{"kind", "task"},
                       {"action", "flaky"},
                       {"input",
                        {{"to", "{{ item.name }}"},
                         {"n", "{{ index }}"},
                         {"succeed_on_attempt", "{{ item.ok_at ?? 1 }}"}}},
                       {"retry", {{"max_attempts", 2}, {"backoff_ms", 5}}}}}},
                    {{"id", "report"},
                     {"kind", "compute"},
                     {"after", {"each"}},
                     {"output",
                      {{"sent", "{{ length(filter(steps.each.output.items, o, o != null)) }}"},
                       {"failed", "{{ map(steps.each.output.failed, f, f.index) }}"}}}}})}};
}

const char* fanout_input = R"({"model": "F-150", "leads": [
  {"name": "A", "model": "F-150"}, {"name": "B", "model": "Ranger"},
  {"name": "C", "model": "F-150", "ok_at": 2}, {"name": "D", "model": "F-150", "ok_at": 3},
  {"name": "E", "model": "F-150"}]})";

TEST(language_execution, foreach_runs_items_in_a_window_and_collects_outputs_in_item_order) {
  harness h("foreach", 1);
  h.publish(tenant, fanout_workflow("collect", 2).dump());
  h.start(tenant, "e1", "fan", fanout_input);
  h.settle();
  h.run_for(40, 5);
  auto e = h.exec(tenant, "e1");
  ASSERT_EQ(e->status, exec_status::succeeded) << e->result;
  const json each = json::parse(e->steps[0].output_json);
  EXPECT_EQ(each["items"], json::parse(R"([{"attempt":1},{"attempt":2},null,{"attempt":1}])"))
      << "outputs in item order; D failed after its 2 attempts";
  EXPECT_EQ(each["failed"][0]["index"], 2);
  EXPECT_EQ(json::parse(e->steps[1].output_json), json::parse(R"({"sent":3,"failed":[2]})"));
  // Golden timeline: at most two items out at once; each item has its own attempts,
  // retries and commands.
  // The ItemScheduled lines name their command; the commands' own detail lines are attached
  // by replay/history.cc to StepScheduled only.
  EXPECT_EQ(events_only(execution_timeline(h, "e1")),
            "started fan v1 with input {\"leads\":[{\"model\":\"F-150\",\"name\":\"A\"},"
            "{\"model\":\"Ranger\",\"name\":\"B\"},{\"model\":\"F-150\",\"name\":\"C\",\"ok"
            "\u2026 (193 bytes)\n"
            "step each attempt 1 scheduled\n"
            "step each item 0 attempt 1 scheduled -> command e1/each[0]/1\n"
            "step each item 1 attempt 1 scheduled -> command e1/each[1]/1\n"
            "step each item 0 succeeded: {\"attempt\":1}\n"
            "step each item 2 attempt 1 scheduled -> command e1/each[2]/1\n"
            "step each item 1 attempt 1 failed (flaky: attempt 1 fails, 2 will succeed); retry in "
            "5ms\n"
            "step each item 2 attempt 1 failed (flaky: attempt 1 fails, 3 will succeed); retry in "
            "5ms\n"
            "timer fired: Retry of step each item 1 attempt 1\n"
            "step each item 1 attempt 2 scheduled -> command e1/each[1]/2\n"
            "timer fired: Retry of step each item 2 attempt 1\n"
            "step each item 2 attempt 2 scheduled -> command e1/each[2]/2\n"
            "step each item 1 succeeded: {\"attempt\":2}\n"
            "step each item 3 attempt 1 scheduled -> command e1/each[3]/1\n"
            "step each item 2 failed: flaky: attempt 2 fails, 3 will succeed (after 2 attempts)\n"
            "step each item 3 succeeded: {\"attempt\":1}\n"
            "step each succeeded: {\"failed\":[{\"error\":\"flaky: attempt 2 fails, 3 will "
            "succeed (after 2 attempts)\",\"index\":2}],\"items\":\u2026 (149 bytes)\n"
            "step report attempt 1 scheduled\n"
            "step report succeeded: {\"failed\":[2],\"sent\":3}\n"
            "execution succeeded: {\"report\":{\"failed\":[2],\"sent\":3}}\n");
}

TEST(language_execution, foreach_fails_fast_and_cancels_the_items_still_out) {
  harness h("foreach-fast", 1);
  h.publish(tenant, fanout_workflow("fail_fast", 3).dump());
  // X fails for good on its second attempt while Y and Z are out on theirs.
  h.start(tenant, "e1", "fan", R"({"model": "F-150", "leads": [
    {"name": "X", "model": "F-150", "ok_at": 3}, {"name": "Y", "model": "F-150", "ok_at": 2},
    {"name": "Z", "model": "F-150", "ok_at": 2}, {"name": "W", "model": "F-150"}]})");
  h.settle();
  h.run_for(40, 5);
  auto e = h.exec(tenant, "e1");
  ASSERT_EQ(e->status, exec_status::failed);
  EXPECT_EQ(e->result,
            "step 'each' failed: item 0 failed: flaky: attempt 2 fails, 3 will succeed (after 2 "
            "attempts)");
  EXPECT_EQ(e->steps[0].items[1].status, step_status::cancelled) << "Y was out";
  EXPECT_EQ(e->steps[0].items[2].status, step_status::cancelled) << "Z was out";
  EXPECT_EQ(e->steps[0].items[3].attempt, 0u) << "W never started";
  EXPECT_EQ(e->steps[1].status, step_status::cancelled);
  EXPECT_GE(h.n->orchestrator_of(0).probe().stale_acks.load(), 2u) << "Y's and Z's acks";
  // Golden timeline: three items out at once; item 0's second failure ends the step, and the
  // retries of items 1 and 2 then out are not waited for.
  EXPECT_EQ(
      events_only(execution_timeline(h, "e1")),
      "started fan v1 with input {\"leads\":[{\"model\":\"F-150\",\"name\":\"X\",\"ok_at\":3},"
      "{\"model\":\"F-150\",\"name\":\"Y\",\"ok_at\":2},{\"model\":\"F-\u2026 (173 bytes)\n"
      "step each attempt 1 scheduled\n"
      "step each item 0 attempt 1 scheduled -> command e1/each[0]/1\n"
      "step each item 1 attempt 1 scheduled -> command e1/each[1]/1\n"
      "step each item 2 attempt 1 scheduled -> command e1/each[2]/1\n"
      "step each item 0 attempt 1 failed (flaky: attempt 1 fails, 3 will succeed); retry in 5ms\n"
      "step each item 1 attempt 1 failed (flaky: attempt 1 fails, 2 will succeed); retry in 5ms\n"
      "step each item 2 attempt 1 failed (flaky: attempt 1 fails, 2 will succeed); retry in 5ms\n"
      "timer fired: Retry of step each item 0 attempt 1\n"
      "step each item 0 attempt 2 scheduled -> command e1/each[0]/2\n"
      "timer fired: Retry of step each item 1 attempt 1\n"
      "step each item 1 attempt 2 scheduled -> command e1/each[1]/2\n"
      "timer fired: Retry of step each item 2 attempt 1\n"
      "step each item 2 attempt 2 scheduled -> command e1/each[2]/2\n"
      "step each item 0 failed: flaky: attempt 2 fails, 3 will succeed (after 2 attempts)\n"
      "step each failed: item 0 failed: flaky: attempt 2 fails, 3 will succeed (after 2 "
      "attempts)\n"
      "execution FAILED at step each: step 'each' failed: item 0 failed: flaky: attempt 2 fails, 3 "
      "will succeed (after 2 attempts)\n");
}

TEST(language_execution, foreach_item_count_is_limited_and_an_empty_list_succeeds) {
  harness h("foreach-limits", 1);
  h.publish(tenant,
            json{{"workflow", "big"},
                 {"version", 1},
                 {"steps", json::array({{{"id", "each"},
                                         {"kind", "foreach"},
                                         {"items", "input.list"},
                                         {"do", {{"kind", "task"}, {"action", "transform"}}}}})}}
                .dump());
  json big = json::array();
  for (size_t i = 0; i <= limits::foreach_items_max; ++i) big.push_back(i);
  h.start(tenant, "big", "big", json{{"list", big}}.dump());
  h.start(tenant, "empty", "big", R"({"list": []})");
  h.start(tenant, "object", "big", R"({"list": {"a": 1}})");
  h.settle();
  EXPECT_EQ(h.exec(tenant, "big")->result,
            "step 'each' failed: items has 1001 elements; foreach_items_max is 1000");
  EXPECT_EQ(h.exec(tenant, "object")->result,
            "step 'each' failed: items must be a list, not object");
  auto empty = h.exec(tenant, "empty");
  ASSERT_EQ(empty->status, exec_status::succeeded) << empty->result;
  EXPECT_EQ(empty->steps[0].output_json, R"({"failed":[],"items":[]})");
}

// 1 000 items, 50 at a time, with the node closed and reopened in the middle (its state is
// then rebuilt from RocksDB and the log): every item runs once and the outputs are in order.
TEST(language_execution, foreach_of_1000_items_survives_a_restart) {
  std::string dir;
  const json wf = {{"workflow", "many"},
                   {"version", 1},
                   {"steps", json::array({{{"id", "each"},
                                           {"kind", "foreach"},
                                           {"items", "input.list"},
                                           {"concurrency", 50},
                                           {"do",
                                            {{"kind", "task"},
                                             {"action", "transform"},
                                             {"input", {{"i", "{{ item * 2 }}"}}}}}}})}};
  json list = json::array();
  for (int i = 0; i < 1000; ++i) list.push_back(i);
  {
    harness h("foreach-1000", 1);
    h.publish(tenant, wf.dump());
    h.start(tenant, "e1", "many", json{{"list", list}}.dump());
    for (int i = 0; i < 8; ++i) ASSERT_TRUE(h.n->step().has_value());
    auto e = h.exec(tenant, "e1");
    ASSERT_EQ(e->status, exec_status::running);
    size_t done = 0;
    for (const item_state& item : e->steps[0].items) done += item.status == step_status::succeeded;
    EXPECT_GT(done, 0u);
    EXPECT_LT(done, 1000u) << "stopped in the middle";
    dir = h.dir + "-kept";
    h.n.reset();
    std::filesystem::rename(h.dir, dir);
  }
  manual_clock clk(1'700'000'000'000 + 1000);
  node_options o;
  o.data_dir = dir;
  o.partitions = 1;
  o.fsync = false;
  auto n = node::open(o, clk);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  ASSERT_TRUE((*n)->recover().has_value());
  for (int i = 0; i < 200; ++i) ASSERT_TRUE((*n)->step().has_value());
  auto e = (*n)->execution(tenant, "e1");
  ASSERT_EQ(e->status, exec_status::succeeded) << e->result;
  const json out = json::parse(e->steps[0].output_json);
  ASSERT_EQ(out["items"].size(), 1000u);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(out["items"][i]["i"], 2 * i);
  // One command per item, none repeated across the restart.
  std::set<std::string> commands;
  size_t total = 0;
  log& l = (*n)->get_log();
  std::vector<record> recs;
  for (uint64_t off = 0; off < *l.end_offset(stream::commands_step, 0);) {
    recs.clear();
    ASSERT_TRUE(l.read(stream::commands_step, 0, off, 1024, 8 << 20, recs).has_value());
    if (recs.empty()) break;
    for (const record& r : recs) {
      commands.insert(std::string(sv(decode_envelope(r.value)->record_id())));
      ++total;
    }
    off = recs.back().offset + 1;
  }
  EXPECT_EQ(commands.size(), 1000u);
  EXPECT_EQ(total, 1000u);
  auto diffs = compare_with_replay(l, 0, (*n)->partition(0).store(), dir + "/rebuilt");
  ASSERT_TRUE(diffs.has_value()) << diffs.error().message;
  EXPECT_TRUE(diffs->empty()) << diffs->front();
  n->reset();
  std::filesystem::remove_all(dir);
}

// ---- sub-workflows -----------------------------------------------------------------------------

void expect_no_decide_reads(harness& h) {
  EXPECT_EQ(h.n->orchestrator_of(0).probe().decide_reads.load(), 0u)
      << "prefetch left a parent, child or child definition to be read while deciding";
}

void expect_replay_equal(harness& h) {
  auto diffs =
      compare_with_replay(h.n->get_log(), 0, h.n->partition(0).store(), h.dir + "/rebuilt");
  ASSERT_TRUE(diffs.has_value()) << diffs.error().message;
  EXPECT_TRUE(diffs->empty()) << diffs->front();
}

// The child: runs a task (`action`) on its input and answers with the task's output.
json echo_child(std::string_view name = "echo", std::string_view action = "transform") {
  return json{{"workflow", name},
              {"version", 1},
              {"steps", json::array({{{"id", "run"},
                                      {"kind", "task"},
                                      {"action", action},
                                      {"input", {{"who", "{{ upper(input.who) }}"}}}}})}};
}

TEST(language_definitions, workflow_step_errors) {
  EXPECT_EQ(publish_error(json::array({{{"id", "w"}, {"kind", "workflow"}}})),
            "step 'w': workflow steps need field 'workflow', the id of the workflow to run");
  EXPECT_EQ(publish_error(json::array(
                {{{"id", "w"}, {"kind", "workflow"}, {"workflow", "child"}, {"version", 0}}})),
            "step 'w': version must be an integer from 1 to 4294967295, not 0");
  EXPECT_EQ(publish_error(json::array(
                {{{"id", "w"}, {"kind", "workflow"}, {"workflow", "child"}, {"timeout_ms", 5}}})),
            "step 'w': field 'timeout_ms' does not apply to workflow steps");
  EXPECT_EQ(publish_error(json::array(
                {{{"id", "w"}, {"kind", "task"}, {"action", "t"}, {"workflow", "child"}}})),
            "step 'w': field 'workflow' does not apply to task steps");
  EXPECT_EQ(publish_error(json::array({{{"id", "w"}, {"kind", "workflow"}, {"workflow", "wf"}}})),
            "step 'w' calls workflow 'wf', the workflow itself: a sub-workflow cannot call its own "
            "workflow (it would nest until subworkflow_depth_max, 4 levels)");
  EXPECT_EQ(publish_error(json::array({{{"id", "w"},
                                        {"kind", "workflow"},
                                        {"workflow", "child"},
                                        {"input", {{"x", "{{ steps.nope.output }}"}}}}})),
            "step 'w' refers to steps.nope which is not a step of this workflow");
}

TEST(language_execution, a_workflow_step_runs_a_child_and_uses_its_output) {
  harness h("sub", 1);
  h.publish(tenant, echo_child().dump());
  h.publish(tenant, json::parse(R"({"workflow": "parent", "version": 1, "steps": [
    {"id": "call", "kind": "workflow", "workflow": "echo",
     "input": {"who": "{{ input.name }}"}},
    {"id": "use", "kind": "compute", "after": ["call"],
     "output": {"greeting": "{{ 'hello ' + steps.call.output.run.who }}"}}
  ]})")
                        .dump());
  h.start(tenant, "p1", "parent", R"({"name": "ann"})");
  h.settle();
  auto p = h.exec(tenant, "p1");
  ASSERT_EQ(p->status, exec_status::succeeded) << p->result;
  EXPECT_EQ(p->result, R"({"use":{"greeting":"hello ANN"}})");
  EXPECT_EQ(p->steps[0].child, "p1/call/1");
  auto c = h.exec(tenant, "p1/call/1");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->status, exec_status::succeeded);
  EXPECT_EQ(c->parent, "p1");
  EXPECT_EQ(c->parent_step, "call");
  EXPECT_EQ(c->depth, 1u);
  // Each history is its own chain; the parent names the child, the child names the parent.
  EXPECT_EQ(events_only(execution_timeline(h, "p1")),
            "started parent v1 with input {\"name\":\"ann\"}\n"
            "step call attempt 1 scheduled -> child execution p1/call/1\n"
            "step call succeeded: {\"run\":{\"who\":\"ANN\"}}\n"
            "step use attempt 1 scheduled\n"
            "step use succeeded: {\"greeting\":\"hello ANN\"}\n"
            "execution succeeded: {\"use\":{\"greeting\":\"hello ANN\"}}\n");
  EXPECT_EQ(events_only(execution_timeline(h, "p1/call/1")),
            "started echo v1 with input {\"who\":\"ann\"} as a sub-workflow of execution p1 step "
            "call (depth 1)\n"
            "step run attempt 1 scheduled -> command p1/call/1/run/1\n"
            "\u21b3 command: task transform\n"
            "step run succeeded: {\"who\":\"ANN\"}\n"
            "execution succeeded: {\"run\":{\"who\":\"ANN\"}}\n");
  expect_no_decide_reads(h);
  expect_replay_equal(h);
}

// A failed child fails the parent's step: through its retries (a new child per attempt), then
// its on_failure.
TEST(language_execution, a_child_failure_fails_the_parent_step_after_its_retries) {
  harness h("sub-fail", 1);
  h.publish(tenant, echo_child("breaks", "fail").dump());
  h.publish(tenant, json::parse(R"({"workflow": "strict", "version": 1, "steps": [
    {"id": "call", "kind": "workflow", "workflow": "breaks", "input": {"who": "x"},
     "retry": {"max_attempts": 2, "backoff_ms": 10}}
  ]})")
                        .dump());
  h.publish(tenant, json::parse(R"({"workflow": "lenient", "version": 1, "steps": [
    {"id": "call", "kind": "workflow", "workflow": "breaks", "input": {"who": "x"},
     "on_failure": "continue"},
    {"id": "fallback", "kind": "compute", "after": ["call"],
     "output": {"status": "{{ steps.call.status }}", "why": "{{ steps.call.error }}"}}
  ]})")
                        .dump());
  h.start(tenant, "s1", "strict");
  h.start(tenant, "l1", "lenient");
  h.settle();
  h.run_for(30, 5);
  auto strict = h.exec(tenant, "s1");
  ASSERT_EQ(strict->status, exec_status::failed);
  EXPECT_EQ(strict->result,
            "step 'call' failed: child execution 's1/call/2' failed: step 'run' failed: failed as "
            "asked (after 2 attempts)");
  EXPECT_EQ(h.exec(tenant, "s1/call/1")->status, exec_status::failed) << "attempt 1's child";
  EXPECT_EQ(h.exec(tenant, "s1/call/2")->status, exec_status::failed) << "attempt 2's child";
  EXPECT_EQ(events_only(execution_timeline(h, "s1")),
            "started strict v1 with input {}\n"
            "step call attempt 1 scheduled -> child execution s1/call/1\n"
            "step call attempt 1 failed (child execution 's1/call/1' failed: step 'run' failed: "
            "failed as asked); retry in 10ms\n"
            "timer fired: Retry of step call attempt 1\n"
            "step call attempt 2 scheduled -> child execution s1/call/2\n"
            "step call failed: child execution 's1/call/2' failed: step 'run' failed: failed as "
            "asked (after 2 attempts)\n"
            "execution FAILED at step call: step 'call' failed: child execution 's1/call/2' "
            "failed: step 'run' failed: failed as asked (after 2 attempts)\n");
  auto lenient = h.exec(tenant, "l1");
  ASSERT_EQ(lenient->status, exec_status::succeeded) << lenient->result;
  EXPECT_EQ(json::parse(lenient->steps[1].output_json)["status"], "failed");
  expect_no_decide_reads(h);
  expect_replay_equal(h);
}

// top -> middle -> bottom (waits for a signal). Cancelling top cancels the other two, each with
// the reason naming its parent; a signal for bottom is then refused as for any ended execution.
TEST(language_execution, cancel_of_a_parent_cancels_its_children_and_theirs) {
  harness h("sub-cancel", 1);
  h.publish(tenant, json::parse(R"({"workflow": "bottom", "version": 1, "steps": [
    {"id": "wait", "kind": "wait_signal", "signal": "go"}]})")
                        .dump());
  h.publish(tenant, json::parse(R"({"workflow": "middle", "version": 1, "steps": [
    {"id": "down", "kind": "workflow", "workflow": "bottom"}]})")
                        .dump());
  h.publish(tenant, json::parse(R"({"workflow": "top", "version": 1, "steps": [
    {"id": "down", "kind": "workflow", "workflow": "middle"},
    {"id": "after", "kind": "compute", "after": ["down"], "output": {"x": 1}}]})")
                        .dump());
  h.start(tenant, "t1", "top");
  h.settle();
  ASSERT_EQ(h.exec(tenant, "t1/down/1/down/1")->status, exec_status::running);
  EXPECT_EQ(h.exec(tenant, "t1/down/1/down/1")->depth, 2u);
  h.submit(tenant, client::cancel({tenant, "t1", "c1", h.clk.now_ms()}, "customer walked away"));
  h.settle();
  auto top = h.exec(tenant, "t1");
  EXPECT_EQ(top->status, exec_status::cancelled);
  EXPECT_EQ(top->steps[0].status, step_status::cancelled);
  auto middle = h.exec(tenant, "t1/down/1");
  EXPECT_EQ(middle->status, exec_status::cancelled);
  EXPECT_EQ(middle->result, "parent execution 't1' cancelled");
  auto bottom = h.exec(tenant, "t1/down/1/down/1");
  EXPECT_EQ(bottom->status, exec_status::cancelled);
  EXPECT_EQ(bottom->result, "parent execution 't1/down/1' cancelled");
  h.signal(tenant, "t1/down/1/down/1", "go");
  h.settle();
  const auto rejections = h.rejections();
  ASSERT_FALSE(rejections.empty());
  EXPECT_EQ(rejections.back().reason, "execution 't1/down/1/down/1' has cancelled");
  EXPECT_EQ(events_only(execution_timeline(h, "t1/down/1/down/1")),
            "started bottom v1 with input {} as a sub-workflow of execution t1/down/1 step down "
            "(depth 2)\n"
            "step wait attempt 1 scheduled\n"
            "execution cancelled: parent execution 't1/down/1' cancelled\n");
  expect_no_decide_reads(h);
  expect_replay_equal(h);
}

// A child cancelled on its own (an operator's cancel) fails its parent's step at once, without
// retries: someone meant to stop it.
TEST(language_execution, a_child_cancelled_on_its_own_fails_the_parent_step_without_retry) {
  harness h("sub-cancel-child", 1);
  h.publish(tenant, json::parse(R"({"workflow": "bottom", "version": 1, "steps": [
    {"id": "wait", "kind": "wait_signal", "signal": "go"}]})")
                        .dump());
  h.publish(tenant, json::parse(R"({"workflow": "top", "version": 1, "steps": [
    {"id": "down", "kind": "workflow", "workflow": "bottom", "retry": {"max_attempts": 3}}]})")
                        .dump());
  h.start(tenant, "t1", "top");
  h.settle();
  h.submit(tenant, client::cancel({tenant, "t1/down/1", "c1", h.clk.now_ms()}, "wrong customer"));
  h.settle();
  auto top = h.exec(tenant, "t1");
  ASSERT_EQ(top->status, exec_status::failed);
  EXPECT_EQ(top->result,
            "step 'down' failed: child execution 't1/down/1' was cancelled: wrong customer");
  expect_replay_equal(h);
}

// A definition calling a workflow (the latest published when the step starts, or a pinned
// version): `name` calls each of `calls`, given as "workflow" or "workflow@version".
std::string caller(std::string_view name, uint32_t version, std::vector<std::string> calls,
                   bool in_foreach = false) {
  json steps = json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    const size_t at = calls[i].find('@');
    json call = {{"kind", "workflow"}, {"workflow", calls[i].substr(0, at)}};
    if (at != std::string::npos) call["version"] = std::stoul(calls[i].substr(at + 1));
    if (in_foreach) {
      steps.push_back({{"id", fmt::format("each{}", i)},
                       {"kind", "foreach"},
                       {"items", "[1, 2]"},
                       {"do", call}});
    } else {
      call["id"] = fmt::format("call{}", i);
      steps.push_back(call);
    }
  }
  if (steps.empty()) steps.push_back({{"id", "done"}, {"kind", "compute"}, {"output", {{"x", 1}}}});
  return json{{"workflow", name}, {"version", version}, {"steps", steps}}.dump();
}

// Publishing a definition that would close a cycle of workflow calls (ping calls pong, which
// calls ping) is rejected, naming the cycle: over the versions the calls resolve to once it is
// published (latest or pinned), through foreach bodies, up to subworkflow_depth_max + 1
// workflows around. Each rejection leaves the state as it was; what is accepted runs.
TEST(language_execution, a_publish_that_would_close_a_cycle_of_calls_is_rejected) {
  harness h("sub-cycle", 1);
  std::vector<std::pair<std::string, std::string>> expected;  // publish, reason ("": accepted)
  auto publish = [&](const std::string& text, std::string reason) {
    h.publish(tenant, text);
    expected.emplace_back(text, std::move(reason));
  };
  const std::string tail =
      "; a workflow that calls itself through others nests until subworkflow_depth_max (4 "
      "levels) and fails";
  // The callee need not exist yet: the cycle is seen when the second one is published.
  publish(caller("ping", 1, {"pong"}), "");
  publish(caller("pong", 1, {"ping"}),
          "pong v1 would close a cycle of workflow calls: pong v1 (step 'call0') -> ping v1 "
          "(step 'call0') -> pong v1" +
              tail);
  // Through a foreach body, three workflows around.
  publish(caller("a", 1, {"b"}), "");
  publish(caller("b", 1, {"c"}), "");
  publish(caller("c", 1, {"ping", "a"}, /*in_foreach=*/true),
          "c v1 would close a cycle of workflow calls: c v1 (step 'each1') -> a v1 (step "
          "'call0') -> b v1 (step 'call0') -> c v1" +
              tail);
  // Versions: once zed v5 (no calls) is the latest, yak -> zed is no cycle; zed v3 calling yak
  // is not the latest zed, so nothing calls it; zed v6 calling yak would be, and is refused.
  // A pinned call to zed v3 reaches it: yak v2 -> zed v3 -> yak (latest: v2).
  publish(caller("zed", 5, {}), "");
  publish(caller("yak", 1, {"zed"}), "");
  publish(caller("zed", 3, {"yak"}), "");
  publish(caller("zed", 6, {"yak"}),
          "zed v6 would close a cycle of workflow calls: zed v6 (step 'call0') -> yak v1 (step "
          "'call0') -> zed v6" +
              tail);
  publish(caller("yak", 2, {"zed@3"}),
          "yak v2 would close a cycle of workflow calls: yak v2 (step 'call0') -> zed v3 (step "
          "'call0') -> yak v2" +
              tail);
  // Five workflows around (the deepest a recursion can get before the depth limit): refused.
  // Six: the depth limit fails the chain before it comes back; accepted, and it fails so.
  for (int i = 1; i <= 4; ++i) {
    publish(caller(fmt::format("r{}", i), 1, {fmt::format("r{}", i + 1)}), "");
  }
  publish(caller("r5", 1, {"r1"}),
          "r5 v1 would close a cycle of workflow calls: r5 v1 (step 'call0') -> r1 v1 (step "
          "'call0') -> r2 v1 (step 'call0') -> r3 v1 (step 'call0') -> r4 v1 (step 'call0') -> "
          "r5 v1" +
              tail);
  for (int i = 1; i <= 5; ++i) {
    publish(caller(fmt::format("s{}", i), 1, {fmt::format("s{}", i + 1)}), "");
  }
  publish(caller("s6", 1, {"s1"}), "");
  h.start(tenant, "ok", "zed");  // the latest zed: v5, no calls
  h.start(tenant, "s", "s1");
  h.settle();

  const auto rejections = h.rejections();
  size_t next = 0;
  for (const auto& [text, reason] : expected) {
    if (reason.empty()) continue;  // accepted: no rejection in between (the count below)
    ASSERT_LT(next, rejections.size()) << text << " was not rejected";
    EXPECT_EQ(rejections[next].code, static_cast<uint16_t>(rejection_code::definition_cycle));
    EXPECT_EQ(rejections[next].reason, reason);
    ++next;
  }
  EXPECT_EQ(next, rejections.size()) << "also rejected: " << rejections.back().reason;
  EXPECT_EQ(h.exec(tenant, "ok")->status, exec_status::succeeded);
  // The six-workflow cycle: the fifth level's step fails for the depth limit, the rest follow.
  const std::string deepest = "s/call0/1/call0/1/call0/1/call0/1";
  auto last = h.exec(tenant, deepest);
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->workflow, "s5");
  EXPECT_EQ(last->depth, limits::subworkflow_depth_max);
  EXPECT_EQ(last->result,
            "step 'call0' failed: workflow 's6' would run at depth 5: subworkflow_depth_max is 4 "
            "(a recursion through workflows?)");
  EXPECT_EQ(h.exec(tenant, "s")->status, exec_status::failed);
  expect_no_decide_reads(h);
  expect_replay_equal(h);
}

// A chain of calls deeper than subworkflow_depth_max is stopped at run time: the step that would
// start a child one level too deep fails with the reason, and every level above fails in turn.
// An unknown child workflow fails its step at once.
TEST(language_execution, depth_limit_and_unknown_child_workflow_fail_with_the_reason) {
  harness h("sub-depth", 1);
  for (int i = 1; i <= 5; ++i) {
    h.publish(tenant, caller(fmt::format("w{}", i), 1, {fmt::format("w{}", i + 1)}));
  }
  h.publish(tenant, caller("w6", 1, {}));
  h.publish(tenant, json::parse(R"({"workflow": "lost", "version": 1, "steps": [
    {"id": "latest", "kind": "workflow", "workflow": "gone", "on_failure": "continue"},
    {"id": "call", "kind": "workflow", "workflow": "nowhere", "version": 3}]})")
                        .dump());
  h.start(tenant, "r1", "w1");
  h.start(tenant, "u1", "lost");
  h.settle();
  const std::string deepest = "r1/call0/1/call0/1/call0/1/call0/1";
  auto last = h.exec(tenant, deepest);
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->depth, limits::subworkflow_depth_max);
  EXPECT_EQ(last->status, exec_status::failed);
  EXPECT_EQ(last->result,
            "step 'call0' failed: workflow 'w6' would run at depth 5: subworkflow_depth_max is 4 "
            "(a recursion through workflows?)");
  auto root = h.exec(tenant, "r1");
  ASSERT_EQ(root->status, exec_status::failed);
  EXPECT_NE(root->result.find("child execution 'r1/call0/1' failed"), std::string::npos)
      << root->result;
  EXPECT_FALSE(h.exec(tenant, deepest + "/call0/1").has_value()) << "never started";
  auto lost = h.exec(tenant, "u1");
  ASSERT_EQ(lost->status, exec_status::failed);
  EXPECT_EQ(lost->result,
            "step 'call' failed: workflow 'nowhere' v3 is not published for tenant 'acme'");
  EXPECT_EQ(lost->steps[0].error, "workflow 'gone' is not published for tenant 'acme'");
  expect_no_decide_reads(h);
  expect_replay_equal(h);
}

// A parent waiting on a child that waits for a signal; the node is closed and reopened (state
// rebuilt from RocksDB and the log), then the signal completes the child, and the child's end
// completes the parent: nothing in the link lives only in memory.
TEST(language_execution, a_parent_and_its_waiting_child_survive_a_restart) {
  std::string dir;
  {
    harness h("sub-restart", 1);
    h.publish(tenant, json::parse(R"({"workflow": "reply", "version": 1, "steps": [
      {"id": "wait", "kind": "wait_signal", "signal": "answered"}]})")
                          .dump());
    h.publish(tenant, json::parse(R"({"workflow": "ask", "version": 1, "steps": [
      {"id": "ask", "kind": "workflow", "workflow": "reply"},
      {"id": "done", "kind": "compute", "after": ["ask"],
       "output": {"answer": "{{ steps.ask.output.wait.text }}"}}]})")
                          .dump());
    // a2's child has a timer (a delay) and its parent none: after the restart the timer fires
    // and the child's end must find the parent, loaded with it.
    h.publish(tenant, json::parse(R"({"workflow": "pause", "version": 1, "steps": [
      {"id": "wait", "kind": "delay", "delay_ms": 5000}]})")
                          .dump());
    h.publish(tenant, json::parse(R"({"workflow": "later", "version": 1, "steps": [
      {"id": "pause", "kind": "workflow", "workflow": "pause"}]})")
                          .dump());
    h.start(tenant, "a1", "ask");
    h.start(tenant, "a2", "later");
    h.settle();
    ASSERT_EQ(h.exec(tenant, "a1/ask/1")->status, exec_status::running);
    ASSERT_EQ(h.exec(tenant, "a2/pause/1")->status, exec_status::running);
    dir = h.dir + "-kept";
    h.n.reset();
    std::filesystem::rename(h.dir, dir);
  }
  manual_clock clk(1'700'000'000'000 + 1000);
  node_options o;
  o.data_dir = dir;
  o.partitions = 1;
  o.fsync = false;
  auto n = node::open(o, clk);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  ASSERT_TRUE((*n)->recover().has_value());
  ASSERT_TRUE((*n)->submit(tenant, client::signal({tenant, "a1/ask/1", "sig", clk.now_ms()},
                                                  "answered", R"({"text": "yes"})"))
                  .has_value());
  for (int i = 0; i < 20; ++i) ASSERT_TRUE((*n)->step().has_value());
  auto a = (*n)->execution(tenant, "a1");
  ASSERT_EQ(a->status, exec_status::succeeded) << a->result;
  EXPECT_EQ(a->result, R"({"done":{"answer":"yes"}})");
  clk.advance(5000);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE((*n)->step().has_value());
  auto later = (*n)->execution(tenant, "a2");
  ASSERT_EQ(later->status, exec_status::succeeded) << later->result;
  EXPECT_EQ(later->result, R"({"pause":{"wait":{"delayed_ms":5000}}})");
  EXPECT_EQ((*n)->orchestrator_of(0).probe().decide_reads.load(), 0u);
  auto diffs =
      compare_with_replay((*n)->get_log(), 0, (*n)->partition(0).store(), dir + "/rebuilt");
  ASSERT_TRUE(diffs.has_value()) << diffs.error().message;
  EXPECT_TRUE(diffs->empty()) << diffs->front();
  n->reset();
  std::filesystem::remove_all(dir);
}

// A foreach whose body is a workflow: one child per item, in the concurrency window, outputs
// collected in item order; with fail_fast the children still out are cancelled.
TEST(language_execution, foreach_runs_a_child_workflow_per_item) {
  harness h("sub-foreach", 1);
  // The child waits for a "go" signal when asked to, and fails when n is not a number.
  h.publish(tenant, json::parse(R"({"workflow": "per-lead", "version": 1, "steps": [
    {"id": "hold", "kind": "wait_signal", "signal": "go", "when": "input.wait"},
    {"id": "price", "kind": "compute", "after": ["hold"], "output": {"twice": "{{ input.n * 2 }}"}}
  ]})")
                        .dump());
  const auto fan = [](std::string_view name, std::string_view policy) {
    return json{
        {"workflow", name},
        {"version", 1},
        {"steps",
         json::array({{{"id", "each"},
                       {"kind", "foreach"},
                       {"items", "input.leads"},
                       {"concurrency", 2},
                       {"on_item_failure", policy},
                       {"do",
                        {{"kind", "workflow"},
                         {"workflow", "per-lead"},
                         {"input", {{"n", "{{ item }}"}, {"wait", "{{ input.wait }}"}}}}}}})}}
        .dump();
  };
  h.publish(tenant, fan("collect", "collect"));
  h.publish(tenant, fan("fast", "fail_fast"));
  h.start(tenant, "c1", "collect", R"({"leads": [1, "two", 3], "wait": false})");
  h.settle();
  auto c = h.exec(tenant, "c1");
  ASSERT_EQ(c->status, exec_status::succeeded) << c->result;
  const json out = json::parse(c->steps[0].output_json);
  EXPECT_EQ(out["items"], json::parse(R"([{"price":{"twice":2}},null,{"price":{"twice":6}}])"));
  EXPECT_EQ(out["failed"][0]["index"], 1);
  EXPECT_EQ(h.exec(tenant, "c1/each:1/1")->status, exec_status::failed);
  EXPECT_EQ(h.exec(tenant, "c1/each:2/1")->parent_step, "each[2]");
  EXPECT_EQ(events_only(execution_timeline(h, "c1")),
            "started collect v1 with input {\"leads\":[1,\"two\",3],\"wait\":false}\n"
            "step each attempt 1 scheduled\n"
            "step each item 0 attempt 1 scheduled -> child execution c1/each:0/1\n"
            "step each item 0 succeeded: {\"price\":{\"twice\":2}}\n"
            "step each item 1 attempt 1 scheduled -> child execution c1/each:1/1\n"
            "step each item 1 failed: child execution 'c1/each:1/1' failed: step 'price' failed: "
            "template: column 10: cannot apply '*' to string and number in '{{ input.n * 2 }}' "
            "(after 1 attempt)\n"
            "step each item 2 attempt 1 scheduled -> child execution c1/each:2/1\n"
            "step each item 2 succeeded: {\"price\":{\"twice\":6}}\n"
            "step each succeeded: {\"failed\":[{\"error\":\"child execution 'c1/each:1/1' failed: "
            "step 'price' failed: template: column 10:\u2026 (252 bytes)\n"
            "execution succeeded: {\"each\":{\"failed\":[{\"error\":\"child execution "
            "'c1/each:1/1' failed: step 'price' failed: template: co\u2026 (261 bytes)\n");

  // A child that ends at once leaves room for exactly one more: 0 ends, 1 and 2 wait, 3 waits
  // for room.
  h.publish(
      tenant,
      json{{"workflow", "window"},
           {"version", 1},
           {"steps",
            json::array({{{"id", "each"},
                          {"kind", "foreach"},
                          {"items", "input.leads"},
                          {"concurrency", 2},
                          {"do",
                           {{"kind", "workflow"},
                            {"workflow", "per-lead"},
                            {"input", {{"n", "{{ item }}"}, {"wait", "{{ item > 0 }}"}}}}}}})}}
          .dump());
  h.start(tenant, "w1", "window", R"({"leads": [0, 1, 2, 3]})");
  h.settle();
  auto w = h.exec(tenant, "w1");
  ASSERT_EQ(w->status, exec_status::running) << w->result;
  EXPECT_EQ(w->steps[0].items[0].status, step_status::succeeded);
  EXPECT_EQ(w->steps[0].items[1].status, step_status::running);
  EXPECT_EQ(w->steps[0].items[2].status, step_status::running);
  EXPECT_EQ(w->steps[0].items[3].status, step_status::pending) << "concurrency 2";

  // Items 0 and 1 wait; item 1's signal comes and its child fails: item 0's child is cancelled.
  h.start(tenant, "f1", "fast", R"({"leads": [1, "two", 3], "wait": true})");
  h.settle();
  ASSERT_EQ(h.exec(tenant, "f1/each:0/1")->status, exec_status::running);
  h.signal(tenant, "f1/each:1/1", "go");
  h.settle();
  auto f = h.exec(tenant, "f1");
  ASSERT_EQ(f->status, exec_status::failed);
  auto zero = h.exec(tenant, "f1/each:0/1");
  EXPECT_EQ(zero->status, exec_status::cancelled);
  EXPECT_EQ(zero->result, "step 'each' of parent execution 'f1' failed");
  EXPECT_FALSE(h.exec(tenant, "f1/each:2/1").has_value()) << "item 2 never started";
  expect_no_decide_reads(h);
  expect_replay_equal(h);
}

// A tenant moved while a parent waits on its child (docs/tenant-moves.md): the links are part of
// the executions' state, which moves with the tenant, so the child's end on the new partition
// completes the parent there.
TEST(language_execution, a_parent_and_child_move_with_their_tenant) {
  constexpr uint32_t partitions = 3;
  harness h("sub-move", partitions);
  h.publish(tenant, json::parse(R"({"workflow": "reply", "version": 1, "steps": [
    {"id": "wait", "kind": "wait_signal", "signal": "answered"}]})")
                        .dump());
  h.publish(tenant, json::parse(R"({"workflow": "ask", "version": 1, "steps": [
    {"id": "ask", "kind": "workflow", "workflow": "reply"},
    {"id": "done", "kind": "compute", "after": ["ask"],
     "output": {"answer": "{{ steps.ask.output.wait.text }}"}}]})")
                        .dump());
  h.start(tenant, "a1", "ask");
  h.settle();
  ASSERT_EQ(h.exec(tenant, "a1/ask/1")->status, exec_status::running);
  const uint32_t home = tenant_partition(tenant, partitions);
  const uint32_t to = (home + 1) % partitions;
  h.submit(tenant, client::move_tenant({tenant, "", "move-1", h.clk.now_ms()}, to));
  h.settle();
  ASSERT_EQ(h.n->orchestrator_of(to).probe().tenants_moved_in.load(), 1u);
  h.signal(tenant, "a1/ask/1", "answered", R"({"text": "yes"})");  // to the old partition
  h.settle();
  auto a = h.exec(tenant, "a1");
  ASSERT_EQ(a->status, exec_status::succeeded) << a->result;
  EXPECT_EQ(a->result, R"({"done":{"answer":"yes"}})");
  EXPECT_EQ(h.exec(tenant, "a1/ask/1")->parent, "a1");
  EXPECT_EQ(h.n->orchestrator_of(to).probe().decide_reads.load(), 0u);
  for (uint32_t p = 0; p < partitions; ++p) {
    auto diffs =
        compare_with_replay(h.n->get_log(), p, h.n->partition(p).store(), h.dir + "/rebuilt");
    ASSERT_TRUE(diffs.has_value()) << diffs.error().message;
    EXPECT_TRUE(diffs->empty()) << "partition " << p << ": " << diffs->front();
  }
}

// ---- the shipped samples ---------------------------------------------------------------------

std::string read_sample(const char* name) {
  std::ifstream in(std::string(AUTERITY_WORKFLOWS_DIR) + "/" + name);
  EXPECT_TRUE(in.good()) << name;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The notifications the engine sent (SendNotification commands): step -> (channel, to, body).
std::map<std::string, std::vector<std::string>> sent(harness& h, std::string_view execution) {
  std::map<std::string, std::vector<std::string>> out;
  for (const record& r : h.read_all(stream::commands_notify)) {
    const fbs::Envelope* e = decode_envelope(r.value);
    if (!e || sv(e->execution_id()) != execution) continue;
    auto n = e->payload_as_SendNotification();
    out[std::string(sv(n->step()))] = {std::string(sv(n->channel())), std::string(sv(n->to())),
                                       std::string(sv(n->body()))};
  }
  return out;
}

TEST(language_samples, new_lead_scores_in_the_definition_and_survives_a_timed_out_draft) {
  harness h("sample-new-lead", 1);
  h.publish(tenant, read_sample("new_lead.json"));
  // Prefers email and also gave a phone: every message must go to the email address.
  h.start(tenant, "ann", "new-lead",
          R"({"name": "Ann", "vehicle": "F-150", "budget": 61000, "timeline": "now",
              "source": "referral", "trade_in": true,
              "contact": {"preferred": "email", "phone": "+15550100", "email": "ann@example.com"}})");
  // No workers: the AI draft's command stays unanswered until its 10 s timeout.
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(h.n->step(false).has_value());
  h.clk.advance(10'001);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(h.n->step(false).has_value());
  h.settle();
  h.run_for(6'000, 100);  // the reply window, then the follow-up delay
  auto e = h.exec(tenant, "ann");
  ASSERT_EQ(e->status, exec_status::succeeded) << e->result;
  EXPECT_EQ(json::parse(e->steps[0].output_json),
            json::parse(R"({"score": 100, "reasons": ["budget >= 40000", "buying this week",
                            "referral", "has trade-in"]})"))
      << "the scoring rules of the definition";
  EXPECT_EQ(json::parse(e->steps[1].output_json)["case"], "hot");
  EXPECT_EQ(e->steps[3].status, step_status::timed_out) << "draft";
  EXPECT_EQ(e->steps[4].status, step_status::succeeded) << "fallback_reply runs after a timeout";
  auto messages = sent(h, "ann");
  EXPECT_EQ(messages["alert_sales"][2],
            "Hot lead: call Ann now about the F-150 (score 100: budget >= 40000, buying this week, "
            "referral, has trade-in)");
  EXPECT_EQ(messages["send_email"][1], "ann@example.com");
  EXPECT_NE(messages["send_email"][2].find("thanks for your interest"), std::string::npos);
  EXPECT_FALSE(messages.contains("send_sms"));
  EXPECT_EQ(messages["followup"][0], "email");
  EXPECT_EQ(messages["followup"][1], "ann@example.com") << "the channel/address bug";
}

TEST(language_samples, price_drop_campaign_messages_each_interested_lead_under_the_policy) {
  harness h("sample-price-drop", 1);
  h.submit(tenant, client::publish_policy({tenant, "", "policy", h.clk.now_ms()},
                                          read_sample("dealer_policy.json")));
  h.publish(tenant, read_sample("price_drop.json"), R"({"dealer_name": "Acme Motors"})");
  h.start(tenant, "drop", "price-drop",
          R"({"model": "F-150", "old_price": 61000, "new_price": 57500,
    "leads": [
      {"name": "Ann", "model": "F-150", "preferred": "email", "email": "ann@example.com"},
      {"name": "Bo", "model": "Civic", "preferred": "sms", "phone": "+15550100001"},
      {"name": "Cy", "model": "f-150", "preferred": "sms", "phone": "+15550100002"},
      {"name": "Di", "model": "F-150", "preferred": "sms", "phone": "+15550100003"},
      {"name": "Ed", "model": "F-150", "preferred": "email", "email": "ed@example.com"}]})");
  h.settle();
  h.run_for(1'000, 50);
  auto e = h.exec(tenant, "drop");
  ASSERT_EQ(e->status, exec_status::succeeded) << e->result;
  const json campaign = json::parse(e->steps[1].output_json);
  ASSERT_EQ(campaign["items"].size(), 4u) << campaign.dump();
  EXPECT_EQ(campaign["items"][2]["sent"], false) << "Di opted out (dealer_policy.json)";
  auto messages = sent(h, "drop");
  EXPECT_EQ(messages["campaign[0]"][1], "ann@example.com");
  EXPECT_EQ(messages["campaign[1]"][1], "+15550100002");
  EXPECT_EQ(messages["campaign[1]"][2],
            "Hi Cy, good news from Acme Motors: the F-150 is now $57500 (was $61000). Reply to "
            "book a test drive.");
  EXPECT_FALSE(messages.contains("campaign[2]"));
  EXPECT_EQ(messages["campaign[3]"][1], "ed@example.com");
  EXPECT_EQ(messages["report"][2],
            "Price drop on the F-150: 3 of 4 interested leads messaged, 1 not sent (1 other leads "
            "not interested)");
}

TEST(language_samples, trade_in_tells_the_customer_through_the_shared_notify_sub_workflow) {
  harness h("sample-trade-in", 1);
  h.publish(tenant, read_sample("notify_customer.json"), R"({"dealer_name": "Acme Motors"})");
  h.publish(tenant, read_sample("trade_in.json"), R"({"dealer_name": "Acme Motors"})");
  h.start(tenant, "t1", "trade-in",
          R"({"name": "Ann", "car": {"model": "2019 Civic", "book_value": 18000, "age_years": 6,
              "mileage": 120000},
              "contact": {"preferred": "sms", "phone": "+15550100", "email": "ann@example.com"}})");
  h.settle();
  auto e = h.exec(tenant, "t1");
  ASSERT_EQ(e->status, exec_status::succeeded) << e->result;
  EXPECT_EQ(json::parse(e->steps[0].output_json)["offer"], 7000) << "18000 - 6 * 1500 - 2000";
  auto child = sent(h, "t1/tell_customer/1");
  EXPECT_EQ(child["send"][0], "sms");
  EXPECT_EQ(child["send"][1], "+15550100") << "the address that matches the channel";
  EXPECT_EQ(child["send"][2], "Hi Ann, Acme Motors can offer $7000 for your 2019 Civic today.");
  EXPECT_EQ(sent(h, "t1")["hand_to_sales"][2],
            "Trade-in offer $7000 to Ann for the 2019 Civic: sent by sms to +15550100");
  expect_no_decide_reads(h);
  expect_replay_equal(h);
}

// The third workflow of the issue: a service reminder, in the definition alone — due by days
// (from the last service's date and the decision's clock) or by miles, a switch, the shared
// notify-customer sub-workflow, a wait for the booking and one nudge; not due: the next check.
TEST(language_samples, service_reminder_decides_due_by_date_or_miles_and_nudges_once) {
  harness h("sample-service", 1);
  h.publish(tenant, read_sample("notify_customer.json"), R"({"dealer_name": "Acme Motors"})");
  h.publish(tenant, read_sample("service_reminder.json"),
            R"({"dealer_name": "Acme Motors", "booking_wait_ms": 1000})");
  // The harness clock: 2023-11-14T22:13:20Z.
  auto input = [](const char* name, const char* date, int last_miles, int miles) {
    return json{{"name", name},
                {"vehicle", "RAV4"},
                {"mileage", miles},
                {"last_service", {{"date", date}, {"mileage", last_miles}}},
                {"contact", {{"preferred", "sms"}, {"phone", "+15550100"}}}}
        .dump();
  };
  h.start(tenant, "booked", "service-reminder", input("Ann", "2023-04-01", 30000, 33000));
  h.start(tenant, "silent", "service-reminder", input("Bo", "2023-10-01", 30000, 36000));
  h.start(tenant, "recent", "service-reminder", input("Cy", "2023-09-15", 30000, 31000));
  h.settle();
  h.submit(tenant, client::signal({tenant, "booked", "book", h.clk.now_ms()}, "service_booked",
                                  R"({"slot": "Saturday 10am"})"));
  h.settle();
  h.run_for(1'100, 100);  // Bo's booking window ends: one nudge

  auto booked = h.exec(tenant, "booked");
  ASSERT_EQ(booked->status, exec_status::succeeded) << booked->result;
  EXPECT_EQ(json::parse(booked->steps[0].output_json),
            json::parse(R"({"days": 228, "miles": 3000})"))
      << "2023-04-01 to 2023-11-14T22:13Z";
  EXPECT_EQ(sent(h, "booked/remind/1")["send"][2],
            "Hi Ann, your RAV4 is due for service: 228 days and 3000 miles since the last one. "
            "Reply to book a slot at Acme Motors.");
  EXPECT_EQ(booked->steps[4].status, step_status::skipped) << "no nudge after a booking";
  EXPECT_EQ(booked->steps[5].status, step_status::skipped) << "the default branch";

  auto silent = h.exec(tenant, "silent");
  ASSERT_EQ(silent->status, exec_status::succeeded) << silent->result;
  EXPECT_EQ(json::parse(silent->steps[1].output_json)["case"], "due") << "by miles: 6000";
  EXPECT_EQ(silent->steps[3].status, step_status::timed_out);
  EXPECT_EQ(sent(h, "silent/nudge/1")["send"][2],
            "Hi Bo, a reminder from Acme Motors: your RAV4 is still due for service. Reply to "
            "book.");

  auto recent = h.exec(tenant, "recent");
  ASSERT_EQ(recent->status, exec_status::succeeded) << recent->result;
  EXPECT_EQ(json::parse(recent->steps[1].output_json)["case"], "default");
  for (int i : {2, 3, 4}) {
    EXPECT_EQ(recent->steps[i].status, step_status::skipped)
        << "step " << i << ": branch not taken";
  }
  EXPECT_EQ(recent->result, R"({"next_check":{"on":"2024-03-12"}})")
      << "61 days (rounded) since 2023-09-15; the next check 119 days on";
  EXPECT_FALSE(h.exec(tenant, "recent/remind/1").has_value());
  expect_no_decide_reads(h);
  expect_replay_equal(h);
}

}  // namespace
}  // namespace auterity
