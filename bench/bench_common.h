// What orchestration_bench and kafka_bench share: the workload (a linear workflow of task steps,
// tenants spread evenly over the partitions, a closed loop of executions), the acks their
// "acker" writes in place of a connector worker, the counters they sample and the latency
// percentiles they report. See README.md for the measurement definitions.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/core.h>

#include "engine/clock.h"
#include "engine/log.h"
#include "engine/record.h"
#include "engine/result.h"
#include "engine/worker_runtime.h"
#include "node/node.h"

namespace auterity::bench {

inline constexpr std::string_view acker_group = "bench.acker";
inline constexpr std::string_view workflow_name = "bench-linear";

// 0: the linear workflow. N > 0 (orchestration_bench --fanout N): the workflow is one foreach
// step s0 over the N items of the input, 100 at a time (foreach_concurrency_max), its body a
// transform task; each item's ack is a step transition, and the ack of item N-1 (started last,
// acked last) ends an execution. Set before anything below is called.
extern uint32_t fanout_items;

// Set by SIGINT/SIGTERM (on_signal): the run stops early and still reports.
extern std::atomic<bool> interrupted;
void on_signal(int);

int64_t now_ns();  // steady clock
// Milliseconds of the steady clock since t.
inline double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}
double ratio(double a, double b);  // a / b, 0 if b is not positive
std::string first_line(const std::filesystem::path& p);
// user + nice + system + irq + softirq + steal of the "cpu" line of /proc/stat (USER_HZ ticks):
// the CPU every process on the machine used.
uint64_t machine_busy_ticks();

// ------------------------------------------------------------------------------- workload

std::string linear_workflow_json(uint32_t steps);
// Tenants spread so every partition gets the same number: candidate names are taken in order
// and kept only if their partition still needs one.
std::vector<std::string> pick_tenants(uint32_t wanted, uint32_t partitions);
std::string execution_id(uint32_t index);
std::optional<uint32_t> execution_index(std::string_view id);
std::string start_command(std::string_view tenant, uint32_t index);
// Publishes the linear workflow of `steps` steps for every tenant.
result<void> publish(log& l, const std::vector<std::string>& tenants, uint32_t steps);

// What the run starts: `executions` in all, at most `in_flight` at once. The first
// `in_flight` are submitted before the node starts; the ackers start one more each time an
// execution's last step is acked, until `executions` were started (a closed loop).
struct workload {
  // A linear workflow of `steps` steps (linear_workflow_json).
  workload(uint32_t executions_, uint32_t in_flight_, uint32_t steps)
      : executions(executions_),
        in_flight(in_flight_),
        last_step(fanout_items ? fmt::format("s0[{}]", fanout_items - 1)
                               : fmt::format("s{}", steps - 1)) {}

  uint32_t executions = 0;
  uint32_t in_flight = 0;
  std::string last_step;                // id of the last step: its ack ends an execution
  std::atomic<uint32_t> next_index{0};  // next execution index to start

  std::optional<uint32_t> take_index() {
    const uint32_t i = next_index.fetch_add(1, std::memory_order_relaxed);
    return i < executions ? std::optional(i) : std::nullopt;
  }
};

// The initial StartExecution commands go in batches straight to ingress (one commit each), so
// setup does not take one commit per execution. Execution i belongs to tenant i % tenants.
result<void> submit_starts(log& l, const std::vector<std::string>& tenants, workload& w);

// ---------------------------------------------------------------------------------- acks

struct latency_sample {
  int64_t read_ns;  // when the acker read the next command
  int64_t latency_ns;
};

struct acker_counters {
  std::atomic<uint64_t> commits{0};
  std::atomic<uint64_t> acks{0};
  std::atomic<uint64_t> records{0};    // acks and closed-loop starts (kafka_bench)
  std::atomic<uint64_t> commit_us{0};  // (kafka_bench)
};

// The acks of an acker, which plays the connector worker: every command gets Success "{}".
// Latency of a step = when the acker reads an execution's next command − when the ack of its
// previous command was committed. The workflow is linear, so an execution has at most one
// command outstanding and its last ack time is all the state needed. In a closed loop, the
// ack of an execution's last step is committed together with the start of the next one, for
// the same tenant (same partition: one atomic commit).
class ack_writer {
 public:
  ack_writer(std::vector<int64_t>& ack_commit_ns, workload& w);

  // Adds to `out` an ack for each of `commands` (read from commands.step at `read_ns`).
  void add(const std::vector<record>& commands, int64_t read_ns, commit_batch& out);
  // The acks of the last add() were committed (made visible) at `committed_ns`.
  void committed(int64_t committed_ns);
  const std::vector<latency_sample>& samples() const { return _samples; }

 private:
  void ack_one(const record& r, int64_t read_ns, commit_batch& out);
  void start_next(std::string_view tenant, commit_batch& out);

  std::vector<int64_t>& _ack_commit_ns;  // by execution index; each index has one owner
  workload& _workload;
  std::vector<uint32_t> _indexes;  // of the last add()
  std::vector<latency_sample> _samples;
  const ack_result _success;
  system_clock _clock;
};

// What the ackers of both benchmarks share: their acks (ack_writer), counters, and a thread
// named "bench-acker" (the CPU split finds the ackers by that name) that calls run_once()
// until stop(). A subclass calls stop() in its destructor, before its own members go.
class acker_base {
 public:
  acker_base(std::vector<int64_t>& ack_commit_ns, workload& w) : _acks(ack_commit_ns, w) {}
  virtual ~acker_base();
  acker_base(const acker_base&) = delete;
  acker_base& operator=(const acker_base&) = delete;

  void start();
  void stop();
  const acker_counters& counters() const { return _counters; }
  const std::vector<latency_sample>& samples() const { return _acks.samples(); }  // after stop()

 protected:
  // One turn over the acker's partitions; waits a little if there was nothing to ack.
  virtual void run_once() = 0;

  ack_writer _acks;
  acker_counters _counters;

 private:
  std::atomic<bool> _stop{false};
  std::thread _thread;
};

// ------------------------------------------------------------------------------- sampling

struct totals {
  int64_t at_ns = 0;
  uint64_t transitions = 0;
  uint64_t started = 0;
  uint64_t ended = 0;
  uint64_t stale_acks = 0;
  uint64_t rejections = 0;
  uint64_t deadletters = 0;
  uint64_t orchestrator_commits = 0;
  uint64_t orchestrator_inputs = 0;
  uint64_t orchestrator_records_out = 0;
  uint64_t orchestrator_commit_us = 0;
  uint64_t acker_commits = 0;
  uint64_t acks = 0;
  uint64_t acker_records = 0;
  uint64_t acker_commit_us = 0;
};

void add_orchestrator(node& n, uint32_t p, totals& t);
void add_acker(const acker_counters& c, totals& t);

// The node's probes and the counters of `ackers` (pointers to objects with counters()), now.
template <typename Ackers>
totals read_totals(node& n, const Ackers& ackers) {
  totals t;
  t.at_ns = now_ns();
  for (uint32_t p = 0; p < n.partitions(); ++p) add_orchestrator(n, p, t);
  for (const auto& a : ackers) add_acker(a->counters(), t);
  return t;
}

// -------------------------------------------------------------------------------- results

// The q-quantile of `v` (sorted here), in ms; 0 if empty.
double percentile_ms(std::vector<int64_t>& v, double q);

struct latency_summary {
  size_t count = 0;
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, max_ms = 0;
};

latency_summary summarize_latency(std::vector<int64_t> latencies_ns);

// Over the samples of `ackers` (pointers to objects with samples()) read in [from_ns, to_ns].
template <typename Ackers>
latency_summary summarize_latency(const Ackers& ackers, int64_t from_ns, int64_t to_ns) {
  std::vector<int64_t> v;
  for (const auto& a : ackers) {
    for (const latency_sample& s : a->samples()) {
      if (s.read_ns >= from_ns && s.read_ns <= to_ns) v.push_back(s.latency_ns);
    }
  }
  return summarize_latency(std::move(v));
}

}  // namespace auterity::bench
