#include "replay/progress.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include <fmt/core.h>

namespace auterity {

namespace {

constexpr auto redraw_interval = std::chrono::milliseconds(200);
constexpr int bar_cells = 30;

std::string human(double v) {
  if (v >= 1e9) return fmt::format("{:.2f}G", v / 1e9);
  if (v >= 1e6) return fmt::format("{:.2f}M", v / 1e6);
  if (v >= 1e3) return fmt::format("{:.1f}k", v / 1e3);
  return fmt::format("{:.0f}", v);
}

}  // namespace

progress::progress(std::string label, uint64_t total, bool enabled)
    : _label(std::move(label)), _total(total) {
  if (enabled) _thread = std::thread([this] { run(); });
}

progress::~progress() { finish(); }

bool progress::stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

void progress::finish() {
  {
    std::lock_guard lock(_mu);
    if (_stop) return;
    _stop = true;
  }
  _cv.notify_all();
  if (_thread.joinable()) {
    _thread.join();
    std::fputs("\r\033[K", stderr);  // leave the terminal as it was
    std::fflush(stderr);
  }
}

void progress::run() {
  const auto start = std::chrono::steady_clock::now();
  std::unique_lock lock(_mu);
  while (!_cv.wait_for(lock, redraw_interval, [this] { return _stop; })) {
    draw(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
}

void progress::draw(double seconds) const {
  const uint64_t done = std::min(this->done(), _total);
  const double fraction = _total ? static_cast<double>(done) / _total : 1.0;
  const int filled = static_cast<int>(fraction * bar_cells);
  const double rate = seconds > 0 ? done / seconds : 0;
  const double eta = rate > 0 ? (_total - done) / rate : 0;
  fmt::print(stderr, "\r\033[K{} [{}{}] {:3.0f}%  {}/{} records  {}/s  ETA {:.0f}s", _label,
             std::string(filled, '#'), std::string(bar_cells - filled, '.'), fraction * 100,
             human(done), human(_total), human(rate), eta);
  std::fflush(stderr);
}

}  // namespace auterity
