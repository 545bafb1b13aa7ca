#include "replay/time_text.h"

#include <charconv>

#include <fmt/core.h>

namespace auterity {

namespace {

constexpr int64_t ms_per_day = 86'400'000;

// Howard Hinnant's civil-calendar algorithms: exact for every proleptic Gregorian date, with no
// dependence on the process's time zone (timegm/gmtime are not in the C++ standard).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

struct civil {
  int64_t y;
  unsigned m, d;
};

civil civil_from_days(int64_t z) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {static_cast<int64_t>(yoe) + era * 400 + (m <= 2), m, d};
}

// Reads exactly `digits` decimal digits from the front of `s`.
bool take_number(std::string_view& s, size_t digits, int64_t& out) {
  if (s.size() < digits) return false;
  for (size_t i = 0; i < digits; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
  }
  std::from_chars(s.data(), s.data() + digits, out);
  s.remove_prefix(digits);
  return true;
}

bool take_char(std::string_view& s, char c) {
  if (s.empty() || s.front() != c) return false;
  s.remove_prefix(1);
  return true;
}

// "Z", "+HH:MM", "-HH:MM" or nothing (UTC); the offset in milliseconds east of UTC.
bool take_zone(std::string_view& s, int64_t& offset_ms) {
  offset_ms = 0;
  if (s.empty() || take_char(s, 'Z')) return true;
  const bool east = s.front() == '+';
  if (!east && s.front() != '-') return false;
  s.remove_prefix(1);
  int64_t hh = 0, mm = 0;
  if (!take_number(s, 2, hh) || !take_char(s, ':') || !take_number(s, 2, mm)) return false;
  if (hh > 23 || mm > 59) return false;
  offset_ms = (hh * 60 + mm) * 60'000 * (east ? 1 : -1);
  return true;
}

// "HH:MM[:SS[.fff]]" after the date; adds to `ms`.
bool take_clock(std::string_view& s, int64_t& ms) {
  int64_t hh = 0, mi = 0, ss = 0, frac = 0;
  if (!take_number(s, 2, hh) || !take_char(s, ':') || !take_number(s, 2, mi)) return false;
  if (take_char(s, ':')) {
    if (!take_number(s, 2, ss)) return false;
    if (take_char(s, '.')) {
      size_t n = 0;
      while (n < s.size() && s[n] >= '0' && s[n] <= '9') ++n;
      if (n == 0) return false;
      int64_t scaled = 0;
      for (size_t i = 0; i < 3; ++i) scaled = scaled * 10 + (i < n ? s[i] - '0' : 0);
      frac = scaled;  // digits past milliseconds are dropped: records carry milliseconds
      s.remove_prefix(n);
    }
  }
  if (hh > 23 || mi > 59 || ss > 60) return false;
  ms += ((hh * 60 + mi) * 60 + ss) * 1000 + frac;
  return true;
}

}  // namespace

std::string format_time_ms(int64_t ms) {
  int64_t days = ms / ms_per_day;
  int64_t rest = ms % ms_per_day;
  if (rest < 0) rest += ms_per_day, --days;
  const civil c = civil_from_days(days);
  const int64_t s = rest / 1000;
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", c.y, c.m, c.d, s / 3600,
                     s / 60 % 60, s % 60, rest % 1000);
}

std::optional<int64_t> parse_time_ms(std::string_view text) {
  if (text.starts_with('@')) {
    int64_t v = 0;
    const char* end = text.data() + text.size();
    auto [p, ec] = std::from_chars(text.data() + 1, end, v);
    if (ec != std::errc() || p != end || text.size() == 1) return std::nullopt;
    return v;
  }
  std::string_view s = text;
  int64_t y = 0, m = 0, d = 0;
  if (!take_number(s, 4, y) || !take_char(s, '-') || !take_number(s, 2, m) || !take_char(s, '-') ||
      !take_number(s, 2, d)) {
    return std::nullopt;
  }
  if (m < 1 || m > 12 || d < 1 || d > 31) return std::nullopt;
  int64_t ms = days_from_civil(y, static_cast<unsigned>(m), static_cast<unsigned>(d)) * ms_per_day;
  if (take_char(s, 'T') || take_char(s, ' ')) {
    if (!take_clock(s, ms)) return std::nullopt;
  }
  int64_t offset_ms = 0;
  if (!take_zone(s, offset_ms) || !s.empty()) return std::nullopt;
  return ms - offset_ms;
}

std::optional<as_of_point> parse_as_of(std::string_view text) {
  uint64_t offset = 0;
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, offset);
  if (!text.empty() && ec == std::errc() && p == end) return as_of_point{offset, std::nullopt};
  if (auto t = parse_time_ms(text)) return as_of_point{std::nullopt, *t};
  return std::nullopt;
}

}  // namespace auterity
