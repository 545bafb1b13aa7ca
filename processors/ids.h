#pragma once
// What ids, names and record ids are made of: shared by the definition parser and the
// orchestrator's checks at the door (processors/README.md, Limits).

#include <optional>
#include <string>
#include <string_view>

#include <fmt/core.h>

#include "processors/limits.h"

namespace auterity::ids {

inline bool is_ascii_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// Names in definitions — workflow and step ids, signal names: 1..id_bytes_max of
// [A-Za-z0-9_.-]. Signals are checked against the same rule when they arrive.
inline bool valid_name(std::string_view s) {
  if (s.empty() || s.size() > limits::id_bytes_max) return false;
  for (char c : s) {
    if (!is_ascii_alnum(c) && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

inline constexpr std::string_view name_rule = "use 1 to 128 characters from A-Z a-z 0-9 _ . -";

// Length of the UTF-8 sequence starting with `lead`, 0 if no sequence starts with it.
inline size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// Why a command's record id is not acceptable, or nullopt: 1..record_id_bytes_max bytes of
// UTF-8 with no control character (C0, DEL). The reason never echoes the id: it may hold the
// very bytes that are refused.
inline std::optional<std::string> record_id_problem(std::string_view id) {
  if (id.empty()) return std::string("record id is empty");
  if (id.size() > limits::record_id_bytes_max) {
    return fmt::format("record id is {} bytes; record_id_bytes_max is {}", id.size(),
                       limits::record_id_bytes_max);
  }
  for (size_t i = 0; i < id.size();) {
    const auto c = static_cast<unsigned char>(id[i]);
    if (c < 0x20 || c == 0x7f) {
      return fmt::format("record id has a control character (byte 0x{:02x} at {})", c, i);
    }
    const size_t n = utf8_length(c);
    bool ok = n != 0 && i + n <= id.size();
    for (size_t k = 1; ok && k < n; ++k)
      ok = (static_cast<unsigned char>(id[i + k]) & 0xC0) == 0x80;
    if (!ok) return fmt::format("record id is not valid UTF-8 (byte {})", i);
    i += n;
  }
  return std::nullopt;
}

}  // namespace auterity::ids
