// Tenant policies (processors/tenant_policy.h) as a tenant publishes them, and the decisions
// made with them. The input is up to three parts separated by lines holding "%%": the policy
// JSON, a rendered AI step input (for the token estimate), a notification recipient.
// Properties: never crashes or throws; an accepted policy's stored form parses again to the
// same stored form (replay re-reads it); the router picks a candidate that exists.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "processors/tenant_policy.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace auterity;
  const auto parts =
      fuzz::split_parts(std::string_view(reinterpret_cast<const char*>(data), size), 3);
  auto parsed = parse_tenant_policy(parts[0]);
  if (!parsed) {
    FUZZ_CHECK(!parsed.error().reason.empty(), "a rejection without a reason");
    return 0;
  }
  auto again = parse_tenant_policy(parsed->normalized_json);
  FUZZ_CHECK(again.has_value(), "stored policy does not parse again: %s\n%s",
             again.error().reason.c_str(), parsed->normalized_json.c_str());
  FUZZ_CHECK(again->normalized_json == parsed->normalized_json, "stored policy changed:\n%s\n%s",
             parsed->normalized_json.c_str(), again->normalized_json.c_str());

  constexpr int64_t now_ms = 1'700'000'000'000;
  if (parsed->ai) {
    const ai_policy& p = *parsed->ai;
    const ai_estimate e = estimate_ai_tokens(p, parts[1]);
    const std::vector<std::string> tried = {p.candidates.empty() ? "" : p.candidates[0].name()};
    for (const ai_tier t : {ai_tier::basic, ai_tier::standard, ai_tier::premium}) {
      for (const ai_spend spend :
           {ai_spend{}, ai_spend{p.day_budget_micros, 0}, ai_spend{INT64_MAX / 2, INT64_MAX / 2}}) {
        const ai_route r = route_ai(p, t, e, spend, tried);
        if (r.candidate) {
          FUZZ_CHECK(*r.candidate < p.candidates.size(), "router picked a missing candidate");
          (void)ai_cost_micros(p.candidates[*r.candidate], e.input_tokens, e.output_tokens);
        } else {
          FUZZ_CHECK(!r.reason.empty(), "no candidate and no reason");
        }
      }
    }
  }
  if (parsed->notify) {
    const notify_policy& p = *parsed->notify;
    for (const std::string_view channel : {"sms", "email", "slack", "whatsapp", "webhook"}) {
      const notification n{channel, parts[2], "subject", "body", "lead-1/notify/"};
      for (const int64_t t : {now_ms, now_ms + 3'600'000 * 7, int64_t{0}}) {
        (void)decide_notification(p, n, t, std::nullopt, std::nullopt);
        (void)decide_notification(p, n, t, dedup_entry{t - 1000, "lead-0/notify/1"},
                                  window_count{window_start_ms(t, 60'000), 1'000'000});
      }
    }
  }
  return 0;
}
