// Kafka orchestration benchmark: step transitions per second and ack-to-next-command latency
// of the orchestrator on a real Kafka broker (exactly-once: every orchestrator commit is one
// transaction), and, in the same run against the same broker, librdkafka's raw transactional
// produce rate, so the engine's figure reads as a ratio of what the client and broker can do.
//
// The approach and the measurement definitions are orchestration_bench.cc's (bench/README.md):
// a node runs without its connector workers, with every partition (kafka_group off); an
// "acker" in this program plays the connector worker on commands.step, acking each command
// with Success and no connector work; a closed loop keeps --in-flight executions running.
//   step transition  an ack processed by the orchestrator (orchestrator_probe::step_transitions)
//   latency          when the acker reads an execution's next command − when the ack of its
//                    previous command was committed (made visible to read_committed readers)
//   window           from the first sample where the initial StartExecution commands have been
//                    processed, for --seconds (or until the closed loop drains)
// The acker commits its acks one of three ways (--acker):
//   txn         a kafka_log of its own: read_committed reads, acks + position in one
//               transaction of its own transactional producer (a worker in a process of its
//               own, written against the log interface);
//   shared      the node's kafka_log: its acks join the engine's group commit (what the
//               in-process workers of `auterity run` do);
//   idempotent  reads through a kafka_log of its own, acks through a plain idempotent producer
//               (acks=all), no transaction: the acker then costs the pipeline one produce
//               round trip instead of a transaction, which isolates the engine's cost.
//
// Where the engine's transactions spend their time is printed beside (kafka_commit_probe: queue,
// produce, send offsets, flush, EndTxn); --producers 1 runs the engine's log on one
// transactional producer (the layout before 2026-12-07), --committers 1 on one committer for
// all partitions (before docs/pipelined-transactions.md step 1), --pipeline off without step 2
// (each partition waits for its commit before deciding again), for alternating comparisons.
//
// The program starts its own broker (tests/kafka/broker.sh, stopped at the end and also if
// this process dies), creates the topics with a unique prefix and stops by itself. Results and
// commands: bench/KAFKA.md.

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
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
#include "engine/kafka_log.h"
#include "engine/kafka_util.h"
#include "engine/record.h"
#include "engine/worker_runtime.h"
#include "node/node.h"
#include "processors/client.h"
#include "tests/kafka/broker_fixture.h"
#include "topics/catalog.h"

namespace auterity::bench {
namespace {

namespace fs = std::filesystem;

// ------------------------------------------------------------------------------- settings

struct bench_flags {
  int nodes = 1;
  uint32_t partitions = 2;
  uint32_t steps = 10;
  uint32_t executions = 0;  // 0: as many as the window takes (closed loop, time-bounded)
  uint32_t in_flight = 1000;
  uint32_t tenants = 2;
  std::string acker = "idempotent";  // txn | shared | idempotent
  size_t ack_batch_records_max = 1024;
  int64_t commit_interval_ms = 0;
  size_t orchestrator_batch_records_max = partition_runtime_options{}.batch_records_max;
  int warmup_s = 10;    // engine running before the window may open (broker JIT, caches)
  int seconds = 15;     // measuring window
  int timeout_s = 120;  // the whole engine phase, at most
  bool engine = true;   // false: only the raw phase
  int raw_seconds = 2;  // per raw variant; 0 skips the raw phase
  // Records per raw transaction; empty: 1 and the engine's mean records per commit.
  std::vector<size_t> raw_records;
  size_t raw_record_bytes = 256;
  int raw_producers = 2;    // also run the engine-sized variant on this many producers at once
  std::string broker_heap;  // AUTERITY_KAFKA_HEAP for broker.sh; empty: its default
  std::string dir;          // parent of the temporary state directory
  std::string kafka_debug;  // librdkafka "debug" of every producer, e.g. "eos,protocol"
  int producers = kafka_log_options{}.transactional_producers;  // the engine log's
  int committers = kafka_log_options{}.committers;              // the engine log's
  bool pipeline = false;  // the engine's runtimes; off as in `auterity run`
  // librdkafka settings over the engine's: producers (engine and raw), consumers (engine)
  std::map<std::string, std::string> producer_set, consumer_set;
  bool keep_state = false;  // leave the engine's state directory behind
  int progress_s = 0;       // print rates every this many seconds; 0: off
  bool json = false;
};

constexpr uint32_t executions_unbounded = 2'000'000;  // index space of a time-bounded run
constexpr size_t read_batch_bytes_max = 8 << 20;      // acker read limit
// The acker's log is woken only by its own commits: keep its idle sleeps short.
constexpr int64_t acker_idle_wait_ms_max = 1;
constexpr int64_t sample_interval_ms = 10;
constexpr int drain_timeout_ms = 20'000;  // after the acker stops, for the engine to catch up
constexpr int kafka_timeout_ms = 30'000;  // one librdkafka blocking call, at most
constexpr int watchdog_slack_s = 120;     // broker start, topics, setup, stop
constexpr int raw_warmup_txns = 20;       // per raw producer, before the clock starts
constexpr int raw_partitions = 8;         // of the raw topic: one per concurrent producer

// (b − a) per d: a rate between two counter readings.
double per(uint64_t b, uint64_t a, double d) { return ratio(static_cast<double>(b - a), d); }

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// ------------------------------------------------------------------------------- broker

// A throwaway cluster from broker.sh (tests/kafka/broker_fixture.h), stopped and deleted when
// this object goes, or when this process dies first; with its JVM pids and start time.
class broker_cluster {
 public:
  static result<std::unique_ptr<broker_cluster>> start(int nodes, const std::string& heap) {
    if (!heap.empty()) ::setenv("AUTERITY_KAFKA_HEAP", heap.c_str(), 1);
    const int64_t t = now_ns();
    std::unique_ptr<broker_cluster> c(new broker_cluster(nodes));
    if (!c->_cluster.error().empty()) return fail(errc::io, c->_cluster.error());
    c->_start_s = static_cast<double>(now_ns() - t) / 1e9;
    for (int i = 1; i <= nodes; ++i) {
      const std::string pid_file = fmt::format("{}/node{}.pid", c->_cluster.dir(), i);
      c->_pids.push_back(std::atoi(first_line(pid_file).c_str()));
    }
    return c;
  }

  const std::string& bootstrap() const { return _cluster.bootstrap(); }
  const std::vector<int>& pids() const { return _pids; }
  double start_s() const { return _start_s; }
  // "-Xmx512m" and "kafka-3.9.1" as the first node's command line has them.
  std::string describe() const {
    std::string cmdline = read_file(fmt::format("/proc/{}/cmdline", _pids.at(0)));
    std::ranges::replace(cmdline, '\0', ' ');
    auto token = [&](std::string_view start) {
      const size_t at = cmdline.find(start);
      if (at == std::string::npos) return std::string("?");
      const size_t end = cmdline.find_first_of(" /", at);
      return cmdline.substr(at, end == std::string::npos ? end : end - at);
    };
    return fmt::format("{}, heap {}, JVM pid {}", token("kafka-"), token("-Xmx"), _pids.at(0));
  }

 private:
  explicit broker_cluster(int nodes) : _cluster(nodes) {}
  testing::kafka_cluster _cluster;
  std::vector<int> _pids;
  double _start_s = 0;
};

// The engine's eight topics plus the raw benchmark's topic, under `prefix`.
result<std::string> create_topics(const std::string& bootstrap, const bench_flags& f,
                                  const std::string& prefix) {
  catalog_options c;
  c.partitions = f.partitions;
  c.replication = f.nodes >= 3 ? 3 : 1;
  c.prefix = prefix;
  std::vector<topic_spec> topics = default_catalog(c);
  topic_spec raw = topics.back();
  raw.name = prefix + "bench.raw";
  raw.partitions = raw_partitions;
  raw.co_partitioned = false;
  topics.push_back(raw);
  auto applied = apply_catalog(bootstrap, topics);
  if (!applied) return std::unexpected(applied.error());
  return raw.name;
}

// ------------------------------------------------------------------------------ librdkafka

struct rk_deleter {
  void operator()(rd_kafka_t* rk) const {
    rd_kafka_flush(rk, kafka_timeout_ms);
    rd_kafka_destroy(rk);
  }
};
using rk_ptr = std::unique_ptr<rd_kafka_t, rk_deleter>;

struct rk_error_deleter {
  void operator()(rd_kafka_error_t* e) const { rd_kafka_error_destroy(e); }
};
using rk_error_ptr = std::unique_ptr<rd_kafka_error_t, rk_error_deleter>;

// Counts failed deliveries of a producer (its opaque).
struct delivery_failures {
  std::atomic<uint64_t> count{0};
  std::string last;  // written on the polling thread only
};

void on_delivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
  if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) return;
  auto* f = static_cast<delivery_failures*>(opaque);
  f->last = rd_kafka_err2str(m->err);
  f->count.fetch_add(1, std::memory_order_relaxed);
}

// A producer with the settings kafka_log's transactional producer uses (engine/kafka_log.cc),
// plus `extra`; deliveries are counted into `failures`.
result<rk_ptr> make_producer(const std::string& bootstrap,
                             const std::map<std::string, std::string>& extra,
                             delivery_failures* failures) {
  std::map<std::string, std::string> conf = {
      {"bootstrap.servers", bootstrap},
      {"enable.idempotence", "true"},
      {"acks", "all"},
      {"linger.ms", "1"},
      {"retry.backoff.ms", "5"},
  };
  for (const auto& [k, v] : extra) conf[k] = v;
  auto c = kafka_conf_new(conf);
  if (!c) return std::unexpected(c.error());
  rd_kafka_conf_set_dr_msg_cb(*c, on_delivery);
  rd_kafka_conf_set_opaque(*c, failures);
  auto rk = kafka_client_new(RD_KAFKA_PRODUCER, *c, "kafka producer");
  if (!rk) return std::unexpected(rk.error());
  return rk_ptr(*rk);
}

// Queues one record (copied); waits for room if librdkafka's queue is full.
void produce(rd_kafka_t* rk, const std::string& topic, uint32_t partition, std::string_view key,
             std::string_view value) {
  for (;;) {
    const rd_kafka_resp_err_t err = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(static_cast<int32_t>(partition)),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(const_cast<char*>(key.data()), key.size()),
        RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return;
    vassert(err == RD_KAFKA_RESP_ERR__QUEUE_FULL, "produce to {}/{}: {}", topic, partition,
            rd_kafka_err2str(err));
    rd_kafka_poll(rk, 10);
  }
}

// ----------------------------------------------------------------------------- ack sinks

// Where the acker's commit goes: makes the appends visible to read_committed readers (and
// records the position, if the sink keeps positions) before returning.
class ack_sink {
 public:
  virtual ~ack_sink() = default;
  virtual void commit(uint32_t partition, const commit_batch& out) = 0;
};

// Through a log: one transaction (Kafka), acks and position together.
class log_sink final : public ack_sink {
 public:
  explicit log_sink(log& l) : _log(l) {}
  void commit(uint32_t p, const commit_batch& out) override {
    auto c = _log.commit(p, out);
    vassert(c.has_value(), "acker commit p{}: {}", p, c.error().message);
  }

 private:
  log& _log;
};

// A plain idempotent producer (acks=all, no transaction): produce, then flush until every
// record is acknowledged by the broker. Positions are not kept (the benchmark never restarts
// the acker).
class idempotent_sink final : public ack_sink {
 public:
  static result<std::unique_ptr<idempotent_sink>> open(const std::string& bootstrap,
                                                       const std::string& prefix) {
    std::unique_ptr<idempotent_sink> s(new idempotent_sink(prefix));
    auto rk = make_producer(bootstrap, {}, &s->_failures);
    if (!rk) return std::unexpected(rk.error());
    s->_rk = std::move(*rk);
    return s;
  }
  void commit(uint32_t p, const commit_batch& out) override {
    for (const auto& a : out.appends) {
      produce(_rk.get(), _prefix + std::string(stream_name(a.s)), a.partition.value_or(p), a.key,
              a.value);
    }
    const rd_kafka_resp_err_t err = rd_kafka_flush(_rk.get(), kafka_timeout_ms);
    vassert(err == RD_KAFKA_RESP_ERR_NO_ERROR, "acker flush p{}: {}", p, rd_kafka_err2str(err));
    vassert(_failures.count.load() == 0, "acker delivery p{}: {}", p, _failures.last);
  }

 private:
  explicit idempotent_sink(std::string prefix) : _prefix(std::move(prefix)) {}
  std::string _prefix;
  delivery_failures _failures;
  rk_ptr _rk;
};

// ---------------------------------------------------------------------------------- acker

// Plays the connector worker for one partition, as in orchestration_bench.cc: reads
// commands.step[p] through a log, acks every command with Success "{}" (ack_writer,
// bench_common.h), and commits the acks
// (with the position and, in the closed loop, the next StartExecution of an ended execution's
// tenant) through its sink.
class acker final : public acker_base {
 public:
  // The acker commits through `own_sink` if given, else through `shared_sink`.
  acker(log& reader, std::unique_ptr<ack_sink> own_sink, ack_sink* shared_sink, uint32_t partition,
        std::vector<int64_t>& ack_commit_ns, workload& w, size_t batch_records_max)
      : acker_base(ack_commit_ns, w),
        _log(reader),
        _own_sink(std::move(own_sink)),
        _sink(_own_sink ? *_own_sink : *shared_sink),
        _partition(partition),
        _batch_records_max(batch_records_max) {}
  ~acker() override { stop(); }

 private:
  void run_once() override {
    const uint64_t generation = _log.generation(_partition);
    if (serve() == 0) {
      _log.wait(_partition, generation, std::chrono::milliseconds(acker_idle_wait_ms_max));
    }
  }

  size_t serve() {
    _records.clear();
    auto n = _log.read(stream::commands_step, _partition, _next, _batch_records_max,
                       read_batch_bytes_max, _records);
    vassert(n.has_value(), "acker read p{}: {}", _partition, n.error().message);
    if (*n == 0) return 0;
    const int64_t read_ns = now_ns();
    commit_batch out;
    _acks.add(_records, read_ns, out);
    _next = _records.back().offset + 1;  // Kafka offsets have gaps
    out.set_position(std::string(acker_group), stream::commands_step, _next);
    _sink.commit(_partition, out);
    const int64_t committed_ns = now_ns();
    _acks.committed(committed_ns);
    _counters.commits.fetch_add(1, std::memory_order_relaxed);
    _counters.acks.fetch_add(*n, std::memory_order_relaxed);
    _counters.records.fetch_add(out.appends.size(), std::memory_order_relaxed);
    _counters.commit_us.fetch_add((committed_ns - read_ns) / 1000, std::memory_order_relaxed);
    return *n;
  }

  log& _log;
  std::unique_ptr<ack_sink> _own_sink;
  ack_sink& _sink;
  uint32_t _partition;
  size_t _batch_records_max;
  uint64_t _next = 0;
  std::vector<record> _records;
};

// What the ackers read and commit through, by --acker.
struct acker_side {
  std::unique_ptr<log> own_log;          // txn, idempotent: reads (txn: and commits)
  std::unique_ptr<ack_sink> log_commit;  // txn, shared
  std::vector<std::unique_ptr<acker>> ackers;
};

result<acker_side> make_ackers(node& n, const bench_flags& f, const kafka_log_options& engine,
                               workload& w, std::vector<int64_t>& ack_commit_ns) {
  acker_side side;
  if (f.acker != "shared") {
    kafka_log_options k = engine;
    k.instance_id = fmt::format("bench-acker-{}", ::getpid());
    k.probe = nullptr;  // the probe counts the engine's transactions only
    auto l = open_kafka_log(k);
    if (!l) return std::unexpected(l.error());
    side.own_log = std::move(*l);
  }
  log& reader = side.own_log ? *side.own_log : n.get_log();
  if (f.acker != "idempotent") side.log_commit = std::make_unique<log_sink>(reader);
  for (uint32_t p = 0; p < n.partitions(); ++p) {
    std::unique_ptr<ack_sink> own;
    if (f.acker == "idempotent") {
      auto s = idempotent_sink::open(engine.bootstrap, engine.topic_prefix);
      if (!s) return std::unexpected(s.error());
      own = std::move(*s);
    }
    side.ackers.push_back(std::make_unique<acker>(reader, std::move(own), side.log_commit.get(), p,
                                                  ack_commit_ns, w, f.ack_batch_records_max));
  }
  return side;
}

// ------------------------------------------------------------------------------ CPU split

// Threads of a process: tid → (comm, ns on a CPU from schedstat).
using thread_times = std::map<int, std::pair<std::string, uint64_t>>;

thread_times read_threads(const fs::path& proc) {
  thread_times out;
  std::error_code ec;
  for (const auto& task : fs::directory_iterator(proc / "task", ec)) {
    const std::string name = task.path().filename().string();
    int tid = 0;
    std::from_chars(name.data(), name.data() + name.size(), tid);
    const uint64_t run_ns =
        std::strtoull(first_line(task.path() / "schedstat").c_str(), nullptr, 10);
    out[tid] = {first_line(task.path() / "comm"), run_ns};
  }
  return out;
}

// machine_busy_ticks() in seconds.
double machine_busy_s() {
  return static_cast<double>(machine_busy_ticks()) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double process_cpu_s() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

struct cpu_snapshot {
  double process_s = 0;  // this process, threads that exited included
  thread_times engine;
  std::vector<thread_times> brokers;
  double machine_s = 0;
};

cpu_snapshot take_cpu_snapshot(const std::vector<int>& broker_pids) {
  cpu_snapshot s;
  s.process_s = process_cpu_s();
  s.engine = read_threads("/proc/self");
  for (int pid : broker_pids) s.brokers.push_back(read_threads(fmt::format("/proc/{}", pid)));
  s.machine_s = machine_busy_s();
  return s;
}

constexpr std::array<std::string_view, 6> engine_roles = {"orchestrator threads", "acker threads",
                                                          "librdkafka threads",   "rocksdb threads",
                                                          "main (sampler)",       "other"};
constexpr std::array<std::string_view, 5> broker_roles = {
    "network + request handlers", "KRaft / metadata / purgatory", "GC", "JIT", "other"};

// Partition runtime threads are not named: they carry the process's name.
size_t engine_role(int tid, const std::string& comm, const std::string& main_comm) {
  if (tid == ::getpid()) return 4;
  if (comm.starts_with("bench-acker")) return 1;
  if (comm.starts_with("rdk:")) return 2;
  if (comm.starts_with("rocksdb")) return 3;
  if (comm == main_comm) return 0;
  return 5;
}

// JVM thread names, cut to 15 characters by the kernel.
size_t broker_role(const std::string& comm) {
  if (comm.starts_with("data-plane-kafk")) return 0;
  for (std::string_view p : {"kafka-", "raft-", "quorum-", "broker-", "ExpirationReape",
                             "controller-", "metrics-meter"}) {
    if (comm.starts_with(p)) return 1;
  }
  if (comm.starts_with("GC ") || comm.starts_with("G1 ") || comm == "VM Thread") return 2;
  if (comm.find("CompilerThre") != std::string::npos) return 3;
  return 4;
}

struct cpu_split {
  std::array<double, engine_roles.size()> engine{};
  std::array<double, broker_roles.size()> broker{};
  double engine_s = 0, broker_s = 0, machine_s = 0, neighbours_s = 0;
};

template <typename Role>
void add_deltas(const thread_times& from, const thread_times& to, Role role, std::span<double> out,
                double& total) {
  for (const auto& [tid, thread] : to) {
    auto before = from.find(tid);
    const uint64_t start = before == from.end() ? 0 : before->second.second;
    const double s = static_cast<double>(thread.second - start) / 1e9;
    out[role(tid, thread.first)] += s;
    total += s;
  }
}

cpu_split split_cpu(const cpu_snapshot& a, const cpu_snapshot& b) {
  cpu_split out;
  const std::string main_comm = first_line("/proc/self/comm");
  add_deltas(
      a.engine, b.engine,
      [&](int tid, const std::string& c) { return engine_role(tid, c, main_comm); }, out.engine,
      out.engine_s);
  // Threads that came and went between the snapshots count as "other".
  const double exited = std::max(0.0, (b.process_s - a.process_s) - out.engine_s);
  out.engine.back() += exited;
  out.engine_s += exited;
  for (size_t i = 0; i < b.brokers.size() && i < a.brokers.size(); ++i) {
    add_deltas(
        a.brokers[i], b.brokers[i], [](int, const std::string& c) { return broker_role(c); },
        out.broker, out.broker_s);
  }
  out.machine_s = b.machine_s - a.machine_s;
  out.neighbours_s = std::max(0.0, out.machine_s - out.engine_s - out.broker_s);
  return out;
}

// ------------------------------------------------------------------------------- sampling

// The engine log's transaction phases (kafka_commit_probe), at one moment.
struct phase_totals {
  uint64_t transactions = 0, batches = 0, queue_us = 0, produce_us = 0, offsets_us = 0,
           flush_us = 0, end_us = 0;
};

phase_totals read_phases(const kafka_commit_probe* p) {
  if (!p) return {};
  auto get = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  return {get(p->transactions), get(p->batches),  get(p->queue_us), get(p->produce_us),
          get(p->offsets_us),   get(p->flush_us), get(p->end_us)};
}

struct run_record {
  int64_t started_ns = 0;
  totals first, last, end;
  const kafka_commit_probe* probe = nullptr;  // the engine log's, or null
  phase_totals phases_first, phases_last;
  cpu_snapshot cpu_first, cpu_last;
  bool window_open = false;
  bool window_closed = false;
  bool timed_out = false;
};

// The window opens once the initial starts are processed and --warmup-s passed; it closes
// after --seconds, or when the closed loop runs dry (every execution started, fewer than half
// of --in-flight still running).
void observe(const totals& t, const bench_flags& f, const workload& w,
             const std::vector<int>& broker_pids, run_record& r) {
  const bool warm = t.at_ns - r.started_ns >= int64_t{f.warmup_s} * 1'000'000'000;
  if (!r.window_open && t.started >= f.in_flight && warm) {
    r.first = t;
    r.phases_first = read_phases(r.probe);
    r.cpu_first = take_cpu_snapshot(broker_pids);
    r.window_open = true;
  }
  if (!r.window_open || r.window_closed) return;
  const bool elapsed = t.at_ns - r.first.at_ns >= int64_t{f.seconds} * 1'000'000'000;
  // (Not started − ended alone: a closed-loop start may be read a batch after the end.)
  const bool dry = w.next_index.load(std::memory_order_relaxed) >= w.executions;
  const bool draining = dry && 2 * (t.started - t.ended) < f.in_flight;
  if (elapsed || draining || t.ended == f.executions) {
    r.last = t;
    r.phases_last = read_phases(r.probe);
    r.cpu_last = take_cpu_snapshot(broker_pids);
    r.window_closed = true;
  }
}

// --progress-s: one line per interval, to see drift over a run (state growth, broker JIT).
class progress_printer {
 public:
  explicit progress_printer(int interval_s) : _interval_ns(int64_t{interval_s} * 1'000'000'000) {}
  void sample(const totals& t, int64_t started_ns) {
    if (_interval_ns == 0 || t.at_ns - _last.at_ns < _interval_ns) return;
    const double s = static_cast<double>(t.at_ns - _last.at_ns) / 1e9;
    const double cpu_s = process_cpu_s();
    if (_last.at_ns != 0) {
      fmt::print(
          "  progress {:>5.1f} s: {:>7.0f} transitions/s, bench process CPU {:>4.0f}% of "
          "all cores, {:.0f} executions ended\n",
          static_cast<double>(t.at_ns - started_ns) / 1e9, per(t.transitions, _last.transitions, s),
          100 * ratio(cpu_s - _cpu_s, s * std::thread::hardware_concurrency()),
          static_cast<double>(t.ended));
    }
    _last = t;
    _cpu_s = cpu_s;
  }

 private:
  int64_t _interval_ns;
  totals _last;
  double _cpu_s = 0;
};

run_record run(node& n, const acker_side& side, const bench_flags& f, const workload& w,
               const std::vector<int>& broker_pids, const kafka_commit_probe* probe) {
  run_record r;
  r.probe = probe;
  r.started_ns = now_ns();
  const cpu_snapshot at_start = take_cpu_snapshot(broker_pids);
  const int64_t deadline_ns = r.started_ns + int64_t{f.timeout_s} * 1'000'000'000;
  progress_printer progress(f.progress_s);
  while (!r.window_closed && !interrupted) {
    std::this_thread::sleep_for(std::chrono::milliseconds(sample_interval_ms));
    r.end = read_totals(n, side.ackers);
    progress.sample(r.end, r.started_ns);
    observe(r.end, f, w, broker_pids, r);
    r.timed_out = r.end.at_ns > deadline_ns;
    if (r.timed_out) break;
  }
  if (!r.window_closed) {  // stopped early: the window ends where the run did
    if (!r.window_open) {
      r.first = totals{.at_ns = r.started_ns};
      r.cpu_first = at_start;
    }
    r.last = r.end;
    r.phases_last = read_phases(r.probe);
    r.cpu_last = take_cpu_snapshot(broker_pids);
  }
  return r;
}

// With the ackers stopped, every ack they committed must be processed exactly once: waits
// until the orchestrator's transitions reach the acks (or drain_timeout_ms passes).
totals drain(node& n, const acker_side& side) {
  const int64_t deadline = now_ns() + int64_t{drain_timeout_ms} * 1'000'000;
  totals t = read_totals(n, side.ackers);
  while (t.transitions < t.acks && now_ns() < deadline && !interrupted) {
    std::this_thread::sleep_for(std::chrono::milliseconds(sample_interval_ms));
    t = read_totals(n, side.ackers);
  }
  return t;
}

// -------------------------------------------------------------------------------- raw rate

// One raw variant: `producers` transactional producers at once, each on its own partition.
struct raw_variant {
  size_t records = 1;  // per transaction
  bool offsets = false;
  int producers = 1;
  // One loop taking turns on two producers: a transaction never begins on a producer whose
  // previous transaction's markers may still be in flight (CONCURRENT_TRANSACTIONS).
  bool alternate = false;
};

struct raw_result {
  raw_variant v;
  uint64_t txns = 0;
  double seconds = 0;
  double txns_per_s = 0;
  double records_per_s = 0;
  double txn_p50_ms = 0, txn_p99_ms = 0;
  double cpu_engine_s = 0, cpu_broker_s = 0;
};

rk_ptr raw_producer(const std::string& bootstrap, const std::string& id, const bench_flags& f,
                    delivery_failures& failures) {
  std::map<std::string, std::string> conf = {{"transactional.id", id},
                                             {"transaction.timeout.ms", "60000"}};
  if (!f.kafka_debug.empty()) conf["debug"] = f.kafka_debug;
  for (const auto& [k, v] : f.producer_set) conf[k] = v;
  auto rk = make_producer(bootstrap, conf, &failures);
  vassert(rk.has_value(), "raw producer: {}", rk.error().message);
  rk_error_ptr e{rd_kafka_init_transactions(rk->get(), kafka_timeout_ms)};
  vassert(!e, "raw init_transactions: {}", e ? rd_kafka_error_string(e.get()) : "");
  return std::move(*rk);
}

void send_raw_offsets(rd_kafka_t* rk, const std::string& topic, int32_t partition, uint64_t seq) {
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(list, topic.c_str(), partition)->offset =
      static_cast<int64_t>(seq);
  rd_kafka_consumer_group_metadata_t* md = rd_kafka_consumer_group_metadata_new("bench.raw");
  rk_error_ptr e{rd_kafka_send_offsets_to_transaction(rk, list, md, kafka_timeout_ms)};
  rd_kafka_consumer_group_metadata_destroy(md);
  rd_kafka_topic_partition_list_destroy(list);
  vassert(!e, "raw send_offsets: {}", e ? rd_kafka_error_string(e.get()) : "");
}

// One transaction: v.records records to `partition`, optionally the offset `seq` of group
// "bench.raw" (what the engine sends with every commit), then commit. Returns its duration.
int64_t raw_transaction(rd_kafka_t* rk, const std::string& topic, uint32_t partition,
                        const std::string& value, const raw_variant& v, uint64_t seq) {
  const int64_t t = now_ns();
  rk_error_ptr e{rd_kafka_begin_transaction(rk)};
  vassert(!e, "raw begin_transaction: {}", e ? rd_kafka_error_string(e.get()) : "");
  for (size_t i = 0; i < v.records; ++i) produce(rk, topic, partition, "bench", value);
  if (v.offsets) send_raw_offsets(rk, topic, static_cast<int32_t>(partition), seq);
  e.reset(rd_kafka_commit_transaction(rk, kafka_timeout_ms));
  vassert(!e, "raw commit_transaction: {}", e ? rd_kafka_error_string(e.get()) : "");
  return now_ns() - t;
}

// Clock of a raw variant: producers warm up, then all run from `start_ns` to `end_ns`.
struct raw_clock {
  std::atomic<int> ready{0};
  std::atomic<int64_t> start_ns{0};
  int64_t seconds_ns = 0;
};

// One producer's loop; returns the duration of each timed transaction.
std::vector<int64_t> raw_loop(const std::string& bootstrap, const std::string& topic,
                              const bench_flags& f, const raw_variant& v, uint32_t partition,
                              raw_clock& clk) {
  delivery_failures failures;
  std::vector<rk_ptr> rks;
  for (int k = 0; k < (v.alternate ? 2 : 1); ++k) {
    rks.push_back(raw_producer(bootstrap,
                               fmt::format("bench.raw.{}.{}.{}.{}.{}.{}.{}", ::getpid(), v.records,
                                           v.offsets, v.producers, v.alternate, partition, k),
                               f, failures));
  }
  const std::string value(f.raw_record_bytes, 'r');
  uint64_t seq = 0;
  auto next = [&] {
    ++seq;
    return raw_transaction(rks[seq % rks.size()].get(), topic, partition, value, v, seq);
  };
  for (int i = 0; i < raw_warmup_txns; ++i) next();
  clk.ready.fetch_add(1);
  while (clk.start_ns.load() == 0) std::this_thread::sleep_for(std::chrono::microseconds(100));
  std::vector<int64_t> took;
  while (now_ns() < clk.start_ns.load() + clk.seconds_ns && !interrupted) took.push_back(next());
  vassert(failures.count.load() == 0, "raw delivery: {}", failures.last);
  return took;
}

// Loops of transactions for --raw-seconds on v.producers producers at once.
raw_result run_raw(const std::string& bootstrap, const std::string& topic, const bench_flags& f,
                   const raw_variant& v, const std::vector<int>& broker_pids) {
  raw_clock clk;
  clk.seconds_ns = int64_t{f.raw_seconds} * 1'000'000'000;
  std::vector<std::vector<int64_t>> took(static_cast<size_t>(v.producers));
  std::vector<std::thread> threads;
  for (int i = 0; i < v.producers; ++i) {
    threads.emplace_back(
        [&, i] { took[i] = raw_loop(bootstrap, topic, f, v, static_cast<uint32_t>(i), clk); });
  }
  while (clk.ready.load() < v.producers) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const cpu_snapshot a = take_cpu_snapshot(broker_pids);
  clk.start_ns = now_ns();
  for (auto& t : threads) t.join();
  raw_result r{.v = v, .seconds = static_cast<double>(now_ns() - clk.start_ns) / 1e9};
  const cpu_split cpu = split_cpu(a, take_cpu_snapshot(broker_pids));
  std::vector<int64_t> all;
  for (const auto& t : took) all.insert(all.end(), t.begin(), t.end());
  r.txns = all.size();
  r.txns_per_s = ratio(static_cast<double>(r.txns), r.seconds);
  r.records_per_s = r.txns_per_s * static_cast<double>(v.records);
  r.txn_p50_ms = percentile_ms(all, 0.50);
  r.txn_p99_ms = percentile_ms(all, 0.99);
  r.cpu_engine_s = cpu.engine_s;
  r.cpu_broker_s = cpu.broker_s;
  return r;
}

// -------------------------------------------------------------------------------- results

struct report {
  double window_s = 0;
  double transitions_per_s = 0;
  double orchestrator_commits_per_s = 0;
  double inputs_per_commit = 0;
  double records_per_commit = 0;
  double commit_ms = 0;
  double acker_commits_per_s = 0;
  double acks_per_acker_commit = 0;
  double records_per_acker_commit = 0;
  double acker_commit_ms = 0;
  double records_per_s = 0;  // orchestrator and acker records produced, per second
  // The engine log's transactions (all of them: orchestrator and, with --acker shared, acks):
  // per second, batches in each, and the mean ms of each phase (kafka_commit_probe).
  double txns_per_s = 0;
  double batches_per_txn = 0;
  double queue_ms = 0;                                              // per batch
  double produce_ms = 0, offsets_ms = 0, flush_ms = 0, end_ms = 0;  // per transaction
  latency_summary latency;
  cpu_split cpu;
};

report make_report(const run_record& r, const acker_side& side) {
  const totals& a = r.first;
  const totals& b = r.last;
  report out;
  out.window_s = static_cast<double>(b.at_ns - a.at_ns) / 1e9;
  out.transitions_per_s = per(b.transitions, a.transitions, out.window_s);
  const auto commits = static_cast<double>(b.orchestrator_commits - a.orchestrator_commits);
  out.orchestrator_commits_per_s = ratio(commits, out.window_s);
  out.inputs_per_commit = per(b.orchestrator_inputs, a.orchestrator_inputs, commits);
  out.records_per_commit = per(b.orchestrator_records_out, a.orchestrator_records_out, commits);
  out.commit_ms = per(b.orchestrator_commit_us, a.orchestrator_commit_us, commits) / 1e3;
  const auto acker_commits = static_cast<double>(b.acker_commits - a.acker_commits);
  out.acker_commits_per_s = ratio(acker_commits, out.window_s);
  out.acks_per_acker_commit = per(b.acks, a.acks, acker_commits);
  out.records_per_acker_commit = per(b.acker_records, a.acker_records, acker_commits);
  out.acker_commit_ms = per(b.acker_commit_us, a.acker_commit_us, acker_commits) / 1e3;
  out.records_per_s = per(b.orchestrator_records_out + b.acker_records,
                          a.orchestrator_records_out + a.acker_records, out.window_s);
  const phase_totals& pa = r.phases_first;
  const phase_totals& pb = r.phases_last;
  const auto txns = static_cast<double>(pb.transactions - pa.transactions);
  out.txns_per_s = ratio(txns, out.window_s);
  out.batches_per_txn = per(pb.batches, pa.batches, txns);
  out.queue_ms = per(pb.queue_us, pa.queue_us, static_cast<double>(pb.batches - pa.batches)) / 1e3;
  out.produce_ms = per(pb.produce_us, pa.produce_us, txns) / 1e3;
  out.offsets_ms = per(pb.offsets_us, pa.offsets_us, txns) / 1e3;
  out.flush_ms = per(pb.flush_us, pa.flush_us, txns) / 1e3;
  out.end_ms = per(pb.end_us, pa.end_us, txns) / 1e3;
  out.latency = summarize_latency(side.ackers, a.at_ns, b.at_ns);
  out.cpu = split_cpu(r.cpu_first, r.cpu_last);
  return out;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("model name")) return line.substr(line.find(':') + 2);
  }
  return "?";
}

void print_header(const bench_flags& f, const broker_cluster& b) {
  fmt::print(
      "kafka_bench: {} partitions, {} x {} steps in flight (executions {}), acker {}, "
      "commit interval {} ms, orchestrator batch {}, ack batch {}, {} committer(s) with {} "
      "transactional producer(s) each, pipeline {}\n",
      f.partitions, f.in_flight, f.steps,
      f.executions == executions_unbounded ? std::string("unbounded")
                                           : std::to_string(f.executions),
      f.acker, f.commit_interval_ms, f.orchestrator_batch_records_max, f.ack_batch_records_max,
      f.committers, f.producers, f.pipeline ? "on" : "off");
  fmt::print(
      "  machine: {} cores, {}; broker: {} node(s), {}, started in {:.1f} s; "
      "librdkafka {}\n",
      std::thread::hardware_concurrency(), cpu_model(), f.nodes, b.describe(), b.start_s(),
      rd_kafka_version_str());
}

void print_cpu(const report& r) {
  const double all = r.window_s * std::thread::hardware_concurrency();
  auto pct = [&](double s) { return 100.0 * ratio(s, all); };
  fmt::print("  {:<40} {:>10.1f}%   (machine busy {:.1f}%, other processes {:.1f}%)\n",
             "CPU: engine process, % of all cores", pct(r.cpu.engine_s), pct(r.cpu.machine_s),
             pct(r.cpu.neighbours_s));
  for (size_t i = 0; i < engine_roles.size(); ++i) {
    fmt::print("    {:<38} {:>10.1f}%\n", engine_roles[i], pct(r.cpu.engine[i]));
  }
  fmt::print("  {:<40} {:>10.1f}%\n", "CPU: broker JVM(s), % of all cores", pct(r.cpu.broker_s));
  for (size_t i = 0; i < broker_roles.size(); ++i) {
    fmt::print("    {:<38} {:>10.1f}%\n", broker_roles[i], pct(r.cpu.broker[i]));
  }
  fmt::print("  {:<40} {:>10.1f} us engine + {:.1f} us broker\n", "CPU per step transition",
             1e6 * ratio(r.cpu.engine_s, r.transitions_per_s * r.window_s),
             1e6 * ratio(r.cpu.broker_s, r.transitions_per_s * r.window_s));
}

void print_engine(const report& r) {
  fmt::print("  {:<40} {:>10.0f}   (window {:.2f} s)\n", "step transitions/s", r.transitions_per_s,
             r.window_s);
  fmt::print("  {:<40} {:>10.2f} {:>8.2f} {:>8.2f} {:>8.2f}   ({} samples)\n",
             "ack->next command ms p50 p90 p99 max", r.latency.p50_ms, r.latency.p90_ms,
             r.latency.p99_ms, r.latency.max_ms, r.latency.count);
  fmt::print("  {:<40} {:>10.1f}   ({:.1f} inputs, {:.1f} records out, {:.2f} ms each)\n",
             "orchestrator commits/s", r.orchestrator_commits_per_s, r.inputs_per_commit,
             r.records_per_commit, r.commit_ms);
  fmt::print("  {:<40} {:>10.1f}   ({:.1f} acks, {:.1f} records, {:.2f} ms each)\n",
             "acker commits/s", r.acker_commits_per_s, r.acks_per_acker_commit,
             r.records_per_acker_commit, r.acker_commit_ms);
  fmt::print("  {:<40} {:>10.0f}\n", "records produced/s (engine + acker)", r.records_per_s);
  fmt::print("  {:<40} {:>10.1f}   ({:.2f} batches each, {:.2f} ms queued per batch)\n",
             "engine log transactions/s", r.txns_per_s, r.batches_per_txn, r.queue_ms);
  fmt::print("  {:<40} {:>10.2f} {:>8.2f} {:>8.2f} {:>8.2f}\n",
             "  ms produce, send offsets, flush, EndTxn", r.produce_ms, r.offsets_ms, r.flush_ms,
             r.end_ms);
  print_cpu(r);
}

std::string raw_name(const raw_variant& v) {
  std::string how = v.producers > 1 ? fmt::format(", {} producers", v.producers) : "";
  if (v.alternate) how = ", 2 alternating";
  return fmt::format("{} rec{}{}", v.records, v.offsets ? " + offsets" : "", how);
}

void print_raw(const std::vector<raw_result>& raws, const std::optional<report>& r) {
  const double cores = std::thread::hardware_concurrency();
  for (const raw_result& x : raws) {
    fmt::print(
        "  raw txn {:<28} {:>7.1f} txn/s {:>9.0f} records/s   txn p50 {:6.2f} p99 "
        "{:6.2f} ms   CPU bench {:3.0f}% broker {:3.0f}%\n",
        raw_name(x.v), x.txns_per_s, x.records_per_s, x.txn_p50_ms, x.txn_p99_ms,
        100 * ratio(x.cpu_engine_s, x.seconds * cores),
        100 * ratio(x.cpu_broker_s, x.seconds * cores));
  }
  if (!r) return;
  for (const raw_result& x : raws) {
    if (!x.v.offsets) continue;
    fmt::print("  engine / raw ({}): commits/s {:.2f}, records/s {:.2f}\n", raw_name(x.v),
               ratio(r->orchestrator_commits_per_s, x.txns_per_s),
               ratio(r->records_per_s, x.records_per_s));
  }
}

void print_json(const bench_flags& f, const report& r, const std::vector<raw_result>& raws) {
  std::string raw;
  for (const raw_result& x : raws) {
    raw += fmt::format(R"({}{{"records":{},"offsets":{},"producers":{},"txn_per_s":{:.1f},)"
                       R"("records_per_s":{:.0f},"p50_ms":{:.3f},"p99_ms":{:.3f}}})",
                       raw.empty() ? "" : ",", x.v.records, x.v.offsets, x.v.producers,
                       x.txns_per_s, x.records_per_s, x.txn_p50_ms, x.txn_p99_ms);
  }
  const double all = r.window_s * std::thread::hardware_concurrency();
  fmt::print(
      R"({{"bench":"kafka","nodes":{},"partitions":{},"in_flight":{},"steps":{},"acker":"{}",)"
      R"("commit_interval_ms":{},"batch":{},"producers":{},"committers":{},"pipeline":{},)"
      R"("transitions_per_s":{:.0f},)"
      R"("window_s":{:.2f},)"
      R"("latency_ms":{{"p50":{:.2f},"p90":{:.2f},"p99":{:.2f},"max":{:.2f}}},)"
      R"("commits_per_s":{:.1f},"records_per_commit":{:.1f},"commit_ms":{:.2f},)"
      R"("txn":{{"per_s":{:.1f},"batches":{:.2f},"queue_ms":{:.2f},"produce_ms":{:.2f},)"
      R"("offsets_ms":{:.2f},"flush_ms":{:.2f},"end_ms":{:.2f}}},)"
      R"("cpu_share":{{"engine":{:.3f},"broker":{:.3f},"others":{:.3f}}},"raw":[{}]}})"
      "\n",
      f.nodes, f.partitions, f.in_flight, f.steps, f.acker, f.commit_interval_ms,
      f.orchestrator_batch_records_max, f.producers, f.committers, f.pipeline, r.transitions_per_s,
      r.window_s, r.latency.p50_ms, r.latency.p90_ms, r.latency.p99_ms, r.latency.max_ms,
      r.orchestrator_commits_per_s, r.records_per_commit, r.commit_ms, r.txns_per_s,
      r.batches_per_txn, r.queue_ms, r.produce_ms, r.offsets_ms, r.flush_ms, r.end_ms,
      ratio(r.cpu.engine_s, all), ratio(r.cpu.broker_s, all), ratio(r.cpu.neighbours_s, all), raw);
}

// ----------------------------------------------------------------------------------- main

// A run that went wrong measures nothing: no rejection, deadletter or stale ack, and every
// committed ack processed once.
bool check_outcome(const totals& t, const run_record& r) {
  const bool ok = t.rejections == 0 && t.deadletters == 0 && t.stale_acks == 0 &&
                  t.transitions == t.acks && r.window_open && !r.timed_out;
  if (!ok) {
    fmt::print(stderr,
               "kafka_bench: run wrong or incomplete: {} transitions for {} acks, {} rejections, "
               "{} deadletters, {} stale acks{}{}\n",
               t.transitions, t.acks, t.rejections, t.deadletters, t.stale_acks,
               r.window_open ? "" : ", the window never opened",
               r.timed_out ? " (hit --timeout)" : "");
  }
  return ok;
}

kafka_log_options engine_kafka(const std::string& bootstrap, const std::string& prefix,
                               const bench_flags& f) {
  kafka_log_options k;
  if (!f.kafka_debug.empty()) k.producer_config["debug"] = f.kafka_debug;
  for (const auto& [key, v] : f.producer_set) k.producer_config[key] = v;
  for (const auto& [key, v] : f.consumer_set) k.consumer_config[key] = v;
  k.bootstrap = bootstrap;
  k.instance_id = fmt::format("bench-engine-{}", ::getpid());
  k.topic_prefix = prefix;
  k.probe = std::make_shared<kafka_commit_probe>();
  k.transactional_producers = f.producers;
  k.committers = f.committers;
  return k;
}

result<std::unique_ptr<node>> open_node(const bench_flags& f, const std::string& dir,
                                        const kafka_log_options& k, clock& clk, workload& w) {
  node_options o;
  o.data_dir = dir;
  o.kafka = k;
  o.kafka_group = false;
  o.workers = false;
  o.runtime.batch_records_max = f.orchestrator_batch_records_max;
  o.runtime.commit_interval_ms = f.commit_interval_ms;
  o.runtime.pipeline = f.pipeline;
  auto n = node::open(o, clk);
  if (!n) return n;
  const auto tenants = pick_tenants(f.tenants, (*n)->partitions());
  if (auto r = publish((*n)->get_log(), tenants, f.steps); !r) return std::unexpected(r.error());
  if (auto r = submit_starts((*n)->get_log(), tenants, w); !r) return std::unexpected(r.error());
  if (auto r = (*n)->recover(); !r) return std::unexpected(r.error());
  return n;
}

// The first group request on a fresh cluster creates __consumer_offsets. librdkafka 2.0.2's
// send_offsets_to_transaction can hang forever (its timeout is not enforced, librdkafka#5456)
// if it races that creation, so an offset fetch goes first, retried until the coordinator
// answers.
result<void> warm_group_coordinator(const std::string& bootstrap, const std::string& topic) {
  auto c = kafka_conf_new({{"bootstrap.servers", bootstrap}, {"group.id", "bench.warm"}});
  vassert(c.has_value(), "{}", c.error().message);
  auto client = kafka_client_new(RD_KAFKA_CONSUMER, *c, "kafka consumer");
  if (!client) return std::unexpected(client.error());
  std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)> rk(*client, rd_kafka_destroy);
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(list, topic.c_str(), 0);
  rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
  const int64_t deadline = now_ns() + int64_t{kafka_timeout_ms} * 1'000'000;
  do {
    e = rd_kafka_committed(rk.get(), list, 5'000);
  } while (e != RD_KAFKA_RESP_ERR_NO_ERROR && now_ns() < deadline);
  rd_kafka_topic_partition_list_destroy(list);
  if (e) return fail(errc::io, fmt::format("group coordinator: {}", rd_kafka_err2str(e)));
  return {};
}

// Per size (--raw-records, or 1 and the engine's mean records per commit): without offsets,
// with offsets (the engine's shape), and with offsets taking turns on two producers; the last
// size also with offsets on --raw-producers at once.
std::vector<raw_result> run_raw_phase(const std::string& bootstrap, const std::string& topic,
                                      const bench_flags& f, const std::optional<report>& engine,
                                      const std::vector<int>& broker_pids) {
  std::vector<raw_result> out;
  if (f.raw_seconds == 0) return out;
  std::vector<size_t> sizes = f.raw_records;
  if (sizes.empty()) {
    sizes.push_back(1);
    if (engine) sizes.push_back(std::max<size_t>(1, std::lround(engine->records_per_commit)));
  }
  for (size_t n : sizes) {
    out.push_back(run_raw(bootstrap, topic, f, {n, false, 1}, broker_pids));
    out.push_back(run_raw(bootstrap, topic, f, {n, true, 1}, broker_pids));
    out.push_back(run_raw(bootstrap, topic, f, {n, true, 1, true}, broker_pids));
  }
  if (f.raw_producers > 1) {
    out.push_back(run_raw(bootstrap, topic, f, {sizes.back(), true, f.raw_producers}, broker_pids));
  }
  return out;
}

// The engine's state directory; kept (and named) with --keep-state, for looking into RocksDB.
struct temp_dir {
  std::string path;
  bool keep = false;
  ~temp_dir() {
    std::error_code ec;
    if (keep) fmt::print("  state kept in {}\n", path);
    if (!path.empty() && !keep) fs::remove_all(path, ec);
  }
};

std::string make_temp_dir(const std::string& parent_flag) {
  std::string parent = parent_flag;
  if (parent.empty()) parent = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
  std::string pattern = parent + "/auterity-kbench-XXXXXX";
  vassert(::mkdtemp(pattern.data()) != nullptr, "mkdtemp {}: {}", pattern, std::strerror(errno));
  return pattern;
}

// The engine phase; returns the report, or nullopt (after saying why) if it went wrong.
std::optional<report> run_engine(const bench_flags& f, const broker_cluster& b,
                                 const std::string& prefix) {
  temp_dir dir{make_temp_dir(f.dir), f.keep_state};
  system_clock clk;
  workload w(f.executions, f.in_flight, f.steps);
  const kafka_log_options k = engine_kafka(b.bootstrap(), prefix, f);
  auto opened = open_node(f, dir.path, k, clk, w);
  if (!opened) return fmt::print(stderr, "kafka_bench: {}\n", opened.error().message), std::nullopt;
  node& n = **opened;
  std::vector<int64_t> ack_commit_ns(f.executions, 0);
  auto side = make_ackers(n, f, k, w, ack_commit_ns);
  if (!side) return fmt::print(stderr, "kafka_bench: {}\n", side.error().message), std::nullopt;
  n.start();
  for (auto& a : side->ackers) a->start();
  const run_record r = run(n, *side, f, w, b.pids(), k.probe.get());
  for (auto& a : side->ackers) a->stop();
  const totals drained = drain(n, *side);
  n.stop();
  const report rep = make_report(r, *side);
  print_engine(rep);
  if (!check_outcome(drained, r)) return std::nullopt;
  return rep;
}

int run_bench(const bench_flags& f) {
  auto cluster = broker_cluster::start(f.nodes, f.broker_heap);
  if (!cluster) return fmt::print(stderr, "kafka_bench: {}\n", cluster.error().message), 2;
  const broker_cluster& b = **cluster;
  print_header(f, b);
  const std::string prefix = fmt::format("kbench-{}-", ::getpid());
  auto raw_topic = create_topics(b.bootstrap(), f, prefix);
  if (!raw_topic) return fmt::print(stderr, "kafka_bench: {}\n", raw_topic.error().message), 2;
  if (auto w = warm_group_coordinator(b.bootstrap(), *raw_topic); !w) {
    return fmt::print(stderr, "kafka_bench: {}\n", w.error().message), 2;
  }
  std::optional<report> engine;
  if (f.engine) {
    engine = run_engine(f, b, prefix);
    if (!engine) return 1;
  }
  const auto raws = run_raw_phase(b.bootstrap(), *raw_topic, f, engine, b.pids());
  print_raw(raws, engine);
  if (f.json && engine) print_json(f, *engine, raws);
  return 0;
}

void add_options(CLI::App& app, bench_flags& f) {
  app.add_option("--nodes", f.nodes, "Broker nodes (3: replication 3, min.insync.replicas 2)")
      ->capture_default_str()
      ->check(CLI::IsMember({1, 3}));
  app.add_option("--partitions", f.partitions, "Partitions of every topic")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--steps", f.steps, "Task steps in the linear workflow")
      ->capture_default_str()
      ->check(CLI::Range(1, 60));
  app.add_option("--in-flight", f.in_flight,
                 "Executions running at once (closed loop: one ends, one starts)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1'000'000));
  app.add_option("--executions", f.executions, "Executions in all; 0: as many as the window takes")
      ->capture_default_str()
      ->check(CLI::Range(0u, executions_unbounded));
  app.add_option("--tenants", f.tenants, "Tenants (spread evenly over the partitions)")
      ->capture_default_str()
      ->check(CLI::Range(1, 10'000));
  app.add_option("--acker", f.acker,
                 "How the acker commits: txn (own transactional producer), shared (the "
                 "engine's log, group commit), idempotent (plain idempotent producer)")
      ->capture_default_str()
      ->check(CLI::IsMember({"txn", "shared", "idempotent"}));
  app.add_option("--ack-batch", f.ack_batch_records_max, "Commands acked per acker commit, max")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--commit-interval-ms", f.commit_interval_ms,
                 "partition_runtime_options::commit_interval_ms")
      ->capture_default_str()
      ->check(CLI::Range(0, 10'000));
  app.add_option("--orchestrator-batch", f.orchestrator_batch_records_max,
                 "partition_runtime_options::batch_records_max (inputs per stream per batch)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
}

void add_run_options(CLI::App& app, bench_flags& f) {
  app.add_option("--warmup-s", f.warmup_s, "Engine running before the window may open")
      ->capture_default_str()
      ->check(CLI::Range(0, 600));
  app.add_option("--seconds", f.seconds, "Measuring window")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  app.add_option("--timeout", f.timeout_s, "Longest engine phase, window included")
      ->capture_default_str()
      ->check(CLI::Range(1, 86'400));
  app.add_option("--raw-seconds", f.raw_seconds, "Per raw-librdkafka variant; 0 skips them")
      ->capture_default_str()
      ->check(CLI::Range(0, 600));
  app.add_option("--raw-records", f.raw_records,
                 "Records per raw transaction, a list; default: 1 and the engine's mean per "
                 "commit")
      ->delimiter(',')
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--raw-producers", f.raw_producers,
                 "Also run the last size with offsets on this many producers at once (1: no)")
      ->capture_default_str()
      ->check(CLI::Range(1, raw_partitions));
  app.add_flag("!--no-engine", f.engine, "Skip the engine phase (raw librdkafka only)");
  app.add_option("--raw-record-bytes", f.raw_record_bytes, "Value size of a raw record")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--broker-heap", f.broker_heap, "Broker heap, e.g. 512m (broker.sh default)");
  app.add_option("--kafka-debug", f.kafka_debug, "librdkafka debug contexts of the producers");
  app.add_option("--producers", f.producers,
                 "Transactional producers of the engine's log, taking turns "
                 "(kafka_log_options::transactional_producers)")
      ->capture_default_str()
      ->check(CLI::Range(1, transactional_producers_max));
  app.add_option("--committers", f.committers,
                 "Committers of the engine's log, each with its own producers; partition p "
                 "commits through committer p mod N (kafka_log_options::committers)")
      ->capture_default_str()
      ->check(CLI::Range(1, kafka_committers_max));
  app.add_option("--pipeline", f.pipeline,
                 "on: each partition decides its next batch while the previous one commits "
                 "(partition_runtime_options::pipeline)")
      ->transform(
          CLI::CheckedTransformer(std::map<std::string, bool>{{"on", true}, {"off", false}}))
      ->default_str(f.pipeline ? "on" : "off");
  app.add_option("--producer-set", f.producer_set,
                 "librdkafka KEY VALUE over the engine's producer settings (and the raw "
                 "producers'); repeatable");
  app.add_option("--consumer-set", f.consumer_set,
                 "librdkafka KEY VALUE over the engine's consumer settings; repeatable");
  app.add_option("--dir", f.dir, "Parent of the temporary state directory ($TMPDIR or /tmp)");
  app.add_option("--progress-s", f.progress_s, "Print the rates every N seconds (0: off)")
      ->capture_default_str()
      ->check(CLI::Range(0, 3600));
  app.add_flag("--keep-state", f.keep_state, "Keep the engine's state directory (RocksDB)");
  app.add_flag("--json", f.json, "Also print the results as one JSON line");
}

// librdkafka calls can block past their timeouts (above): if the whole run takes far longer
// than planned, abort, and broker.sh's --owner watcher stops the broker.
void start_watchdog(const bench_flags& f) {
  const int raw_variants = 3 * std::max<int>(2, static_cast<int>(f.raw_records.size())) + 1;
  const int limit_s = f.timeout_s + raw_variants * (f.raw_seconds + 10) + watchdog_slack_s;
  std::thread([limit_s] {
    std::this_thread::sleep_for(std::chrono::seconds(limit_s));
    fmt::print(stderr, "kafka_bench: still running after {} s, aborting\n", limit_s);
    std::abort();
  }).detach();
}

int parse_and_run(int argc, char** argv) {
  bench_flags f;
  CLI::App app{
      "Kafka orchestration benchmark: step transitions/s and ack-to-next-command "
      "latency on a real broker, and librdkafka's raw transactional rate "
      "(see bench/KAFKA.md)"};
  add_options(app, f);
  add_run_options(app, f);
  CLI11_PARSE(app, argc, argv);
  if (f.executions == 0) f.executions = executions_unbounded;
  f.in_flight = std::min(f.in_flight, f.executions);
  start_watchdog(f);
  return run_bench(f);
}

}  // namespace
}  // namespace auterity::bench

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows when piped
  std::signal(SIGINT, auterity::bench::on_signal);
  std::signal(SIGTERM, auterity::bench::on_signal);
  return auterity::bench::parse_and_run(argc, argv);
}
