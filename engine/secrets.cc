#include "engine/secrets.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <fmt/core.h>

namespace auterity {

result<std::string> resolve_secret(std::string_view ref) {
  if (ref.starts_with("env:")) {
    const std::string name(ref.substr(4));
    const char* v = name.empty() ? nullptr : std::getenv(name.c_str());
    if (!v) return fail(errc::not_found, fmt::format("secret {}: variable not set", ref));
    return std::string(v);
  }
  if (ref.starts_with("file:")) {
    const std::string path(ref.substr(5));
    std::ifstream in(path, std::ios::binary);
    if (!in) return fail(errc::not_found, fmt::format("secret {}: cannot read the file", ref));
    std::ostringstream s;
    s << in.rdbuf();
    std::string v = s.str();
    if (v.ends_with('\n')) v.pop_back();
    if (v.ends_with('\r')) v.pop_back();
    return v;
  }
  return fail(errc::invalid,
              "a secret must be given by reference, \"env:NAME\" or \"file:/path\", not as a "
              "literal value");
}

}  // namespace auterity
