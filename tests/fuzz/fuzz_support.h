#pragma once
// Shared helpers of the libFuzzer targets (tests/fuzz/README in tests/README.md, "Fuzzing").

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

namespace auterity::fuzz {

// A property of the code under test failed: print it and abort, so libFuzzer saves the input
// as a crash (assert() would vanish under NDEBUG).
#define FUZZ_CHECK(cond, ...)                                                             \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);                                                  \
      std::fprintf(stderr, "\n");                                                         \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

// Cuts `data` into at most `max` parts at each line that is exactly "%%" (so corpus files are
// readable text: a definition, then its parameters, then an input, ...). Missing parts are "".
inline std::vector<std::string_view> split_parts(std::string_view data, size_t max) {
  std::vector<std::string_view> parts;
  constexpr std::string_view sep = "\n%%\n";
  while (parts.size() + 1 < max) {
    const size_t at = data.find(sep);
    if (at == std::string_view::npos) break;
    parts.push_back(data.substr(0, at));
    data.remove_prefix(at + sep.size());
  }
  parts.push_back(data);
  while (parts.size() < max) parts.emplace_back();
  return parts;
}

}  // namespace auterity::fuzz
