// Orchestration benchmark: step transitions per second and ack-to-next-command latency of the
// orchestrator on the embedded log, with durable commits and many executions in flight.
//
// A node runs without its connector workers; an "acker" in this program plays the worker: it
// reads commands.step[p], appends a Success ack for each command to acks[p] and commits the
// acks together with its consumer position, as worker_runtime does, but with no connector
// work. What remains is the engine's own cost per step: read the ack, decide, build and hash
// the events, commit them with the next command, write the state to RocksDB.
//
// See bench/README.md for the measuring window, the recorded results and the profile.

#include <fcntl.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include "bench/bench_common.h"
#include "engine/assert.h"
#include "engine/record.h"
#include "engine/worker_runtime.h"
#include "node/node.h"
#include "processors/limits.h"

namespace auterity::bench {
namespace {

namespace fs = std::filesystem;

// ------------------------------------------------------------------------------- settings

struct bench_flags {
  uint32_t partitions = 2;
  bool fsync = true;
  uint32_t steps = 10;
  uint32_t executions = 20'000;
  uint32_t in_flight = 0;            // 0: start every execution up front
  uint32_t tenants = 2;              // at least one per partition is added if fewer
  std::string ackers = "partition";  // "partition": a thread per partition; "single": one
  size_t ack_batch_records_max = 1024;
  size_t orchestrator_batch_records_max = partition_runtime_options{}.batch_records_max;
  int seconds_max = 300;
  std::string dir;  // parent of the temporary data directory; $TMPDIR or /tmp if empty
  bool json = false;
};

constexpr size_t read_batch_bytes_max = 8 << 20;  // acker read limit
// A single acker sleeps on one partition at a time, so a commit elsewhere does not wake it: keep
// its sleeps short.
constexpr int64_t acker_idle_wait_ms_max = 1;
constexpr int64_t sample_interval_ms = 10;
constexpr int fdatasync_probe_rounds = 31;

// -------------------------------------------------------------------------- temp data dir

// A fresh directory removed with everything in it when the benchmark ends.
class temp_dir {
 public:
  static result<temp_dir> create(const std::string& parent_flag) {
    std::string parent = parent_flag;
    if (parent.empty()) parent = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
    std::string pattern = parent + "/auterity-bench-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      return fail(errc::io, fmt::format("mkdtemp {}: {}", pattern, std::strerror(errno)));
    }
    return temp_dir(pattern);
  }
  temp_dir(temp_dir&& o) noexcept : _path(std::exchange(o._path, {})) {}
  temp_dir(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    if (!_path.empty()) fs::remove_all(_path, ec);
  }
  const std::string& path() const { return _path; }

 private:
  explicit temp_dir(std::string path) : _path(std::move(path)) {}
  std::string _path;
};

std::string filesystem_name(const std::string& path) {
  struct statfs s {};
  if (::statfs(path.c_str(), &s) != 0) return "unknown";
  switch (static_cast<unsigned long>(s.f_type)) {
    case 0xEF53:
      return "ext4";
    case 0x58465342:
      return "xfs";
    case 0x9123683E:
      return "btrfs";
    case 0x01021994:
      return "tmpfs (fsync is free!)";
    case 0x794c7630:
      return "overlayfs";
    default:
      return fmt::format("0x{:x}", static_cast<unsigned long>(s.f_type));
  }
}

// What one durable commit costs on this disk right now: append 4 KiB + fdatasync, median of
// `rounds`, in a scratch file next to the log. On a shared VM it moves with the neighbours'
// IO, so it is measured around every run and recorded with the results.
double fdatasync_p50_us(const std::string& dir, int rounds) {
  const std::string path = dir + "/fdatasync-probe";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return -1;
  const std::string block(4096, 'x');
  std::vector<int64_t> ns;
  for (int i = 0; i < rounds; ++i) {
    if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size())) break;
    const int64_t t = now_ns();
    if (::fdatasync(fd) != 0) break;
    ns.push_back(now_ns() - t);
  }
  ::close(fd);
  ::unlink(path.c_str());
  if (ns.empty()) return -1;
  std::ranges::nth_element(ns, ns.begin() + ns.size() / 2);
  return static_cast<double>(ns[ns.size() / 2]) / 1e3;
}

// ---------------------------------------------------------------------------------- acker

// Plays the connector worker for some partitions: acks every command with Success "{}"
// (ack_writer, bench_common.h) and commits the acks with its position, one partition at a time.
class acker final : public acker_base {
 public:
  acker(log& l, std::vector<uint32_t> partitions, std::vector<int64_t>& ack_commit_ns, workload& w,
        size_t batch_records_max)
      : acker_base(ack_commit_ns, w),
        _log(l),
        _partitions(std::move(partitions)),
        _batch_records_max(batch_records_max),
        _next(_partitions.size(), 0) {}
  ~acker() override { stop(); }

 private:
  void run_once() override {
    const uint32_t wait_on = _partitions[_idle_turn++ % _partitions.size()];
    const uint64_t generation = _log.generation(wait_on);
    size_t done = 0;
    for (size_t i = 0; i < _partitions.size(); ++i) done += serve(i);
    if (done == 0) {
      _log.wait(wait_on, generation, std::chrono::milliseconds(acker_idle_wait_ms_max));
    }
  }

  // One read of commands.step[p] and one commit of its acks; returns the commands acked.
  size_t serve(size_t slot) {
    const uint32_t p = _partitions[slot];
    _records.clear();
    auto n = _log.read(stream::commands_step, p, _next[slot], _batch_records_max,
                       read_batch_bytes_max, _records);
    vassert(n.has_value(), "acker read p{}: {}", p, n.error().message);
    if (*n == 0) return 0;
    const int64_t read_ns = now_ns();
    commit_batch out;
    _acks.add(_records, read_ns, out);
    _next[slot] = _records.back().offset + 1;  // offsets may have gaps (Kafka)
    out.set_position(std::string(acker_group), stream::commands_step, _next[slot]);
    auto c = _log.commit(p, out);
    vassert(c.has_value(), "acker commit p{}: {}", p, c.error().message);
    _acks.committed(now_ns());
    _counters.commits.fetch_add(1, std::memory_order_relaxed);
    _counters.acks.fetch_add(*n, std::memory_order_relaxed);
    return *n;
  }

  log& _log;
  std::vector<uint32_t> _partitions;
  size_t _batch_records_max;
  std::vector<uint64_t> _next;  // next commands.step offset, by slot
  std::vector<record> _records;
  size_t _idle_turn = 0;  // the partition to sleep on next
};

std::vector<std::unique_ptr<acker>> make_ackers(log& l, const bench_flags& f, workload& w,
                                                std::vector<int64_t>& ack_commit_ns) {
  std::vector<std::unique_ptr<acker>> out;
  if (f.ackers == "single") {
    std::vector<uint32_t> all(f.partitions);
    for (uint32_t p = 0; p < f.partitions; ++p) all[p] = p;
    out.push_back(std::make_unique<acker>(l, all, ack_commit_ns, w, f.ack_batch_records_max));
    return out;
  }
  for (uint32_t p = 0; p < f.partitions; ++p) {
    out.push_back(std::make_unique<acker>(l, std::vector<uint32_t>{p}, ack_commit_ns, w,
                                          f.ack_batch_records_max));
  }
  return out;
}

// ------------------------------------------------------------------------------ CPU split

enum class cpu_role { main, orchestrator, acker, rocksdb, other };
constexpr std::string_view cpu_role_names[] = {"main", "orchestrator", "acker", "rocksdb", "other"};
constexpr size_t cpu_roles = std::size(cpu_role_names);

struct cpu_snapshot {
  std::map<int, std::pair<std::string, uint64_t>> threads;  // tid → (comm, run ns)
  int64_t user_us = 0;
  int64_t sys_us = 0;
  uint64_t machine_busy_ticks = 0;  // all processes, from /proc/stat (USER_HZ ticks)
};

cpu_snapshot take_cpu_snapshot() {
  cpu_snapshot s;
  std::error_code ec;
  for (const auto& task : fs::directory_iterator("/proc/self/task", ec)) {
    int tid = 0;
    const std::string name = task.path().filename().string();
    std::from_chars(name.data(), name.data() + name.size(), tid);
    const uint64_t run_ns = std::strtoull(first_line(task.path() / "schedstat").c_str(), nullptr,
                                          10);  // first field: ns on a CPU
    s.threads[tid] = {first_line(task.path() / "comm"), run_ns};
  }
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  s.user_us = u.ru_utime.tv_sec * 1'000'000 + u.ru_utime.tv_usec;
  s.sys_us = u.ru_stime.tv_sec * 1'000'000 + u.ru_stime.tv_usec;
  s.machine_busy_ticks = machine_busy_ticks();
  return s;
}

struct cpu_split {
  double seconds[cpu_roles] = {};
  double user_s = 0;
  double sys_s = 0;
  double neighbours_s = 0;  // CPU other processes on the machine used meanwhile
};

// Threads the node started (partition runtimes) are told apart by tid: they are the ones
// that appeared across node::start().
cpu_split split_cpu(const cpu_snapshot& from, const cpu_snapshot& to,
                    const std::vector<int>& orchestrator_tids) {
  cpu_split out;
  for (const auto& [tid, thread] : to.threads) {
    const auto& [comm, run_ns] = thread;
    auto before = from.threads.find(tid);
    const uint64_t start = before == from.threads.end() ? 0 : before->second.second;
    cpu_role role = cpu_role::other;
    if (tid == ::getpid())
      role = cpu_role::main;
    else if (std::ranges::count(orchestrator_tids, tid))
      role = cpu_role::orchestrator;
    else if (comm.starts_with("bench-acker"))
      role = cpu_role::acker;
    else if (comm.starts_with("rocksdb"))
      role = cpu_role::rocksdb;
    out.seconds[static_cast<size_t>(role)] += static_cast<double>(run_ns - start) / 1e9;
  }
  out.user_s = static_cast<double>(to.user_us - from.user_us) / 1e6;
  out.sys_s = static_cast<double>(to.sys_us - from.sys_us) / 1e6;
  const double machine_s = static_cast<double>(to.machine_busy_ticks - from.machine_busy_ticks) /
                           static_cast<double>(::sysconf(_SC_CLK_TCK));
  out.neighbours_s = std::max(0.0, machine_s - out.user_s - out.sys_s);
  return out;
}

std::vector<int> new_threads(const cpu_snapshot& before, const cpu_snapshot& after) {
  std::vector<int> out;
  for (const auto& [tid, thread] : after.threads) {
    if (!before.threads.contains(tid)) out.push_back(tid);
  }
  return out;
}

// ------------------------------------------------------------------------------- sampling

// The measuring window: from the first sample where the initial StartExecution commands have
// been processed (the start phase, which also builds the first commands, is over) to the first
// sample where fewer than half of --in-flight executions are still in flight (the drain, where
// the orchestrator runs out of work, is left out). Both ends are CPU-snapshotted.
struct run_record {
  int64_t started_ns = 0;  // node::start()
  totals first;            // window start
  totals last;             // window end
  totals end;              // when the run stopped
  cpu_snapshot cpu_first;
  cpu_snapshot cpu_last;
  bool window_open = false;
  bool window_closed = false;
  bool complete = false;  // every execution ended
  bool timed_out = false;
};

void observe(const totals& t, const bench_flags& f, run_record& r) {
  if (!r.window_open && t.started >= f.in_flight) {
    r.first = t;
    r.cpu_first = take_cpu_snapshot();
    r.window_open = true;
  }
  const bool draining = 2 * (t.started - t.ended) < f.in_flight;
  if (r.window_open && !r.window_closed && (draining || t.ended == f.executions)) {
    r.last = t;
    r.cpu_last = take_cpu_snapshot();
    r.window_closed = true;
  }
}

run_record run(node& n, const std::vector<std::unique_ptr<acker>>& ackers, const bench_flags& f) {
  run_record r;
  const cpu_snapshot cpu_at_start = take_cpu_snapshot();
  r.started_ns = now_ns();
  const int64_t deadline_ns = r.started_ns + int64_t{f.seconds_max} * 1'000'000'000;
  while (true) {
    std::this_thread::sleep_for(std::chrono::milliseconds(sample_interval_ms));
    const totals t = read_totals(n, ackers);
    observe(t, f, r);
    r.end = t;
    r.complete = t.ended == f.executions;
    r.timed_out = t.at_ns > deadline_ns;
    if (r.complete || r.timed_out || interrupted) break;
  }
  if (!r.window_closed) {  // stopped early: the window ends where the run did
    if (!r.window_open) {
      r.first = totals{.at_ns = r.started_ns};
      r.cpu_first = cpu_at_start;
    }
    r.last = r.end;
    r.cpu_last = take_cpu_snapshot();
  }
  return r;
}

// -------------------------------------------------------------------------------- results

struct report {
  double fdatasync_before_us = 0;  // disk probe before and after the run
  double fdatasync_after_us = 0;
  double window_s = 0;
  double transitions_per_s = 0;
  double overall_transitions_per_s = 0;  // start() to the last execution ended
  double run_s = 0;
  double orchestrator_commits_per_s = 0;
  double inputs_per_orchestrator_commit = 0;
  double records_per_orchestrator_commit = 0;
  double orchestrator_commit_ms = 0;  // log commit incl. fdatasync and write_mu wait
  double acker_commits_per_s = 0;
  double acks_per_acker_commit = 0;
  latency_summary latency;
  cpu_split cpu;
  uint64_t transitions = 0;
  uint64_t ended = 0;
};

report make_report(const run_record& r, const std::vector<std::unique_ptr<acker>>& ackers,
                   const std::vector<int>& orchestrator_tids) {
  report out;
  const totals& a = r.first;
  const totals& b = r.last;
  out.window_s = static_cast<double>(b.at_ns - a.at_ns) / 1e9;
  out.run_s = static_cast<double>(r.end.at_ns - r.started_ns) / 1e9;
  out.transitions = r.end.transitions;
  out.ended = r.end.ended;
  out.transitions_per_s = ratio(static_cast<double>(b.transitions - a.transitions), out.window_s);
  out.overall_transitions_per_s = ratio(static_cast<double>(r.end.transitions), out.run_s);
  const auto commits = static_cast<double>(b.orchestrator_commits - a.orchestrator_commits);
  out.orchestrator_commits_per_s = ratio(commits, out.window_s);
  out.inputs_per_orchestrator_commit =
      ratio(static_cast<double>(b.orchestrator_inputs - a.orchestrator_inputs), commits);
  out.records_per_orchestrator_commit =
      ratio(static_cast<double>(b.orchestrator_records_out - a.orchestrator_records_out), commits);
  out.orchestrator_commit_ms =
      ratio(static_cast<double>(b.orchestrator_commit_us - a.orchestrator_commit_us), commits) /
      1e3;
  const auto acker_commits = static_cast<double>(b.acker_commits - a.acker_commits);
  out.acker_commits_per_s = ratio(acker_commits, out.window_s);
  out.acks_per_acker_commit = ratio(static_cast<double>(b.acks - a.acks), acker_commits);
  out.latency = summarize_latency(ackers, a.at_ns, b.at_ns);
  out.cpu = split_cpu(r.cpu_first, r.cpu_last, orchestrator_tids);
  return out;
}

void print_table(const bench_flags& f, const report& r, std::string_view fs_name) {
  const double cores = static_cast<double>(std::thread::hardware_concurrency());
  auto pct = [&](double s) { return 100.0 * ratio(s, r.window_s * cores); };
  fmt::print(
      "orchestration_bench: {} partitions, fsync {}, {} executions x {}, {} in "
      "flight, ackers {}, data on {}\n",
      f.partitions, f.fsync ? "on" : "off", f.executions,
      fanout_items ? fmt::format("a foreach of {} items", fanout_items)
                   : fmt::format("{} steps", f.steps),
      f.in_flight, f.ackers, fs_name);
  fmt::print("  {:<38} {:>12.0f}   (window {:.2f} s of {:.2f} s run)\n",
             "step transitions/s (window)", r.transitions_per_s, r.window_s, r.run_s);
  fmt::print("  {:<38} {:>12.0f}\n", "step transitions/s (whole run)", r.overall_transitions_per_s);
  fmt::print("  {:<38} {:>12.2f} {:>8.2f} {:>8.2f} {:>8.2f}   ({} samples)\n",
             "ack->next command ms p50 p90 p99 max", r.latency.p50_ms, r.latency.p90_ms,
             r.latency.p99_ms, r.latency.max_ms, r.latency.count);
  fmt::print("  {:<38} {:>12.0f}   ({:.1f} inputs, {:.1f} records out, {:.2f} ms each)\n",
             "orchestrator commits/s", r.orchestrator_commits_per_s,
             r.inputs_per_orchestrator_commit, r.records_per_orchestrator_commit,
             r.orchestrator_commit_ms);
  fmt::print("  {:<38} {:>12.0f}   ({:.1f} acks each)\n", "acker commits/s", r.acker_commits_per_s,
             r.acks_per_acker_commit);
  fmt::print("  {:<38} {:>12.0f}   (user {:.2f} s, sys {:.2f} s)\n", "CPU used, % of all cores",
             pct(r.cpu.user_s + r.cpu.sys_s), r.cpu.user_s, r.cpu.sys_s);
  for (size_t i = 0; i < cpu_roles; ++i) {
    fmt::print("    {:<36} {:>12.1f}%\n", cpu_role_names[i], pct(r.cpu.seconds[i]));
  }
  fmt::print("  {:<38} {:>12.0f}   (should be near 0 for a clean measurement)\n",
             "other processes' CPU, % of all cores", pct(r.cpu.neighbours_s));
  fmt::print("  {:<38} {:>12.0f}   (after the run: {:.0f})\n",
             "disk: 4 KiB append + fdatasync, us p50", r.fdatasync_before_us, r.fdatasync_after_us);
}

void print_json(const bench_flags& f, const report& r) {
  const double window_cpu = r.window_s * std::thread::hardware_concurrency();
  std::string cpu;
  for (size_t i = 0; i < cpu_roles; ++i) {
    cpu += fmt::format(R"({}"{}":{:.3f})", i ? "," : "", cpu_role_names[i],
                       ratio(r.cpu.seconds[i], window_cpu));
  }
  fmt::print(
      R"({{"bench":"orchestration","partitions":{},"fsync":{},"executions":{},"in_flight":{},"steps":{},)"
      R"("ackers":"{}","transitions_per_s":{:.0f},"overall_transitions_per_s":{:.0f},)"
      R"("window_s":{:.3f},"run_s":{:.3f},"latency_ms":{{"p50":{:.3f},"p90":{:.3f},)"
      R"("p99":{:.3f},"max":{:.3f},"samples":{}}},"orchestrator_commits_per_s":{:.0f},)"
      R"("inputs_per_commit":{:.1f},"records_per_commit":{:.1f},"commit_ms":{:.3f},)"
      R"("acker_commits_per_s":{:.0f},"acks_per_acker_commit":{:.1f},"cpu_share":{{{}}},)"
      R"("neighbours_cpu_share":{:.3f},"fdatasync_us":{{"before":{:.0f},"after":{:.0f}}}}})"
      "\n",
      f.partitions, f.fsync, f.executions, f.in_flight, f.steps, f.ackers, r.transitions_per_s,
      r.overall_transitions_per_s, r.window_s, r.run_s, r.latency.p50_ms, r.latency.p90_ms,
      r.latency.p99_ms, r.latency.max_ms, r.latency.count, r.orchestrator_commits_per_s,
      r.inputs_per_orchestrator_commit, r.records_per_orchestrator_commit, r.orchestrator_commit_ms,
      r.acker_commits_per_s, r.acks_per_acker_commit, cpu, ratio(r.cpu.neighbours_s, window_cpu),
      r.fdatasync_before_us, r.fdatasync_after_us);
}

// ----------------------------------------------------------------------------------- main

// Every execution must have succeeded, with no rejection and no stale ack: a benchmark of a
// run that went wrong measures nothing.
bool check_outcome(node& n, const bench_flags& f, const run_record& r) {
  const node_summary s = n.summary();
  const auto it = s.executions_by_status.find("succeeded");
  const uint64_t succeeded = it == s.executions_by_status.end() ? 0 : it->second;
  const uint64_t expected_transitions =
      uint64_t{f.executions} * (fanout_items ? fanout_items : f.steps);
  const bool ok = succeeded == f.executions && s.rejections == 0 && s.deadletters == 0 &&
                  r.end.stale_acks == 0 && r.end.transitions == expected_transitions;
  if (!ok) {
    fmt::print(stderr,
               "orchestration_bench: run incomplete or wrong: {} of {} succeeded, {} of {} "
               "transitions, {} rejections, {} deadletters, {} stale acks{}\n",
               succeeded, f.executions, r.end.transitions, expected_transitions, s.rejections,
               s.deadletters, r.end.stale_acks, r.timed_out ? " (hit --seconds)" : "");
  }
  return ok;
}

result<std::unique_ptr<node>> open_node(const bench_flags& f, const std::string& dir, clock& clk,
                                        workload& w) {
  node_options o;
  o.data_dir = dir;
  o.partitions = f.partitions;
  o.fsync = f.fsync;
  o.workers = false;
  o.runtime.batch_records_max = f.orchestrator_batch_records_max;
  auto n = node::open(o, clk);
  if (!n) return n;
  const auto tenants = pick_tenants(f.tenants, f.partitions);
  if (auto r = publish((*n)->get_log(), tenants, f.steps); !r) return std::unexpected(r.error());
  if (auto r = submit_starts((*n)->get_log(), tenants, w); !r) {
    return std::unexpected(r.error());
  }
  if (auto r = (*n)->recover(); !r) return std::unexpected(r.error());
  return n;
}

int run_bench(const bench_flags& f) {
  auto dir = temp_dir::create(f.dir);
  if (!dir) return fmt::print(stderr, "orchestration_bench: {}\n", dir.error().message), 2;
  system_clock clk;
  workload w(f.executions, f.in_flight, f.steps);
  auto opened = open_node(f, dir->path(), clk, w);
  if (!opened) return fmt::print(stderr, "orchestration_bench: {}\n", opened.error().message), 2;
  node& n = **opened;
  const double fdatasync_before_us = fdatasync_p50_us(dir->path(), fdatasync_probe_rounds);
  std::vector<int64_t> ack_commit_ns(f.executions, 0);
  auto ackers = make_ackers(n.get_log(), f, w, ack_commit_ns);

  const cpu_snapshot before_start = take_cpu_snapshot();
  n.start();
  const std::vector<int> orchestrator_tids = new_threads(before_start, take_cpu_snapshot());
  for (auto& a : ackers) a->start();
  const run_record r = run(n, ackers, f);
  for (auto& a : ackers) a->stop();
  n.stop();

  report rep = make_report(r, ackers, orchestrator_tids);
  rep.fdatasync_before_us = fdatasync_before_us;
  rep.fdatasync_after_us = fdatasync_p50_us(dir->path(), fdatasync_probe_rounds);
  print_table(f, rep, filesystem_name(dir->path()));
  if (f.json) print_json(f, rep);
  return check_outcome(n, f, r) ? 0 : 1;
}

int parse_and_run(int argc, char** argv) {
  bench_flags f;
  CLI::App app{
      "Orchestration benchmark: step transitions/s and ack-to-next-command latency "
      "on the embedded log (see bench/README.md)"};
  app.add_option("--partitions", f.partitions, "Partitions")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_flag("--fsync,!--no-fsync", f.fsync, "fdatasync every log commit (default on)");
  app.add_option("--steps", f.steps, "Task steps in the linear workflow")
      ->capture_default_str()
      ->check(CLI::Range(1, 60));
  app.add_option("--fanout", fanout_items,
                 "0: the linear workflow of --steps tasks; N: one foreach step over N items, 100 "
                 "at a time (a transition per item)")
      ->check(CLI::Range(0u, static_cast<unsigned>(limits::foreach_items_max)));
  app.add_option("--executions", f.executions, "Executions to run")
      ->capture_default_str()
      ->check(CLI::Range(1, 10'000'000));
  app.add_option("--in-flight", f.in_flight,
                 "Executions running at once: a new one starts when one ends (closed loop); "
                 "0 starts them all up front")
      ->capture_default_str();
  app.add_option("--tenants", f.tenants, "Tenants (spread evenly over the partitions)")
      ->capture_default_str()
      ->check(CLI::Range(1, 10'000));
  app.add_option("--ackers", f.ackers, "partition: one acker thread per partition; single: one")
      ->capture_default_str()
      ->check(CLI::IsMember({"partition", "single"}));
  app.add_option("--ack-batch", f.ack_batch_records_max, "Commands acked per acker commit, max")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--orchestrator-batch", f.orchestrator_batch_records_max,
                 "partition_runtime batch_records_max (inputs per stream per batch)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--seconds", f.seconds_max, "Stop after this long even if not done")
      ->capture_default_str()
      ->check(CLI::Range(1, 86'400));
  app.add_option("--dir", f.dir, "Parent of the temporary data directory ($TMPDIR or /tmp)");
  app.add_flag("--json", f.json, "Also print the results as one JSON line");
  CLI11_PARSE(app, argc, argv);
  if (f.in_flight == 0 || f.in_flight > f.executions) f.in_flight = f.executions;
  return run_bench(f);
}

}  // namespace
}  // namespace auterity::bench

int main(int argc, char** argv) {
  std::signal(SIGINT, auterity::bench::on_signal);
  std::signal(SIGTERM, auterity::bench::on_signal);
  return auterity::bench::parse_and_run(argc, argv);
}
