#include "engine/fault.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>

namespace auterity {

namespace {

struct armed_fault {
  std::string point;
  std::string action;  // "stop", "kill" or "hold"
  uint64_t nth = 1;
  uint64_t hits = 0;
  bool fired = false;
};

struct fault_table {
  std::mutex mu;
  std::vector<armed_fault> faults;
};

fault_table* parse_env() {
  const char* env = std::getenv("AUTERITY_FAULT");
  if (!env || !*env) return nullptr;
  auto* t = new fault_table();  // lives as long as the process
  std::string_view rest(env);
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    armed_fault f;
    const size_t colon = item.find(':');
    const size_t at = item.find('@');
    if (colon == std::string_view::npos) {
      fmt::print(stderr, "auterity: AUTERITY_FAULT entry '{}' ignored: want point:action[@n]\n",
                 item);
      continue;
    }
    f.point = std::string(item.substr(0, colon));
    f.action = std::string(item.substr(
        colon + 1, at == std::string_view::npos ? std::string_view::npos : at - colon - 1));
    if (at != std::string_view::npos)
      f.nth = std::strtoull(std::string(item.substr(at + 1)).c_str(), nullptr, 10);
    if ((f.action != "stop" && f.action != "kill" && f.action != "hold") || f.nth == 0) {
      fmt::print(stderr,
                 "auterity: AUTERITY_FAULT entry '{}' ignored: action stop|kill|hold, n >= 1\n",
                 item);
      continue;
    }
    t->faults.push_back(std::move(f));
  }
  return t;
}

fault_table* table() {
  static fault_table* t = parse_env();
  return t;
}

std::atomic<int> armed{-1};  // -1: environment not read yet; 0: nothing armed; 1: armed

}  // namespace

void fault_point(std::string_view point) {
  int a = armed.load(std::memory_order_relaxed);
  if (a == 0) return;
  if (a < 0) {
    a = table() ? 1 : 0;
    armed.store(a, std::memory_order_relaxed);
    if (a == 0) return;
  }
  fault_table& t = *table();
  std::string action;
  {
    std::lock_guard lock(t.mu);
    for (armed_fault& f : t.faults) {
      if (f.fired || f.point != point) continue;
      if (++f.hits < f.nth) continue;
      f.fired = true;
      action = f.action;
      break;
    }
  }
  if (action.empty()) return;
  fmt::print(stderr, "auterity: fault point {} reached (pid {}): {}\n", point, ::getpid(),
             action == "stop"   ? "stopping"
             : action == "kill" ? "killing"
                                : "holding this thread");
  std::fflush(stderr);
  if (action == "hold") {
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
  }
  ::raise(action == "stop" ? SIGSTOP : SIGKILL);
}

}  // namespace auterity
