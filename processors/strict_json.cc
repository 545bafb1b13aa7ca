#include "processors/strict_json.h"

#include <set>
#include <vector>

#include <fmt/core.h>

namespace auterity {

using json = nlohmann::json;

namespace {
constexpr size_t key_echo_bytes_max = 64;
}  // namespace

std::string json_error_text(std::string_view text) {
  if (const size_t end = text.find("] "); end != std::string_view::npos) {
    text.remove_prefix(end + 2);
  }
  std::string out(text);
  for (char& c : out) {
    if (static_cast<unsigned char>(c) >= 0x80) c = '?';
  }
  return out;
}

std::string echo_text(std::string_view s, size_t max) {
  if (s.size() <= max) return std::string(s);
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return std::string(s.substr(0, n)) + "...";
}

std::expected<json, std::string> parse_strict_json(std::string_view text, int depth_max) {
  std::vector<std::set<std::string, std::less<>>> open_objects;
  std::string problem;
  json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        open_objects.emplace_back();
        [[fallthrough]];
      case json::parse_event_t::array_start:
        if (depth >= depth_max && problem.empty()) {
          problem = fmt::format("is nested deeper than {} levels", depth_max);
        }
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key: {
        const auto& key = parsed.get_ref<const std::string&>();
        if (!open_objects.empty() && !open_objects.back().insert(key).second && problem.empty()) {
          problem = fmt::format("has a duplicate key '{}'", echo_text(key, key_echo_bytes_max));
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    json doc = json::parse(text.begin(), text.end(), check);
    if (!problem.empty()) return std::unexpected(problem);
    return doc;
  } catch (const json::exception& e) {
    return std::unexpected("is not valid JSON: " + json_error_text(e.what()));
  }
}

}  // namespace auterity
