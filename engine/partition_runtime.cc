#include "engine/partition_runtime.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include <fmt/core.h>

#include "engine/assert.h"

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
  uint64_t from = _store->checkpoint();
  const uint64_t end = _log.end_offset(stream::executions, _partition);
  if (from > end) {
    return fail(errc::corrupt,
                fmt::format("partition {}: state checkpoint {} is beyond the end of executions "
                            "({}): the state directory does not belong to this log",
                            _partition, from, end));
  }
  for (;;) {
    _scratch.clear();
    auto n = _log.read(stream::executions, _partition, from, _options.batch_records_max,
                       _options.batch_bytes_max, _scratch);
    if (!n) return std::unexpected(n.error());
    if (*n == 0) break;
    for (const record& r : _scratch) _processor->replay(r.offset, r.value);
    from = _scratch.back().offset + 1;
    _probe.replayed.fetch_add(*n, std::memory_order_relaxed);
    _processor->flush(_state_out, {});
    if (auto w = _store->write(_state_out, from); !w) return w;
  }
  _checkpoint = from;
  _ingress_next = _log.position(orchestrator_group, stream::ingress, _partition);
  _acks_next = _log.position(orchestrator_group, stream::acks, _partition);
  _probe.on_restored(micros_since(start) / 1000, _ingress_next, _acks_next);
  return {};
}

result<void> partition_runtime::read_inputs(std::vector<input>& inputs) {
  for (auto [s, next] : {std::pair{stream::ingress, _ingress_next}, {stream::acks, _acks_next}}) {
    _scratch.clear();
    auto n = _log.read(s, _partition, next, _options.batch_records_max, _options.batch_bytes_max,
                       _scratch);
    if (!n) return std::unexpected(n.error());
    for (record& r : _scratch) inputs.push_back(input{s, _partition, std::move(r)});
  }
  return {};
}

result<bool> partition_runtime::run_once() {
  std::vector<input> inputs;
  if (auto r = read_inputs(inputs); !r) return std::unexpected(r.error());
  const int64_t now = _clock.now_ms();
  if (inputs.empty() && _processor->next_timer_ms() > now) return false;

  _processor->prefetch(inputs);
  _out.clear();
  batch_context ctx(now, _partition, _out);
  for (const input& in : inputs) {
    _processor->process(in, ctx);
    if (in.s == stream::ingress) _ingress_next = in.rec.offset + 1;
    if (in.s == stream::acks) _acks_next = in.rec.offset + 1;
  }
  _processor->fire_timers(ctx, _options.timers_per_batch_max);
  _out.set_position(std::string(orchestrator_group), stream::ingress, _ingress_next);
  _out.set_position(std::string(orchestrator_group), stream::acks, _acks_next);

  auto start = std::chrono::steady_clock::now();
  auto committed = _log.commit(_partition, _out);
  // A failed commit leaves memory ahead of the log; the only safe continuation is a restart
  // that recovers from the log.
  vassert(committed.has_value(), "partition {}: commit failed: {}", _partition,
          committed.error().message);
  _event_offsets.clear();
  for (size_t i = 0; i < _out.appends.size(); ++i) {
    if (_out.appends[i].s == stream::executions) _event_offsets.push_back((*committed)[i]);
  }
  if (!_event_offsets.empty()) _checkpoint = _event_offsets.back() + 1;
  _probe.on_commit(micros_since(start), _out.appends.size(), _event_offsets.size(), _ingress_next,
                   _acks_next);

  _processor->flush(_state_out, _event_offsets);
  auto written = _store->write(_state_out, _checkpoint);
  vassert(written.has_value(), "partition {}: state write failed: {}", _partition,
          written.error().message);

  _probe.batches.fetch_add(1, std::memory_order_relaxed);
  _probe.inputs.fetch_add(inputs.size(), std::memory_order_relaxed);
  _probe.records_out.fetch_add(_out.appends.size(), std::memory_order_relaxed);
  return true;
}

void partition_runtime::start() {
  _stop = false;
  _thread = std::thread([this] { loop(); });
}

void partition_runtime::stop() {
  _stop = true;
  if (_thread.joinable()) _thread.join();
}

void partition_runtime::loop() {
  while (!_stop.load(std::memory_order_relaxed)) {
    const uint64_t generation = _log.generation(_partition);
    auto worked = run_once();
    vassert(worked.has_value(), "partition {}: {}", _partition, worked.error().message);
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
