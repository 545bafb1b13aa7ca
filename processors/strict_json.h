#pragma once
// JSON as tenants send it (definitions, parameter values, policies), read strictly: a key that
// appears twice in one object is an error (nlohmann keeps the last copy silently, hiding typos
// such as two "after" fields), and so is nesting deeper than the caller's limit.

#include <cstddef>
#include <expected>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace auterity {

// The error is a predicate for the caller's subject ("definition ", "policy "):
// "has a duplicate key 'after'", "is nested deeper than 32 levels", "is not valid JSON: ...".
std::expected<nlohmann::json, std::string> parse_strict_json(std::string_view text, int depth_max);

// nlohmann's exception message without its "[json.exception.parse_error.101] " prefix, and
// with bytes >= 0x80 replaced: it may quote offending bytes, which need not be UTF-8.
std::string json_error_text(std::string_view what);

// User text cut to `max` bytes for a reason, without splitting a UTF-8 sequence ("..." added).
std::string echo_text(std::string_view s, size_t max);

}  // namespace auterity
