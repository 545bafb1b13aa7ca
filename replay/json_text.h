#pragma once
// Writing JSON text by hand, for the exports: deterministic (no maps, no float formatting
// surprises) and always valid, whatever bytes a tampered record holds.

#include <cstdint>
#include <string>
#include <string_view>

namespace auterity::json_text {

// Appends `s` as a JSON string literal. Invalid UTF-8 becomes U+FFFD, so the output parses even
// when a record was tampered with. With `html_safe`, '<', '>' and '&' are escaped too, so the
// text can sit inside an HTML <script> element.
void append_string(std::string& out, std::string_view s, bool html_safe = false);
std::string quote(std::string_view s, bool html_safe = false);

// Appends "key": (with a leading comma unless `first`).
void append_key(std::string& out, std::string_view key, bool& first, bool html_safe = false);

}  // namespace auterity::json_text
