#include "processors/definition.h"

#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "processors/limits.h"

namespace auterity {
namespace {

using json = nlohmann::json;

// The example of processors/DEFINITIONS.md.
constexpr std::string_view new_lead = R"({
  "workflow": "new-lead",
  "version": 1,
  "description": "Answer a new lead and follow up",
  "params": { "followup_delay_ms": 86400000, "dealer_name": "Acme Motors" },
  "steps": [
    {"id": "score", "kind": "task", "action": "lead_score",
     "input": {"budget": "{{input.budget}}", "timeline": "{{input.timeline}}"},
     "retry": {"max_attempts": 3, "backoff_ms": 500, "backoff_multiplier": 2.0, "backoff_max_ms": 60000},
     "timeout_ms": 5000},
    {"id": "draft", "kind": "ai", "after": ["score"],
     "input": {"prompt": "Write a reply to {{input.name}} from {{params.dealer_name}}"},
     "on_failure": "continue"},
    {"id": "fallback", "kind": "task", "action": "transform", "after": ["draft"],
     "when": {"path": "steps.draft.status", "equals": "failed"},
     "input": {"text": "Hi {{input.name}}, thanks for your interest!"}},
    {"id": "send_sms", "kind": "notify", "after": ["draft", "fallback"],
     "when": {"path": "input.contact.preferred", "equals": "sms"},
     "input": {"channel": "sms", "to": "{{input.contact.phone}}", "body": "{{steps.draft.output.text ?? steps.fallback.output.text}}"}},
    {"id": "wait_reply", "kind": "wait_signal", "signal": "customer_replied", "after": ["send_sms"], "timeout_ms": 60000, "on_failure": "continue"},
    {"id": "followup", "kind": "delay", "delay_ms": "{{params.followup_delay_ms}}", "after": ["wait_reply"],
     "when": {"path": "steps.wait_reply.status", "equals": "timed_out"}}
  ]
})";

// A definition around `steps` (a JSON array body) with optional extra top-level fields.
std::string workflow(std::string_view steps, std::string_view extra = "") {
  return fmt::format(R"({{"workflow": "w", "version": 1, {} "steps": [{}]}})", extra, steps);
}

definition parse_ok(std::string_view text, std::string_view params = "") {
  auto parsed = parse_definition(text, params);
  EXPECT_TRUE(parsed.has_value()) << parsed.error().reason;
  return parsed ? *parsed : definition{};
}

// Expects a rejection with `code` whose reason contains every one of `needles`.
void expect_rejected(std::string_view text, rejection_code code,
                     std::vector<std::string_view> needles, std::string_view params = "") {
  auto parsed = parse_definition(text, params);
  ASSERT_FALSE(parsed.has_value()) << "accepted: " << text;
  EXPECT_EQ(rejection_code_name(parsed.error().code), rejection_code_name(code))
      << parsed.error().reason;
  for (std::string_view needle : needles) {
    EXPECT_NE(parsed.error().reason.find(needle), std::string::npos)
        << "reason '" << parsed.error().reason << "' lacks '" << needle << "'";
  }
}

TEST(definition, example_parses_into_steps) {
  const definition def = parse_ok(new_lead);
  EXPECT_EQ(def.workflow, "new-lead");
  EXPECT_EQ(def.version, 1u);
  ASSERT_EQ(def.steps.size(), 6u);

  const step_def& score = def.steps[0];
  EXPECT_EQ(score.id, "score");
  EXPECT_EQ(score.kind, step_kind::task);
  EXPECT_EQ(score.action, "lead_score");
  EXPECT_EQ(score.input_template,
            R"({"budget":"{{input.budget}}","timeline":"{{input.timeline}}"})");
  EXPECT_EQ(score.retry.max_attempts, 3u);
  EXPECT_EQ(score.retry.backoff_ms, 500u);
  EXPECT_EQ(score.retry.backoff_multiplier, 2.0);
  EXPECT_EQ(score.retry.backoff_max_ms, 60000u);
  EXPECT_EQ(score.timeout_ms, 5000u);
  EXPECT_TRUE(score.after.empty());
  EXPECT_FALSE(score.when.has_value());
  EXPECT_EQ(score.on_failure, failure_mode::fail);

  const step_def& draft = def.steps[1];
  EXPECT_EQ(draft.kind, step_kind::ai);
  EXPECT_EQ(draft.tier, "standard");  // the default
  EXPECT_EQ(draft.input_template,
            R"({"prompt":"Write a reply to {{input.name}} from Acme Motors"})");
  EXPECT_EQ(draft.on_failure, failure_mode::continue_);
  EXPECT_EQ(draft.after, (std::vector<uint16_t>{0}));
  EXPECT_EQ(draft.retry.max_attempts, 1u);  // no retry unless asked

  const step_def& fallback = def.steps[2];
  ASSERT_TRUE(fallback.when.has_value());
  EXPECT_EQ(fallback.when->path, "steps.draft.status");
  EXPECT_EQ(fallback.when->operation, condition::op::equals);
  EXPECT_EQ(fallback.when->value_json, R"("failed")");

  const step_def& send = def.steps[3];
  EXPECT_EQ(send.kind, step_kind::notify);
  EXPECT_EQ(send.after, (std::vector<uint16_t>{1, 2}));

  const step_def& wait = def.steps[4];
  EXPECT_EQ(wait.kind, step_kind::wait_signal);
  EXPECT_EQ(wait.signal, "customer_replied");
  EXPECT_EQ(wait.timeout_ms, 60000u);

  const step_def& followup = def.steps[5];
  EXPECT_EQ(followup.kind, step_kind::delay);
  EXPECT_EQ(followup.delay_ms, 86'400'000u);
  EXPECT_EQ(followup.when->value_json, R"("timed_out")");

  EXPECT_EQ(def.topo_order, (std::vector<uint16_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(def.step_index("send_sms"), 3);
  EXPECT_EQ(def.step_index("nope"), -1);
}

TEST(definition, normalized_json_is_substituted_sorted_and_reparses_to_itself) {
  const definition def = parse_ok(new_lead);
  EXPECT_EQ(def.normalized_json.find("{{params."), std::string::npos);
  EXPECT_EQ(def.normalized_json.find('\n'), std::string::npos);
  const json doc = json::parse(def.normalized_json);
  EXPECT_EQ(doc.begin().key(), "description");  // keys sorted, not in source order
  EXPECT_EQ(doc["steps"][5]["delay_ms"], 86'400'000);
  EXPECT_EQ(doc["params"]["dealer_name"], "Acme Motors");

  const definition again = parse_ok(def.normalized_json);
  EXPECT_EQ(again.normalized_json, def.normalized_json);
}

TEST(definition, params_override_defaults_and_keep_their_type) {
  const definition def =
      parse_ok(new_lead, R"({"followup_delay_ms": 1000, "dealer_name": "Best Cars"})");
  EXPECT_EQ(def.steps[5].delay_ms, 1000u);
  EXPECT_EQ(def.steps[1].input_template,
            R"({"prompt":"Write a reply to {{input.name}} from Best Cars"})");
  const json doc = json::parse(def.normalized_json);
  EXPECT_TRUE(doc["steps"][5]["delay_ms"].is_number_integer());
  EXPECT_EQ(doc["params"]["followup_delay_ms"], 1000);

  // Only some given: the rest keep their defaults.
  EXPECT_EQ(parse_ok(new_lead, R"({"dealer_name": "X"})").steps[5].delay_ms, 86'400'000u);
  // Blank parameter text means none given.
  EXPECT_EQ(parse_ok(new_lead, "  ").steps[5].delay_ms, 86'400'000u);
}

TEST(definition, whole_string_parameter_takes_the_value_and_inner_one_its_text) {
  const definition def =
      parse_ok(workflow(R"({"id": "a", "kind": "task", "action": "transform",
                   "input": {"cfg": "{{ params.cfg }}", "text": "every {{params.n}} ms, {{params.who}}!",
                             "list": ["{{params.n}}"]}})",
                        R"("params": {"cfg": {"k": [1, 2]}, "n": 5, "who": "Ann"},)"));
  EXPECT_EQ(def.steps[0].input_template,
            R"({"cfg":{"k":[1,2]},"list":[5],"text":"every 5 ms, Ann!"})");
}

TEST(definition, parameter_text_is_not_rescanned) {
  // A value may carry run-time expressions, and is not substituted again.
  const definition def = parse_ok(
      workflow(R"({"id": "a", "kind": "task", "action": "t", "input": {"x": "{{params.greet}}"}})",
               R"("params": {"greet": "Hi {{input.name}}"},)"));
  EXPECT_EQ(def.steps[0].input_template, R"({"x":"Hi {{input.name}}"})");
}

TEST(definition, parameter_errors) {
  expect_rejected(new_lead, rejection_code::invalid_definition, {"'dealer'", "not declared"},
                  R"({"dealer": "X"})");
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t",
                               "input": {"x": "{{params.missing}}"}})"),
                  rejection_code::invalid_definition, {"'missing'", "step 'a'", "input.x"});
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t",
                               "input": {"x": "{{params.n ?? input.n}}"}})",
                           R"("params": {"n": 1},)"),
                  rejection_code::invalid_definition, {"malformed parameter reference"});
  expect_rejected(new_lead, rejection_code::invalid_definition, {"not valid JSON"}, "{");
  expect_rejected(new_lead, rejection_code::invalid_definition, {"must be a JSON object"}, "[]");
  // Substituted before validation, so a value of the wrong type fails like a literal would.
  expect_rejected(new_lead, rejection_code::invalid_definition,
                  {"step 'followup'", "delay_ms", "integer"}, R"({"followup_delay_ms": "soon"})");
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t"})",
                           R"("params": {"a": "{{params.b}}", "b": 1},)"),
                  rejection_code::invalid_definition, {"parameter 'a'"});
  expect_rejected(
      workflow(R"({"id": "a", "kind": "task", "action": "t"})", R"("params": {"bad name": 1},)"),
      rejection_code::invalid_definition, {"'bad name'"});
}

TEST(definition, unknown_fields_are_named) {
  expect_rejected(R"({"workflow": "w", "version": 1, "stpes": []})",
                  rejection_code::invalid_definition, {"'stpes'", "top level"});
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "actoin": "t"})"),
                  rejection_code::invalid_definition, {"step 'a'", "'actoin'"});
  expect_rejected(
      workflow(R"({"id": "a", "kind": "task", "action": "t", "retry": {"max_attempt": 2}})"),
      rejection_code::invalid_definition, {"step 'a'", "'retry.max_attempt'"});
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t",
                               "when": {"path": "input.x", "equal": 1}})"),
                  rejection_code::invalid_definition, {"step 'a'", "when must be"});
}

TEST(definition, fields_of_other_kinds_are_rejected) {
  expect_rejected(workflow(R"({"id": "d", "kind": "delay", "delay_ms": 5, "retry": {}})"),
                  rejection_code::invalid_definition, {"step 'd'", "'retry'", "delay"});
  expect_rejected(workflow(R"({"id": "a", "kind": "ai", "action": "x", "input": {"prompt": "p"}})"),
                  rejection_code::invalid_definition, {"step 'a'", "'action'", "ai"});
}

TEST(definition, duplicate_step_id) {
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t"},
                              {"id": "b", "kind": "task", "action": "t"},
                              {"id": "a", "kind": "delay", "delay_ms": 1})"),
                  rejection_code::invalid_definition, {"duplicate step id 'a'", "steps[2]"});
}

TEST(definition, duplicate_json_key) {
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t",
                               "after": [], "after": []})"),
                  rejection_code::invalid_definition, {"duplicate key 'after'"});
}

TEST(definition, unknown_after_target) {
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t"},
                              {"id": "b", "kind": "task", "action": "t", "after": ["a", "zz"]})"),
                  rejection_code::invalid_definition, {"step 'b'", "'zz'"});
}

TEST(definition, cycle_is_named_in_run_order) {
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t", "after": ["c"]},
                              {"id": "b", "kind": "task", "action": "t", "after": ["a"]},
                              {"id": "c", "kind": "task", "action": "t", "after": ["b"]})"),
                  rejection_code::definition_cycle, {"cycle: a -> b -> c -> a"});
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t", "after": ["a"]})"),
                  rejection_code::definition_cycle, {"cycle: a -> a"});
  // A step blocked behind the cycle is not part of it.
  expect_rejected(workflow(R"({"id": "start", "kind": "task", "action": "t"},
                              {"id": "tail", "kind": "task", "action": "t", "after": ["x"]},
                              {"id": "x", "kind": "task", "action": "t", "after": ["start", "y"]},
                              {"id": "y", "kind": "task", "action": "t", "after": ["x"]})"),
                  rejection_code::definition_cycle, {"cycle: x -> y -> x"});
}

std::string n_steps(size_t n) {
  std::string steps;
  for (size_t i = 0; i < n; ++i) {
    if (i > 0) steps += ",";
    steps += fmt::format(R"({{"id": "s{}", "kind": "delay", "delay_ms": 1}})", i);
  }
  return workflow(steps);
}

TEST(definition, step_count_limits) {
  EXPECT_EQ(parse_ok(n_steps(limits::steps_per_definition_max)).steps.size(),
            limits::steps_per_definition_max);
  expect_rejected(n_steps(limits::steps_per_definition_max + 1), rejection_code::too_many_steps,
                  {std::to_string(limits::steps_per_definition_max + 1)});
  expect_rejected(workflow(""), rejection_code::invalid_definition, {"steps must not be empty"});
}

TEST(definition, oversize_definition) {
  const std::string big(limits::payload_bytes_max, 'x');
  expect_rejected(workflow(R"({"id": "a", "kind": "delay", "delay_ms": 1})",
                           fmt::format(R"("description": "{}",)", big)),
                  rejection_code::payload_too_large, {"payload_bytes_max"});
  // Growth by substitution counts too.
  std::string uses;
  for (int i = 0; i < 20; ++i) uses += fmt::format(R"("k{}": "{{{{params.p}}}}",)", i);
  uses += R"("end": 1)";
  expect_rejected(workflow(fmt::format(R"({{"id": "a", "kind": "task", "action": "t",
                                           "input": {{{}}}}})",
                                       uses),
                           fmt::format(R"("params": {{"p": "{}"}},)", std::string(4000, 'y'))),
                  rejection_code::payload_too_large, {"substitution"});
}

TEST(definition, required_fields_per_kind) {
  expect_rejected(workflow(R"({"id": "a", "kind": "task"})"), rejection_code::invalid_definition,
                  {"step 'a'", "'action'"});
  expect_rejected(workflow(R"({"id": "w", "kind": "wait_signal", "timeout_ms": 10})"),
                  rejection_code::invalid_definition, {"step 'w'", "'signal'"});
  expect_rejected(workflow(R"({"id": "d", "kind": "delay"})"), rejection_code::invalid_definition,
                  {"step 'd'", "'delay_ms'"});
  expect_rejected(workflow(R"({"id": "d", "kind": "delay", "delay_ms": 0})"),
                  rejection_code::invalid_definition, {"step 'd'", "delay_ms", "from 1"});
  expect_rejected(workflow(R"({"id": "x", "action": "t"})"), rejection_code::invalid_definition,
                  {"step 'x'", "'kind'"});
  expect_rejected(workflow(R"({"kind": "task", "action": "t"})"),
                  rejection_code::invalid_definition, {"steps[0]", "'id'"});
  expect_rejected(workflow(R"({"id": "a", "kind": "ai", "input": {"text": "hi"}})"),
                  rejection_code::invalid_definition, {"step 'a'", "input.prompt"});
  expect_rejected(workflow(R"({"id": "a", "kind": "ai"})"), rejection_code::invalid_definition,
                  {"step 'a'", "input.prompt"});
  expect_rejected(workflow(R"({"id": "n", "kind": "notify", "input": {"to": "x"}})"),
                  rejection_code::invalid_definition, {"step 'n'", "input.channel"});
  expect_rejected(R"({"version": 1, "steps": []})", rejection_code::invalid_definition,
                  {"'workflow'"});
  expect_rejected(R"({"workflow": "w", "steps": []})", rejection_code::invalid_definition,
                  {"'version'"});
}

TEST(definition, wrong_types_and_ranges) {
  expect_rejected("{\"workflow\": ", rejection_code::invalid_definition, {"not valid JSON"});
  expect_rejected("[]", rejection_code::invalid_definition, {"JSON object"});
  expect_rejected(R"({"workflow": "w", "version": "1", "steps": []})",
                  rejection_code::invalid_definition, {"version"});
  expect_rejected(R"({"workflow": "w", "version": 0, "steps": []})",
                  rejection_code::invalid_definition, {"version"});
  expect_rejected(R"({"workflow": "bad id", "version": 1, "steps": []})",
                  rejection_code::invalid_definition, {"'bad id'"});
  expect_rejected(R"({"workflow": "w", "version": 1, "steps": {}})",
                  rejection_code::invalid_definition, {"steps must be an array"});
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t", "after": "b"})"),
                  rejection_code::invalid_definition, {"step 'a'", "after"});
  expect_rejected(workflow(R"({"id": "a", "kind": "job", "action": "t"})"),
                  rejection_code::invalid_definition, {"step 'a'", "\"job\""});
  expect_rejected(workflow(R"({"id": "a", "kind": "ai", "tier": "gold",
                               "input": {"prompt": "p"}})"),
                  rejection_code::invalid_definition, {"step 'a'", "tier"});
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t", "on_failure": "retry"})"),
                  rejection_code::invalid_definition, {"step 'a'", "on_failure"});
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t", "input": []})"),
                  rejection_code::invalid_definition, {"step 'a'", "input must be an object"});
  expect_rejected(workflow(fmt::format(R"({{"id": "a", "kind": "task", "action": "t",
                                           "timeout_ms": {}}})",
                                       limits::timer_ms_max + 1)),
                  rejection_code::invalid_definition, {"step 'a'", "timeout_ms"});
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t", "timeout_ms": 1.5})"),
                  rejection_code::invalid_definition, {"step 'a'", "timeout_ms"});
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t", "timeout_ms": -1})"),
                  rejection_code::invalid_definition, {"step 'a'", "timeout_ms"});
  expect_rejected(workflow(fmt::format(R"({{"id": "a", "kind": "task", "action": "t",
                                           "retry": {{"max_attempts": {}}}}})",
                                       limits::retry_attempts_max + 1)),
                  rejection_code::invalid_definition, {"step 'a'", "retry.max_attempts"});
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t",
                               "retry": {"backoff_multiplier": 0.5}})"),
                  rejection_code::invalid_definition, {"step 'a'", "retry.backoff_multiplier"});
  // A step id that a path could not name.
  expect_rejected(workflow(R"({"id": "a.status", "kind": "delay", "delay_ms": 1})"),
                  rejection_code::invalid_definition, {"'a.status'"});
}

TEST(definition, step_references_must_be_dependencies) {
  const std::string x = R"({"id": "x", "kind": "task", "action": "t"})";
  expect_rejected(workflow(x + R"(, {"id": "send", "kind": "notify",
                          "input": {"channel": "sms", "body": "{{steps.x.output.text}}"}})"),
                  rejection_code::invalid_definition,
                  {"step 'send' refers to steps.x which is not one of its dependencies"});
  // The same through `when`, and through the second ?? alternative.
  expect_rejected(workflow(x + R"(, {"id": "send", "kind": "task", "action": "t",
                                     "when": {"path": "steps.x.status", "exists": true}})"),
                  rejection_code::invalid_definition, {"step 'send' refers to steps.x"});
  expect_rejected(workflow(x + R"(, {"id": "send", "kind": "task", "action": "t",
                                     "input": {"a": "{{input.a ?? steps.x.error}}"}})"),
                  rejection_code::invalid_definition, {"step 'send' refers to steps.x"});
  expect_rejected(workflow(x + R"(, {"id": "send", "kind": "task", "action": "t", "after": ["x"],
                                     "input": {"a": "{{steps.ghost.status}}"}})"),
                  rejection_code::invalid_definition, {"step 'send'", "steps.ghost"});
  expect_rejected(workflow(R"({"id": "me", "kind": "task", "action": "t",
                               "input": {"a": "{{steps.me.status}}"}})"),
                  rejection_code::invalid_definition, {"step 'me' refers to steps.me"});
  // A dependency of a dependency is fine, and so is a dotted id.
  parse_ok(workflow(R"({"id": "x.1", "kind": "task", "action": "t"},
                       {"id": "mid", "kind": "task", "action": "t", "after": ["x.1"]},
                       {"id": "send", "kind": "task", "action": "t", "after": ["mid"],
                        "when": {"path": "steps.x.1.output.ok", "equals": true},
                        "input": {"a": "{{steps.x.1.output.items.0}}"}})"));
}

TEST(definition, malformed_templates_are_rejected_at_publish) {
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t",
                               "input": {"x": "{{input.a"}})"),
                  rejection_code::invalid_definition, {"step 'a'", "input.x", "unclosed"});
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t",
                               "input": {"x": "{{inptu.a}}"}})"),
                  rejection_code::invalid_definition, {"step 'a'", "'inptu.a'"});
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t",
                               "input": {"x": ["{{ }}"]}})"),
                  rejection_code::invalid_definition, {"step 'a'", "input.x[0]", "empty path"});
  expect_rejected(workflow(R"({"id": "a", "kind": "task", "action": "t",
                               "when": {"path": "{{input.a}}", "exists": true}})"),
                  rejection_code::invalid_definition, {"step 'a'", "when.path"});
}

TEST(definition, topo_order_breaks_ties_by_position) {
  const std::string text = workflow(R"({"id": "z", "kind": "task", "action": "t"},
                                       {"id": "y", "kind": "task", "action": "t", "after": ["x"]},
                                       {"id": "x", "kind": "task", "action": "t"},
                                       {"id": "w", "kind": "task", "action": "t", "after": ["z"]})");
  const definition def = parse_ok(text);
  EXPECT_EQ(def.topo_order, (std::vector<uint16_t>{0, 2, 1, 3}));
  for (int i = 0; i < 3; ++i) {
    const definition again = parse_ok(text);
    EXPECT_EQ(again.topo_order, def.topo_order);
    EXPECT_EQ(again.normalized_json, def.normalized_json);
  }
}

TEST(definition, retry_delay_grows_and_is_capped) {
  retry_policy r{
      .max_attempts = 5, .backoff_ms = 500, .backoff_multiplier = 2.0, .backoff_max_ms = 60'000};
  EXPECT_EQ(r.delay_after(1), 500u);
  EXPECT_EQ(r.delay_after(2), 1000u);
  EXPECT_EQ(r.delay_after(3), 2000u);
  EXPECT_EQ(r.delay_after(7), 32'000u);
  EXPECT_EQ(r.delay_after(8), 60'000u);  // 64'000 capped
  EXPECT_EQ(r.delay_after(4'000'000'000u), 60'000u);
  EXPECT_EQ(r.delay_after(0), 500u);

  r.backoff_multiplier = 1.5;
  r.backoff_ms = 1000;
  EXPECT_EQ(r.delay_after(3), 2250u);

  r.backoff_ms = 90'000;  // above the cap from the start
  EXPECT_EQ(r.delay_after(1), 60'000u);

  r = retry_policy{.max_attempts = 20,
                   .backoff_ms = limits::timer_ms_max,
                   .backoff_multiplier = 1e300,
                   .backoff_max_ms = UINT64_MAX};
  EXPECT_EQ(r.delay_after(20), UINT64_MAX);  // overflows double's range: the cap, not garbage
}

TEST(definition, names) {
  EXPECT_EQ(step_kind_name(step_kind::task), "task");
  EXPECT_EQ(step_kind_name(step_kind::ai), "ai");
  EXPECT_EQ(step_kind_name(step_kind::notify), "notify");
  EXPECT_EQ(step_kind_name(step_kind::wait_signal), "wait_signal");
  EXPECT_EQ(step_kind_name(step_kind::delay), "delay");
  EXPECT_EQ(rejection_code_name(rejection_code::unknown_tenant), "unknown_tenant");
  EXPECT_EQ(rejection_code_name(rejection_code::invalid_definition), "invalid_definition");
  EXPECT_EQ(rejection_code_name(rejection_code::definition_cycle), "definition_cycle");
  EXPECT_EQ(rejection_code_name(rejection_code::too_many_steps), "too_many_steps");
  EXPECT_EQ(rejection_code_name(rejection_code::missing_field), "missing_field");
  for (uint16_t n = 1; n <= 14; ++n) {
    EXPECT_NE(rejection_code_name(static_cast<rejection_code>(n)), "unknown") << n;
  }
  EXPECT_EQ(rejection_code_name(static_cast<rejection_code>(999)), "unknown");
}

TEST(definition, hostile_input_never_throws) {
  // Deep nesting, invalid UTF-8 and odd brace runs come back as values.
  expect_rejected(std::string(10'000, '[') + std::string(10'000, ']'),
                  rejection_code::invalid_definition, {"nested"});
  expect_rejected("{\"workflow\": \"\xff\"}", rejection_code::invalid_definition,
                  {"not valid JSON"});
  const definition def = parse_ok(workflow(R"({"id": "a", "kind": "task", "action": "t",
                            "input": {"x": "{{{params.p}}}"}})",
                                           R"("params": {"p": "input.a"},)"));
  // "{{{params.p}}}" holds the reference at offset 1; "{" + "input.a" + "}" is left over.
  EXPECT_EQ(def.steps[0].input_template, R"({"x":"{input.a}"})");
}

}  // namespace
}  // namespace auterity
