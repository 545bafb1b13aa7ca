// auterity_sim: runs seeds of the deterministic simulator (docs/simulation.md).
//
//   auterity_sim --seeds N [--from S|random]   seeds S .. S+N-1 (default 2000 from 1)
//   auterity_sim --seed S [--trace] [--keep]    one seed, step by step
//   --scratch DIR   where per-seed directories go (default /dev/shm, else the temp dir)
//   --require-all-faults   fail unless every fault class was injected at least once
//   --twice         run each seed twice and fail if the two runs differ in any count
//
// Prints a summary (seeds, seconds, faults per class, what was run and checked); a failing seed
// prints its problems and the one-line command that reproduces it. Exit 0 when every seed held.

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <string_view>

#include <fmt/core.h>

#include "tests/sim/simulator.h"

namespace {

bool same(const auterity::sim::run_stats& a, const auterity::sim::run_stats& b) {
  return a.faults == b.faults && a.commits == b.commits && a.executions == b.executions &&
         a.children == b.children && a.succeeded == b.succeeded && a.failed == b.failed &&
         a.cancelled == b.cancelled && a.events == b.events && a.rejections == b.rejections &&
         a.deferred == b.deferred && a.commands == b.commands && a.effects == b.effects &&
         a.redeliveries == b.redeliveries && a.acked_commits_lost == b.acked_commits_lost &&
         a.quarantined == b.quarantined && a.loss_detected == b.loss_detected;
}

int usage() {
  fmt::print(stderr,
             "usage: auterity_sim [--seeds N] [--from S|random] [--seed S] [--trace] [--keep]\n"
             "                    [--scratch DIR] [--require-all-faults] [--twice]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace auterity::sim;
  uint64_t seeds = 2000, from = 1;
  bool single = false, require_all = false, twice = false;
  run_options options;
  if (!std::filesystem::is_directory("/dev/shm")) {
    options.scratch_root = std::filesystem::temp_directory_path().string();
  }
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--seeds") {
      const char* v = value();
      if (!v) return usage();
      seeds = std::strtoull(v, nullptr, 10);
    } else if (a == "--from" || a == "--seed") {
      const char* v = value();
      if (!v) return usage();
      from =
          std::string_view(v) == "random" ? std::random_device{}() : std::strtoull(v, nullptr, 10);
      if (a == "--seed") {
        single = true;
        seeds = 1;
      }
    } else if (a == "--trace") {
      options.trace = true;
    } else if (a == "--keep") {
      options.keep = true;
    } else if (a == "--scratch") {
      const char* v = value();
      if (!v) return usage();
      options.scratch_root = v;
    } else if (a == "--require-all-faults") {
      require_all = true;
    } else if (a == "--twice") {
      twice = true;
    } else {
      return usage();
    }
  }
  fmt::print("auterity_sim: seeds {} .. {}\n", from, from + seeds - 1);
  std::fflush(stdout);
  const auto t0 = std::chrono::steady_clock::now();
  run_stats total;
  uint64_t failed = 0, detected = 0, with_loss = 0;
  for (uint64_t seed = from; seed < from + seeds; ++seed) {
    run_result r = run_seed(seed, options);
    if (twice) {
      // A seed must replay exactly: the second run makes the same choices and counts the same.
      const run_result again = run_seed(seed, options);
      if (!same(r.stats, again.stats) || r.problems != again.problems) {
        r.problems.push_back("a second run of this seed differed (the run is not deterministic)");
      }
    }
    for (size_t f = 0; f < fault_count; ++f) total.faults[f] += r.stats.faults[f];
    total.commits += r.stats.commits;
    total.executions += r.stats.executions;
    total.children += r.stats.children;
    total.succeeded += r.stats.succeeded;
    total.failed += r.stats.failed;
    total.cancelled += r.stats.cancelled;
    total.events += r.stats.events;
    total.rejections += r.stats.rejections;
    total.deferred += r.stats.deferred;
    total.commands += r.stats.commands;
    total.effects += r.stats.effects;
    total.redeliveries += r.stats.redeliveries;
    total.acked_commits_lost += r.stats.acked_commits_lost;
    total.quarantined += r.stats.quarantined;
    detected += r.stats.loss_detected;
    with_loss += r.stats.acked_commits_lost > 0;
    if (!r.problems.empty()) {
      ++failed;
      fmt::print("FAIL seed {}: {} problem(s); directory {}\n", seed, r.problems.size(), r.dir);
      for (size_t i = 0; i < r.problems.size() && i < 10; ++i) {
        fmt::print("  {}\n", r.problems[i]);
      }
      fmt::print("  reproduce: {} --seed {} --trace\n", argv[0], seed);
      std::fflush(stdout);
      if (failed >= 5 && !single) break;
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print("auterity_sim: {} seeds in {:.1f} s, {} failed\n", seeds, secs, failed);
  fmt::print(
      "  commits {}, executions {} + {} sub-workflows ({} succeeded, {} failed, {} cancelled), "
      "events {}, commands {}, effects {} (+{} redeliveries by idempotency key)\n",
      total.commits, total.executions, total.children, total.succeeded, total.failed,
      total.cancelled, total.events, total.commands, total.effects, total.redeliveries);
  fmt::print("  rejections {}, notifications deferred {}\n", total.rejections, total.deferred);
  fmt::print(
      "  torn tails quarantined by recovery {}; lying disk: {} seeds lost acknowledged "
      "commits ({} recoveries), {} seeds refused by recovery (loss detected)\n",
      total.quarantined, with_loss, total.acked_commits_lost, detected);
  fmt::print("  faults injected:\n");
  bool all = true;
  for (size_t f = 0; f < fault_count; ++f) {
    fmt::print("    {:<32} {}\n", fault_name(static_cast<fault>(f)), total.faults[f]);
    all = all && total.faults[f] > 0;
  }
  if (require_all && !all) {
    fmt::print("FAIL: some fault class was never injected (a workload or plan change?)\n");
    return 1;
  }
  return failed == 0 ? 0 : 1;
}
