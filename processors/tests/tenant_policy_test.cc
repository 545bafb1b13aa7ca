// Tenant policy as a tenant's operator meets it: what a published policy may say (and the
// reasons when it is wrong), which model the router picks and why, what a call costs, and when
// a notification goes out, waits or is suppressed.

#include "processors/tenant_policy.h"

#include <fmt/core.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "processors/tests/policy_fixtures.h"

namespace auterity {
namespace {

using json = nlohmann::json;

// 2023-11-14T22:13:20Z
constexpr int64_t t0 = 1'700'000'000'000;
constexpr int64_t minute_ms = 60'000;
constexpr int64_t hour_ms = 60 * minute_ms;

json full_policy() {
  return {
      {"ai",
       {{"candidates", testing::ai_candidates()},
        {"budget",
         {{"day_micros", 5000000}, {"month_micros", 100000000}, {"when_exhausted", "downgrade"}}},
        {"estimate_output_tokens", 400}}},
      {"notify",
       {{"rate_limits", json::array({{{"channel", "sms"}, {"max", 100}, {"per_ms", 3600000}}})},
        {"quiet_hours",
         {{"start", "21:00"},
          {"end", "08:00"},
          {"utc_offset_minutes", -300},
          {"channels", {"sms", "whatsapp"}}}},
        {"opt_out", {"+15550100", "ann@example.com"}},
        {"dedup_window_ms", 600000}}}};
}

tenant_policy parse_ok(const json& j) {
  auto p = parse_tenant_policy(j.dump());
  EXPECT_TRUE(p.has_value()) << (p ? "" : p.error().reason);
  return p ? *p : tenant_policy{};
}

std::string parse_error(const json& j) {
  auto p = parse_tenant_policy(j.dump());
  EXPECT_FALSE(p.has_value()) << j.dump();
  if (p) return "";
  EXPECT_EQ(p.error().code, rejection_code::invalid_policy);
  return p.error().reason;
}

// ------------------------------------------------------------------------------ validation

TEST(tenant_policy, the_documented_example_parses_with_every_field) {
  tenant_policy p = parse_ok(full_policy());
  ASSERT_TRUE(p.ai && p.notify);
  ASSERT_EQ(p.ai->candidates.size(), 3u);
  EXPECT_EQ(p.ai->candidates[1].name(), "openai/gpt-4o-mini");
  EXPECT_EQ(p.ai->candidates[2].tier, ai_tier::premium);
  EXPECT_EQ(p.ai->candidates[2].output_per_1k_micros, 15000);
  EXPECT_EQ(p.ai->candidates[0].latency_ms_max, 20000u);
  EXPECT_EQ(p.ai->day_budget_micros, 5000000);
  EXPECT_EQ(p.ai->month_budget_micros, 100000000);
  EXPECT_EQ(p.ai->when_exhausted, budget_action::downgrade);
  ASSERT_NE(p.notify->limit_for("sms"), nullptr);
  EXPECT_EQ(p.notify->limit_for("sms")->max, 100u);
  EXPECT_EQ(p.notify->limit_for("email"), nullptr);
  ASSERT_TRUE(p.notify->quiet);
  EXPECT_EQ(p.notify->quiet->start_minute, 21u * 60);
  EXPECT_EQ(p.notify->quiet->end_minute, 8u * 60);
  EXPECT_EQ(p.notify->quiet->utc_offset_minutes, -300);
  EXPECT_TRUE(p.notify->opt_out.contains("ann@example.com"));
  EXPECT_EQ(p.notify->dedup_window_ms, 600000u);
  // Normalised: the same document re-parses to the same text.
  EXPECT_EQ(parse_ok(json::parse(p.normalized_json)).normalized_json, p.normalized_json);
}

TEST(tenant_policy, an_empty_policy_is_valid_and_routes_nothing) {
  tenant_policy p = parse_ok(json::object());
  EXPECT_FALSE(p.ai);
  EXPECT_FALSE(p.notify);
}

TEST(tenant_policy, unknown_fields_are_rejected_with_their_path_and_the_allowed_ones) {
  EXPECT_EQ(parse_error({{"ia", json::object()}}),
            "policy.\"ia\" is not a policy field (allowed: ai, notify)");
  json j = full_policy();
  j["ai"]["candidates"][1]["prize"] = 1;
  EXPECT_EQ(parse_error(j),
            "ai.candidates[1].\"prize\" is not a policy field (allowed: provider, model, tier, "
            "input_per_1k_micros, output_per_1k_micros, latency_ms_max)");
  j = full_policy();
  j["notify"]["quiet_hours"]["timezone"] = "EST";
  EXPECT_NE(parse_error(j).find("notify.quiet_hours.\"timezone\" is not a policy field"),
            std::string::npos);
}

TEST(tenant_policy, bad_values_name_the_field_and_what_was_given) {
  json j = full_policy();
  j["ai"]["candidates"][0]["tier"] = "gold";
  EXPECT_EQ(parse_error(j),
            "ai.candidates[0].tier must be basic, standard or premium; got \"gold\"");

  j = full_policy();
  j["ai"]["candidates"][2]["input_per_1k_micros"] = -5;
  EXPECT_EQ(parse_error(j),
            "ai.candidates[2].input_per_1k_micros must be an integer from 0 to 1000000000; got -5");

  j = full_policy();
  j["ai"]["candidates"][1]["output_per_1k_micros"] = 0.5;
  EXPECT_NE(parse_error(j).find("ai.candidates[1].output_per_1k_micros must be an integer"),
            std::string::npos);

  j = full_policy();
  j["notify"]["quiet_hours"]["start"] = "9pm";
  EXPECT_EQ(parse_error(j),
            "notify.quiet_hours.start must be a time \"HH:MM\" from 00:00 to 23:59; got \"9pm\"");
  j["notify"]["quiet_hours"]["start"] = "24:00";
  EXPECT_NE(parse_error(j).find("notify.quiet_hours.start must be a time"), std::string::npos);
  j["notify"]["quiet_hours"]["start"] = "08:00";
  EXPECT_NE(parse_error(j).find("the same time"), std::string::npos);

  j = full_policy();
  j["ai"]["budget"]["when_exhausted"] = "panic";
  EXPECT_EQ(parse_error(j),
            "ai.budget.when_exhausted must be \"downgrade\" or \"reject\"; got \"panic\"");

  j = full_policy();
  j["ai"]["candidates"][0].erase("model");
  EXPECT_EQ(parse_error(j), "ai.candidates[0].model is missing");

  j = full_policy();
  j["ai"]["candidates"] = json::array();
  EXPECT_NE(parse_error(j).find("ai.candidates must be an array of 1 to 16"), std::string::npos);

  j = full_policy();
  j["ai"]["candidates"].push_back(j["ai"]["candidates"][1]);
  EXPECT_EQ(parse_error(j), "ai.candidates[3] repeats provider openai with model gpt-4o-mini");

  j = full_policy();
  j["notify"]["rate_limits"].push_back({{"channel", "sms"}, {"max", 5}, {"per_ms", 1000}});
  EXPECT_NE(parse_error(j).find("notify.rate_limits[1] limits channel sms a second time"),
            std::string::npos);

  j = full_policy();
  j["notify"]["rate_limits"][0]["max"] = 0;
  EXPECT_NE(parse_error(j).find("notify.rate_limits[0].max must be an integer from 1"),
            std::string::npos);
}

TEST(tenant_policy, malformed_json_duplicate_keys_and_oversize_documents_are_rejected) {
  auto p = parse_tenant_policy(R"({"ai": )");
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().reason.find("policy is not valid JSON"), std::string::npos);
  p = parse_tenant_policy(R"({"notify": {"dedup_window_ms": 1, "dedup_window_ms": 2}})");
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().reason, "policy has a duplicate key 'dedup_window_ms'");
  p = parse_tenant_policy("[1]");
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().reason, "policy must be an object; got [1]");
  json big = {{"notify", {{"opt_out", json::array()}}}};
  for (int i = 0; i < 30000; ++i) big["notify"]["opt_out"].push_back(fmt::format("+1555{:07}", i));
  p = parse_tenant_policy(big.dump());
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, rejection_code::payload_too_large);
}

// --------------------------------------------------------------------------------- pricing

TEST(tenant_policy, prices_round_up_to_the_micro_dollar_exactly) {
  EXPECT_EQ(price_micros(0, 600), 0);
  EXPECT_EQ(price_micros(1000, 600), 600);
  EXPECT_EQ(price_micros(1001, 600), 601);  // 600.6 -> 601
  EXPECT_EQ(price_micros(1, 150), 1);       // 0.15 -> 1
  EXPECT_EQ(price_micros(1, 0), 0);
  EXPECT_EQ(price_micros(4'000'000'000ull, 1'000'000'000), 4'000'000'000'000'000);
  ai_candidate c;
  c.input_per_1k_micros = 3000;
  c.output_per_1k_micros = 15000;
  // 1234 in: 3702; 567 out: 8505.
  EXPECT_EQ(ai_cost_micros(c, 1234, 567), 3702 + 8505);
}

TEST(tenant_policy, token_estimate_uses_prompt_and_system_bytes_and_max_tokens) {
  ai_policy p;
  p.estimate_output_tokens = 400;
  ai_estimate e = estimate_ai_tokens(p, R"({"prompt":"12345678"})");
  EXPECT_EQ(e.input_tokens, 2u);
  EXPECT_EQ(e.output_tokens, 400u);
  e = estimate_ai_tokens(p, R"({"prompt":"123456789","system":"ab","max_tokens":50})");
  EXPECT_EQ(e.input_tokens, 3u);  // ceil(11 / 4)
  EXPECT_EQ(e.output_tokens, 50u);
  e = estimate_ai_tokens(p, R"({"prompt":"x","max_tokens":"lots"})");
  EXPECT_EQ(e.output_tokens, 400u) << "a max_tokens that is not a positive integer is ignored";
}

// --------------------------------------------------------------------------------- routing

ai_policy routing_policy() { return *parse_ok(full_policy()).ai; }

TEST(tenant_policy, routing_picks_the_cheapest_candidate_meeting_the_tier) {
  const ai_policy p = routing_policy();
  const ai_estimate est{100, 400};
  ai_route r = route_ai(p, ai_tier::basic, est, {}, {});
  ASSERT_TRUE(r.candidate);
  EXPECT_EQ(p.candidates[*r.candidate].name(), "local/llama3");
  EXPECT_EQ(r.reason, "cheapest of 3 candidates meeting basic");
  EXPECT_EQ(r.estimated_cost_micros, 0);

  r = route_ai(p, ai_tier::standard, est, {}, {});
  ASSERT_TRUE(r.candidate);
  EXPECT_EQ(p.candidates[*r.candidate].name(), "openai/gpt-4o-mini");
  EXPECT_EQ(r.reason, "cheapest of 2 candidates meeting standard");
  EXPECT_EQ(r.candidates_considered, 2u);
  EXPECT_EQ(r.estimated_cost_micros, 15 + 240);
  EXPECT_EQ(r.tier_chosen, ai_tier::standard);

  r = route_ai(p, ai_tier::premium, est, {}, {});
  ASSERT_TRUE(r.candidate);
  EXPECT_EQ(p.candidates[*r.candidate].provider, "anthropic");
}

TEST(tenant_policy, equal_costs_go_to_the_candidate_listed_first) {
  ai_policy p = routing_policy();
  p.candidates[2].tier = ai_tier::standard;
  p.candidates[2].input_per_1k_micros = 150;
  p.candidates[2].output_per_1k_micros = 600;
  std::swap(p.candidates[1], p.candidates[2]);
  ai_route r = route_ai(p, ai_tier::standard, {100, 400}, {}, {});
  ASSERT_TRUE(r.candidate);
  EXPECT_EQ(*r.candidate, 1u);
  EXPECT_EQ(p.candidates[1].provider, "anthropic");
}

TEST(tenant_policy, candidates_over_the_remaining_budget_are_skipped) {
  ai_policy p = routing_policy();
  p.candidates[1].tier = ai_tier::premium;  // openai and anthropic both premium
  // Remaining today: 5,000,000 - 4,999,000 = 1,000. openai costs 255, anthropic 6,300.
  ai_route r = route_ai(p, ai_tier::premium, {100, 400}, {4'999'000, 0}, {});
  ASSERT_TRUE(r.candidate);
  EXPECT_EQ(p.candidates[*r.candidate].provider, "openai");
  EXPECT_EQ(r.reason,
            "cheapest of 2 candidates meeting premium (1 over the remaining budget: day spent "
            "4999000 of 5000000 micro-USD)");
  // The month may be the tighter one: 500 left, openai's 750 does not fit.
  r = route_ai(p, ai_tier::premium, {1000, 1000}, {0, 99'999'500}, {});
  ASSERT_TRUE(r.candidate);
  EXPECT_EQ(p.candidates[*r.candidate].provider, "local");
  EXPECT_NE(r.reason.find("month spent 99999500 of 100000000 micro-USD"), std::string::npos)
      << r.reason;
}

TEST(tenant_policy, an_exhausted_budget_downgrades_or_rejects_as_the_policy_says) {
  ai_policy p = routing_policy();
  const ai_spend spent{4'999'900, 10'000'000};  // 100 left today
  ai_route r = route_ai(p, ai_tier::standard, {100, 400}, spent, {});
  ASSERT_TRUE(r.candidate) << r.reason;
  EXPECT_EQ(p.candidates[*r.candidate].name(), "local/llama3");
  EXPECT_EQ(r.tier_chosen, ai_tier::basic);
  EXPECT_FALSE(r.budget_exhausted);
  EXPECT_EQ(r.reason,
            "downgraded from standard to basic: budget (day spent 4999900 of 5000000 micro-USD); "
            "cheapest of 1 candidate below standard");

  p.when_exhausted = budget_action::reject;
  r = route_ai(p, ai_tier::standard, {100, 400}, spent, {});
  EXPECT_FALSE(r.candidate);
  EXPECT_TRUE(r.budget_exhausted);
  EXPECT_EQ(r.reason, "AI budget exhausted: day spent 4999900 of 5000000 micro-USD");

  // Downgrade with no cheaper tier to go to is a rejection too.
  p.when_exhausted = budget_action::downgrade;
  const std::vector<std::string> local{"local/llama3"};
  r = route_ai(p, ai_tier::basic, {100, 400}, {}, local);
  ASSERT_TRUE(r.candidate) << "tried local: the next one meeting basic is openai";
  r = route_ai(p, ai_tier::standard, {100, 400}, {5'000'000, 0}, local);
  EXPECT_FALSE(r.candidate);
  EXPECT_EQ(r.reason, "AI budget exhausted: day spent 5000000 of 5000000 micro-USD");

  // The month is named when it is the binding budget.
  p.when_exhausted = budget_action::reject;
  r = route_ai(p, ai_tier::premium, {100, 400}, {0, 99'999'000}, {});
  EXPECT_EQ(r.reason, "AI budget exhausted: month spent 99999000 of 100000000 micro-USD");
}

TEST(tenant_policy, failover_goes_to_the_next_cheapest_untried_candidate) {
  const ai_policy p = routing_policy();
  std::vector<std::string> tried{"local/llama3"};
  ai_route r = route_ai(p, ai_tier::basic, {100, 400}, {}, tried);
  ASSERT_TRUE(r.candidate);
  EXPECT_EQ(p.candidates[*r.candidate].name(), "openai/gpt-4o-mini");
  EXPECT_EQ(r.candidates_considered, 2u);
  tried.push_back("openai/gpt-4o-mini");
  r = route_ai(p, ai_tier::basic, {100, 400}, {}, tried);
  ASSERT_TRUE(r.candidate);
  EXPECT_EQ(p.candidates[*r.candidate].provider, "anthropic");
  tried.push_back("anthropic/claude-3-5-sonnet-latest");
  r = route_ai(p, ai_tier::basic, {100, 400}, {}, tried);
  EXPECT_FALSE(r.candidate);
  EXPECT_FALSE(r.budget_exhausted);
  EXPECT_EQ(r.reason, "no untried AI candidate meets tier basic");
}

TEST(tenant_policy, utc_days_and_months_name_the_spend_counters) {
  EXPECT_EQ(utc_day(t0), "2023-11-14");
  EXPECT_EQ(utc_month(t0), "2023-11");
  EXPECT_EQ(utc_timestamp(t0 + 123), "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(utc_day(t0 + 2 * hour_ms), "2023-11-15");  // past midnight UTC
  EXPECT_EQ(utc_day(0), "1970-01-01");
}

// --------------------------------------------------------------------------- notifications

TEST(tenant_policy, recipients_compare_without_spaces_dashes_or_case) {
  EXPECT_EQ(normalize_recipient(" +1 555-0100 "), "+15550100");
  EXPECT_EQ(normalize_recipient("(555) 010-0"), "5550100");
  EXPECT_EQ(normalize_recipient("Ann@Example.com "), "ann@example.com");
  EXPECT_EQ(normalize_recipient("#sales"), "#sales");
  EXPECT_EQ(notification_hash("sms", "+1 555 0100", "", "hi"),
            notification_hash("sms", "+15550100", "", "hi"));
  EXPECT_NE(notification_hash("sms", "+15550100", "", "hi"),
            notification_hash("whatsapp", "+15550100", "", "hi"));
  // Length prefixes: moving text between fields changes the hash.
  EXPECT_NE(notification_hash("email", "a@b.c", "ab", "c"),
            notification_hash("email", "a@b.c", "a", "bc"));
}

// The recipient is part of the content: the same text to two people is not a duplicate.
TEST(tenant_policy, the_same_message_to_another_recipient_hashes_differently) {
  EXPECT_NE(notification_hash("email", "a@example.com", "", "hi"),
            notification_hash("email", "b@example.com", "", "hi"));
  EXPECT_NE(notification_hash("sms", "+15550101", "", "hi"),
            notification_hash("sms", "+15550102", "", "hi"));
  const std::string long_a(40, 'a'), long_b(40, 'b');  // beyond the small-string buffer
  EXPECT_NE(notification_hash("email", long_a + "@example.com", "", "hi"),
            notification_hash("email", long_b + "@example.com", "", "hi"));
}

TEST(tenant_policy, quiet_hours_wrap_midnight_in_local_time) {
  quiet_hours q;
  q.start_minute = 21 * 60;
  q.end_minute = 8 * 60;
  q.utc_offset_minutes = -300;  // UTC-5
  q.channels = {"sms"};
  // t0 is 22:13:20 UTC = 17:13:20 local: not quiet.
  EXPECT_FALSE(quiet_hours_until(q, "sms", t0));
  // 02:13:20 UTC = 21:13:20 local: quiet until 08:00 local = 13:00 UTC.
  const int64_t late = t0 + 4 * hour_ms;
  auto until = quiet_hours_until(q, "sms", late);
  ASSERT_TRUE(until);
  EXPECT_EQ(utc_timestamp(*until), "2023-11-15T13:00:00.000Z");
  // After local midnight, still quiet, same end.
  until = quiet_hours_until(q, "sms", t0 + 8 * hour_ms);
  ASSERT_TRUE(until);
  EXPECT_EQ(utc_timestamp(*until), "2023-11-15T13:00:00.000Z");
  // The end itself is no longer quiet: [start, end).
  const int64_t end = *until;
  EXPECT_FALSE(quiet_hours_until(q, "sms", end));
  EXPECT_TRUE(quiet_hours_until(q, "sms", end - 1));
  // Channels not listed are never quiet.
  EXPECT_FALSE(quiet_hours_until(q, "email", late));
  // A window that does not wrap: 12:00-13:00 UTC.
  quiet_hours noon;
  noon.start_minute = 12 * 60;
  noon.end_minute = 13 * 60;
  const int64_t day_start = t0 - (22 * hour_ms + 13 * minute_ms + 20'000);
  EXPECT_FALSE(quiet_hours_until(noon, "slack", day_start + 12 * hour_ms - 1));
  until = quiet_hours_until(noon, "slack", day_start + 12 * hour_ms + 30 * minute_ms);
  ASSERT_TRUE(until) << "no channels listed: every channel";
  EXPECT_EQ(*until, day_start + 13 * hour_ms);
}

TEST(tenant_policy, rate_windows_are_fixed_and_aligned) {
  EXPECT_EQ(window_start_ms(t0, 3'600'000), t0 - t0 % 3'600'000);
  EXPECT_EQ(window_start_ms(7'200'000, 3'600'000), 7'200'000);
  EXPECT_EQ(window_start_ms(7'199'999, 3'600'000), 3'600'000);
  EXPECT_EQ(window_start_ms(-1, 1000), -1000);
}

notify_policy notify_example() { return *parse_ok(full_policy()).notify; }

const int64_t noon_utc =
    t0 - (22 * hour_ms + 13 * minute_ms + 20'000) + 17 * hour_ms;  // 12:00 local

TEST(tenant_policy, opted_out_recipients_are_suppressed_before_anything_else) {
  const notify_policy p = notify_example();
  auto d = decide_notification(p, {"sms", "+1 555 0100", "", "hi", "e/s/"}, noon_utc, std::nullopt,
                               std::nullopt);
  EXPECT_EQ(d.v, notify_decision::verdict::suppress);
  EXPECT_EQ(d.reason, "opted_out");
  EXPECT_EQ(json::parse(d.output_json), json::parse(R"({"sent":false,"suppressed":"opted_out"})"));
  d = decide_notification(p, {"email", "ANN@example.com", "s", "b", "e/s/"}, noon_utc, std::nullopt,
                          std::nullopt);
  EXPECT_EQ(d.reason, "opted_out");
}

TEST(tenant_policy, duplicates_within_the_window_are_suppressed_but_retries_are_not) {
  const notify_policy p = notify_example();
  const dedup_entry earlier{noon_utc - 60'000, "lead-1/send/1"};
  const notification n{"email", "bob@example.com", "Hi", "Your car", "lead-2/send/"};
  auto d = decide_notification(p, n, noon_utc, earlier, std::nullopt);
  EXPECT_EQ(d.v, notify_decision::verdict::suppress);
  EXPECT_EQ(d.reason, "duplicate of lead-1/send/1 sent at " + utc_timestamp(noon_utc - 60'000));
  EXPECT_EQ(json::parse(d.output_json)["original"], "lead-1/send/1");
  // Outside the 10-minute window: sent.
  d = decide_notification(p, n, earlier.admitted_ms + 600'000, earlier, std::nullopt);
  EXPECT_EQ(d.v, notify_decision::verdict::admit);
  // The same step's earlier attempt is its retry, not a duplicate.
  d = decide_notification(p, {"email", "bob@example.com", "Hi", "Your car", "lead-1/send/"},
                          noon_utc, earlier, std::nullopt);
  EXPECT_EQ(d.v, notify_decision::verdict::admit);
}

TEST(tenant_policy, quiet_hours_defer_and_rate_limits_wait_for_the_next_window) {
  const notify_policy p = notify_example();
  const int64_t night = noon_utc + 10 * hour_ms;  // 22:00 local
  auto d = decide_notification(p, {"sms", "+15550199", "", "hi", "e/s/"}, night, std::nullopt,
                               std::nullopt);
  EXPECT_EQ(d.v, notify_decision::verdict::defer);
  EXPECT_EQ(d.reason, "quiet_hours");
  EXPECT_EQ(d.until_ms, noon_utc + 20 * hour_ms);  // 08:00 local next day
  // Email is not in the quiet channels and has no limit.
  d = decide_notification(p, {"email", "x@y.z", "", "hi", "e/s/"}, night, std::nullopt,
                          std::nullopt);
  EXPECT_EQ(d.v, notify_decision::verdict::admit);
  EXPECT_EQ(d.window_start_ms, 0);

  const int64_t start = window_start_ms(noon_utc, 3'600'000);
  d = decide_notification(p, {"sms", "+15550199", "", "hi", "e/s/"}, noon_utc, std::nullopt,
                          window_count{start, 99});
  EXPECT_EQ(d.v, notify_decision::verdict::admit);
  EXPECT_EQ(d.window_start_ms, start);
  d = decide_notification(p, {"sms", "+15550199", "", "hi", "e/s/"}, noon_utc, std::nullopt,
                          window_count{start, 100});
  EXPECT_EQ(d.v, notify_decision::verdict::defer);
  EXPECT_EQ(d.reason, "rate_limit");
  EXPECT_EQ(d.until_ms, start + 3'600'000);
  // A count from an older window does not hold back the new one.
  d = decide_notification(p, {"sms", "+15550199", "", "hi", "e/s/"}, noon_utc, std::nullopt,
                          window_count{start - 3'600'000, 100});
  EXPECT_EQ(d.v, notify_decision::verdict::admit);
}

}  // namespace
}  // namespace auterity
