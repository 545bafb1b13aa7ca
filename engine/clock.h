#pragma once
// Time is injected: domain logic never reads a clock; the runtime takes `now` once per batch
// from a clock and passes it down. Tests use manual_clock.

#include <atomic>
#include <chrono>
#include <cstdint>

namespace auterity {

// The wall clock, read directly: only for IO at the edge (a call's deadline, a Date header),
// never for domain logic, which takes `now` from a clock.
inline int64_t wall_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class clock {
 public:
  virtual ~clock() = default;
  virtual int64_t now_ms() = 0;  // milliseconds since the Unix epoch
};

class system_clock final : public clock {
 public:
  int64_t now_ms() override { return wall_now_ms(); }
};

class manual_clock final : public clock {
 public:
  explicit manual_clock(int64_t start_ms) : _now(start_ms) {}
  int64_t now_ms() override { return _now.load(); }
  void advance(int64_t ms) { _now.fetch_add(ms); }
  void set(int64_t ms) { _now.store(ms); }

 private:
  std::atomic<int64_t> _now;
};

}  // namespace auterity
