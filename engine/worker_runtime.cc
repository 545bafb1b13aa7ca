#include "engine/worker_runtime.h"

#include <algorithm>

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

std::string make_ack(const fbs::Envelope& command, const ack_result& r, int64_t now_ms) {
  command_fields f;
  vassert(fields_of(command, f), "make_ack on a non-command record");
  flatbuffers::FlatBufferBuilder fbb(512 + r.output_json.size());
  auto usage = fbs::CreateUsage(fbb, fbb.CreateString(r.model), r.input_tokens, r.output_tokens,
                                r.cost_micros);
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

worker_runtime::worker_runtime(log& l, stream commands, std::unique_ptr<connector> c, clock& clk,
                               worker_options options)
    : _log(l), _stream(commands), _connector(std::move(c)), _clock(clk), _options(options) {}

worker_runtime::~worker_runtime() { stop(); }

std::string worker_runtime::group() const { return fmt::format("worker.{}", stream_name(_stream)); }

result<size_t> worker_runtime::run_partition(uint32_t p) {
  const std::string g = group();
  if (_next.size() != _log.partition_count()) _next.assign(_log.partition_count(), std::nullopt);
  if (!_next[p]) _next[p] = _log.position(g, _stream, p);
  const uint64_t from = *_next[p];
  _scratch.clear();
  auto n = _log.read(_stream, p, from, _options.batch_records_max, 8 << 20, _scratch);
  if (!n) return n;
  if (*n == 0) return 0;
  commit_batch out;
  for (const record& r : _scratch) {
    std::string why;
    const fbs::Envelope* env = decode_envelope(r.value, &why);
    command_fields f;
    if (env && !fields_of(*env, f)) why = "not a command this worker runs";
    if (!env || !fields_of(*env, f)) {
      out.add(stream::deadletter, r.key, dead_letter(r, _stream, p, why, _clock.now_ms()));
      _probe.deadletters.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    command_context ctx;
    ctx.deadline_ms = _clock.now_ms() + _options.command_deadline_ms;
    if (int64_t d = command_deadline(*env); d > 0) ctx.deadline_ms = d;
    ctx.idempotency_key = sv(env->record_id());
    ack_result res = _connector->execute(*env, ctx);
    (res.status == fbs::AckStatus::Success ? _probe.succeeded : _probe.failed)
        .fetch_add(1, std::memory_order_relaxed);
    out.add(stream::acks, r.key, make_ack(*env, res, _clock.now_ms()));
  }
  const uint64_t next = _scratch.back().offset + 1;
  out.set_position(g, _stream, next);
  if (auto c = _log.commit(p, out); !c) return std::unexpected(c.error());
  _next[p] = next;
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
    vassert(n.has_value(), "worker {}: {}", group(), n.error().message);
    if (*n > 0) continue;
    _log.wait_any(generation, std::chrono::milliseconds(_options.idle_wait_ms_max));
  }
}

}  // namespace auterity
