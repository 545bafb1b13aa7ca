#include <algorithm>
#include <array>

#include "engine/assert.h"
#include "engine/log.h"
#include "engine/record.h"
#include "engine/result.h"

namespace auterity {

const char* errc_name(errc code) {
  switch (code) {
    case errc::io:
      return "io";
    case errc::corrupt:
      return "corrupt";
    case errc::locked:
      return "locked";
    case errc::invalid:
      return "invalid";
    case errc::too_large:
      return "too_large";
    case errc::not_found:
      return "not_found";
    case errc::rocksdb:
      return "rocksdb";
    case errc::timeout:
      return "timeout";
    case errc::fenced:
      return "fenced";
    case errc::unauthorized:
      return "unauthorized";
  }
  return "unknown";
}

namespace {
constexpr std::array<std::string_view, stream_count> stream_names = {
    "ingress",         "executions", "commands.step", "commands.ai",
    "commands.notify", "acks",       "definitions",   "deadletter"};
}

bool placement_header::is_retired(uint32_t p) const {
  return std::binary_search(retired.begin(), retired.end(), p);
}

commit_ticket commit_ticket::decided(outcome o) {
  commit_ticket t;
  t._decided = std::move(o);
  return t;
}

commit_ticket commit_ticket::pending(std::function<outcome()> wait) {
  commit_ticket t;
  t._wait = std::move(wait);
  return t;
}

commit_ticket::outcome commit_ticket::wait() {
  vassert(valid(), "commit_ticket::wait() on a ticket already waited for (or never submitted)");
  if (_decided) {
    outcome o = std::move(*_decided);
    _decided.reset();
    return o;
  }
  auto w = std::move(_wait);
  _wait = nullptr;
  return w();
}

uint32_t home_partition(const log& l, std::string_view tenant) {
  return tenant_partition(tenant, l.placement().base);
}

std::string_view stream_name(stream s) { return stream_names[static_cast<size_t>(s)]; }

std::optional<stream> stream_from_name(std::string_view name) {
  for (size_t i = 0; i < stream_names.size(); ++i) {
    if (stream_names[i] == name) return static_cast<stream>(i);
  }
  return std::nullopt;
}

}  // namespace auterity
