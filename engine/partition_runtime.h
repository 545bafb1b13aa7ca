#pragma once
// The partition runtime: one loop per partition that reads a batch of inputs (ingress, acks)
// and due timers, lets a processor prefetch and then decide with no IO, commits the outputs
// and input positions atomically to the log, and only then writes the state batch with the
// executions offset it reflects (the checkpoint). Recovery replays executions from the
// checkpoint through the processor's appliers.
//
// Recovery is also the ownership handover (docs/ownership-handover.md): positions first (stable:
// a transaction holding pending positions of the partition is waited for), then the log end of
// executions, then a wait until everything below that end is decided, then replay. So the state
// and the positions reflect the same committed transactions, whatever an earlier owner that is
// paused or dead left open.
//
// A failed commit leaves memory ahead of the log (and may or may not have committed): the
// runtime then stops deciding for good (failed()), and its owner drops it and recovers a new one
// from the local state, which is written only after a commit succeeded (step down). A failed
// read leaves nothing behind: the loop waits and tries again.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>

#include "engine/clock.h"
#include "engine/log.h"
#include "engine/metrics.h"
#include "engine/state_store.h"

namespace auterity {

struct input {
  stream s;
  uint32_t partition;
  record rec;
};

// Where an executions record is or will be: a committed offset (recovery, replay) or, while a
// batch is being decided, its ordinal among the batch's executions appends — the log assigns
// the offset at commit (Kafka's offsets are not predictable), and flush() resolves it.
struct record_position {
  uint64_t value = 0;
  bool committed = true;
  static record_position offset(uint64_t o) { return {o, true}; }
  static record_position pending(uint64_t ordinal) { return {ordinal, false}; }
};

// Handed to the processor while it decides one batch. It collects outputs; it never does IO.
class batch_context {
 public:
  batch_context(int64_t now_ms, uint32_t partition, commit_batch& out)
      : _now_ms(now_ms), _partition(partition), _out(out) {}

  int64_t now_ms() const { return _now_ms; }
  uint32_t partition() const { return _partition; }

  // Appends to the executions stream; returns where the record will be.
  record_position append_event(std::string key, std::string bytes) {
    _out.add(stream::executions, std::move(key), std::move(bytes));
    return record_position::pending(_events++);
  }
  // Appends to another partition's stream (forwarding); only on logs that take it.
  void append_to(stream s, uint32_t partition, std::string key, std::string bytes) {
    _out.add_to(s, partition, std::move(key), std::move(bytes));
  }
  void append(stream s, std::string key, std::string bytes) {
    if (s == stream::executions) {
      append_event(std::move(key), std::move(bytes));
      return;
    }
    _out.add(s, std::move(key), std::move(bytes));
  }

 private:
  int64_t _now_ms;
  uint32_t _partition;
  uint64_t _events = 0;
  commit_batch& _out;
};

// The domain side of a partition: the orchestrator implements it (processors/).
class partition_processor {
 public:
  virtual ~partition_processor() = default;

  // Loads what the processor keeps in memory (e.g. its timer index) from the store.
  virtual result<void> open(state_store& store, uint32_t partition) = 0;
  // Applies one committed executions record through the appliers (recovery and replay).
  virtual void replay(uint64_t offset, std::string_view bytes) = 0;
  // Loads into memory the state the inputs will need: the only IO of a batch.
  virtual void prefetch(std::span<const input> inputs) = 0;
  // A barrier input is decided alone, in a batch of its own with no timers, after every earlier
  // batch is committed and its state written: so its decision (and its prefetch) sees the
  // partition's whole state in the store (a tenant move exports it). An ingress input only.
  virtual bool barrier(const input&) const { return false; }
  // Decides one input: appends events (applied on the spot), commands, rejections.
  virtual void process(const input& in, batch_context& ctx) = 0;
  // Earliest due time of a timer, INT64_MAX if none.
  virtual int64_t next_timer_ms() const = 0;
  // Fires timers due at ctx.now_ms(), at most `max_timers`.
  virtual void fire_timers(batch_context& ctx, size_t max_timers) = 0;
  // Moves the state changes of the oldest batch staged (stage()), or with none staged of the
  // batch just decided, into `out` (called after that batch's log commit succeeded), with the
  // committed offsets of its executions appends, in order, to resolve pending positions (empty
  // after replay, where every position is known).
  virtual void flush(state_batch& out, const std::vector<uint64_t>& event_offsets) = 0;

  // Pipelining (partition_runtime_options::pipeline; docs/pipelined-transactions.md, step 2).
  // stage() sets the state changes of the batch just decided aside, so the next batch can be
  // decided while this one commits: the in-memory state goes on including them (the next
  // decision sees them), the store gets them only through flush(), once the batch committed,
  // so it never holds an uncommitted decision. Batches are flushed in the order staged; at most
  // two are staged at once.
  virtual void stage() {}
  // True if the next batch may be decided now, while every staged batch is still unwritten:
  // the processor can show it everything they changed from memory. False (the default: a
  // processor that does not stage) makes the runtime flush and write first.
  virtual bool may_decide_ahead() const { return false; }
};

struct partition_runtime_options {
  size_t batch_records_max = 512;      // inputs per stream per batch
  size_t batch_bytes_max = 4 << 20;    // bytes per stream per batch
  size_t timers_per_batch_max = 1024;  // timers fired per batch
  int64_t idle_wait_ms_max = 50;       // longest sleep when idle (timers are checked after)
  // Least time between two commits of a partition: inputs that arrive meanwhile ride the next
  // commit. 0 commits as soon as there is work (lowest latency); raising it trades latency
  // for fewer, larger commits (on Kafka, fewer transactions).
  int64_t commit_interval_ms = 0;
  // Longest a restore waits for an earlier owner's open transaction on executions to be decided
  // (committed or aborted). It should exceed the log's transaction timeout (Kafka: 10 s), after
  // which the broker aborts it; past it, recover() fails with errc::timeout and the caller
  // tries again later.
  int64_t restore_wait_ms_max = 20'000;
  // Pause after a failed read before the loop tries again.
  int64_t retry_wait_ms = 200;
  // Decide batch n+1 while batch n commits, at most one batch ahead (docs/pipelined-
  // transactions.md, step 2): n+1 is submitted only after n committed and n's state is written,
  // and dropped undecided if n failed. Only on a log whose commits run in the background
  // (log::background_commits(), Kafka) and with a processor that stages (may_decide_ahead());
  // otherwise each batch commits and is written before the next is read. Off by default: not
  // shown better at 1,000 in flight (bench/KAFKA.md, "Pipelined batches").
  bool pipeline = false;
};

// Bucket bounds of the commit histograms: an fdatasync on an SSD takes ~0.1-5 ms, a Kafka
// transaction ~5-50 ms; commits carry 1 to a few thousand records.
inline constexpr std::array<uint64_t, 16> commit_latency_bounds_us = {
    50,     100,    250,     500,     1'000,   2'500,     5'000,     10'000,
    25'000, 50'000, 100'000, 250'000, 500'000, 1'000'000, 2'500'000, 5'000'000};
inline constexpr std::array<uint64_t, 14> commit_records_bounds = {
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192};

// Counters a partition exposes (read from other threads; relaxed atomics). engine/metrics.cc
// exports them.
struct partition_probe {
  std::atomic<uint64_t> batches{0};
  std::atomic<uint64_t> inputs{0};
  std::atomic<uint64_t> events{0};
  std::atomic<uint64_t> records_out{0};
  std::atomic<uint64_t> commit_us_total{0};
  std::atomic<uint64_t> replayed{0};
  std::atomic<uint64_t> restore_ms{0};
  atomic_histogram commit_latency_us{commit_latency_bounds_us};
  atomic_histogram commit_records{commit_records_bounds};
  // The orchestrator group's committed positions, published after each commit, so lag is
  // read without asking the log (on Kafka that would be a broker round trip per scrape).
  std::atomic<uint64_t> ingress_next{0};
  std::atomic<uint64_t> acks_next{0};
  std::atomic<bool> restored{false};
  std::atomic<uint64_t> restore_wait_ms{0};  // of the last restore: waiting for positions/end
  std::atomic<uint64_t> read_errors{0};

  void on_restored(uint64_t ms, uint64_t ingress, uint64_t acks) {
    restore_ms.store(ms, std::memory_order_relaxed);
    publish_positions(ingress, acks);
    restored.store(true, std::memory_order_relaxed);
  }
  void on_commit(uint64_t us, size_t records, size_t executions_records, uint64_t ingress,
                 uint64_t acks) {
    commit_us_total.fetch_add(us, std::memory_order_relaxed);
    commit_latency_us.observe(us);
    commit_records.observe(records);
    events.fetch_add(executions_records, std::memory_order_relaxed);
    publish_positions(ingress, acks);
  }
  void publish_positions(uint64_t ingress, uint64_t acks) {
    ingress_next.store(ingress, std::memory_order_relaxed);
    acks_next.store(acks, std::memory_order_relaxed);
  }
};

inline constexpr std::string_view orchestrator_group = "orchestrator";

class partition_runtime {
 public:
  partition_runtime(log& l, uint32_t partition, std::unique_ptr<state_store> store,
                    std::unique_ptr<partition_processor> processor, clock& clk,
                    partition_runtime_options options = {});
  ~partition_runtime();

  // Recovery and handover: positions, the log end, the wait for it to be decided, then replay
  // of executions[p] from the checkpoint to the end, persisting the state as it goes.
  result<void> recover();
  // Runs one batch if there is work; returns false if there was nothing to do. An error from
  // the commit or the state write makes the runtime failed().
  result<bool> run_once();
  // With pipelining, run_once() may return with a batch still committing; this waits for it and
  // writes its state (stop() does it too). Without one in flight it returns at once.
  result<void> drain();
  // Runs batches on a thread of its own until stop() or until it fails.
  void start();
  void stop();
  // A commit or state write failed: this runtime decides nothing more; its owner replaces it
  // (recovering from the store and the log). The error says why.
  bool failed() const { return _failed.load(std::memory_order_acquire); }
  error failure() const;

  uint32_t partition() const { return _partition; }
  const partition_probe& probe() const { return _probe; }
  state_store& store() { return *_store; }
  partition_processor& processor() { return *_processor; }

 private:
  void loop();
  result<void> read_inputs(std::vector<input>& inputs);
  // With a batch in flight: are there enough inputs to decide the next one now?
  bool worth_deciding_ahead(const std::vector<input>& inputs) const;
  // Decides `inputs` (and due timers unless `alone`) into _out[slot].
  void decide(std::vector<input>& inputs, bool alone, int64_t now, size_t slot);
  // Hands _out[slot] to the log; without pipelining, waits for it and writes its state.
  result<bool> submit(size_t slot, size_t inputs, bool barrier);
  // Waits for the batch in flight, then writes its state with its checkpoint.
  result<void> finish_in_flight();

  log& _log;
  uint32_t _partition;
  std::unique_ptr<state_store> _store;
  std::unique_ptr<partition_processor> _processor;
  clock& _clock;
  partition_runtime_options _options;
  partition_probe _probe;
  uint64_t _ingress_next = 0;
  uint64_t _acks_next = 0;
  uint64_t _checkpoint = 0;  // next executions offset to apply
  std::vector<record> _scratch;
  std::vector<uint64_t> _event_offsets;
  // Two output batches: one committing (in flight) while the next is decided into the other.
  std::array<commit_batch, 2> _out;
  // The batch submitted and not yet finished (pipelining): its positions are what the probe
  // publishes once it committed, _ingress_next/_acks_next having moved on with the next batch.
  struct in_flight {
    commit_ticket ticket;
    size_t slot = 0;  // in _out
    size_t inputs = 0;
    uint64_t ingress_next = 0, acks_next = 0;
    bool barrier = false;  // nothing is decided ahead of a barrier's batch
    std::chrono::steady_clock::time_point submitted;
  };
  std::optional<in_flight> _in_flight;
  bool pipelined() const;
  state_batch _state_out;
  std::atomic<bool> _stop{false};
  std::atomic<bool> _failed{false};
  mutable std::mutex _failure_mu;
  error _failure{errc::io, ""};  // guarded by _failure_mu
  std::thread _thread;

  result<bool> fail_for_good(error e);
};

}  // namespace auterity
