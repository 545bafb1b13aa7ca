// The scale of state on one partition of the embedded log (issue 14, item 5): with N running
// executions held in state (each waiting for a signal, by default with a 1 h timer; preloaded as
// move_bench does), how long a reopen takes (node::open + recover, from the checkpoint after a
// clean close), the process's RSS after it, the RocksDB state on disk, and the step-transition
// rate of a fixed workload on top (5,000 executions of the 10-step linear workflow, 1,000 in
// flight, acked inline on the same thread). Each size is preloaded in this process, then
// measured in a fresh one (this binary re-run with --measure), so the preload's heap does not
// count in the RSS. bench/README.md, "Scale of state", has the figures.
//
// A partition's open loads every timer (~100 B each) but no execution: a timer's execution is
// read when it comes due (design note 20). `open CPU` is the reopen's CPU time on the opening
// thread, the figure to compare on a shared machine.
//
//   build/bench/state_scale_bench --executions 1000,100000,1000000 [--timeout-ms 0]
//                                 [--no-fsync] [--dir /tmp/x]
//   build/bench/state_scale_bench --executions 300000 --preload-only --dir /tmp/x   # to profile:
//   perf record -g -- build/bench/state_scale_bench --measure 300000 --dir /tmp/x

#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/core.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench/bench_common.h"
#include "engine/clock.h"
#include "engine/record.h"
#include "node/node.h"
#include "processors/client.h"

namespace auterity {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;

// The fixed workload: a closed loop of 5,000 executions, 1,000 in flight (50,000 transitions).
constexpr uint32_t workload_executions = 5000;
constexpr uint32_t workload_in_flight = 1000;
constexpr uint32_t workload_steps = 10;
constexpr size_t preload_batch = 1000;  // starts per commit (a CRM's bulk import)

double ms_since(steady::time_point t) {
  return std::chrono::duration<double, std::milli>(steady::now() - t).count();
}

// CPU time of the calling thread in ms: the reopen runs on it, and on a shared machine its wall
// time also counts the neighbours' share of the cores.
double thread_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// VmRSS of this process in MiB, from /proc/self/status.
double rss_mib() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return 0;
}

// Bytes of the files under `dir` whose path has a component `part` (the RocksDB state) or all.
uint64_t bytes_under(const fs::path& dir, const std::string& part) {
  uint64_t total = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    if (!part.empty() && e.path().string().find(part) == std::string::npos) continue;
    total += e.file_size();
  }
  return total;
}

node_options options(const std::string& dir, bool fsync) {
  node_options o;
  o.data_dir = dir;
  o.partitions = 1;
  o.fsync = fsync;
  o.workers = false;
  return o;
}

// Preloads `executions` running executions of the wait workflow on the one partition, publishes
// the linear workflow for the workload, and closes the node.
int preload(const std::string& dir, size_t executions, bool fsync, uint64_t timeout_ms) {
  fs::remove_all(dir);
  manual_clock clk(1'700'000'000'000);
  auto opened = node::open(options(dir, fsync), clk);
  if (!opened) {
    fmt::print(stderr, "state_scale_bench: {}\n", opened.error().message);
    return 1;
  }
  node& n = **opened;
  if (auto r = n.recover(); !r) return 1;
  const auto tenants = bench::pick_tenants(1, 1);
  const std::string& tenant = tenants[0];
  json wait = {{"id", "w"}, {"kind", "wait_signal"}, {"signal", "go"}};
  if (timeout_ms) wait["timeout_ms"] = timeout_ms;
  const std::string def =
      json{{"workflow", "wait"}, {"version", 1}, {"steps", json::array({wait})}}.dump();
  if (!n.submit(tenant, client::publish_definition({tenant, "", "pub-wait", 0}, def))) return 1;
  if (!bench::publish(n.get_log(), tenants, workload_steps)) return 1;
  for (size_t i = 0; i < executions;) {
    commit_batch b;
    for (size_t k = 0; k < preload_batch && i < executions; ++k, ++i) {
      const std::string id = fmt::format("held-{}", i);
      b.add(stream::ingress, tenant,
            client::start_execution({tenant, id, id, 0}, "wait", 0, R"({"n":1})"));
    }
    if (!n.get_log().commit(0, b)) return 1;
    // Decide as we go, so the log's unapplied tail stays short.
    for (;;) {
      auto w = n.step(false);
      if (!w) return 1;
      if (*w == 0) break;
    }
  }
  return 0;
}

// In a fresh process: reopen, measure, run the workload, print one row. With `from_nothing`,
// the state directory is deleted first (the partition replays its whole log) and the row ends
// after the reopen.
int measure(const std::string& dir, size_t executions, bool fsync, bool from_nothing) {
  if (from_nothing) fs::remove_all(fs::path(dir) / "state");
  const double rss_before = rss_mib();
  manual_clock clk(1'700'000'000'000);
  const auto t0 = steady::now();
  const double cpu0 = thread_cpu_ms();
  auto opened = node::open(options(dir, fsync), clk);
  if (!opened) {
    fmt::print(stderr, "state_scale_bench: {}\n", opened.error().message);
    return 1;
  }
  node& n = **opened;
  if (auto r = n.recover(); !r) {
    fmt::print(stderr, "state_scale_bench: recover: {}\n", r.error().message);
    return 1;
  }
  const double open_ms = ms_since(t0);
  const double open_cpu_ms = thread_cpu_ms() - cpu0;
  const uint64_t replayed = n.partition(0).probe().replayed.load();
  const double rss_open = rss_mib();
  const double state_mb = bytes_under(dir, "state") / 1e6;
  const double dir_mb = bytes_under(dir, "") / 1e6;
  if (from_nothing) {
    fmt::print(
        "{:>10} {:>9} {:>9.0f} {:>9.0f} {:>9} {:>9.1f} {:>9.1f} {:>10.1f} {:>9.1f} {:>13} {:>9}\n",
        executions, "nothing", open_ms, open_cpu_ms, replayed, rss_open, rss_open - rss_before,
        state_mb, dir_mb, "-", "-");
    return 0;
  }

  // The fixed workload: the first 1,000 starts in one commit, then step and ack inline until
  // every execution acked its last step (an ack of a last step starts the next execution).
  const auto tenants = bench::pick_tenants(1, 1);
  bench::workload w(workload_executions, workload_in_flight, workload_steps);
  if (!bench::submit_starts(n.get_log(), tenants, w)) return 1;
  std::vector<int64_t> ack_commit_ns(workload_executions, 0);
  bench::ack_writer acks(ack_commit_ns, w);
  const uint64_t transitions_wanted = uint64_t{workload_executions} * workload_steps;
  uint64_t transitions = 0, next = 0;
  std::vector<record> records;
  const auto t1 = steady::now();
  while (transitions < transitions_wanted) {
    auto s = n.step(false);
    if (!s) return 1;
    records.clear();
    auto got = n.get_log().read(stream::commands_step, 0, next, 4096, 64 << 20, records);
    if (!got) return 1;
    if (*got == 0) {
      if (*s == 0 && ms_since(t1) > 120'000) {
        fmt::print(stderr, "state_scale_bench: workload stalled at {}\n", transitions);
        return 1;
      }
      continue;
    }
    commit_batch out;
    acks.add(records, bench::now_ns(), out);
    next = records.back().offset + 1;
    out.set_position(std::string(bench::acker_group), stream::commands_step, next);
    if (!n.get_log().commit(0, out)) return 1;
    acks.committed(bench::now_ns());
    transitions += *got;
  }
  const double run_s = ms_since(t1) / 1000.0;
  const double rss_end = rss_mib();
  fmt::print(
      "{:>10} {:>9} {:>9.0f} {:>9.0f} {:>9} {:>9.1f} {:>9.1f} {:>10.1f} {:>9.1f} {:>13.0f} "
      "{:>9.1f}\n",
      executions, "checkpt", open_ms, open_cpu_ms, replayed, rss_open, rss_open - rss_before,
      state_mb, dir_mb, transitions / run_s, rss_end);
  return 0;
}

}  // namespace
}  // namespace auterity

int main(int argc, char** argv) {
  CLI::App app{"Reopen time, RSS and throughput against running executions (embedded log)"};
  std::string sizes = "1000,100000";
  std::string dir = "/tmp/auterity-state-scale-bench";
  bool no_fsync = false;
  bool no_rebuild = false;
  bool preload_only = false;
  size_t measure_n = 0;
  bool from_nothing = false;
  uint64_t timeout_ms = 3'600'000;
  app.add_option("--executions", sizes, "Running executions held, comma-separated")
      ->capture_default_str();
  app.add_option("--dir", dir, "Scratch data directory (removed first)")->capture_default_str();
  app.add_flag("--no-fsync", no_fsync, "Do not fdatasync commits");
  app.add_option("--timeout-ms", timeout_ms,
                 "Timer of each held execution's wait step, ms; 0: none (waits forever)")
      ->capture_default_str();
  app.add_option("--measure", measure_n, "(internal) measure a preloaded --dir of N executions");
  app.add_flag("--from-nothing", from_nothing, "(internal) with --measure: delete the state first");
  app.add_flag("--no-rebuild", no_rebuild, "Skip the reopen from nothing (no state directory)");
  app.add_flag("--preload-only", preload_only,
               "Preload the one size in --executions into --dir, keep it and stop (to profile "
               "--measure N --dir on it)");
  CLI11_PARSE(app, argc, argv);
  if (measure_n) return auterity::measure(dir, measure_n, !no_fsync, from_nothing);
  fmt::print("{:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>13} {:>9}\n", "running",
             "from", "reopen ms", "open CPU", "replayed", "RSS MiB", "+open MiB", "state MB",
             "dir MB", "transitions/s", "RSS end");
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::stringstream in(sizes);
  for (std::string item; std::getline(in, item, ',');) {
    const size_t n = std::stoull(item);
    const auto t0 = std::chrono::steady_clock::now();
    if (int rc = auterity::preload(dir, n, !no_fsync, timeout_ms); rc != 0) return rc;
    fmt::print(stderr, "state_scale_bench: preloaded {} in {:.1f} s\n", n,
               auterity::ms_since(t0) / 1000.0);
    if (preload_only) return 0;
    // From nothing first (it rebuilds the state and closes), then from the checkpoint.
    for (const bool nothing : {true, false}) {
      if (nothing && no_rebuild) continue;
      const std::string cmd =
          fmt::format("'{}' --measure {} --dir '{}'{}{}", self, n, dir,
                      no_fsync ? " --no-fsync" : "", nothing ? " --from-nothing" : "");
      std::fflush(stdout);
      if (int rc = std::system(cmd.c_str()); rc != 0) return 1;
    }
  }
  std::filesystem::remove_all(dir);
  return 0;
}
