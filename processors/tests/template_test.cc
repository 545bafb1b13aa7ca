#include "processors/template.h"

#include <map>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "processors/limits.h"

namespace auterity {
namespace {

using json = nlohmann::json;

struct fake_step {
  std::string status;
  std::string output;
  std::string error;
};

// An execution with an input and some steps; counts step lookups.
class fixture : public ::testing::Test {
 protected:
  fixture() {
    scope.tenant_id = "acme";
    scope.execution_id = "ex-1";
    scope.workflow = "new-lead";
    scope.input_json = input;
    scope.step = [this](std::string_view id, std::string_view& status, std::string_view& output,
                        std::string_view& error) {
      ++lookups[std::string(id)];
      const auto it = steps.find(std::string(id));
      if (it == steps.end()) return false;
      status = it->second.status;
      output = it->second.output;
      error = it->second.error;
      return true;
    };
  }

  std::string render(std::string_view template_json) {
    auto out = render_template(template_json, scope);
    EXPECT_TRUE(out.has_value()) << out.error();
    return out ? *out : "";
  }

  std::string render_error(std::string_view template_json) {
    auto out = render_template(template_json, scope);
    EXPECT_FALSE(out.has_value()) << "rendered " << *out;
    return out ? "" : out.error();
  }

  bool holds(std::string path, condition::op op, std::string value_json = "") {
    auto result = evaluate_condition(condition{std::move(path), op, std::move(value_json)}, scope);
    EXPECT_TRUE(result.has_value()) << result.error();
    return result && *result;
  }

  std::string input = R"({"name": "Ann", "budget": 30000, "vip": true, "note": null,
      "contact": {"preferred": "sms", "email": "ann@example.com"},
      "items": [{"name": "Civic"}, {"name": "Accord"}], "score": 1.0})";
  std::map<std::string, fake_step> steps = {
      {"score", {"succeeded", R"({"score": 87, "tags": ["hot"]})", ""}},
      {"draft", {"failed", R"({"text": "partial"})", "model overloaded"}},
      {"fallback", {"succeeded", R"({"text": "Hi Ann"})", ""}},
      {"later", {"pending", "", ""}},
  };
  std::map<std::string, int> lookups;
  template_scope scope;
};

using template_render = fixture;
using template_condition = fixture;

TEST_F(template_render, whole_expression_keeps_the_json_type) {
  EXPECT_EQ(json::parse(render(R"({"n": "{{input.budget}}", "b": "{{ input.vip }}",
                                   "o": "{{input.contact}}", "z": "{{input.note}}",
                                   "a": "{{input.items}}", "s": "{{input.name}}"})")),
            json::parse(R"({"n": 30000, "b": true, "z": null, "s": "Ann",
                            "o": {"preferred": "sms", "email": "ann@example.com"},
                            "a": [{"name": "Civic"}, {"name": "Accord"}]})"));
}

TEST_F(template_render, interpolation_writes_values_as_text) {
  EXPECT_EQ(render(R"({"t": "Hi {{input.name}}, budget {{input.budget}}, vip {{input.vip}}"})"),
            R"({"t":"Hi Ann, budget 30000, vip true"})");
  EXPECT_EQ(render(R"({"t": "tags: {{steps.score.output.tags}} "})"),
            R"({"t":"tags: [\"hot\"] "})");
  // Surrounding text, even a space, makes it interpolation.
  EXPECT_EQ(render(R"({"t": " {{input.budget}}"})"), R"({"t":" 30000"})");
}

TEST_F(template_render, walks_arrays_and_nested_objects_but_not_keys) {
  EXPECT_EQ(render(R"({"{{input.name}}": [1, "{{input.name}}", {"x": "{{input.budget}}"}]})"),
            R"({"{{input.name}}":[1,"Ann",{"x":30000}]})");
}

TEST_F(template_render, inserted_text_is_not_rendered_again) {
  input = R"({"name": "{{input.secret}}", "secret": "s3cret"})";
  scope.input_json = input;
  EXPECT_EQ(render(R"({"t": "Hi {{input.name}}"})"), R"({"t":"Hi {{input.secret}}"})");
}

TEST_F(template_render, alternatives_take_the_first_that_exists) {
  EXPECT_EQ(render(R"({"t": "{{input.nickname ?? input.name}}"})"), R"({"t":"Ann"})");
  EXPECT_EQ(render(R"({"t": "{{input.name??input.nickname}}"})"), R"({"t":"Ann"})");
  EXPECT_EQ(render(R"({"t": "{{steps.draft.output.text ?? steps.fallback.output.text}}"})"),
            R"({"t":"Hi Ann"})");
  EXPECT_EQ(render(R"({"t": "{{ input.a ?? input.b ?? input.budget }}"})"), R"({"t":30000})");
  // null exists: it is a value, not a missing path.
  EXPECT_EQ(render(R"({"t": "{{input.note ?? input.name}}"})"), R"({"t":null})");
}

TEST_F(template_render, missing_path_is_an_error_naming_it) {
  EXPECT_EQ(render_error(R"({"to": "{{input.contact.phone}}"})"),
            "template: path 'input.contact.phone' not found");
  EXPECT_EQ(render_error(R"({"to": "call {{input.contact.phone ?? input.phone}}"})"),
            "template: path 'input.contact.phone' not found, nor 'input.phone'");
  EXPECT_NE(render_error(R"({"x": "{{input.name.first}}"})").find("'input.name.first'"),
            std::string::npos);  // below a string
}

TEST_F(template_render, array_elements_by_index) {
  EXPECT_EQ(render(R"({"car": "{{input.items.1.name}}", "tag": "{{steps.score.output.tags.0}}"})"),
            R"({"car":"Accord","tag":"hot"})");
  EXPECT_NE(render_error(R"({"car": "{{input.items.2.name}}"})").find("not found"),
            std::string::npos);
  EXPECT_NE(render_error(R"({"car": "{{input.items.first}}"})").find("not found"),
            std::string::npos);
  EXPECT_NE(render_error(R"({"car": "{{input.items.-1}}"})").find("not found"), std::string::npos);
}

TEST_F(template_render, step_status_output_and_error) {
  EXPECT_EQ(json::parse(render(R"({"s": "{{steps.score.status}}", "o": "{{steps.score.output}}",
                                   "v": "{{steps.score.output.score}}",
                                   "e": "{{steps.draft.error}}", "d": "{{steps.draft.status}}"})")),
            json::parse(R"({"s": "succeeded", "o": {"score": 87, "tags": ["hot"]}, "v": 87,
                            "e": "model overloaded", "d": "failed"})"));
  // No error recorded: missing.
  EXPECT_NE(render_error(R"({"e": "{{steps.score.error}}"})").find("not found"), std::string::npos);
  // No such step: missing.
  EXPECT_NE(render_error(R"({"e": "{{steps.ghost.status}}"})").find("not found"),
            std::string::npos);
}

TEST_F(template_render, step_that_did_not_succeed_has_no_output) {
  EXPECT_EQ(render_error(R"({"t": "{{steps.draft.output.text}}"})"),
            "template: path 'steps.draft.output.text' not found");
  EXPECT_NE(render_error(R"({"t": "{{steps.draft.output}}"})").find("not found"),
            std::string::npos);
  EXPECT_NE(render_error(R"({"t": "{{steps.later.output}}"})").find("not found"),
            std::string::npos);
}

TEST_F(template_render, execution_fields) {
  EXPECT_EQ(render(R"({"id": "{{execution.id}}",
                       "t": "{{execution.tenant}}/{{execution.workflow}}"})"),
            R"({"id":"ex-1","t":"acme/new-lead"})");
}

TEST_F(template_render, dotted_step_ids) {
  steps["crm.lookup"] = {"succeeded", R"({"id": 7})", ""};
  EXPECT_EQ(render(R"({"id": "{{steps.crm.lookup.output.id}}"})"), R"({"id":7})");
}

TEST_F(template_render, each_step_is_looked_up_once_per_call) {
  render(R"({"a": "{{steps.score.output.score}}", "b": "{{steps.score.output.tags}}",
             "c": "{{steps.score.status}} {{steps.score.output.score}}"})");
  EXPECT_EQ(lookups["score"], 1);
  render(R"({"a": "{{steps.score.status}}"})");
  EXPECT_EQ(lookups["score"], 2);
}

TEST_F(template_render, malformed_templates_are_errors) {
  for (std::string_view bad : {
           R"({"x": "{{input.name"})",
           R"({"x": "a {{input.name}} {{"})",
           R"({"x": "{{}}"})",
           R"({"x": "{{ ?? input.name}}"})",
           R"({"x": "{{input.name ??}}"})",
           R"({"x": "{{input..name}}"})",
           R"({"x": "{{input.first name}}"})",
           R"({"x": "{{{input.name}}}"})",
           R"({"x": "{{params.dealer}}"})",
           R"({"x": "{{name}}"})",
           R"({"x": "{{steps.score}}"})",
           R"({"x": "{{steps.score.result}}"})",
           R"({"x": "{{steps.score.status.code}}"})",
           R"({"x": "{{execution.tenant_id}}"})",
           R"({"x": )",
       }) {
    EXPECT_TRUE(render_error(bad).starts_with("template: ")) << bad;
  }
  // A malformed alternative is reported even though the first one exists.
  EXPECT_NE(render_error(R"({"x": "{{input.name ?? inptu.name}}"})").find("'inptu.name'"),
            std::string::npos);
}

TEST_F(template_render, bad_documents_are_errors_not_exceptions) {
  input = "{not json";
  scope.input_json = input;
  EXPECT_NE(render_error(R"({"x": "{{input.name}}"})").find("input is not valid JSON"),
            std::string::npos);
  // The input is only read when a path needs it.
  EXPECT_EQ(render(R"({"x": "{{execution.id}}"})"), R"({"x":"ex-1"})");

  steps["score"].output = "[1,";
  EXPECT_NE(render_error(R"({"x": "{{steps.score.output}}"})").find("output of step 'score'"),
            std::string::npos);
}

TEST_F(template_render, empty_input_and_template) {
  scope.input_json = "";
  EXPECT_EQ(render(R"({"x": "{{input ?? execution.id}}"})"), R"({"x":{}})");
  EXPECT_EQ(render(""), "{}");
  EXPECT_EQ(render(R"({"x": "no braces } here"})"), R"({"x":"no braces } here"})");
}

TEST_F(template_render, output_size_is_bounded) {
  input = R"({"big": ")" + std::string(10'000, 'b') + R"("})";
  scope.input_json = input;
  std::string many = "{";
  for (int i = 0; i < 8; ++i) many += "\"k" + std::to_string(i) + "\": \"{{input.big}}\",";
  many += R"("t": "x {{input.big}}"})";
  EXPECT_NE(render_error(many).find("payload_bytes_max"), std::string::npos);
}

TEST_F(template_condition, equals_and_not_equals_compare_json_values) {
  EXPECT_TRUE(holds("input.contact.preferred", condition::op::equals, R"("sms")"));
  EXPECT_FALSE(holds("input.contact.preferred", condition::op::equals, R"("email")"));
  EXPECT_TRUE(holds("input.budget", condition::op::equals, "30000"));
  EXPECT_TRUE(holds("input.score", condition::op::equals, "1"));             // 1.0 == 1
  EXPECT_FALSE(holds("input.budget", condition::op::equals, R"("30000")"));  // no coercion
  EXPECT_TRUE(holds("input.vip", condition::op::equals, "true"));
  EXPECT_TRUE(holds("input.note", condition::op::equals, "null"));
  EXPECT_TRUE(holds("input.items.0", condition::op::equals, R"({"name": "Civic"})"));
  EXPECT_TRUE(holds("steps.draft.status", condition::op::equals, R"("failed")"));
  EXPECT_TRUE(holds("steps.score.output.score", condition::op::not_equals, "86"));
  EXPECT_FALSE(holds("steps.score.output.score", condition::op::not_equals, "87"));
}

TEST_F(template_condition, missing_path_is_not_equal_to_anything) {
  EXPECT_FALSE(holds("input.contact.phone", condition::op::equals, "null"));
  EXPECT_TRUE(holds("input.contact.phone", condition::op::not_equals, R"("555")"));
  EXPECT_FALSE(holds("steps.draft.output.text", condition::op::equals, R"("partial")"));
  EXPECT_FALSE(holds("steps.ghost.status", condition::op::equals, R"("succeeded")"));
}

TEST_F(template_condition, exists_and_not_exists) {
  EXPECT_TRUE(holds("input.contact.email", condition::op::exists));
  EXPECT_FALSE(holds("input.contact.phone", condition::op::exists));
  EXPECT_TRUE(holds("input.contact.phone", condition::op::not_exists));
  EXPECT_TRUE(holds("input.note", condition::op::exists));  // null is present
  EXPECT_TRUE(holds("steps.draft.error", condition::op::exists));
  EXPECT_TRUE(holds("steps.score.error", condition::op::not_exists));
}

TEST_F(template_condition, malformed_path_is_an_error) {
  for (std::string path : {"", "input.", "contact.phone", "steps.draft", "{{input.a}}"}) {
    auto result = evaluate_condition(condition{path, condition::op::exists, ""}, scope);
    ASSERT_FALSE(result.has_value()) << path;
    EXPECT_TRUE(result.error().starts_with("condition: malformed path")) << result.error();
  }
  auto bad_value =
      evaluate_condition(condition{"input.name", condition::op::equals, "{oops"}, scope);
  EXPECT_FALSE(bad_value.has_value());
}

TEST_F(template_condition, conditions_from_a_parsed_definition) {
  auto def = parse_definition(R"({"workflow": "w", "version": 1, "steps": [
      {"id": "draft", "kind": "ai", "input": {"prompt": "p"}, "on_failure": "continue"},
      {"id": "fallback", "kind": "task", "action": "transform", "after": ["draft"],
       "when": {"path": "steps.draft.status", "equals": "failed"}},
      {"id": "sms", "kind": "notify", "input": {"channel": "sms"},
       "when": {"path": "input.contact.phone", "exists": false}}]})",
                              "");
  ASSERT_TRUE(def.has_value()) << def.error().reason;
  EXPECT_TRUE(*evaluate_condition(*def->steps[1].when, scope));
  EXPECT_TRUE(*evaluate_condition(*def->steps[2].when, scope));
  steps["draft"].status = "succeeded";
  EXPECT_FALSE(*evaluate_condition(*def->steps[1].when, scope));
}

}  // namespace
}  // namespace auterity
