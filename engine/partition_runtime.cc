#include "engine/partition_runtime.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include <fmt/core.h>

#include "engine/fault.h"

namespace auterity {

namespace {
int64_t micros_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                               start)
      .count();
}
}  // namespace

partition_runtime::partition_runtime(log& l, uint32_t partition, std::unique_ptr<state_store> store,
                                     std::unique_ptr<partition_processor> processor, clock& clk,
                                     partition_runtime_options options)
    : _log(l),
      _partition(partition),
      _store(std::move(store)),
      _processor(std::move(processor)),
      _clock(clk),
      _options(options) {}

partition_runtime::~partition_runtime() { stop(); }

result<void> partition_runtime::recover() {
  auto start = std::chrono::steady_clock::now();
  if (auto r = _processor->open(*_store, _partition); !r) return r;
  // 1. Positions first. They are stable: a transaction of an earlier owner that holds pending
  //    positions of this partition is waited for until it commits or aborts. From here on no
  //    transaction of an earlier owner can commit for this partition (fencing).
  auto ingress = _log.position(orchestrator_group, stream::ingress, _partition);
  if (!ingress) return std::unexpected(ingress.error());
  auto acks = _log.position(orchestrator_group, stream::acks, _partition);
  if (!acks) return std::unexpected(acks.error());
  fault_point("restore.positions_read");
  // 2. The log end of executions, open transactions included.
  auto end = _log.end_offset(stream::executions, _partition);
  if (!end) return std::unexpected(end.error());
  uint64_t from = _store->checkpoint();
  if (from > *end) {
    return fail(errc::corrupt,
                fmt::format("partition {}: state checkpoint {} is beyond the end of executions "
                            "({}): the state directory does not belong to this log, or the log "
                            "lost commits it had acknowledged (a disk that does not honour "
                            "fdatasync; docs/simulation.md)",
                            _partition, from, *end));
  }
  // 3. Everything below the end decided: a committed transaction's events are readable, an
  //    earlier owner's transaction that can no longer commit is aborted.
  if (auto d = _log.await_decided(stream::executions, _partition, *end,
                                  std::chrono::milliseconds(_options.restore_wait_ms_max));
      !d) {
    return fail(d.error().code,
                fmt::format("partition {}: restore: {}", _partition, d.error().message));
  }
  _probe.restore_wait_ms.store(micros_since(start) / 1000, std::memory_order_relaxed);
  // 4. Replay from the local checkpoint to the end.
  for (;;) {
    _scratch.clear();
    auto n = _log.read_to(stream::executions, _partition, from, *end, _options.batch_records_max,
                          _options.batch_bytes_max, _scratch);
    if (!n) return std::unexpected(n.error());
    if (*n == 0) break;
    for (const record& r : _scratch) _processor->replay(r.offset, r.value);
    from = _scratch.back().offset + 1;
    _probe.replayed.fetch_add(*n, std::memory_order_relaxed);
    _processor->flush(_state_out, {});
    if (auto w = _store->write(_state_out, from); !w) return w;
  }
  // 5. Decide from the positions of step 1.
  _checkpoint = from;
  _ingress_next = *ingress;
  _acks_next = *acks;
  _probe.on_restored(micros_since(start) / 1000, _ingress_next, _acks_next);
  return {};
}

// Reads each stream after the last input of that stream already in `inputs` (from its position
// if none), up to batch_records_max inputs per stream; ingress inputs stay before acks.
result<void> partition_runtime::read_inputs(std::vector<input>& inputs) {
  const size_t before = inputs.size();
  for (auto [s, next] : {std::pair{stream::ingress, _ingress_next}, {stream::acks, _acks_next}}) {
    size_t have = 0;
    for (const input& in : inputs) {
      if (in.s != s) continue;
      next = in.rec.offset + 1;
      ++have;
    }
    if (have >= _options.batch_records_max) continue;
    _scratch.clear();
    auto n = _log.read(s, _partition, next, _options.batch_records_max - have,
                       _options.batch_bytes_max, _scratch);
    if (!n) return std::unexpected(n.error());
    for (record& r : _scratch) inputs.push_back(input{s, _partition, std::move(r)});
  }
  if (before > 0) {
    std::stable_partition(inputs.begin(), inputs.end(),
                          [](const input& in) { return in.s == stream::ingress; });
  }
  return {};
}

bool partition_runtime::pipelined() const { return _options.pipeline && _log.background_commits(); }

// Pipelined, one round is: read the inputs after batch n's, decide n+1 into the other output
// batch and stage its state changes (memory runs ahead of the store), wait for n, write n's
// state, submit n+1. Nothing of n+1 leaves the process before n committed; if n failed, n+1 is
// dropped with the runtime (failed()).
result<bool> partition_runtime::run_once() {
  if (failed()) return std::unexpected(failure());
  // Deciding ahead needs the processor to show the next batch what the one in flight changed
  // from memory; a barrier's batch is written before anything after it is decided.
  if (_in_flight && (_in_flight->barrier || !_processor->may_decide_ahead())) {
    if (auto f = finish_in_flight(); !f) return std::unexpected(f.error());
  }
  std::vector<input> inputs;
  if (auto r = read_inputs(inputs); !r) {
    if (auto f = finish_in_flight(); !f) return std::unexpected(f.error());
    return std::unexpected(r.error());
  }
  // Decide ahead only with a batch's worth of inputs waiting: as many as the batch in flight
  // carries, or a full read. With fewer, the inputs that arrive while n commits would wait for
  // the batch after next (n+1 is decided already): then n is waited for first, and the inputs
  // read so far are topped up with what arrived meanwhile, as without pipelining.
  bool finished = false;
  if (_in_flight && !worth_deciding_ahead(inputs)) {
    if (auto f = finish_in_flight(); !f) return std::unexpected(f.error());
    finished = true;
    if (auto r = read_inputs(inputs); !r) return std::unexpected(r.error());
  }
  const int64_t now = _clock.now_ms();
  if (inputs.empty() && _processor->next_timer_ms() > now) {
    if (!_in_flight) return finished;
    if (auto f = finish_in_flight(); !f) return std::unexpected(f.error());
    return true;
  }
  // A barrier goes alone, after what precedes it (which then commits without it), and after
  // every earlier batch is written.
  bool alone = false;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].s == stream::ingress && _processor->barrier(inputs[i])) {
      alone = i == 0;
      inputs.resize(alone ? 1 : i);
      break;
    }
  }
  if (alone) {
    if (auto f = finish_in_flight(); !f) return std::unexpected(f.error());
  }
  const size_t slot = _in_flight ? 1 - _in_flight->slot : 0;
  decide(inputs, alone, now, slot);
  if (pipelined()) {
    _processor->stage();
    if (_in_flight) fault_point("pipeline.decided_ahead");
  }
  // At most one batch ahead: the one in flight is finished before this one is submitted.
  if (auto f = finish_in_flight(); !f) return std::unexpected(f.error());
  return submit(slot, inputs.size(), alone);
}

bool partition_runtime::worth_deciding_ahead(const std::vector<input>& inputs) const {
  if (inputs.size() >= _in_flight->inputs) return true;
  const auto ingress = std::ranges::count(inputs, stream::ingress, &input::s);
  const auto acks = static_cast<std::ptrdiff_t>(inputs.size()) - ingress;
  const auto full = static_cast<std::ptrdiff_t>(_options.batch_records_max);
  return ingress >= full || acks >= full;
}

void partition_runtime::decide(std::vector<input>& inputs, bool alone, int64_t now, size_t slot) {
  _processor->prefetch(inputs);
  commit_batch& out = _out[slot];
  out.clear();
  batch_context ctx(now, _partition, out);
  for (const input& in : inputs) {
    _processor->process(in, ctx);
    if (in.s == stream::ingress) _ingress_next = in.rec.offset + 1;
    if (in.s == stream::acks) _acks_next = in.rec.offset + 1;
  }
  if (!alone) _processor->fire_timers(ctx, _options.timers_per_batch_max);
  out.set_position(std::string(orchestrator_group), stream::ingress, _ingress_next);
  out.set_position(std::string(orchestrator_group), stream::acks, _acks_next);
}

result<bool> partition_runtime::submit(size_t slot, size_t inputs, bool barrier) {
  in_flight f;
  f.slot = slot;
  f.inputs = inputs;
  f.ingress_next = _ingress_next;
  f.acks_next = _acks_next;
  f.barrier = barrier;
  f.submitted = std::chrono::steady_clock::now();
  f.ticket = _log.submit(_partition, _out[slot]);
  _in_flight = std::move(f);
  if (!pipelined()) {
    if (auto r = finish_in_flight(); !r) return std::unexpected(r.error());
  }
  return true;
}

result<void> partition_runtime::drain() { return finish_in_flight(); }

result<void> partition_runtime::finish_in_flight() {
  if (!_in_flight) return {};
  in_flight f = std::move(*_in_flight);
  _in_flight.reset();
  const commit_batch& out = _out[f.slot];
  auto committed = f.ticket.wait();
  // A failed commit leaves memory ahead of the log (with a batch decided ahead, two batches
  // ahead): this runtime must not decide again, and the batch decided ahead is never submitted.
  if (!committed) {
    auto e = fail_for_good(committed.error());
    return std::unexpected(e.error());
  }
  fault_point("txn.committed");
  _event_offsets.clear();
  for (size_t i = 0; i < out.appends.size(); ++i) {
    if (out.appends[i].s == stream::executions) _event_offsets.push_back((*committed)[i]);
  }
  if (!_event_offsets.empty()) _checkpoint = _event_offsets.back() + 1;
  _probe.on_commit(micros_since(f.submitted), out.appends.size(), _event_offsets.size(),
                   f.ingress_next, f.acks_next);

  _processor->flush(_state_out, _event_offsets);
  auto written = _store->write(_state_out, _checkpoint);
  if (!written) {
    auto e = fail_for_good(written.error());
    return std::unexpected(e.error());
  }

  _probe.batches.fetch_add(1, std::memory_order_relaxed);
  _probe.inputs.fetch_add(f.inputs, std::memory_order_relaxed);
  _probe.records_out.fetch_add(out.appends.size(), std::memory_order_relaxed);
  return {};
}

result<bool> partition_runtime::fail_for_good(error e) {
  e.message = fmt::format("partition {}: {}", _partition, e.message);
  {
    std::lock_guard lock(_failure_mu);
    _failure = e;
  }
  _failed.store(true, std::memory_order_release);
  return std::unexpected(std::move(e));
}

error partition_runtime::failure() const {
  std::lock_guard lock(_failure_mu);
  return _failure;
}

void partition_runtime::start() {
  _stop = false;
  _thread = std::thread([this] { loop(); });
}

void partition_runtime::stop() {
  _stop = true;
  if (_thread.joinable()) _thread.join();
  // A batch still committing: its batch must outlive the log's use of it, and its state is
  // written as run_once() would have. A failure is kept in failure().
  (void)finish_in_flight();
}

void partition_runtime::loop() {
  while (!_stop.load(std::memory_order_relaxed)) {
    const uint64_t generation = _log.generation(_partition);
    auto worked = run_once();
    if (!worked) {
      if (failed()) return;  // the owner replaces this runtime
      if (_probe.read_errors.fetch_add(1, std::memory_order_relaxed) % 50 == 0) {
        fmt::print(stderr, "auterity: partition {}: {} (retrying)\n", _partition,
                   worked.error().message);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(_options.retry_wait_ms));
      continue;
    }
    if (*worked) {
      if (_options.commit_interval_ms > 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(_options.commit_interval_ms));
      }
      continue;
    }
    const int64_t next_timer = _processor->next_timer_ms();
    const int64_t now = _clock.now_ms();
    int64_t wait_ms = _options.idle_wait_ms_max;
    if (next_timer != std::numeric_limits<int64_t>::max()) {
      wait_ms = std::clamp<int64_t>(next_timer - now, 0, wait_ms);
    }
    if (wait_ms > 0) _log.wait(_partition, generation, std::chrono::milliseconds(wait_ms));
  }
}

}  // namespace auterity
