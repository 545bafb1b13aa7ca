#include "engine/worker_runtime.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>

#include <fmt/core.h>

#include "engine/assert.h"

namespace auterity {

namespace {

struct command_fields {
  std::string_view step;
  uint32_t attempt = 0;
};

bool fields_of(const fbs::Envelope& env, command_fields& out) {
  switch (env.payload_type()) {
    case fbs::Payload::RunStep:
      out = {sv(env.payload_as_RunStep()->step()), env.payload_as_RunStep()->attempt()};
      return true;
    case fbs::Payload::CallAi:
      out = {sv(env.payload_as_CallAi()->step()), env.payload_as_CallAi()->attempt()};
      return true;
    case fbs::Payload::SendNotification:
      out = {sv(env.payload_as_SendNotification()->step()),
             env.payload_as_SendNotification()->attempt()};
      return true;
    default:
      return false;
  }
}

int64_t command_deadline(const fbs::Envelope& env) {
  switch (env.payload_type()) {
    case fbs::Payload::RunStep:
      return env.payload_as_RunStep()->deadline_ms();
    case fbs::Payload::CallAi:
      return env.payload_as_CallAi()->deadline_ms();
    case fbs::Payload::SendNotification:
      return env.payload_as_SendNotification()->deadline_ms();
    default:
      return 0;
  }
}

std::string dead_letter(const record& r, stream s, uint32_t p, std::string_view why,
                        int64_t now_ms) {
  flatbuffers::FlatBufferBuilder fbb(r.value.size() + 256);
  auto original =
      fbb.CreateVector(reinterpret_cast<const uint8_t*>(r.value.data()), r.value.size());
  auto payload =
      fbs::CreateDeadLetter(fbb, fbb.CreateString(why.data(), why.size()),
                            fbb.CreateString(std::string(stream_name(s))), p, r.offset, original);
  const std::string id = fmt::format("dlq/{}/{}/{}", stream_name(s), p, r.offset);
  envelope_header h;
  h.kind = fbs::RecordKind::Rejection;
  h.record_id = id;
  h.causation_id = std::string_view(id).substr(4);
  h.timestamp_ms = now_ms;
  return finish_envelope(fbb, h, fbs::Payload::DeadLetter, payload.Union());
}

}  // namespace

// Runs the commands of one batch: the calling thread and `helpers` threads take indexes from
// a shared counter until none is left, so at most helpers + 1 run at once. The threads live as
// long as the runtime; between batches they sleep on a condition variable.
class worker_pool {
 public:
  explicit worker_pool(size_t helpers) {
    for (size_t i = 0; i < helpers; ++i) _threads.emplace_back([this] { helper_loop(); });
  }
  ~worker_pool() {
    {
      std::lock_guard lock(_mu);
      _stop = true;
    }
    _wake.notify_all();
    for (auto& t : _threads) t.join();
  }

  // Calls fn(0) .. fn(n - 1), spread over the pool; returns when all have returned.
  void run(size_t n, const std::function<void(size_t)>& fn) {
    if (n == 0) return;
    {
      std::lock_guard lock(_mu);
      _fn = &fn;
      _n = n;
      _next = 0;
      _done = 0;
      ++_round;
    }
    if (n > 1) _wake.notify_all();
    work();
    std::unique_lock lock(_mu);
    _all_done.wait(lock, [&] { return _done == _n; });
    _fn = nullptr;
  }

 private:
  void work() {
    std::unique_lock lock(_mu);
    while (_fn && _next < _n) {
      const size_t i = _next++;
      const auto* fn = _fn;
      lock.unlock();
      (*fn)(i);
      lock.lock();
      if (++_done == _n) _all_done.notify_all();
    }
  }

  void helper_loop() {
    uint64_t seen = 0;
    std::unique_lock lock(_mu);
    while (true) {
      _wake.wait(lock, [&] { return _stop || _round != seen; });
      if (_stop) return;
      seen = _round;
      lock.unlock();
      work();
      lock.lock();
    }
  }

  std::mutex _mu;
  std::condition_variable _wake;
  std::condition_variable _all_done;
  const std::function<void(size_t)>* _fn = nullptr;  // the batch being run; guarded by _mu
  size_t _n = 0, _next = 0, _done = 0;               // guarded by _mu
  uint64_t _round = 0;                               // guarded by _mu
  bool _stop = false;                                // guarded by _mu
  std::vector<std::thread> _threads;
};

result<void> check_worker_options(const worker_options& o) {
  if (o.concurrency == 0 || o.concurrency > worker_concurrency_max) {
    return fail(errc::invalid,
                fmt::format("worker concurrency {} is out of range: 1..{} (worker_concurrency_max)",
                            o.concurrency, worker_concurrency_max));
  }
  if (o.batch_records_max == 0) return fail(errc::invalid, "worker batch_records_max must be >= 1");
  if (o.command_deadline_ms <= 0) {
    return fail(errc::invalid, fmt::format("worker command_deadline_ms must be > 0, not {}",
                                           o.command_deadline_ms));
  }
  if (o.idle_wait_ms_max <= 0) {
    return fail(errc::invalid,
                fmt::format("worker idle_wait_ms_max must be > 0, not {}", o.idle_wait_ms_max));
  }
  return {};
}

std::string make_ack(const fbs::Envelope& command, const ack_result& r, int64_t now_ms) {
  command_fields f;
  vassert(fields_of(command, f), "make_ack on a non-command record");
  flatbuffers::FlatBufferBuilder fbb(512 + r.output_json.size());
  auto usage = fbs::CreateUsage(fbb, fbb.CreateString(r.model), r.input_tokens, r.output_tokens,
                                r.cost_micros, fbb.CreateString(r.provider));
  auto payload = fbs::CreateStepAck(
      fbb, fbb.CreateString(sv(command.record_id())), fbb.CreateString(f.step), f.attempt, r.status,
      fbb.CreateString(r.output_json), fbb.CreateString(r.error), usage);
  const std::string id = fmt::format("ack/{}", sv(command.record_id()));
  envelope_header h;
  h.kind = fbs::RecordKind::Command;
  h.tenant_id = sv(command.tenant_id());
  h.execution_id = sv(command.execution_id());
  h.record_id = id;
  h.causation_id = sv(command.record_id());
  h.timestamp_ms = now_ms;
  return finish_envelope(fbb, h, fbs::Payload::StepAck, payload.Union());
}

result<std::unique_ptr<worker_runtime>> worker_runtime::open(log& l, stream commands,
                                                             std::unique_ptr<connector> c,
                                                             clock& clk, worker_options options) {
  if (auto ok = check_worker_options(options); !ok) return std::unexpected(ok.error());
  return std::make_unique<worker_runtime>(l, commands, std::move(c), clk, options);
}

worker_runtime::worker_runtime(log& l, stream commands, std::unique_ptr<connector> c, clock& clk,
                               worker_options options)
    : _log(l), _stream(commands), _connector(std::move(c)), _clock(clk), _options(options) {
  auto ok = check_worker_options(_options);
  vassert(ok.has_value(), "worker {}: {}", group(), ok.error().message);
  _pool = std::make_unique<worker_pool>(_options.concurrency - 1);
}

worker_runtime::~worker_runtime() { stop(); }

std::string worker_runtime::group() const { return fmt::format("worker.{}", stream_name(_stream)); }

// One record of a batch: a command (env set) with its ack, or a deadletter (env null).
struct worker_runtime::slot {
  const record* rec = nullptr;
  const fbs::Envelope* env = nullptr;
  std::string dead_reason;
  command_context ctx;
  ack_result res;
  int64_t acked_ms = 0;
};

// Runs on a pool thread: the connector call, exceptions caught, the deadline checked after.
void worker_runtime::run_command(slot& s) {
  const uint64_t now_in = _probe.in_flight.fetch_add(1, std::memory_order_relaxed) + 1;
  uint64_t max = _probe.in_flight_max.load(std::memory_order_relaxed);
  while (now_in > max && !_probe.in_flight_max.compare_exchange_weak(max, now_in)) {
  }
  const int64_t started_ms = _clock.now_ms();
  const auto started = std::chrono::steady_clock::now();
  try {
    s.res = _connector->execute(*s.env, s.ctx);
  } catch (const std::exception& e) {
    s.res = ack_retryable(fmt::format("connector failed: {}", e.what()));
    _probe.connector_exceptions.fetch_add(1, std::memory_order_relaxed);
  } catch (...) {
    s.res = ack_retryable("connector failed with an exception that is not a std::exception");
    _probe.connector_exceptions.fetch_add(1, std::memory_order_relaxed);
  }
  _probe.call_latency_us.observe(
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                std::chrono::steady_clock::now() - started)
                                .count()));
  s.acked_ms = _clock.now_ms();
  // A late success is not trusted: the orchestrator may have timed the attempt out and retried,
  // and the connector was told to give up by now. A failure keeps its own (better) reason.
  if (s.acked_ms > s.ctx.deadline_ms && s.res.status == fbs::AckStatus::Success) {
    s.res = ack_retryable(fmt::format("deadline exceeded after {} ms", s.acked_ms - started_ms));
    _probe.deadline_exceeded.fetch_add(1, std::memory_order_relaxed);
  }
  _probe.in_flight.fetch_sub(1, std::memory_order_relaxed);
}

result<size_t> worker_runtime::run_partition(uint32_t p) {
  const std::string g = group();
  if (_next.size() != _log.partition_count()) _next.assign(_log.partition_count(), std::nullopt);
  if (!_next[p]) {
    // Stable: an earlier member's transaction holding this group's offsets is waited for, so
    // its acks are either counted in the position or aborted (docs/ownership-handover.md).
    auto pos = _log.position(g, _stream, p);
    if (!pos) return std::unexpected(pos.error());
    _next[p] = *pos;
    publish_position(p, *pos);
  }
  const uint64_t from = *_next[p];
  _scratch.clear();
  auto n = _log.read(_stream, p, from, _options.batch_records_max, 8 << 20, _scratch);
  if (!n) return n;
  if (*n == 0) return 0;
  // Decode and sort out what cannot run, then run the rest at once, then commit in order.
  std::vector<slot> slots(_scratch.size());
  std::vector<slot*> to_run;
  const int64_t read_ms = _clock.now_ms();
  for (size_t i = 0; i < _scratch.size(); ++i) {
    slot& s = slots[i];
    s.rec = &_scratch[i];
    const fbs::Envelope* env = decode_envelope(s.rec->value, &s.dead_reason);
    command_fields f;
    if (env && !fields_of(*env, f)) s.dead_reason = "not a command this worker runs";
    if (!env || !fields_of(*env, f)) continue;
    s.env = env;
    s.ctx.deadline_ms = read_ms + _options.command_deadline_ms;
    if (int64_t d = command_deadline(*env); d > 0) s.ctx.deadline_ms = d;
    s.ctx.idempotency_key = sv(env->record_id());
    if (read_ms > s.ctx.deadline_ms) {
      s.res = ack_retryable(fmt::format("deadline passed before the worker started it ({} ms ago)",
                                        read_ms - s.ctx.deadline_ms));
      s.acked_ms = read_ms;
      _probe.deadline_passed.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    to_run.push_back(&s);
  }
  _pool->run(to_run.size(), [&](size_t i) { run_command(*to_run[i]); });
  commit_batch out;
  for (const slot& s : slots) {
    if (!s.env) {
      out.add(stream::deadletter, s.rec->key,
              dead_letter(*s.rec, _stream, p, s.dead_reason, _clock.now_ms()));
      _probe.deadletters.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    (s.res.status == fbs::AckStatus::Success ? _probe.succeeded : _probe.failed)
        .fetch_add(1, std::memory_order_relaxed);
    out.add(stream::acks, s.rec->key, make_ack(*s.env, s.res, s.acked_ms));
  }
  const uint64_t next = _scratch.back().offset + 1;
  out.set_position(g, _stream, next);
  if (auto c = _log.commit(p, out); !c) {
    // Unknown outcome (committed or not): read the position again before the next batch.
    _next[p].reset();
    return std::unexpected(c.error());
  }
  _next[p] = next;
  publish_position(p, next);
  _probe.commands.fetch_add(*n, std::memory_order_relaxed);
  return *n;
}

result<size_t> worker_runtime::run_once() {
  std::lock_guard lock(_run_mu);
  size_t done = 0;
  for (uint32_t p = 0; p < _log.partition_count(); ++p) {
    if (_owned && std::find(_owned->begin(), _owned->end(), p) == _owned->end()) continue;
    auto n = run_partition(p);
    if (!n) return n;
    done += *n;
  }
  return done;
}

void worker_runtime::set_partitions(const std::vector<uint32_t>& partitions) {
  std::lock_guard lock(_run_mu);
  _owned = partitions;
  _next.clear();  // positions are read again: another member may have moved them
  std::lock_guard positions_lock(_positions_mu);
  _positions.clear();
}

void worker_runtime::publish_position(uint32_t p, uint64_t next) {
  std::lock_guard lock(_positions_mu);
  _positions[p] = next;
}

std::vector<std::pair<uint32_t, uint64_t>> worker_runtime::positions() const {
  std::lock_guard lock(_positions_mu);
  return {_positions.begin(), _positions.end()};
}

void worker_runtime::start() {
  _stop = false;
  _thread = std::thread([this] { loop(); });
}

void worker_runtime::stop() {
  _stop = true;
  if (_thread.joinable()) _thread.join();
}

void worker_runtime::loop() {
  while (!_stop.load(std::memory_order_relaxed)) {
    const uint64_t generation = _log.generation_any();
    auto n = run_once();
    if (!n) {
      // A fenced producer is for good (another process runs as this instance); anything else
      // (a lost partition, a broker away) is tried again from the committed positions. The
      // commands of a failed batch run again: their idempotency keys keep the effects single.
      _probe.errors.fetch_add(1, std::memory_order_relaxed);
      if (n.error().code == errc::fenced) {
        fmt::print(stderr, "auterity: worker {}: {}\n", group(), n.error().message);
        _fenced.store(true);
        return;
      }
      // A failed commit has already dropped its partition's position (run_partition), a failed
      // position read never set it, and a failed read leaves it right: nothing to reset here.
      if (_probe.errors.load(std::memory_order_relaxed) % 50 == 1) {
        fmt::print(stderr, "auterity: worker {}: {} (retrying)\n", group(), n.error().message);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    if (*n > 0) continue;
    _log.wait_any(generation, std::chrono::milliseconds(_options.idle_wait_ms_max));
  }
}

}  // namespace auterity
