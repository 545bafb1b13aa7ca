#pragma once
// Times as auditors type and read them: ISO 8601 in UTC, or "@<milliseconds since the epoch>".

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace auterity {

// "2024-05-01T10:00:00.123Z".
std::string format_time_ms(int64_t ms);

// Accepts "@1714557600123", "2024-05-01", "2024-05-01T10:00", "2024-05-01T10:00:00",
// "2024-05-01T10:00:00.123", each optionally followed by "Z" or "+HH:MM"/"-HH:MM" (no suffix
// means UTC; a space may stand for the "T"). nullopt if it is none of these.
std::optional<int64_t> parse_time_ms(std::string_view text);

// A point in the executions stream for `--as-of`: an offset (a plain number) or a time.
struct as_of_point {
  std::optional<uint64_t> offset;  // replay records [0, offset)
  std::optional<int64_t> time_ms;  // replay records up to the first one later than this
};
std::optional<as_of_point> parse_as_of(std::string_view text);

}  // namespace auterity
