// Workflow definitions (processors/definition.h) and the step input templates and conditions
// they carry (processors/template.h), as a tenant publishes them and as an execution's input and
// step outputs fill them. The input is up to four parts separated by lines holding "%%":
// definition JSON, parameters JSON, execution input JSON, a step output JSON.
// Properties: never crashes or throws; an accepted definition's stored form (normalized_json)
// parses again, with no parameters, to the same stored form — recovery and replay re-read it
// that way, so a definition accepted live must never fail or change on replay.

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "processors/definition.h"
#include "processors/template.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace auterity;
  const auto parts =
      fuzz::split_parts(std::string_view(reinterpret_cast<const char*>(data), size), 4);
  auto parsed = parse_definition(parts[0], parts[1]);
  if (!parsed) {
    FUZZ_CHECK(!parsed.error().reason.empty(), "a rejection without a reason");
    return 0;
  }
  const definition& d = *parsed;
  auto again = parse_definition(d.normalized_json, "");
  FUZZ_CHECK(again.has_value(), "stored definition does not parse again: %s\n%s",
             again.error().reason.c_str(), d.normalized_json.c_str());
  FUZZ_CHECK(again->normalized_json == d.normalized_json, "stored definition changed:\n%s\n%s",
             d.normalized_json.c_str(), again->normalized_json.c_str());
  FUZZ_CHECK(d.topo_order.size() == d.steps.size(), "topological order misses steps");

  template_scope scope;
  scope.tenant_id = "acme";
  scope.execution_id = "lead-1";
  scope.workflow = d.workflow;
  scope.input_json = parts[2];
  const std::string_view output = parts[3];
  scope.step = [&](std::string_view id, std::string_view& status, std::string_view& out,
                   std::string_view& error) {
    if (d.step_index(id) < 0) return false;
    status = id.size() % 2 ? "succeeded" : "failed";
    out = output;
    error = "boom";
    return true;
  };
  for (const uint16_t i : d.topo_order) {
    const step_def& s = d.steps.at(i);
    if (s.when) (void)evaluate_condition(*s.when, scope);
    auto rendered = render_template(s.input_template, scope);
    // The orchestrator puts the rendered input in a command; workers parse it as JSON.
    if (rendered) {
      FUZZ_CHECK(nlohmann::json::accept(*rendered), "rendered input is not JSON: %s",
                 rendered->c_str());
    }
  }
  return 0;
}
