// LD_PRELOAD shim that makes every fdatasync() take at least AUTERITY_BENCH_FDATASYNC_US
// microseconds (the real call, then a sleep for the rest), to see what orchestration_bench
// does on a disk whose flushes are slower than this VM's. Not linked into anything. Usage:
//   LD_PRELOAD=build-bench/bench/libslow_fsync.so AUTERITY_BENCH_FDATASYNC_US=1000
//   build-bench/bench/orchestration_bench (one command line)

#include <dlfcn.h>
#include <time.h>

#include <cstdlib>

namespace {

using fdatasync_fn = int (*)(int);

long min_us() {
  static const long us = [] {
    const char* v = std::getenv("AUTERITY_BENCH_FDATASYNC_US");
    return v ? std::atol(v) : 0L;
  }();
  return us;
}

timespec plus_us(timespec t, long us) {
  t.tv_sec += us / 1'000'000;
  t.tv_nsec += (us % 1'000'000) * 1000;
  if (t.tv_nsec >= 1'000'000'000) {
    t.tv_sec += 1;
    t.tv_nsec -= 1'000'000'000;
  }
  return t;
}

}  // namespace

extern "C" int fdatasync(int fd) {
  static const auto real = reinterpret_cast<fdatasync_fn>(dlsym(RTLD_NEXT, "fdatasync"));
  timespec start{};
  clock_gettime(CLOCK_MONOTONIC, &start);
  const int r = real(fd);
  const timespec until = plus_us(start, min_us());
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, nullptr) != 0) {
  }
  return r;
}
