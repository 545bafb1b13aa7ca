#pragma once
// A progress bar on stderr for long replays, drawn only when stderr is a terminal (scripts and
// CI logs get no control characters). Workers call add() (one relaxed atomic add per batch); a
// thread of its own redraws the line a few times a second.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace auterity {

class progress {
 public:
  // `total`: records the work will read. `enabled`: draw at all (see stderr_is_terminal()).
  progress(std::string label, uint64_t total, bool enabled);
  ~progress();
  progress(const progress&) = delete;
  progress& operator=(const progress&) = delete;

  void add(uint64_t records) { _done.fetch_add(records, std::memory_order_relaxed); }
  uint64_t done() const { return _done.load(std::memory_order_relaxed); }
  // Stops drawing and clears the line (the destructor does it too).
  void finish();

  static bool stderr_is_terminal();

 private:
  void run();
  void draw(double seconds) const;

  std::string _label;
  uint64_t _total;
  std::atomic<uint64_t> _done{0};
  std::mutex _mu;
  std::condition_variable _cv;
  bool _stop = false;
  std::thread _thread;
};

}  // namespace auterity
