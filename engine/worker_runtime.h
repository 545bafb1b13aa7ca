#pragma once
// The worker runtime: consumes one command stream (commands.step, commands.ai or
// commands.notify) on every partition, runs each command through a connector with the command
// id as idempotency key, and commits the acks to acks[p] together with the consumer position in
// one log commit — so a command is acknowledged once, and a worker killed before that commit
// gets the command again (the connector's idempotency keeps the effect single).
//
// Concurrency: a batch of one partition runs up to worker_options::concurrency commands at
// once (the worker's own thread plus concurrency - 1 pool threads created with the runtime);
// the batch's acks are committed when all of its commands are done, in command order.
//
// Deadlines: the runtime cannot abort a connector call (there is no safe way to stop a thread);
// connectors enforce command_context::deadline_ms in their own IO (http_client does). The
// runtime only refuses to start a command whose deadline has passed, and turns a success that
// came back after the deadline into a retryable failure. Workers in other languages:
// engine/WORKERS.md.

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/clock.h"
#include "engine/log.h"
#include "engine/metrics.h"
#include "engine/record.h"

namespace auterity {

struct ack_result {
  fbs::AckStatus status = fbs::AckStatus::Success;
  std::string output_json;  // success: the step output (JSON)
  std::string error;        // failures: why, readable
  std::string model;        // AI usage, if any
  uint32_t input_tokens = 0;
  uint32_t output_tokens = 0;
  int64_t cost_micros = 0;
  std::string provider;  // AI usage: which configured provider answered
};

inline ack_result ack_success(std::string output_json) {
  ack_result r;
  r.output_json = std::move(output_json);
  return r;
}
inline ack_result ack_failure(fbs::AckStatus status, std::string why) {
  ack_result r;
  r.status = status;
  r.error = std::move(why);
  return r;
}
inline ack_result ack_retryable(std::string why) {
  return ack_failure(fbs::AckStatus::RetryableFailure, std::move(why));
}
inline ack_result ack_permanent(std::string why) {
  return ack_failure(fbs::AckStatus::PermanentFailure, std::move(why));
}

// What the runtime tells a connector about one command.
struct command_context {
  // Wall-clock ms by which the connector must have answered: the command's own deadline_ms
  // when it has one, else now + worker_options::command_deadline_ms. A connector that cannot
  // finish by then returns a retryable failure ("deadline exceeded ...").
  int64_t deadline_ms = 0;
  // The command's idempotency id ("<execution>/<step>/<attempt>"): connectors pass it to the
  // remote side (Idempotency-Key header, Twilio's I-Twilio-Idempotency-Token, ...), so a
  // command redelivered after a crash does not repeat its effect there.
  std::string_view idempotency_key;
};

// What a connector's deadlines fall back to when the context has none (tools, tests): the
// runtime's usual command deadline, worker_options::command_deadline_ms.
inline constexpr int64_t command_deadline_ms_default = 30'000;

// The deadline of a remote call a connector starts at `now_ms` (wall clock): ctx.deadline_ms, or
// now_ms + command_deadline_ms_default without one, and no later than now_ms + timeout_ms when
// the connector has a timeout of its own (timeout_ms > 0).
inline int64_t call_deadline_ms(const command_context& ctx, int64_t now_ms, int64_t timeout_ms) {
  const int64_t deadline =
      ctx.deadline_ms > 0 ? ctx.deadline_ms : now_ms + command_deadline_ms_default;
  return timeout_ms > 0 ? std::min(deadline, now_ms + timeout_ms) : deadline;
}

class connector {
 public:
  virtual ~connector() = default;
  // Does the command's work. `command` is a verified envelope of the stream's command type.
  // Must be idempotent by ctx.idempotency_key. Called from several threads at once (the
  // runtime runs up to worker_options::concurrency commands in parallel): keep it thread-safe.
  virtual ack_result execute(const fbs::Envelope& command, const command_context& ctx) = 0;
};

// Bucket bounds of the connector call histogram: a local action takes microseconds, an HTTP
// call to a hosted API tens of ms to seconds, a local language model up to a minute.
inline constexpr std::array<uint64_t, 16> connector_call_bounds_us = {
    100,     500,     1'000,   2'500,     5'000,     10'000,    25'000,     50'000,
    100'000, 250'000, 500'000, 1'000'000, 2'500'000, 5'000'000, 10'000'000, 30'000'000};

struct worker_probe {
  std::atomic<uint64_t> commands{0};
  std::atomic<uint64_t> succeeded{0};
  std::atomic<uint64_t> failed{0};
  std::atomic<uint64_t> deadletters{0};
  // Successes that came back after the command's deadline (acked as retryable failures).
  std::atomic<uint64_t> deadline_exceeded{0};
  // Commands whose deadline had passed when read: acked retryable, the connector not called.
  std::atomic<uint64_t> deadline_passed{0};
  std::atomic<uint64_t> connector_exceptions{0};  // execute() threw (acked retryable)
  std::atomic<uint64_t> in_flight{0};             // commands in a connector now
  std::atomic<uint64_t> in_flight_max{0};         // most commands in connectors at once
  std::atomic<uint64_t> errors{0};  // rounds that failed (read or commit), then tried again
  atomic_histogram call_latency_us{connector_call_bounds_us};  // one connector call
};

// Upper bound of worker_options::concurrency: each unit of concurrency is a thread.
inline constexpr size_t worker_concurrency_max = 256;

struct worker_options {
  size_t batch_records_max = 256;
  // Commands of a batch run at once, 1..worker_concurrency_max. Connectors waiting on remote
  // calls (HTTP, AI, SMS) are the reason to raise it; 1 runs every command on the worker's
  // thread, one after the other.
  size_t concurrency = 8;
  int64_t idle_wait_ms_max = 100;  // longest sleep when idle; commits wake it sooner
  int64_t command_deadline_ms = command_deadline_ms_default;  // per command without its own
};

// errc::invalid with a readable reason if an option is out of range (concurrency 0 or above
// worker_concurrency_max, batch_records_max 0, a deadline or idle wait <= 0).
result<void> check_worker_options(const worker_options& options);

class worker_pool;

class worker_runtime {
 public:
  // Checks the options first (check_worker_options) and says what is wrong.
  static result<std::unique_ptr<worker_runtime>> open(log& l, stream commands,
                                                      std::unique_ptr<connector> c, clock& clk,
                                                      worker_options options = {});
  // `options` must pass check_worker_options (asserted; open() returns the error instead).
  worker_runtime(log& l, stream commands, std::unique_ptr<connector> c, clock& clk,
                 worker_options options = {});
  ~worker_runtime();

  // Processes what is waiting on every partition once; returns the number of commands done.
  result<size_t> run_once();
  void start();
  void stop();

  std::string group() const;  // "worker.<stream>"
  stream commands() const { return _stream; }
  // Restricts the worker to these partitions (group mode: what Kafka assigned); waits for a
  // batch in progress to finish, so a revoked partition is no longer worked on when it returns.
  void set_partitions(const std::vector<uint32_t>& partitions);
  const worker_probe& probe() const { return _probe; }
  // (partition, next command offset) of the partitions this worker has read since it was
  // assigned them: its committed positions, without a broker round trip (for the lag metric;
  // any thread, never waits for a batch).
  std::vector<std::pair<uint32_t, uint64_t>> positions() const;
  // The loop ended because the log's producer was fenced (another process runs as this
  // instance); other failures are tried again.
  bool fenced() const { return _fenced.load(); }

 private:
  struct slot;
  result<size_t> run_partition(uint32_t p);
  void publish_position(uint32_t p, uint64_t next);
  void run_command(slot& s);
  void loop();

  log& _log;
  stream _stream;
  std::unique_ptr<connector> _connector;
  clock& _clock;
  worker_options _options;
  worker_probe _probe;
  std::vector<record> _scratch;
  std::unique_ptr<worker_pool> _pool;  // concurrency - 1 threads, for the runtime's lifetime
  std::mutex _run_mu;                  // held while a round runs; set_partitions waits on it
  std::optional<std::vector<uint32_t>> _owned;  // guarded by _run_mu; nullopt: all
  // Next command offset per partition, read from the log once per assignment: Kafka may
  // answer an offset fetch with the previous commit until the last transaction's markers land.
  std::vector<std::optional<uint64_t>> _next;
  mutable std::mutex _positions_mu;         // a scrape's copy of _next; held only to copy
  std::map<uint32_t, uint64_t> _positions;  // guarded by _positions_mu
  std::atomic<bool> _stop{false};
  std::atomic<bool> _fenced{false};  // the log's producer was fenced: the loop ended for good
  std::thread _thread;
};

// Builds the ack envelope for a command (exposed for workers written against the log directly).
std::string make_ack(const fbs::Envelope& command, const ack_result& r, int64_t now_ms);

}  // namespace auterity
