#include "processors/tenant_policy.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "processors/limits.h"
#include "processors/strict_json.h"

namespace auterity {

using json = nlohmann::json;

std::optional<ai_tier> parse_ai_tier(std::string_view name) {
  if (name == "basic") return ai_tier::basic;
  if (name == "standard") return ai_tier::standard;
  if (name == "premium") return ai_tier::premium;
  return std::nullopt;
}

std::string_view ai_tier_name(ai_tier t) {
  switch (t) {
    case ai_tier::basic:
      return "basic";
    case ai_tier::standard:
      return "standard";
    case ai_tier::premium:
      return "premium";
  }
  return "unknown";
}

bool quiet_hours::applies_to(std::string_view channel) const {
  return channels.empty() || std::ranges::find(channels, channel) != channels.end();
}

const rate_limit* notify_policy::limit_for(std::string_view channel) const {
  for (const rate_limit& r : rate_limits) {
    if (r.channel == channel) return &r;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------- parsing

namespace {

constexpr int json_depth_max = 8;      // a policy needs 4 levels
constexpr size_t echo_bytes_max = 64;  // user text quoted in a reason

std::string echo(const json& v) {
  return echo_text(v.dump(-1, ' ', false, json::error_handler_t::replace), echo_bytes_max);
}

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

// The error of a validation step; a reason that names the field.
using check = std::expected<void, std::string>;

std::unexpected<std::string> bad(std::string reason) { return std::unexpected(std::move(reason)); }

// Duplicate keys, deep nesting and syntax errors, as for definitions.
std::expected<json, std::string> parse_strict(std::string_view text) {
  auto doc = parse_strict_json(text, json_depth_max);
  if (!doc) return std::unexpected("policy " + doc.error());
  return doc;
}

// Walks one object: every key must be allowed; required ones must be present.
check only_keys(const json& v, const std::string& where, std::initializer_list<const char*> keys) {
  if (!v.is_object()) return bad(fmt::format("{} must be an object; got {}", where, echo(v)));
  for (const auto& [k, _] : v.items()) {
    if (std::ranges::none_of(keys, [&](const char* a) { return k == a; })) {
      std::string allowed;
      for (const char* a : keys) allowed += (allowed.empty() ? "" : ", ") + std::string(a);
      return bad(fmt::format("{}.{} is not a policy field (allowed: {})",
                             where.empty() ? "policy" : where, echo(json(k)), allowed));
    }
  }
  return {};
}

std::string field(const std::string& where, const char* key) {
  return where.empty() ? key : where + "." + key;
}

std::expected<int64_t, std::string> integer(const json& v, const std::string& name, int64_t lo,
                                            int64_t hi) {
  bool ok = v.is_number_integer();
  int64_t n = 0;
  if (ok && v.is_number_unsigned()) {
    ok = v.get<uint64_t>() <= static_cast<uint64_t>(hi);
    n = ok ? static_cast<int64_t>(v.get<uint64_t>()) : 0;
  } else if (ok) {
    n = v.get<int64_t>();
  }
  if (!ok || n < lo || n > hi) {
    return bad(fmt::format("{} must be an integer from {} to {}; got {}", name, lo, hi, echo(v)));
  }
  return n;
}

std::expected<std::string, std::string> text(const json& v, const std::string& name,
                                             bool name_chars) {
  if (!v.is_string()) return bad(fmt::format("{} must be a string; got {}", name, echo(v)));
  const std::string& s = v.get_ref<const std::string&>();
  if (s.empty() || s.size() > policy_limits::name_bytes_max) {
    return bad(fmt::format("{} must be 1 to {} bytes; got {}", name, policy_limits::name_bytes_max,
                           echo(v)));
  }
  if (name_chars && !std::ranges::all_of(s, name_char)) {
    return bad(fmt::format("{} must be made of A-Z a-z 0-9 _ . -; got {}", name, echo(v)));
  }
  if (!name_chars && std::ranges::any_of(s, [](char c) {
        return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
      })) {
    return bad(fmt::format("{} must not contain control characters; got {}", name, echo(v)));
  }
  return s;
}

// "HH:MM" -> minute of the day.
std::expected<uint32_t, std::string> clock_time(const json& v, const std::string& name) {
  const bool shape = v.is_string() && v.get_ref<const std::string&>().size() == 5;
  const std::string s = shape ? v.get<std::string>() : std::string();
  auto digit = [&](size_t i) { return s[i] >= '0' && s[i] <= '9'; };
  if (shape && digit(0) && digit(1) && s[2] == ':' && digit(3) && digit(4)) {
    const uint32_t h = (s[0] - '0') * 10 + (s[1] - '0');
    const uint32_t m = (s[3] - '0') * 10 + (s[4] - '0');
    if (h < 24 && m < 60) return h * 60 + m;
  }
  return bad(fmt::format("{} must be a time \"HH:MM\" from 00:00 to 23:59; got {}", name, echo(v)));
}

// Assigns the value of a std::expected, or returns its error from the enclosing function.
#define TRY_ASSIGN(target, expr)                               \
  do {                                                         \
    auto try_value = (expr);                                   \
    if (!try_value) return std::unexpected(try_value.error()); \
    target = std::move(*try_value);                            \
  } while (0)

check parse_candidate(const json& v, const std::string& where, ai_candidate& c) {
  if (auto k = only_keys(v, where,
                         {"provider", "model", "tier", "input_per_1k_micros",
                          "output_per_1k_micros", "latency_ms_max"});
      !k) {
    return k;
  }
  for (const char* required :
       {"provider", "model", "tier", "input_per_1k_micros", "output_per_1k_micros"}) {
    if (!v.contains(required)) return bad(fmt::format("{} is missing", field(where, required)));
  }
  TRY_ASSIGN(c.provider, text(v["provider"], field(where, "provider"), true));
  TRY_ASSIGN(c.model, text(v["model"], field(where, "model"), false));
  const json& tier = v["tier"];
  std::optional<ai_tier> t =
      tier.is_string() ? parse_ai_tier(tier.get<std::string>()) : std::nullopt;
  if (!t) {
    return bad(fmt::format("{} must be basic, standard or premium; got {}", field(where, "tier"),
                           echo(tier)));
  }
  c.tier = *t;
  TRY_ASSIGN(c.input_per_1k_micros,
             integer(v["input_per_1k_micros"], field(where, "input_per_1k_micros"), 0,
                     policy_limits::price_per_1k_micros_max));
  TRY_ASSIGN(c.output_per_1k_micros,
             integer(v["output_per_1k_micros"], field(where, "output_per_1k_micros"), 0,
                     policy_limits::price_per_1k_micros_max));
  if (v.contains("latency_ms_max")) {
    auto latency = integer(v["latency_ms_max"], field(where, "latency_ms_max"), 1,
                           static_cast<int64_t>(limits::timer_ms_max));
    if (!latency) return std::unexpected(latency.error());
    c.latency_ms_max = static_cast<uint64_t>(*latency);
  }
  return {};
}

check parse_ai(const json& v, ai_policy& p) {
  if (auto k = only_keys(v, "ai", {"candidates", "budget", "estimate_output_tokens"}); !k) return k;
  if (!v.contains("candidates")) return bad("ai.candidates is missing");
  const json& list = v["candidates"];
  if (!list.is_array() || list.empty() || list.size() > policy_limits::ai_candidates_max) {
    return bad(fmt::format("ai.candidates must be an array of 1 to {} candidates; got {}",
                           policy_limits::ai_candidates_max, echo(list)));
  }
  std::set<std::string> names;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string where = fmt::format("ai.candidates[{}]", i);
    ai_candidate c;
    if (auto r = parse_candidate(list[i], where, c); !r) return r;
    if (!names.insert(c.name()).second) {
      return bad(fmt::format("{} repeats provider {} with model {}", where, c.provider, c.model));
    }
    p.candidates.push_back(std::move(c));
  }
  if (v.contains("budget")) {
    const json& b = v["budget"];
    if (auto k = only_keys(b, "ai.budget", {"day_micros", "month_micros", "when_exhausted"}); !k) {
      return k;
    }
    if (b.contains("day_micros")) {
      TRY_ASSIGN(p.day_budget_micros, integer(b["day_micros"], "ai.budget.day_micros", 1,
                                              policy_limits::budget_micros_max));
    }
    if (b.contains("month_micros")) {
      TRY_ASSIGN(p.month_budget_micros, integer(b["month_micros"], "ai.budget.month_micros", 1,
                                                policy_limits::budget_micros_max));
    }
    if (b.contains("when_exhausted")) {
      const json& w = b["when_exhausted"];
      if (w == "downgrade") {
        p.when_exhausted = budget_action::downgrade;
      } else if (w == "reject") {
        p.when_exhausted = budget_action::reject;
      } else {
        return bad(fmt::format(
            "ai.budget.when_exhausted must be \"downgrade\" or \"reject\"; got {}", echo(w)));
      }
    }
  }
  if (v.contains("estimate_output_tokens")) {
    auto tokens = integer(v["estimate_output_tokens"], "ai.estimate_output_tokens", 0,
                          policy_limits::tokens_max);
    if (!tokens) return std::unexpected(tokens.error());
    p.estimate_output_tokens = static_cast<uint32_t>(*tokens);
  }
  return {};
}

check parse_notify(const json& v, notify_policy& p) {
  if (auto k = only_keys(v, "notify", {"rate_limits", "quiet_hours", "opt_out", "dedup_window_ms"});
      !k) {
    return k;
  }
  if (v.contains("rate_limits")) {
    const json& list = v["rate_limits"];
    if (!list.is_array() || list.size() > policy_limits::rate_limits_max) {
      return bad(fmt::format("notify.rate_limits must be an array of at most {} limits; got {}",
                             policy_limits::rate_limits_max, echo(list)));
    }
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string where = fmt::format("notify.rate_limits[{}]", i);
      if (auto k = only_keys(list[i], where, {"channel", "max", "per_ms"}); !k) return k;
      for (const char* required : {"channel", "max", "per_ms"}) {
        if (!list[i].contains(required)) {
          return bad(fmt::format("{} is missing", field(where, required)));
        }
      }
      rate_limit r;
      TRY_ASSIGN(r.channel, text(list[i]["channel"], field(where, "channel"), true));
      auto max = integer(list[i]["max"], field(where, "max"), 1, policy_limits::rate_limit_max_max);
      if (!max) return std::unexpected(max.error());
      r.max = static_cast<uint32_t>(*max);
      auto per = integer(list[i]["per_ms"], field(where, "per_ms"), 1,
                         static_cast<int64_t>(limits::timer_ms_max));
      if (!per) return std::unexpected(per.error());
      r.per_ms = static_cast<uint64_t>(*per);
      if (p.limit_for(r.channel)) {
        return bad(fmt::format("{} limits channel {} a second time; one limit per channel", where,
                               r.channel));
      }
      p.rate_limits.push_back(std::move(r));
    }
  }
  if (v.contains("quiet_hours")) {
    const json& q = v["quiet_hours"];
    if (auto k =
            only_keys(q, "notify.quiet_hours", {"start", "end", "utc_offset_minutes", "channels"});
        !k) {
      return k;
    }
    for (const char* required : {"start", "end"}) {
      if (!q.contains(required)) {
        return bad(fmt::format("notify.quiet_hours.{} is missing", required));
      }
    }
    quiet_hours h;
    TRY_ASSIGN(h.start_minute, clock_time(q["start"], "notify.quiet_hours.start"));
    TRY_ASSIGN(h.end_minute, clock_time(q["end"], "notify.quiet_hours.end"));
    if (h.start_minute == h.end_minute) {
      return bad("notify.quiet_hours.start and end are the same time: the window would be empty");
    }
    if (q.contains("utc_offset_minutes")) {
      auto off =
          integer(q["utc_offset_minutes"], "notify.quiet_hours.utc_offset_minutes",
                  -policy_limits::utc_offset_minutes_max, policy_limits::utc_offset_minutes_max);
      if (!off) return std::unexpected(off.error());
      h.utc_offset_minutes = static_cast<int32_t>(*off);
    }
    if (q.contains("channels")) {
      const json& list = q["channels"];
      if (!list.is_array() || list.empty()) {
        return bad(fmt::format(
            "notify.quiet_hours.channels must be a non-empty array of channel names; got {}",
            echo(list)));
      }
      for (size_t i = 0; i < list.size(); ++i) {
        std::string c;
        TRY_ASSIGN(c, text(list[i], fmt::format("notify.quiet_hours.channels[{}]", i), true));
        h.channels.push_back(std::move(c));
      }
    }
    p.quiet = std::move(h);
  }
  if (v.contains("opt_out")) {
    const json& list = v["opt_out"];
    if (!list.is_array() || list.size() > policy_limits::opt_out_entries_max) {
      return bad(fmt::format("notify.opt_out must be an array of at most {} recipients; got {}",
                             policy_limits::opt_out_entries_max, echo(list)));
    }
    for (size_t i = 0; i < list.size(); ++i) {
      std::string to;
      TRY_ASSIGN(to, text(list[i], fmt::format("notify.opt_out[{}]", i), false));
      std::string n = normalize_recipient(to);
      if (n.empty()) return bad(fmt::format("notify.opt_out[{}] is blank", i));
      p.opt_out.insert(std::move(n));
    }
  }
  if (v.contains("dedup_window_ms")) {
    auto w = integer(v["dedup_window_ms"], "notify.dedup_window_ms", 0,
                     static_cast<int64_t>(limits::timer_ms_max));
    if (!w) return std::unexpected(w.error());
    p.dedup_window_ms = static_cast<uint64_t>(*w);
  }
  return {};
}

#undef TRY_ASSIGN

}  // namespace

std::expected<tenant_policy, policy_error> parse_tenant_policy(std::string_view text) {
  auto invalid = [](std::string reason) {
    return std::unexpected(policy_error{rejection_code::invalid_policy, std::move(reason)});
  };
  if (text.size() > policy_limits::policy_bytes_max) {
    return std::unexpected(policy_error{rejection_code::payload_too_large,
                                        fmt::format("policy is {} bytes; policy_bytes_max is {}",
                                                    text.size(), policy_limits::policy_bytes_max)});
  }
  auto doc = parse_strict(text);
  if (!doc) return invalid(doc.error());
  if (!doc->is_object())
    return invalid(fmt::format("policy must be an object; got {}", echo(*doc)));
  if (auto k = only_keys(*doc, "", {"ai", "notify"}); !k) return invalid(k.error());
  tenant_policy p;
  if (doc->contains("ai")) {
    ai_policy a;
    if (auto r = parse_ai((*doc)["ai"], a); !r) return invalid(r.error());
    p.ai = std::move(a);
  }
  if (doc->contains("notify")) {
    notify_policy n;
    if (auto r = parse_notify((*doc)["notify"], n); !r) return invalid(r.error());
    p.notify = std::move(n);
  }
  p.normalized_json = doc->dump();
  return p;
}

// --------------------------------------------------------------------------------- routing

int64_t price_micros(uint64_t tokens, int64_t per_1k_micros) {
  // tokens <= 2^32 and prices <= 1e9 (validated): the product fits in 63 bits.
  const uint64_t product = tokens * static_cast<uint64_t>(per_1k_micros);
  return static_cast<int64_t>((product + 999) / 1000);
}

int64_t ai_cost_micros(const ai_candidate& c, uint64_t input_tokens, uint64_t output_tokens) {
  return price_micros(input_tokens, c.input_per_1k_micros) +
         price_micros(output_tokens, c.output_per_1k_micros);
}

ai_estimate estimate_ai_tokens(const ai_policy& p, std::string_view rendered_input_json) {
  ai_estimate e;
  e.output_tokens = p.estimate_output_tokens;
  json in = json::parse(rendered_input_json, nullptr, false);
  if (!in.is_object()) return e;
  uint64_t bytes = 0;
  for (const char* text_field : {"prompt", "system"}) {
    if (auto it = in.find(text_field); it != in.end() && it->is_string()) {
      bytes += it->get_ref<const std::string&>().size();
    }
  }
  e.input_tokens = static_cast<uint32_t>(
      std::min<uint64_t>((bytes + 3) / 4, std::numeric_limits<uint32_t>::max()));
  if (auto it = in.find("max_tokens"); it != in.end() && it->is_number_unsigned()) {
    const uint64_t m = it->get<uint64_t>();
    if (m > 0)
      e.output_tokens = static_cast<uint32_t>(std::min<uint64_t>(m, policy_limits::tokens_max));
  }
  return e;
}

namespace {

struct priced {
  size_t index;
  int64_t cost;
};

// Untried candidates passing `keep`, cheapest first, ties by list order.
template <typename F>
std::vector<priced> cheapest_first(const ai_policy& p, const ai_estimate& est,
                                   std::span<const std::string> tried, F&& keep) {
  std::vector<priced> out;
  for (size_t i = 0; i < p.candidates.size(); ++i) {
    const ai_candidate& c = p.candidates[i];
    if (!keep(c) || std::ranges::find(tried, c.name()) != tried.end()) continue;
    out.push_back({i, ai_cost_micros(c, est.input_tokens, est.output_tokens)});
  }
  std::ranges::stable_sort(out, {}, &priced::cost);
  return out;
}

std::string plural(size_t n, std::string_view word) {
  return fmt::format("{} {}{}", n, word, n == 1 ? "" : "s");
}

}  // namespace

ai_route route_ai(const ai_policy& p, ai_tier tier, const ai_estimate& est, const ai_spend& spend,
                  std::span<const std::string> tried) {
  constexpr int64_t unlimited = std::numeric_limits<int64_t>::max();
  const int64_t day_left =
      p.day_budget_micros ? p.day_budget_micros - spend.day_spent_micros : unlimited;
  const int64_t month_left =
      p.month_budget_micros ? p.month_budget_micros - spend.month_spent_micros : unlimited;
  const int64_t left = std::min(day_left, month_left);
  // A free call spends nothing, so it fits even an overspent budget.
  auto fits = [&](const priced& c) { return c.cost == 0 || c.cost <= left; };
  const std::string binding =
      day_left <= month_left
          ? fmt::format("day spent {} of {} micro-USD", spend.day_spent_micros, p.day_budget_micros)
          : fmt::format("month spent {} of {} micro-USD", spend.month_spent_micros,
                        p.month_budget_micros);

  ai_route r;
  const std::string_view wanted = ai_tier_name(tier);
  auto meeting =
      cheapest_first(p, est, tried, [&](const ai_candidate& c) { return c.tier >= tier; });
  r.candidates_considered = static_cast<uint32_t>(meeting.size());
  auto choose = [&](const priced& c) {
    r.candidate = c.index;
    r.tier_chosen = p.candidates[c.index].tier;
    r.estimated_cost_micros = c.cost;
  };
  if (meeting.empty()) {
    r.reason = tried.empty() ? fmt::format("no AI candidate meets tier {}", wanted)
                             : fmt::format("no untried AI candidate meets tier {}", wanted);
    return r;
  }
  const size_t over = std::ranges::count_if(meeting, [&](const priced& c) { return !fits(c); });
  if (auto it = std::ranges::find_if(meeting, fits); it != meeting.end()) {
    choose(*it);
    r.reason =
        fmt::format("cheapest of {} meeting {}", plural(meeting.size(), "candidate"), wanted);
    if (over > 0) {
      r.reason += fmt::format(" ({} over the remaining budget: {})", over, binding);
    }
    return r;
  }
  r.budget_exhausted = true;
  if (p.when_exhausted == budget_action::downgrade) {
    auto lower =
        cheapest_first(p, est, tried, [&](const ai_candidate& c) { return c.tier < tier; });
    if (auto it = std::ranges::find_if(lower, fits); it != lower.end()) {
      choose(*it);
      r.budget_exhausted = false;
      r.reason = fmt::format("downgraded from {} to {}: budget ({}); cheapest of {} below {}",
                             wanted, ai_tier_name(r.tier_chosen), binding,
                             plural(lower.size(), "candidate"), wanted);
      return r;
    }
  }
  r.reason = "AI budget exhausted: " + binding;
  return r;
}

namespace {
std::chrono::sys_days day_of(int64_t ms) {
  return std::chrono::floor<std::chrono::days>(
      std::chrono::sys_time<std::chrono::milliseconds>(std::chrono::milliseconds(ms)));
}
}  // namespace

std::string utc_day(int64_t ms) {
  const std::chrono::year_month_day d{day_of(ms)};
  return fmt::format("{:04}-{:02}-{:02}", static_cast<int>(d.year()),
                     static_cast<unsigned>(d.month()), static_cast<unsigned>(d.day()));
}

std::string utc_month(int64_t ms) { return utc_day(ms).substr(0, 7); }

std::string utc_timestamp(int64_t ms) {
  const std::chrono::sys_days day = day_of(ms);
  const int64_t in_day =
      ms - std::chrono::duration_cast<std::chrono::milliseconds>(day.time_since_epoch()).count();
  return fmt::format("{}T{:02}:{:02}:{:02}.{:03}Z", utc_day(ms), in_day / 3'600'000,
                     in_day / 60'000 % 60, in_day / 1000 % 60, in_day % 1000);
}

// ---------------------------------------------------------------------------- notifications

std::string normalize_recipient(std::string_view to) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!to.empty() && space(to.front())) to.remove_prefix(1);
  while (!to.empty() && space(to.back())) to.remove_suffix(1);
  std::string phone;
  bool is_phone = !to.empty();
  for (size_t i = 0; i < to.size() && is_phone; ++i) {
    const char c = to[i];
    if (c >= '0' && c <= '9') {
      phone.push_back(c);
    } else if (c == '+' && phone.empty()) {
      phone.push_back(c);
    } else if (c != ' ' && c != '-' && c != '.' && c != '(' && c != ')') {
      is_phone = false;
    }
  }
  if (is_phone && phone.size() > 1) return phone;
  std::string out(to);
  if (out.find('@') != std::string::npos) {
    for (char& c : out) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return out;
}

hash256 notification_hash(std::string_view channel, std::string_view to, std::string_view subject,
                          std::string_view body) {
  std::string buf;
  // Named: a temporary in the range initializer would be gone before the loop body reads it
  // (GCC 12 does not extend it, C++23's P2718 is not implemented there).
  const std::string recipient = normalize_recipient(to);
  for (std::string_view part : {channel, std::string_view(recipient), subject, body}) {
    buf += fmt::format("{}:", part.size());
    buf.append(part);
  }
  return sha256(buf);
}

int64_t window_start_ms(int64_t now_ms, uint64_t per_ms) {
  const auto per = static_cast<int64_t>(per_ms);
  int64_t q = now_ms / per;
  if (now_ms % per < 0) --q;  // floor for times before the epoch
  return q * per;
}

std::optional<int64_t> quiet_hours_until(const quiet_hours& q, std::string_view channel,
                                         int64_t now_ms) {
  if (!q.applies_to(channel)) return std::nullopt;
  constexpr int64_t day_ms = 86'400'000;
  const int64_t local = now_ms + int64_t{q.utc_offset_minutes} * 60'000;
  const int64_t in_day = ((local % day_ms) + day_ms) % day_ms;
  const int64_t start = int64_t{q.start_minute} * 60'000;
  const int64_t end = int64_t{q.end_minute} * 60'000;
  const bool inside =
      start < end ? (in_day >= start && in_day < end) : (in_day >= start || in_day < end);
  if (!inside) return std::nullopt;
  return now_ms + ((end - in_day) % day_ms + day_ms) % day_ms;
}

notify_decision decide_notification(const notify_policy& p, const notification& n, int64_t now_ms,
                                    const std::optional<dedup_entry>& previous,
                                    const std::optional<window_count>& window) {
  notify_decision d;
  if (p.opt_out.contains(normalize_recipient(n.to))) {
    d.v = notify_decision::verdict::suppress;
    d.reason = "opted_out";
    d.output_json = R"({"sent":false,"suppressed":"opted_out"})";
    return d;
  }
  if (p.dedup_window_ms > 0 && previous &&
      !previous->command_id.starts_with(n.own_command_prefix) &&
      now_ms - previous->admitted_ms < static_cast<int64_t>(p.dedup_window_ms)) {
    d.v = notify_decision::verdict::suppress;
    d.reason = fmt::format("duplicate of {} sent at {}", previous->command_id,
                           utc_timestamp(previous->admitted_ms));
    d.output_json =
        json{{"sent", false}, {"suppressed", "duplicate"}, {"original", previous->command_id}}
            .dump();
    return d;
  }
  if (p.quiet) {
    if (auto until = quiet_hours_until(*p.quiet, n.channel, now_ms)) {
      d.v = notify_decision::verdict::defer;
      d.reason = "quiet_hours";
      d.until_ms = *until;
      return d;
    }
  }
  if (const rate_limit* r = p.limit_for(n.channel)) {
    const int64_t start = window_start_ms(now_ms, r->per_ms);
    const uint32_t used = window && window->window_start_ms == start ? window->count : 0;
    if (used >= r->max) {
      d.v = notify_decision::verdict::defer;
      d.reason = "rate_limit";
      d.until_ms = start + static_cast<int64_t>(r->per_ms);
      return d;
    }
    d.window_start_ms = start;
  }
  return d;
}

}  // namespace auterity
