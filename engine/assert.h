#pragma once
// Always-on invariant checks. A failed vassert is a bug: print where and why, then abort, so a
// supervisor restarts the process and recovery replays from the last commit.

#include <cstdio>
#include <cstdlib>

#include <fmt/core.h>

#define vassert(cond, ...)                                                                 \
  do {                                                                                     \
    if (__builtin_expect(!(cond), 0)) {                                                    \
      fmt::print(stderr, "assertion failed at {}:{}: {}: {}\n", __FILE__, __LINE__, #cond, \
                 fmt::format(__VA_ARGS__));                                                \
      std::fflush(stderr);                                                                 \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)
