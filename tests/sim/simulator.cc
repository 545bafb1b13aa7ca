// The deterministic simulator: see simulator.h and docs/simulation.md.
//
// One run = one seed = one PRNG. The world (embedded log, one partition runtime with its
// orchestrator and RocksDB store per partition, the real worker runtime for commands.ai and
// commands.notify, the simulator's own acker for commands.step) is stepped action by action on
// this thread, in an order the PRNG picks; the clock is a manual_clock the simulator moves.
// Nothing runs on another thread (worker concurrency 1, no runtime started), so a seed replays
// exactly.
//
// The disk: the log's fdatasync goes through on_fdatasync (embedded_log_options::
// fdatasync_for_testing), which records how many bytes of each segment file are durable — or,
// when the seed has a lying fsync, sometimes records nothing and still returns 0. A crash drops
// every object of the world (the process dies: no destructor writes anything the engine relies
// on) and, on a power loss, damages what was not durable: each segment's unsynced bytes are
// dropped, cut to a prefix, zeroed sector by sector or followed by garbage, and each store's
// RocksDB WAL (never synced: the log is the source of truth) is cut at a random byte. Then the
// world is opened again through the real recovery code.

#include "tests/sim/simulator.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <utility>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "engine/clock.h"
#include "engine/embedded_log.h"
#include "engine/log.h"
#include "engine/partition_runtime.h"
#include "engine/record.h"
#include "engine/state_store.h"
#include "engine/worker_runtime.h"
#include "processors/client.h"
#include "processors/definition.h"
#include "processors/orchestrator.h"
#include "processors/tenant_policy.h"
#include "replay/verify.h"

namespace auterity::sim {

std::string_view fault_name(fault f) {
  static constexpr std::array<std::string_view, fault_count> names = {
      "crash_in_client_commit",
      "crash_in_orchestrator_commit",
      "crash_after_orchestrator_sync",
      "crash_in_worker_commit",
      "crash_after_worker_sync",
      "crash_in_acker_commit",
      "crash_after_acker_sync",
      "crash_in_forward_delivery",
      "crash_in_recovery",
      "crash_between_actions",
      "power_loss",
      "log_tail_dropped",
      "log_tail_partial",
      "log_tail_sectors",
      "log_tail_garbage",
      "store_wal_cut",
      "fsync_lied",
      "ack_duplicated",
      "ack_delayed",
      "ack_reordered",
      "clock_jump_forward",
      "clock_jump_back",
  };
  return names[static_cast<size_t>(f)];
}

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// The world's size: small, so thousands of seeds run in seconds (docs/simulation.md).
constexpr uint32_t sim_partitions = 2;
constexpr int64_t sim_start_ms = 1'700'000'000'000;
constexpr int active_ticks = 60;       // ticks with new inputs and faults
constexpr int drain_ticks_max = 4000;  // then no faults until nothing is left to do
constexpr int executions_max = 8;      // starts per run
constexpr int crashes_max = 4;         // per run
constexpr size_t sector_bytes = 512;
// Small stores: RocksDB preallocates ~1.1x the memtable for each WAL, which on tmpfs is memory
// written and freed at every open.
constexpr size_t store_cache_bytes = 1 << 20;
constexpr size_t store_write_buffer_bytes = 1 << 20;             // the unit a power loss tears
constexpr std::string_view step_group = "worker.commands.step";  // the acker's group

const std::array<std::string_view, 3> tenants = {"acme", "bayside", "crestview"};

// Two workflows that always end: every wait has a timeout, every task a retry policy and some a
// timeout, so a lost ack or a lost timer shows up as an execution that never ends. Beta starts
// alpha as a sub-workflow (a cancel of beta cancels it).
constexpr std::string_view workflow_alpha = R"({"workflow": "alpha", "version": 1, "steps": [
  {"id": "a", "kind": "task", "action": "work", "input": {"v": "{{input.v}}"},
   "retry": {"max_attempts": 3, "backoff_ms": 20}, "timeout_ms": 40},
  {"id": "b", "kind": "delay", "delay_ms": 30, "after": ["a"]},
  {"id": "c", "kind": "notify", "after": ["b"], "on_failure": "continue",
   "input": {"channel": "sms", "to": "+15550100000", "body": "hello {{input.v}}"}},
  {"id": "d", "kind": "ai", "after": ["a"], "on_failure": "continue",
   "input": {"prompt": "reply to {{input.v}}"}, "retry": {"max_attempts": 2, "backoff_ms": 10}}
]})";
constexpr std::string_view workflow_beta = R"({"workflow": "beta", "version": 1, "steps": [
  {"id": "w", "kind": "wait_signal", "signal": "go", "timeout_ms": 60, "on_failure": "continue"},
  {"id": "t", "kind": "task", "action": "work", "after": ["w"], "on_failure": "continue",
   "input": {"v": "{{input.v}}"}, "retry": {"max_attempts": 2, "backoff_ms": 15},
   "timeout_ms": 25},
  {"id": "sub", "kind": "workflow", "workflow": "alpha", "after": ["w"], "on_failure": "continue",
   "input": {"v": "{{input.v}}"}},
  {"id": "f", "kind": "foreach", "after": ["t"], "items": "[1, 2, 3]", "concurrency": 2,
   "on_item_failure": "collect",
   "do": {"kind": "task", "action": "work", "input": {"item": "{{ item }}"},
          "retry": {"max_attempts": 2, "backoff_ms": 5}, "timeout_ms": 30}}
]})";

// One tenant has a policy that the clock and the crashes push on: quiet hours from the start
// (22:13:20 UTC) to 22:14, one SMS per 200 ms, an AI budget that three calls exhaust.
constexpr std::string_view policy_tenant = "bayside";
constexpr std::string_view policy = R"({
  "ai": {"candidates": [{"provider": "local", "model": "m1", "tier": "standard",
                         "input_per_1k_micros": 0, "output_per_1k_micros": 0,
                         "latency_ms_max": 8000}],
         "budget": {"day_micros": 1000, "month_micros": 40000, "when_exhausted": "reject"}},
  "notify": {"rate_limits": [{"channel": "sms", "max": 1, "per_ms": 200}],
             "quiet_hours": {"start": "22:13", "end": "22:14", "channels": ["sms"]},
             "dedup_window_ms": 600000}
})";

// Stores for thousands of short runs in tmpfs (engine/state_store.h says why each).
state_store_options small_store() {
  state_store_options o;
  o.block_cache_bytes = store_cache_bytes;
  o.write_buffer_bytes = store_write_buffer_bytes;
  o.preallocate = false;
  o.file_opening_threads = 1;
  return o;
}

uint64_t fnv1a(uint64_t seed, std::string_view s) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

class prng {
 public:
  explicit prng(uint64_t seed) : _g(seed) {}
  int64_t uniform(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(_g);
  }
  bool chance(double p) { return std::bernoulli_distribution(p)(_g); }
  template <typename T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[uniform(0, i - 1)]);
  }

 private:
  std::mt19937_64 _g;
};

// Who is committing: decides which commit point a crash in that commit counts as.
enum class actor { client, orchestrator, worker, acker, recovery, none };

// What the seed turns on (each class on in most seeds, so seeds also run without it).
struct fault_plan {
  int crashes = 0;              // crashes left to inject
  double crash_per_commit = 0;  // chance a commit is a crash point
  double crash_per_action = 0;  // chance of a crash between two actions
  double power_loss = 0;        // chance a crash is a power loss
  double lie = 0;               // chance an fdatasync lies (0: honest disk)
  bool ack_faults = false;      // duplicate, delay, reorder acks
  bool clock_jumps = false;
};

struct request {
  std::string tenant;
  std::string bytes;
  std::string execution;   // a start: the execution it starts
  bool misplaced = false;  // sent to the partition that does not own the tenant (forwarded)
};

struct pending_ack {
  std::optional<uint64_t> offset;  // the command's offset; none: a duplicate
  std::string key;
  std::string bytes;
  int64_t due_tick = 0;
};

class simulation;

// The log every part of the world uses: the embedded log, with a crashed process refusing to
// commit, the commit points counted, and acknowledged appends remembered (to tell a lost
// acknowledged commit after a power loss).
class sim_log final : public log {
 public:
  sim_log(log& inner, simulation& s) : _inner(inner), _sim(s) {}
  uint32_t partition_count() const override { return _inner.partition_count(); }
  placement_header placement() const override { return _inner.placement(); }
  result<std::vector<uint64_t>> commit(uint32_t partition, const commit_batch& batch) override;
  result<size_t> read(stream s, uint32_t partition, uint64_t from, size_t max_records,
                      size_t max_bytes, std::vector<record>& out) override {
    return _inner.read(s, partition, from, max_records, max_bytes, out);
  }
  result<uint64_t> end_offset(stream s, uint32_t partition) override {
    return _inner.end_offset(s, partition);
  }
  result<uint64_t> position(std::string_view group, stream s, uint32_t partition) override {
    return _inner.position(group, s, partition);
  }
  result<void> await_decided(stream s, uint32_t partition, uint64_t end,
                             std::chrono::milliseconds timeout) override {
    return _inner.await_decided(s, partition, end, timeout);
  }
  // Single-threaded: nothing to wait for.
  void wait(uint32_t, uint64_t, std::chrono::milliseconds) override {}
  uint64_t generation(uint32_t partition) override { return _inner.generation(partition); }
  void wait_any(uint64_t, std::chrono::milliseconds) override {}
  uint64_t generation_any() override { return _inner.generation_any(); }

 private:
  log& _inner;
  simulation& _sim;
};

class simulation {
 public:
  simulation(uint64_t seed, const run_options& options)
      : _seed(seed), _options(options), _rng(seed), _clk(sim_start_ms) {
    _dir = fmt::format("{}/auterity-sim-{}-{}", options.scratch_root, ::getpid(), seed);
  }

  run_result run();

  // ---- called by the parts of the world
  int on_fdatasync(int fd);
  bool crash_pending() const { return _crash_pending; }
  void commit_begins() { _syncs_in_commit = 0; }
  void on_committed(uint32_t p, const commit_batch& batch, const std::vector<uint64_t>& offsets);
  ack_result execute(const fbs::Envelope& command, std::string_view key, bool real_worker);
  void note(fault f) { ++_stats.faults[static_cast<size_t>(f)]; }
  void problem(std::string what) {
    if (_options.trace) fmt::print("  PROBLEM {}\n", what);
    _problems.push_back(std::move(what));
  }

 private:
  // ---- the world
  result<void> open_world();
  void drop_world();
  void crash();
  void damage_log();
  void cut_wals();
  result<void> check_acknowledged_after_recovery();
  void rebuild_durable_acks();
  void note_ack(const fbs::StepAck& ack);

  // ---- actions
  bool run_action(int which, bool& worked);
  result<bool> submit_one();
  result<bool> acker_step();
  void new_inputs();
  void move_clock(bool faults);

  // ---- checks
  void check_end();
  std::vector<record> read_all(stream s, uint32_t p);
  void trace(std::string_view what) {
    if (_options.trace) fmt::print("  [t{} {}] {}\n", _tick, _clk.now_ms() - sim_start_ms, what);
  }

  uint64_t _seed;
  run_options _options;
  prng _rng;
  manual_clock _clk;
  std::string _dir;
  fault_plan _plan;
  bool _faults_on = true;
  int _tick = 0;
  size_t _segment_bytes = 0;
  size_t _runtime_batch = 0, _timers_batch = 0, _worker_batch = 0;

  std::unique_ptr<log> _embedded;
  std::unique_ptr<sim_log> _log;
  std::vector<std::unique_ptr<partition_runtime>> _parts;
  std::vector<orchestrator*> _orch;
  std::vector<std::unique_ptr<worker_runtime>> _workers;

  // The disk.
  std::map<std::string, uint64_t> _synced;  // segment path -> durable bytes
  bool _crash_pending = false;
  std::optional<fault> _crash_kind;
  std::optional<uint32_t> _crash_store;  // a crash between an orchestrator's log commit and
                                         // its state write: the store's WAL before the batch
  uint64_t _wal_before = 0;
  actor _actor = actor::none;
  int _syncs_in_commit = 0;  // the second of a commit delivers its forwards
  uint32_t _actor_partition = 0;
  bool _lied = false;  // a sync lied since the last crash

  // What the engine acknowledged: per (stream, partition), the end offset of acknowledged
  // appends. A recovery that ends below it lost an acknowledged commit.
  std::array<std::array<uint64_t, sim_partitions>, stream_count> _acked_end{};
  bool _acked_lost = false;  // the disk lied and lost acknowledged commits (checks relax)

  // The outside world: requests of clients, the effect ledger, the step acker's memory.
  std::vector<request> _requests;  // not yet acknowledged (resent after a crash)
  std::vector<std::string> _accepted_starts;
  int _starts = 0;
  std::vector<std::pair<std::string, std::string>> _started;  // tenant, execution
  std::map<std::string, uint32_t> _ledger;                    // idempotency key -> calls
  std::set<std::string> _durable_acks;                        // command ids with an ack in the log
  std::set<std::string> _successful_acks;                     // ... with a Success ack
  struct acker_partition {
    std::optional<uint64_t> next;  // next command offset to read; none: read the position
    uint64_t position = 0;         // the group's position as the acker last committed it
    std::set<uint64_t> done;       // offsets at or past `position` whose ack is committed
    std::vector<pending_ack> pending;
  };
  std::array<acker_partition, sim_partitions> _acker;

  std::vector<std::string> _problems;
  run_stats _stats;
};

// A connector doing the work of the real worker runtime's commands: the ledger.
class ledger_connector final : public connector {
 public:
  explicit ledger_connector(simulation& s) : _sim(s) {}
  ack_result execute(const fbs::Envelope& command, const command_context& ctx) override {
    return _sim.execute(command, ctx.idempotency_key, /*real_worker=*/true);
  }

 private:
  simulation& _sim;
};

result<std::vector<uint64_t>> sim_log::commit(uint32_t partition, const commit_batch& batch) {
  if (_sim.crash_pending()) return fail(errc::io, "simulated crash: the process is gone");
  _sim.commit_begins();
  auto r = _inner.commit(partition, batch);
  if (r) _sim.on_committed(partition, batch, *r);
  return r;
}

// ------------------------------------------------------------------------------------ disk

std::string fd_path(int fd) {
  std::error_code ec;
  auto p = fs::read_symlink(fmt::format("/proc/self/fd/{}", fd), ec);
  return ec ? std::string() : p.string();
}

int simulation::on_fdatasync(int fd) {
  ++_stats.commits;
  const bool delivery = ++_syncs_in_commit > 1;
  if (_crash_pending) {
    errno = EIO;
    return -1;
  }
  const std::string path = fd_path(fd);
  struct stat st {};
  if (::fstat(fd, &st) < 0) return -1;
  const bool crash_here = _faults_on && _plan.crashes > 0 && _actor != actor::none &&
                          _rng.chance(_plan.crash_per_commit);
  const bool before_sync = crash_here && _rng.chance(0.5);
  auto crash_kind = [&](bool in) {
    if (_actor == actor::recovery) return fault::crash_in_recovery;
    if (delivery) return fault::crash_in_forward_delivery;
    switch (_actor) {
      case actor::client:
        return fault::crash_in_client_commit;  // an ingress append has no "after" worth a kind
      case actor::orchestrator:
        return in ? fault::crash_in_orchestrator_commit : fault::crash_after_orchestrator_sync;
      case actor::worker:
        return in ? fault::crash_in_worker_commit : fault::crash_after_worker_sync;
      default:
        return in ? fault::crash_in_acker_commit : fault::crash_after_acker_sync;
    }
  };
  if (before_sync) {
    _crash_pending = true;
    _crash_kind = crash_kind(true);
    trace(fmt::format("crash in a commit, before its sync ({})", fault_name(*_crash_kind)));
    errno = EIO;
    return -1;
  }
  if (_faults_on && _plan.lie > 0 && _rng.chance(_plan.lie)) {
    note(fault::fsync_lied);
    _lied = true;
  } else {
    _synced[path] = static_cast<uint64_t>(st.st_size);
  }
  if (crash_here) {
    _crash_pending = true;
    _crash_kind = crash_kind(false);
    if (_actor == actor::orchestrator && !delivery) _crash_store = _actor_partition;
    trace(fmt::format("crash after a commit's sync ({})", fault_name(*_crash_kind)));
  }
  return 0;
}

std::vector<std::string> segment_files(const std::string& log_dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& part : fs::directory_iterator(log_dir, ec)) {
    if (!part.is_directory() || part.path().filename().string().front() != 'p') continue;
    for (const auto& f : fs::directory_iterator(part.path(), ec)) {
      if (f.path().extension() == ".seg") out.push_back(f.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The newest RocksDB WAL of a store (RocksDB names them <number>.log).
std::optional<std::string> newest_wal(const std::string& store_dir) {
  std::optional<std::string> best;
  std::error_code ec;
  for (const auto& f : fs::directory_iterator(store_dir, ec)) {
    if (f.path().extension() != ".log") continue;
    if (!best || f.path().filename().string() > fs::path(*best).filename().string()) {
      best = f.path().string();
    }
  }
  return best;
}

uint64_t file_size(const std::string& path) {
  std::error_code ec;
  auto n = fs::file_size(path, ec);
  return ec ? 0 : n;
}

void simulation::damage_log() {
  for (const std::string& path : segment_files(_dir + "/log")) {
    const uint64_t size = file_size(path);
    const uint64_t synced = _synced.contains(path) ? _synced[path] : 0;
    if (size <= synced) continue;
    const int how = static_cast<int>(_rng.uniform(0, 4));
    if (how == 4) continue;  // the unsynced bytes made it anyway
    if (how == 0) {
      fs::resize_file(path, synced);
      note(fault::log_tail_dropped);
    } else if (how == 1) {
      fs::resize_file(path, static_cast<uint64_t>(_rng.uniform(synced, size - 1)));
      note(fault::log_tail_partial);
    } else {
      int fd = ::open(path.c_str(), O_RDWR);
      if (fd < 0) continue;
      if (how == 2) {
        // Pages reach the disk in any order: some sectors after the synced end stay zero.
        const std::string zeros(sector_bytes, '\0');
        for (uint64_t at = synced / sector_bytes * sector_bytes; at < size; at += sector_bytes) {
          if (at < synced || !_rng.chance(0.4)) continue;
          (void)!::pwrite(fd, zeros.data(), std::min<uint64_t>(sector_bytes, size - at),
                          static_cast<off_t>(at));
        }
        note(fault::log_tail_sectors);
      } else {
        std::string junk(static_cast<size_t>(_rng.uniform(1, 700)), '\0');
        for (char& c : junk) c = static_cast<char>(_rng.uniform(0, 255));
        (void)!::pwrite(fd, junk.data(), junk.size(), static_cast<off_t>(size));
        note(fault::log_tail_garbage);
      }
      ::close(fd);
    }
  }
}

void simulation::cut_wals() {
  for (uint32_t p = 0; p < sim_partitions; ++p) {
    auto wal = newest_wal(fmt::format("{}/state/p{:03}", _dir, p));
    if (!wal) continue;
    const uint64_t size = file_size(*wal);
    if (size == 0 || _rng.chance(0.3)) continue;
    fs::resize_file(*wal, static_cast<uint64_t>(_rng.uniform(0, size - 1)));
    note(fault::store_wal_cut);
  }
}

// ----------------------------------------------------------------------------------- world

result<void> simulation::open_world() {
  embedded_log_options lo;
  lo.partitions = sim_partitions;
  lo.fsync = true;
  lo.segment_bytes_max = _segment_bytes;
  lo.fdatasync_for_testing = [this](int fd) { return on_fdatasync(fd); };
  lo.on_damage = [this](const log_damage& d) {
    ++_stats.quarantined;
    trace(fmt::format("recovery: {}", damage_text(d)));
  };
  // Recovery may commit (forwards a crash left undelivered): a crash point like any other.
  _actor = actor::recovery;
  commit_begins();
  auto opened = open_embedded_log(_dir + "/log", lo);
  _actor = actor::none;
  if (!opened) return std::unexpected(opened.error());
  _embedded = std::move(*opened);
  _log = std::make_unique<sim_log>(*_embedded, *this);
  partition_runtime_options ro;
  ro.batch_records_max = _runtime_batch;
  ro.timers_per_batch_max = _timers_batch;
  _orch.assign(sim_partitions, nullptr);
  for (uint32_t p = 0; p < sim_partitions; ++p) {
    auto store = state_store::open(fmt::format("{}/state/p{:03}", _dir, p), small_store());
    if (!store) return std::unexpected(store.error());
    orchestrator_options oo;
    oo.partitions = sim_partitions;
    auto o = std::make_unique<orchestrator>(oo);
    _orch[p] = o.get();
    _parts.push_back(
        std::make_unique<partition_runtime>(*_log, p, std::move(*store), std::move(o), _clk, ro));
    if (auto r = _parts.back()->recover(); !r) return r;
    // Recovered this partition (its replay written to its store), not the next one yet.
    if (_faults_on && _plan.crashes > 0 && _rng.chance(_plan.crash_per_action)) {
      _crash_pending = true;
      _crash_kind = fault::crash_in_recovery;
      return fail(errc::io, "simulated crash during recovery");
    }
  }
  worker_options wo;
  wo.concurrency = 1;  // no pool thread: the run stays on this thread
  wo.batch_records_max = _worker_batch;
  for (stream s : {stream::commands_ai, stream::commands_notify}) {
    auto w = worker_runtime::open(*_log, s, std::make_unique<ledger_connector>(*this), _clk, wo);
    if (!w) return std::unexpected(w.error());
    _workers.push_back(std::move(*w));
  }
  for (auto& a : _acker) a = acker_partition{};
  rebuild_durable_acks();
  return {};
}

void simulation::drop_world() {
  _workers.clear();
  _parts.clear();
  _orch.clear();
  _log.reset();
  _embedded.reset();
}

void simulation::rebuild_durable_acks() {
  _durable_acks.clear();
  _successful_acks.clear();
  for (uint32_t p = 0; p < sim_partitions; ++p) {
    for (const record& r : read_all(stream::acks, p)) {
      const fbs::Envelope* e = decode_envelope(r.value);
      if (e && e->payload_type() == fbs::Payload::StepAck) note_ack(*e->payload_as_StepAck());
    }
  }
}

void simulation::note_ack(const fbs::StepAck& ack) {
  const std::string id(sv(ack.command_id()));
  _durable_acks.insert(id);
  if (ack.status() == fbs::AckStatus::Success) _successful_acks.insert(id);
}

void simulation::on_committed(uint32_t p, const commit_batch& batch,
                              const std::vector<uint64_t>& offsets) {
  for (size_t i = 0; i < batch.appends.size(); ++i) {
    const auto& a = batch.appends[i];
    if (offsets[i] != UINT64_MAX) {
      auto& end = _acked_end[static_cast<size_t>(a.s)][p];
      end = std::max(end, offsets[i] + 1);
    }
    if (a.s != stream::acks) continue;
    const fbs::Envelope* e = decode_envelope(a.value);
    if (e && e->payload_type() == fbs::Payload::StepAck) note_ack(*e->payload_as_StepAck());
  }
}

// After a recovery: did the log keep every acknowledged append? With an honest fsync it must;
// with a lying one, a loss is what the disk did, and the checks that need it are relaxed.
result<void> simulation::check_acknowledged_after_recovery() {
  for (size_t s = 0; s < stream_count; ++s) {
    for (uint32_t p = 0; p < sim_partitions; ++p) {
      auto end = _embedded->end_offset(static_cast<stream>(s), p);
      if (!end) return std::unexpected(end.error());
      if (*end < _acked_end[s][p]) {
        if (!_lied) {
          problem(
              fmt::format("{}[{}]: recovery kept {} records of {} acknowledged, with an "
                          "fsync that did not lie",
                          stream_name(static_cast<stream>(s)), p, *end, _acked_end[s][p]));
        }
        ++_stats.acked_commits_lost;
        _acked_lost = true;
      }
      _acked_end[s][p] = *end;
    }
  }
  return {};
}

void simulation::crash() {
  // A crash during the recovery that follows is one more crash: loop until a recovery ends.
  for (;;) {
    const bool power = _rng.chance(_plan.power_loss);
    if (!_crash_kind) _crash_kind = fault::crash_between_actions;
    note(*_crash_kind);
    trace(fmt::format("CRASH ({}{})", fault_name(*_crash_kind), power ? ", power loss" : ""));
    --_plan.crashes;
    drop_world();
    // The batch of an orchestrator that crashed between its log commit and its state write
    // never reached the store: cut its WAL back to where it was before the batch.
    if (_crash_store) {
      if (auto wal = newest_wal(fmt::format("{}/state/p{:03}", _dir, *_crash_store));
          wal && file_size(*wal) >= _wal_before) {
        fs::resize_file(*wal, _wal_before);
      }
    }
    if (power) {
      note(fault::power_loss);
      damage_log();
      cut_wals();
    }
    // What survived is on disk now.
    _synced.clear();
    for (const std::string& path : segment_files(_dir + "/log")) _synced[path] = file_size(path);
    _crash_pending = false;
    _crash_kind.reset();
    _crash_store.reset();
    auto opened = open_world();
    if (!opened && _crash_pending) continue;
    if (opened) opened = check_acknowledged_after_recovery();
    const bool lied = std::exchange(_lied, false);
    if (opened) return;
    if (lied && opened.error().code == errc::corrupt) {
      // The disk lost acknowledged data and recovery noticed: refusing is the right answer.
      _stats.loss_detected = true;
      trace(fmt::format("recovery refused (the disk lied): {}", opened.error().message));
      return;
    }
    problem(fmt::format("recovery after a crash failed: {}", opened.error().message));
    return;
  }
}

// --------------------------------------------------------------------------------- actions

ack_result simulation::execute(const fbs::Envelope& command, std::string_view key,
                               bool real_worker) {
  const std::string k(key);
  if (real_worker && _durable_acks.contains(k)) {
    problem(fmt::format("the worker ran command {} again after its ack was committed", k));
  }
  if (_ledger[k]++ > 0) ++_stats.redeliveries;
  // The outcome is the remote side's: the same for every delivery of a key.
  const uint64_t h = fnv1a(_seed, k) % 100;
  switch (command.payload_type()) {
    case fbs::Payload::RunStep:
      if (h < 65) return ack_success(fmt::format(R"({{"ok": true, "h": {}}})", h));
      if (h < 88) return ack_retryable("simulated: try again");
      return ack_permanent("simulated: refused");
    case fbs::Payload::CallAi: {
      if (h >= 80) return ack_retryable("simulated: provider busy");
      ack_result r = ack_success(fmt::format(R"({{"text": "reply {}"}})", h));
      r.model = "m1";
      r.provider = "local";
      r.input_tokens = 100;
      r.output_tokens = 50;
      r.cost_micros = 300;
      return r;
    }
    default:
      if (h < 90) return ack_success(R"({"sent": true})");
      return ack_retryable("simulated: carrier busy");
  }
}

void simulation::new_inputs() {
  if (_starts < executions_max && _rng.chance(0.25)) {
    const std::string tenant(tenants[_rng.uniform(0, tenants.size() - 1)]);
    const std::string id = fmt::format("x{}", _starts++);
    const std::string_view wf = _rng.chance(0.5) ? "alpha" : "beta";
    _requests.push_back({tenant,
                         client::start_execution({tenant, id, id, _clk.now_ms()}, wf, 0,
                                                 json{{"v", _rng.uniform(0, 1000)}}.dump()),
                         id, _rng.chance(0.2)});
    _started.emplace_back(tenant, id);
  }
  if (!_started.empty() && _rng.chance(0.15)) {
    const auto& [tenant, id] = _started[_rng.uniform(0, _started.size() - 1)];
    const std::string rid = fmt::format("sig-{}-{}", id, _tick);
    _requests.push_back({tenant,
                         client::signal({tenant, id, rid, _clk.now_ms()}, "go", R"({"n": 1})"), "",
                         _rng.chance(0.2)});
  }
  if (!_started.empty() && _rng.chance(0.01)) {
    const auto& [tenant, id] = _started[_rng.uniform(0, _started.size() - 1)];
    const std::string rid = fmt::format("cancel-{}-{}", id, _tick);
    _requests.push_back({tenant, client::cancel({tenant, id, rid, _clk.now_ms()}, "sim"), ""});
  }
}

// The oldest request goes to the log. One that failed stays queued: the client sends it again
// after the crash (a start is idempotent on its execution id).
result<bool> simulation::submit_one() {
  if (_requests.empty()) return false;
  request& r = _requests.front();
  if (r.misplaced) {
    // A producer that did not hash the tenant: the orchestrator forwards it, the log delivers.
    commit_batch b;
    b.add(stream::ingress, r.tenant, r.bytes);
    const uint32_t home = tenant_partition(r.tenant, sim_partitions);
    auto sent = _log->commit((home + 1) % sim_partitions, b);
    if (!sent) return std::unexpected(sent.error());
  } else if (auto sent = client::submit(*_log, r.tenant, r.bytes); !sent) {
    return std::unexpected(sent.error());
  }
  if (!r.execution.empty()) _accepted_starts.push_back(r.execution);
  _requests.erase(_requests.begin());
  return true;
}

// The step acker: a worker that answers commands.step out of order. It runs each command
// through the ledger as it reads it, holds each ack for a random number of ticks, commits the
// due ones in a random order (sometimes one twice), and moves its position to the lowest
// command whose ack is not committed yet — so a crash makes it run again exactly the commands
// whose acks were not durable (and some whose acks were: their keys keep the effect single).
result<bool> simulation::acker_step() {
  bool worked = false;
  const bool faults = _faults_on && _plan.ack_faults;
  for (uint32_t p = 0; p < sim_partitions; ++p) {
    acker_partition& a = _acker[p];
    if (!a.next) {
      auto pos = _log->position(step_group, stream::commands_step, p);
      if (!pos) return std::unexpected(pos.error());
      a.next = a.position = *pos;
      a.done.clear();
      a.pending.clear();
    }
    std::vector<record> cmds;
    auto n = _log->read(stream::commands_step, p, *a.next, _rng.uniform(1, 4), 1 << 20, cmds);
    if (!n) return std::unexpected(n.error());
    for (const record& r : cmds) {
      worked = true;
      a.next = r.offset + 1;
      const fbs::Envelope* e = decode_envelope(r.value);
      if (!e || e->payload_type() != fbs::Payload::RunStep) {
        problem(fmt::format("commands.step[{}]@{}: not a RunStep", p, r.offset));
        continue;
      }
      pending_ack ack{r.offset, r.key,
                      make_ack(*e, execute(*e, sv(e->record_id()), false), _clk.now_ms()), _tick};
      if (faults && _rng.chance(0.4)) {
        ack.due_tick += _rng.uniform(1, 6);
        note(fault::ack_delayed);
      }
      a.pending.push_back(std::move(ack));
    }
    std::vector<pending_ack> due;
    for (auto it = a.pending.begin(); it != a.pending.end();) {
      if (it->due_tick <= _tick) {
        due.push_back(std::move(*it));
        it = a.pending.erase(it);
      } else {
        ++it;
      }
    }
    if (due.empty()) continue;
    worked = true;
    if (faults && due.size() > 1 && _rng.chance(0.5)) {
      _rng.shuffle(due);
      note(fault::ack_reordered);
    }
    if (faults && _rng.chance(0.2)) {
      const pending_ack& d = due[_rng.uniform(0, due.size() - 1)];
      a.pending.push_back({std::nullopt, d.key, d.bytes, _tick + _rng.uniform(0, 5)});
      note(fault::ack_duplicated);
    }
    // In one or two commits.
    const size_t split = faults && due.size() > 1 ? _rng.uniform(1, due.size()) : due.size();
    for (auto [from, to] : {std::pair{size_t{0}, split}, {split, due.size()}}) {
      if (from == to) continue;
      commit_batch b;
      std::set<uint64_t> done = a.done;
      for (size_t i = from; i < to; ++i) {
        b.add(stream::acks, due[i].key, due[i].bytes);
        if (due[i].offset) done.insert(*due[i].offset);
      }
      uint64_t position = a.position;
      while (done.contains(position)) done.erase(position++);
      b.set_position(std::string(step_group), stream::commands_step, position);
      _actor = actor::acker;
      auto c = _log->commit(p, b);
      _actor = actor::none;
      if (!c) return std::unexpected(c.error());
      a.done = std::move(done);
      a.position = position;
    }
  }
  return worked;
}

// Runs action `which` (0: a client request, 1..partitions: an orchestrator, then the two
// workers, then the acker). False if it failed without a crash (a problem is recorded).
bool simulation::run_action(int which, bool& worked) {
  result<bool> r = false;
  const int workers_at = 1 + static_cast<int>(sim_partitions);
  if (which == 0) {
    _actor = actor::client;
    r = submit_one();
  } else if (which < workers_at) {
    const uint32_t p = static_cast<uint32_t>(which - 1);
    _actor = actor::orchestrator;
    _actor_partition = p;
    auto wal = newest_wal(fmt::format("{}/state/p{:03}", _dir, p));
    _wal_before = wal ? file_size(*wal) : 0;
    r = _parts[p]->run_once();
  } else if (which < workers_at + 2) {
    _actor = actor::worker;
    auto n = _workers[which - workers_at]->run_once();
    r = n ? result<bool>(*n > 0) : std::unexpected(n.error());
  } else {
    r = acker_step();
  }
  _actor = actor::none;
  if (r) {
    worked = worked || *r;
    return true;
  }
  if (_crash_pending) return true;
  problem(fmt::format("action {} failed without a crash: {}", which, r.error().message));
  return false;
}

void simulation::move_clock(bool faults) {
  _clk.advance(_rng.uniform(0, 12));
  if (!faults || !_plan.clock_jumps) return;
  if (_rng.chance(0.02)) {
    _clk.advance(_rng.uniform(1'000, 600'000));
    note(fault::clock_jump_forward);
    trace("clock jumps forward");
  } else if (_rng.chance(0.02)) {
    _clk.set(_clk.now_ms() - _rng.uniform(1'000, 120'000));
    note(fault::clock_jump_back);
    trace("clock jumps back");
  }
}

// ---------------------------------------------------------------------------------- checks

std::vector<record> simulation::read_all(stream s, uint32_t p) {
  std::vector<record> out;
  for (uint64_t off = 0;;) {
    auto r = _log->read(s, p, off, 1024, 8 << 20, out);
    if (!r || *r == 0) break;
    off = out.back().offset + 1;
  }
  return out;
}

void simulation::check_end() {
  std::set<std::string> event_ids, commands, timed_out, timers;
  std::map<std::string, int> started, ended, deferrals;
  uint64_t top_level = 0;
  for (uint32_t p = 0; p < sim_partitions; ++p) {
    for (const record& r : read_all(stream::executions, p)) {
      ++_stats.events;
      const fbs::Envelope* e = decode_envelope(r.value);
      if (!e) {
        problem(fmt::format("executions[{}]@{} is not an envelope", p, r.offset));
        continue;
      }
      if (e->payload_type() == fbs::Payload::CommandRejected) {
        ++_stats.rejections;
        trace(fmt::format("rejected: {} {}: {}", sv(e->execution_id()), sv(e->causation_id()),
                          sv(e->payload_as_CommandRejected()->reason())));
      }
      if (e->payload_type() == fbs::Payload::NotificationDeferred) ++_stats.deferred;
      if (e->kind() != fbs::RecordKind::Event) continue;
      const std::string exec(sv(e->execution_id()));
      if (!event_ids.insert(std::string(sv(e->record_id()))).second) {
        problem(fmt::format("event {} written twice", sv(e->record_id())));
      }
      switch (e->payload_type()) {
        case fbs::Payload::ExecutionStarted:
          ++started[exec];  // sub-workflows too
          if (sv(e->payload_as_ExecutionStarted()->parent_execution()).empty()) ++top_level;
          break;
        case fbs::Payload::ExecutionSucceeded:
          ++_stats.succeeded;
          ++ended[exec];
          break;
        case fbs::Payload::ExecutionFailed:
          ++_stats.failed;
          ++ended[exec];
          break;
        case fbs::Payload::ExecutionCancelled:
          ++_stats.cancelled;
          ++ended[exec];
          break;
        case fbs::Payload::StepTimedOut: {
          auto t = e->payload_as_StepTimedOut();
          if (!timed_out.insert(fmt::format("{}/{}/{}", exec, sv(t->step()), t->attempt()))
                   .second) {
            problem(fmt::format("{}: step {} attempt {} timed out twice", exec, sv(t->step()),
                                t->attempt()));
          }
          break;
        }
        case fbs::Payload::NotificationDeferred: {
          auto d = e->payload_as_NotificationDeferred();
          ++deferrals[fmt::format("{}/{}/{}/{}", exec, sv(d->step()), d->attempt(), d->item())];
          break;
        }
        case fbs::Payload::TimerFired: {
          // A deferred notification's timer is armed again by each deferral: it fires once per
          // NotificationDeferred. Every other timer fires once per step attempt (and item).
          auto t = e->payload_as_TimerFired();
          const std::string at =
              fmt::format("{}/{}/{}/{}", exec, sv(t->step()), t->attempt(), t->item());
          const int armed = t->purpose() == fbs::TimerPurpose::NotifyDefer ? deferrals[at] : 0;
          if (t->purpose() == fbs::TimerPurpose::NotifyDefer && armed == 0) {
            problem(fmt::format("{}: deferral timer of step {} fired, never armed", exec,
                                sv(t->step())));
          }
          if (!timers.insert(fmt::format("{}/{}/{}", at, static_cast<int>(t->purpose()), armed))
                   .second) {
            problem(fmt::format("{}: timer of step {} attempt {} item {} fired twice", exec,
                                sv(t->step()), t->attempt(), t->item()));
          }
          break;
        }
        default:
          break;
      }
    }
    for (stream s : {stream::commands_step, stream::commands_ai, stream::commands_notify}) {
      for (const record& r : read_all(s, p)) {
        const fbs::Envelope* e = decode_envelope(r.value);
        if (!e) continue;
        ++_stats.commands;
        const std::string id(sv(e->record_id()));
        if (!commands.insert(id).second) problem(fmt::format("command {} written twice", id));
        if (!_durable_acks.contains(id)) problem(fmt::format("command {} never acknowledged", id));
        if (_successful_acks.contains(id) && !_ledger.contains(id)) {
          problem(fmt::format("command {} acknowledged as done, with no effect", id));
        }
      }
    }
  }
  _stats.executions = top_level;
  _stats.children = started.size() - top_level;
  for (const auto& [exec, n] : started) {
    if (n > 1) problem(fmt::format("execution {} started {} times", exec, n));
    if (ended[exec] != 1) problem(fmt::format("execution {} ended {} times", exec, ended[exec]));
  }
  _stats.effects = _ledger.size();
  if (!_acked_lost) {
    for (const auto& [key, calls] : _ledger) {
      if (!commands.contains(key))
        problem(fmt::format("effect {} of a command not in the log", key));
    }
    for (const std::string& id : _accepted_starts) {
      if (!started.contains(id)) problem(fmt::format("start of {} acknowledged, never run", id));
    }
  }
  for (uint32_t p = 0; p < sim_partitions; ++p) {
    auto diffs = compare_with_replay(*_log, p, _parts[p]->store(),
                                     fmt::format("{}/rebuilt-{}", _dir, p), small_store());
    if (!diffs) {
      problem(fmt::format("partition {}: replay failed: {}", p, diffs.error().message));
    } else if (!diffs->empty()) {
      problem(fmt::format("partition {}: state differs from replay ({} differences): {}", p,
                          diffs->size(), diffs->front()));
    }
    auto chains = verify_chains(*_log, p);
    if (!chains) {
      problem(fmt::format("partition {}: chains: {}", p, chains.error().message));
    } else if (!chains->problems.empty()) {
      problem(fmt::format("partition {}: chain: {}", p, chains->problems.front()));
    }
  }
}

// ------------------------------------------------------------------------------------- run

run_result simulation::run() {
  run_result out;
  out.seed = _seed;
  std::error_code ec;
  fs::remove_all(_dir, ec);
  fs::create_directories(_dir, ec);
  // The seed's plan: each fault class on in most seeds, off in some.
  _plan.crashes = _rng.chance(0.85) ? static_cast<int>(_rng.uniform(1, crashes_max)) : 0;
  _plan.crash_per_commit = 1.0 / static_cast<double>(_rng.uniform(8, 60));
  _plan.crash_per_action = 1.0 / static_cast<double>(_rng.uniform(40, 400));
  _plan.power_loss = _rng.chance(0.7) ? 0.6 : 0.0;
  _plan.lie = _rng.chance(0.2) ? 0.3 : 0.0;
  _plan.ack_faults = _rng.chance(0.7);
  _plan.clock_jumps = _rng.chance(0.5);
  _segment_bytes = static_cast<size_t>(_rng.uniform(2'048, 32'768));
  _runtime_batch = static_cast<size_t>(_rng.uniform(1, 16));
  _timers_batch = static_cast<size_t>(_rng.uniform(1, 4));
  _worker_batch = static_cast<size_t>(_rng.uniform(1, 8));
  if (_options.trace) {
    fmt::print(
        "seed {}: crashes {} (1/{:.0f} per commit), power loss {}, lying fsync {}, ack "
        "faults {}, clock jumps {}, segment {} B\n",
        _seed, _plan.crashes, 1 / _plan.crash_per_commit, _plan.power_loss, _plan.lie,
        _plan.ack_faults, _plan.clock_jumps, _segment_bytes);
  }
  for (std::string_view wf : {workflow_alpha, workflow_beta}) {
    auto valid = parse_definition(wf, "");
    if (!valid)
      problem(fmt::format("a simulator workflow does not parse: {}", valid.error().reason));
  }
  if (auto valid = parse_tenant_policy(policy); !valid) {
    problem(fmt::format("the simulator's policy does not parse: {}", valid.error().reason));
  }
  if (auto opened = open_world(); !opened) {
    if (_crash_pending) {
      crash();
    } else {
      problem(fmt::format("open: {}", opened.error().message));
    }
  }
  for (std::string_view tenant : tenants) {
    for (std::string_view wf : {workflow_alpha, workflow_beta}) {
      _requests.push_back({std::string(tenant),
                           client::publish_definition({tenant, "", "pub", _clk.now_ms()}, wf, ""),
                           ""});
    }
  }
  _requests.push_back({std::string(policy_tenant),
                       client::publish_policy({policy_tenant, "", "policy", _clk.now_ms()}, policy),
                       ""});
  const int actions = 4 + static_cast<int>(sim_partitions);
  int quiet = 0;
  for (_tick = 0;
       _problems.empty() && !_stats.loss_detected && _tick < active_ticks + drain_ticks_max;
       ++_tick) {
    _faults_on = _tick < active_ticks;
    if (_faults_on) new_inputs();
    std::vector<int> order(actions);
    for (int i = 0; i < actions; ++i) order[i] = i;
    _rng.shuffle(order);
    bool worked = false;
    for (int which : order) {
      if (!run_action(which, worked)) break;
      if (!_crash_pending && _faults_on && _plan.crashes > 0 &&
          _rng.chance(_plan.crash_per_action)) {
        _crash_pending = true;
      }
      if (_crash_pending) {
        crash();
        break;
      }
    }
    if (!_problems.empty() || _stats.loss_detected) break;
    move_clock(_faults_on);
    if (_faults_on) continue;
    // Draining: done once a few ticks in a row found nothing to do and no timer is pending;
    // a pending timer is reached by moving the clock to it.
    int64_t next_timer = INT64_MAX;
    for (orchestrator* o : _orch) next_timer = std::min(next_timer, o->next_timer_ms());
    bool acks_pending = false;
    for (const auto& a : _acker) acks_pending = acks_pending || !a.pending.empty();
    if (worked || acks_pending || !_requests.empty()) {
      quiet = 0;
      continue;
    }
    if (next_timer != INT64_MAX) {
      if (next_timer > _clk.now_ms()) _clk.set(next_timer);
      quiet = 0;
      continue;
    }
    if (++quiet >= 3) break;
  }
  if (_problems.empty() && !_stats.loss_detected) {
    if (quiet < 3) problem(fmt::format("still busy after {} ticks of draining", drain_ticks_max));
    check_end();
  }
  drop_world();
  out.problems = std::move(_problems);
  out.stats = _stats;
  if (out.problems.empty() && !_options.keep) {
    fs::remove_all(_dir, ec);
  } else {
    out.dir = _dir;
  }
  return out;
}

}  // namespace

run_result run_seed(uint64_t seed, const run_options& options) {
  simulation s(seed, options);
  return s.run();
}

}  // namespace auterity::sim
