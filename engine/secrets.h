#pragma once
// Secrets by reference. Connector configuration never holds a secret itself, only where to
// find it: "env:NAME" (an environment variable of the worker process) or "file:/path" (the
// file's contents, one trailing newline removed). Resolved values stay in the worker's
// memory: they are not logged, not put in error messages and never reach an event or an ack.

#include <string>
#include <string_view>

#include "engine/result.h"

namespace auterity {

// errc::invalid when `ref` is not a reference (a literal secret in a config file is refused,
// so it cannot end up in version control); errc::not_found when the variable is unset or the
// file cannot be read. Messages name the reference, never the value.
result<std::string> resolve_secret(std::string_view ref);

// Replaces every `${secret:NAME}` in `text` through `lookup(NAME)`, which returns the
// secret's reference (or "" if NAME is unknown: errc::not_found naming NAME).
template <typename Lookup>
result<std::string> substitute_secrets(std::string_view text, Lookup&& lookup) {
  std::string out;
  size_t at = 0;
  constexpr std::string_view open = "${secret:";
  while (true) {
    const size_t start = text.find(open, at);
    if (start == std::string_view::npos) break;
    const size_t end = text.find('}', start);
    if (end == std::string_view::npos) break;
    const std::string_view name = text.substr(start + open.size(), end - start - open.size());
    const std::string ref = lookup(name);
    if (ref.empty()) {
      return fail(errc::not_found, "unknown secret " + std::string(name) +
                                       " (not in the connector's \"secrets\" map)");
    }
    auto value = resolve_secret(ref);
    if (!value) return std::unexpected(value.error());
    out.append(text.substr(at, start - at));
    out.append(*value);
    at = end + 1;
  }
  out.append(text.substr(at));
  return out;
}

}  // namespace auterity
