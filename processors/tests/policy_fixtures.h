#pragma once
// Tenant policy fixtures shared by tenant_policy_test and orchestrator_test.

#include <nlohmann/json.hpp>

namespace auterity::testing {

// Three AI candidates, one per tier, cheapest first: local llama3 (basic, free), OpenAI
// gpt-4o-mini (standard), Anthropic claude-3-5-sonnet (premium).
inline nlohmann::json ai_candidates() {
  return nlohmann::json::array({{{"provider", "local"},
                                 {"model", "llama3"},
                                 {"tier", "basic"},
                                 {"input_per_1k_micros", 0},
                                 {"output_per_1k_micros", 0},
                                 {"latency_ms_max", 20000}},
                                {{"provider", "openai"},
                                 {"model", "gpt-4o-mini"},
                                 {"tier", "standard"},
                                 {"input_per_1k_micros", 150},
                                 {"output_per_1k_micros", 600},
                                 {"latency_ms_max", 15000}},
                                {{"provider", "anthropic"},
                                 {"model", "claude-3-5-sonnet-latest"},
                                 {"tier", "premium"},
                                 {"input_per_1k_micros", 3000},
                                 {"output_per_1k_micros", 15000},
                                 {"latency_ms_max", 30000}}});
}

}  // namespace auterity::testing
