// Verification benchmark: how fast `auterity replay verify` checks hash chains and rebuilds the
// state, in events per second, on a large embedded log.
//
// The log is written directly through the `log` interface (no orchestrator): tenants with a
// published definition, executions of 20 events each (start, 9 steps scheduled + succeeded,
// end) with realistic payload sizes and valid hash chains, many executions interleaved per
// partition as a busy engine writes them. Then, timed separately:
//   open     opening the embedded log (its recovery scans every segment)
//   chains   verify_log with the chain check only, all partitions in parallel (and 1 thread)
//   rebuild  the state rebuilt through the appliers into a RocksDB per partition
//   ends     the chain check with each history's end compared with that state (what
//            `auterity replay verify --chains` does on a data directory)
//   verify   verify_log with chains + state: rebuild again and compare key by key with it
//
//   verify_bench [--events N] [--partitions P] [--in-flight K] [--repeat R] [--dir D] [--keep]
// See bench/README.md, "Verification speed", for recorded results.

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include "engine/assert.h"
#include "engine/embedded_log.h"
#include "engine/record.h"
#include "replay/scan.h"
#include "replay/source.h"
#include "replay/state_replay.h"
#include "replay/verify.h"

namespace auterity::bench {
namespace {

namespace fs = std::filesystem;
using steady = std::chrono::steady_clock;

struct bench_flags {
  uint64_t events = 2'000'000;
  uint32_t partitions = 4;
  uint32_t tenants_per_partition = 4;
  uint32_t in_flight = 256;  // executions open at once per partition
  std::string dir;
  bool keep = false;
  int repeat = 3;  // runs per measurement: a shared machine's other load comes and goes
};

constexpr uint32_t steps = 9;  // 1 + 2 * steps + 1 = 20 events per execution
constexpr size_t commit_records_max = 2048;

double since(steady::time_point t0) {
  return std::chrono::duration<double>(steady::now() - t0).count();
}

long peak_rss_mb() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024;
}

std::string definition_json(uint32_t version) {
  std::string s = fmt::format(R"({{"workflow":"bench","version":{},"steps":[)", version);
  for (uint32_t i = 0; i < steps; ++i) {
    s += fmt::format(R"({}{{"id":"s{}","kind":"task","action":"transform","input":{{"n":{}}}}})",
                     i ? "," : "", i, i);
  }
  return s + "]}";
}

// Tenants whose default placement is partition p.
std::vector<std::string> tenants_of(uint32_t p, const bench_flags& f) {
  std::vector<std::string> out;
  for (uint32_t i = 0; out.size() < f.tenants_per_partition; ++i) {
    std::string t = fmt::format("dealer-{:04}", i);
    if (tenant_partition(t, f.partitions) == p) out.push_back(std::move(t));
  }
  return out;
}

// Builds one partition's executions stream: events with the same shape and sizes as the
// engine's, chained per execution, interleaved round-robin over `in_flight` executions.
class partition_writer {
 public:
  partition_writer(log& l, uint32_t p, const bench_flags& f, uint64_t events)
      : _log(l), _p(p), _f(f), _events(events), _tenants(tenants_of(p, f)) {}

  void run() {
    for (const std::string& t : _tenants) publish(t);
    std::vector<open_execution> open;
    uint64_t started = 0;
    while (_written < _events || !open.empty()) {
      while (open.size() < _f.in_flight && _written + 20 * open.size() < _events) {
        open.push_back({_tenants[started % _tenants.size()], fmt::format("x{}", started), 0, {}});
        ++started;
      }
      for (size_t i = 0; i < open.size();) {
        if (step(open[i])) {
          open[i] = std::move(open.back());
          open.pop_back();
        } else {
          ++i;
        }
      }
    }
    flush();
  }

  uint64_t written() const { return _written; }

 private:
  struct open_execution {
    std::string tenant, id;
    uint32_t seq;
    hash256 last;
  };

  void publish(const std::string& tenant) {
    auto p = fbs::CreateDefinitionPublished(_fbb, _fbb.CreateString("bench"), 1,
                                            _fbb.CreateString(definition_json(1)), steps);
    envelope_header h;
    h.tenant_id = tenant;
    const std::string id = fmt::format("tenant:{}#0", tenant);
    h.record_id = id;
    h.causation_id = "publish";
    h.timestamp_ms = ++_now;
    append(tenant, finish_envelope(_fbb, h, fbs::Payload::DefinitionPublished, p.Union()));
  }

  // Appends the execution's next event; true when it was the last.
  bool step(open_execution& e) {
    const uint32_t seq = e.seq;
    flatbuffers::Offset<void> payload;
    fbs::Payload type;
    const std::string step = fmt::format("s{}", seq == 0 ? 0 : (seq - 1) / 2);
    const bool last = seq == 2 * steps + 1;
    if (seq == 0) {
      type = fbs::Payload::ExecutionStarted;
      payload = fbs::CreateExecutionStarted(_fbb, _fbb.CreateString("bench"), 1,
                                            _fbb.CreateString(input_json(e.id)))
                    .Union();
    } else if (last) {
      type = fbs::Payload::ExecutionSucceeded;
      payload = fbs::CreateExecutionSucceeded(_fbb, _fbb.CreateString(output_json(e.id))).Union();
    } else if (seq % 2 == 1) {
      type = fbs::Payload::StepScheduled;
      payload = fbs::CreateStepScheduled(_fbb, _fbb.CreateString(step), 1,
                                         _fbb.CreateString(fmt::format("{}/{}/1", e.id, step)),
                                         _fbb.CreateString(input_json(e.id)), _now + 30'000)
                    .Union();
    } else {
      type = fbs::Payload::StepSucceeded;
      payload = fbs::CreateStepSucceeded(_fbb, _fbb.CreateString(step), 1,
                                         _fbb.CreateString(output_json(e.id)))
                    .Union();
    }
    envelope_header h;
    h.tenant_id = e.tenant;
    h.execution_id = e.id;
    const std::string id = fmt::format("{}#{}", e.id, seq);
    const std::string cause = fmt::format("ack/{}/{}/1", e.id, step);
    h.record_id = id;
    h.causation_id = cause;
    h.timestamp_ms = ++_now;
    h.prev_hash = seq ? &e.last : nullptr;
    std::string bytes = finish_envelope(_fbb, h, type, payload);
    e.last = sha256(bytes);
    e.seq++;
    append(e.tenant, std::move(bytes));
    ++_written;
    return last;
  }

  static std::string input_json(const std::string& id) {
    return fmt::format(R"({{"lead":"{}","name":"Maria Lopez","vehicle":"2024 RAV4 Hybrid",)"
                       R"("budget":42000,"contact":{{"phone":"+15550100001","preferred":"sms"}}}})",
                       id);
  }
  static std::string output_json(const std::string& id) {
    return fmt::format(R"({{"lead":"{}","grade":"hot","score":85,"reasons":["budget >= 40k",)"
                       R"("buying this week"]}})",
                       id);
  }

  void append(const std::string& tenant, std::string bytes) {
    _batch.add(stream::executions, tenant, std::move(bytes));
    if (_batch.appends.size() >= commit_records_max) flush();
  }

  void flush() {
    if (_batch.empty()) return;
    auto r = _log.commit(_p, _batch);
    vassert(r.has_value(), "commit: {}", r ? "" : r.error().message);
    _batch.clear();
  }

  log& _log;
  uint32_t _p;
  const bench_flags& _f;
  uint64_t _events;
  std::vector<std::string> _tenants;
  flatbuffers::FlatBufferBuilder _fbb{1024};
  commit_batch _batch;
  uint64_t _written = 0;
  int64_t _now = 1'700'000'000'000;
};

uint64_t write_log(const std::string& dir, const bench_flags& f) {
  embedded_log_options o;
  o.partitions = f.partitions;
  o.fsync = false;
  auto l = open_embedded_log(dir + "/log", o);
  vassert(l.has_value(), "open log: {}", l ? "" : l.error().message);
  uint64_t total = 0;
  for (uint32_t p = 0; p < f.partitions; ++p) {
    partition_writer w(**l, p, f, f.events / f.partitions);
    w.run();
    total += w.written();
  }
  return total;
}

struct measured {
  double seconds;  // the median run
  double best;     // the fastest run
  uint64_t events;
  verify_report report;
};

measured timed_verify(replay_source& src, bool state, unsigned threads, const std::string& scratch,
                      int repeat) {
  verify_options o;
  o.state = state;
  o.threads = threads;
  o.scratch_dir = scratch;
  std::vector<double> runs;
  measured m{};
  for (int i = 0; i < std::max(1, repeat); ++i) {
    const auto t0 = steady::now();
    auto r = verify_log(*src.events, src.store_ptrs(), o);
    runs.push_back(since(t0));
    vassert(r.has_value(), "verify: {}", r ? "" : r.error().message);
    vassert(r->ok(), "the benchmark's log must verify");
    m.events = 0;
    for (const auto& p : r->partitions) m.events += p.events;
    m.report = std::move(*r);
  }
  std::sort(runs.begin(), runs.end());
  m.seconds = runs[runs.size() / 2];
  m.best = runs.front();
  return m;
}

// Rebuilds every partition's state into <dir>/state/pNNN (the "engine's state" that the
// verify-with-state run then compares with), partitions in parallel like verify does.
double rebuild_states(log& l, const std::string& dir) {
  std::vector<uint32_t> parts(l.partition_count());
  for (uint32_t p = 0; p < parts.size(); ++p) parts[p] = p;
  const auto t0 = steady::now();
  auto r = for_each_partition(parts, 0, [&](uint32_t p) -> result<void> {
    auto b = state_rebuilder::open(fmt::format("{}/state/p{:03}", dir, p), p, l.partition_count());
    if (!b) return std::unexpected(b.error());
    auto done = rebuild(l, p, **b, {});
    if (!done) return std::unexpected(done.error());
    return {};
  });
  vassert(r.has_value(), "rebuild: {}", r ? "" : r.error().message);
  return since(t0);
}

void line(const char* what, double seconds, uint64_t events) {
  fmt::print("{:<40} {:8.2f} s  {:>10.0f} events/s\n", what, seconds, events / seconds);
}

void line(const char* what, const measured& m) {
  fmt::print("{:<40} {:8.2f} s  {:>10.0f} events/s  (best {:.0f})\n", what, m.seconds,
             m.events / m.seconds, m.events / m.best);
}

int run(const bench_flags& f) {
  const std::string dir =
      f.dir.empty() ? fmt::format("/tmp/auterity-verify-bench-{}", ::getpid()) : f.dir;
  std::error_code ec;
  fs::remove_all(dir, ec);
  fmt::print(
      "verify_bench: {} events, {} partitions, {} tenants/partition, {} executions in "
      "flight per partition, {} cores, in {}\n",
      f.events, f.partitions, f.tenants_per_partition, f.in_flight,
      std::thread::hardware_concurrency(), dir);
  auto t0 = steady::now();
  const uint64_t written = write_log(dir, f);
  line("write (through the log interface)", since(t0), written);
  uint64_t bytes = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir + "/log")) {
    if (e.is_regular_file()) bytes += e.file_size();
  }
  fmt::print("log: {:.0f} MiB, {:.0f} bytes per event\n", bytes / 1048576.0,
             double(bytes) / written);

  t0 = steady::now();
  auto src = open_embedded_source(dir, false);
  vassert(src.has_value(), "open: {}", src ? "" : src.error().message);
  line("open (embedded log recovery)", since(t0), written);

  const measured chains = timed_verify(*src, false, 0, "", f.repeat);
  line("verify --chains, log only (parallel)", chains);
  line("verify --chains, log only (1 thread)", timed_verify(*src, false, 1, "", f.repeat));
  uint64_t peak = 0;
  for (const auto& p : chains.report.partitions) peak = std::max(peak, p.open_chains_peak);
  fmt::print("chain check memory: at most {} open histories per partition\n", peak);

  const double rebuild = rebuild_states(*src->events, dir);
  line("state rebuild (appliers -> RocksDB)", rebuild, written);
  src = {};
  auto with_state = open_embedded_source(dir, true);
  vassert(with_state.has_value(), "open: {}", with_state ? "" : with_state.error().message);
  // What `auterity replay verify --chains` does on a data directory: chains, and the end of
  // every history compared with the engine's state.
  line("verify --chains + ends (parallel)", timed_verify(*with_state, false, 0, "", f.repeat));
  line("verify --chains + ends (1 thread)", timed_verify(*with_state, false, 1, "", f.repeat));
  line("verify, chains + state (parallel)",
       timed_verify(*with_state, true, 0, dir + "/scratch", std::min(f.repeat, 1)));
  fmt::print("peak RSS {} MiB\n", peak_rss_mb());
  with_state = {};
  if (!f.keep) fs::remove_all(dir, ec);
  return 0;
}

}  // namespace
}  // namespace auterity::bench

int main(int argc, char** argv) {
  auterity::bench::bench_flags f;
  CLI::App app{"Verification speed: hash chains and state replay, in events per second"};
  app.add_option("--events", f.events, "Events to write (all partitions)")->capture_default_str();
  app.add_option("--partitions", f.partitions, "Partitions")->capture_default_str();
  app.add_option("--tenants", f.tenants_per_partition, "Tenants per partition")
      ->capture_default_str();
  app.add_option("--in-flight", f.in_flight, "Executions open at once per partition")
      ->capture_default_str();
  app.add_option("--dir", f.dir, "Data directory (default: a fresh one under /tmp)");
  app.add_flag("--keep", f.keep, "Keep the data directory");
  app.add_option("--repeat", f.repeat, "Runs of each chain measurement (median and best shown)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return auterity::bench::run(f);
}
