#pragma once
// Tenant policy: which AI model a step may use and what it may cost, and when a notification
// may go out. Parsing and validation of the JSON a tenant publishes (format: POLICY.md), and
// the pure decisions the orchestrator's decider makes with it: no IO, no clock — time and the
// tenant's counters are arguments, so the same inputs always give the same decision.

#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "engine/record.h"
#include "processors/rejection.h"

namespace auterity {

namespace policy_limits {
inline constexpr size_t policy_bytes_max = 256 * 1024;  // the published policy JSON
inline constexpr size_t ai_candidates_max = 16;         // ai.candidates entries
inline constexpr size_t rate_limits_max = 64;           // notify.rate_limits entries
inline constexpr size_t opt_out_entries_max = 10'000;   // notify.opt_out entries
inline constexpr size_t name_bytes_max = 128;           // provider, model, channel, recipient
inline constexpr int64_t price_per_1k_micros_max = 1'000'000'000;    // $1000 per 1k tokens
inline constexpr int64_t budget_micros_max = 1'000'000'000'000'000;  // $1e9
inline constexpr uint32_t tokens_max = 10'000'000;  // estimate_output_tokens, max_tokens used
inline constexpr uint32_t rate_limit_max_max = 1'000'000;   // rate_limits[].max
inline constexpr int32_t utc_offset_minutes_max = 14 * 60;  // quiet_hours.utc_offset_minutes
}  // namespace policy_limits

// How long the tenant counters of the policy live (POLICY.md, Retention). The appliers prune
// them, driven only by the events they apply (never by the clock), so a replay prunes the same.
namespace retention {
// AI spend of a UTC day is kept this many days before the day of a later usage (a day's spend
// is read only on that day: the rest is for operators and audits).
inline constexpr int spend_days_kept = 62;
// AI spend of a UTC month, kept this many months before the month of a later usage.
inline constexpr int spend_months_kept = 24;
// Spend keys deleted at most per applied AiUsageRecorded (older ones go with the next one).
inline constexpr size_t spend_keys_pruned_per_event_max = 64;
// Expired dedup entries deleted at most per applied NotificationAdmitted, oldest first: each
// admission adds at most one, so the backlog shrinks by at least this minus one each time.
inline constexpr size_t dedup_pruned_per_admission_max = 8;
// Dedup entries a tenant keeps at most (all are held in memory while the tenant is active);
// beyond it the oldest is forgotten even inside the window.
inline constexpr size_t dedup_entries_per_tenant_max = 20'000;
}  // namespace retention

// ------------------------------------------------------------------------------ the policy

enum class ai_tier : uint8_t { basic = 0, standard = 1, premium = 2 };
std::optional<ai_tier> parse_ai_tier(std::string_view name);
std::string_view ai_tier_name(ai_tier t);

struct ai_candidate {
  std::string provider;  // a provider name the AI worker knows ("openai", "anthropic", "local")
  std::string model;
  ai_tier tier = ai_tier::standard;
  int64_t input_per_1k_micros = 0;  // micro-USD per 1,000 input tokens
  int64_t output_per_1k_micros = 0;
  uint64_t latency_ms_max = 0;  // 0: none; else the attempt's deadline is at most this
  std::string name() const { return provider + "/" + model; }
};

enum class budget_action : uint8_t { downgrade = 0, reject = 1 };

struct ai_policy {
  std::vector<ai_candidate> candidates;  // in the order published: ties go to the earlier
  int64_t day_budget_micros = 0;         // 0: no day budget
  int64_t month_budget_micros = 0;       // 0: no month budget
  budget_action when_exhausted = budget_action::downgrade;
  uint32_t estimate_output_tokens = 400;
};

struct quiet_hours {
  uint32_t start_minute = 0;  // local minute of the day, [start, end) is quiet
  uint32_t end_minute = 0;    // may be before start: the window wraps midnight
  int32_t utc_offset_minutes = 0;
  std::vector<std::string> channels;  // empty: every channel
  bool applies_to(std::string_view channel) const;
};

struct rate_limit {
  std::string channel;
  uint32_t max = 0;     // notifications admitted per window
  uint64_t per_ms = 0;  // window length: fixed windows [k*per_ms, (k+1)*per_ms)
};

struct notify_policy {
  std::vector<rate_limit> rate_limits;  // at most one per channel
  std::optional<quiet_hours> quiet;
  std::unordered_set<std::string> opt_out;  // normalize_recipient() of each entry
  uint64_t dedup_window_ms = 0;             // 0: no duplicate suppression
  const rate_limit* limit_for(std::string_view channel) const;
};

struct tenant_policy {
  std::optional<ai_policy> ai;          // absent: AI steps go to the worker's default provider
  std::optional<notify_policy> notify;  // absent: notifications go out unchecked
  std::string normalized_json;
};

struct policy_error {
  rejection_code code;  // invalid_policy or payload_too_large
  std::string reason;   // names the field: "ai.candidates[1].tier must be ..."
};

// Parses and validates a published policy. Unknown fields, duplicate keys, wrong types and
// out-of-range values are rejected with a reason naming the field. Never throws.
std::expected<tenant_policy, policy_error> parse_tenant_policy(std::string_view json);

// ------------------------------------------------------------------------------- AI routing

// ceil(tokens * per_1k / 1000), in micro-USD: exact integer arithmetic.
int64_t price_micros(uint64_t tokens, int64_t per_1k_micros);
int64_t ai_cost_micros(const ai_candidate& c, uint64_t input_tokens, uint64_t output_tokens);

struct ai_estimate {
  uint32_t input_tokens = 0;   // ceil((prompt + system bytes) / 4)
  uint32_t output_tokens = 0;  // input.max_tokens if a positive integer, else the policy's
};
ai_estimate estimate_ai_tokens(const ai_policy& p, std::string_view rendered_input_json);

struct ai_spend {
  int64_t day_spent_micros = 0;
  int64_t month_spent_micros = 0;
};

// A tenant's AI spend as its partition's applied state holds it: the latest UTC day and month
// with spend and their totals (the U and V keys of execution_state.h), and the budgets of the
// policy in force. What /metrics exports (orchestrator::ai_spend_top).
struct tenant_ai_spend {
  std::string day;  // "YYYY-MM-DD"; empty: no spend stored
  int64_t day_spent_micros = 0;
  std::string month;  // "YYYY-MM"; empty: no spend stored
  int64_t month_spent_micros = 0;
  int64_t day_budget_micros = 0;  // 0: none (ai_policy)
  int64_t month_budget_micros = 0;
  bool operator==(const tenant_ai_spend&) const = default;
};

struct ai_route {
  std::optional<size_t> candidate;  // index into ai_policy::candidates; none: see reason
  ai_tier tier_chosen = ai_tier::standard;
  std::string reason;             // why this candidate, or why none
  bool budget_exhausted = false;  // none: the budget (not the candidate list) stopped it
  int64_t estimated_cost_micros = 0;
  uint32_t candidates_considered = 0;  // untried candidates meeting the tier
};

// Picks the cheapest untried candidate meeting `tier` whose estimated cost fits the remaining
// budget (min of day and month remaining; a free call always fits); ties by list order. None
// fits: when_exhausted downgrade takes the cheapest fitting candidate of a lower tier, reject
// (or no such candidate) gives none with budget_exhausted and the reason "AI budget exhausted:
// day spent X of Y micro-USD". `tried` holds candidate names ("provider/model") to skip.
ai_route route_ai(const ai_policy& p, ai_tier tier, const ai_estimate& estimate,
                  const ai_spend& spend, std::span<const std::string> tried);

// "YYYY-MM-DD" and "YYYY-MM" of a time, in UTC: the spend counters' day and month.
std::string utc_day(int64_t ms);
std::string utc_month(int64_t ms);
// "YYYY-MM-DDTHH:MM:SS.mmmZ".
std::string utc_timestamp(int64_t ms);

// ---------------------------------------------------------------------------- notifications

// Trimmed; a phone number ('+' or digits, with spaces, dashes, dots or parentheses) loses its
// separators; an e-mail address is lower-cased. Opt-out and duplicate checks compare this.
std::string normalize_recipient(std::string_view to);

// SHA-256 over channel, normalised recipient, subject and body (each length-prefixed).
hash256 notification_hash(std::string_view channel, std::string_view to, std::string_view subject,
                          std::string_view body);

// Start of the fixed rate-limit window holding `now_ms`.
int64_t window_start_ms(int64_t now_ms, uint64_t per_ms);

// If `now_ms` is inside the quiet hours of `channel`: when they end (ms since the epoch).
std::optional<int64_t> quiet_hours_until(const quiet_hours& q, std::string_view channel,
                                         int64_t now_ms);

struct dedup_entry {
  int64_t admitted_ms = 0;
  std::string command_id;
};
struct window_count {
  int64_t window_start_ms = 0;
  uint32_t count = 0;
};

struct notification {
  std::string_view channel, to, subject, body;
  // "<execution>/<step>/": a duplicate of an earlier attempt of the same step is its retry,
  // not a duplicate.
  std::string_view own_command_prefix;
};

struct notify_decision {
  enum class verdict : uint8_t { admit, suppress, defer };
  verdict v = verdict::admit;
  std::string reason;           // suppress: "opted_out" / "duplicate of ..."; defer: quiet_hours...
  std::string output_json;      // suppress: the step's output
  int64_t until_ms = 0;         // defer
  int64_t window_start_ms = 0;  // admit: the window it counts in (0: channel has no limit)
};

// Opt-out, then duplicate, then quiet hours, then rate limit (POLICY.md). `previous` is what
// the tenant's state holds for this content hash, `window` for the channel's rate limit.
notify_decision decide_notification(const notify_policy& p, const notification& n, int64_t now_ms,
                                    const std::optional<dedup_entry>& previous,
                                    const std::optional<window_count>& window);

}  // namespace auterity
