#include "processors/client.h"

#include "engine/record.h"

namespace auterity::client {

namespace {

template <typename F>
std::string command(const command_header& h, fbs::Payload type, F&& build) {
  flatbuffers::FlatBufferBuilder fbb(512);
  flatbuffers::Offset<void> payload = build(fbb);
  envelope_header e;
  e.kind = fbs::RecordKind::Command;
  e.tenant_id = h.tenant;
  e.execution_id = h.execution;
  e.record_id = h.request_id;
  e.timestamp_ms = h.timestamp_ms;
  return finish_envelope(fbb, e, type, payload);
}

flatbuffers::Offset<flatbuffers::String> str(flatbuffers::FlatBufferBuilder& b,
                                             std::string_view v) {
  return b.CreateString(v.data(), v.size());
}

}  // namespace

std::string publish_definition(const command_header& h, std::string_view definition_json,
                               std::string_view params_json) {
  return command(h, fbs::Payload::PublishDefinition, [&](auto& b) {
    return fbs::CreatePublishDefinition(b, str(b, definition_json), str(b, params_json)).Union();
  });
}

std::string publish_policy(const command_header& h, std::string_view policy_json) {
  return command(h, fbs::Payload::PublishTenantPolicy, [&](auto& b) {
    return fbs::CreatePublishTenantPolicy(b, str(b, policy_json)).Union();
  });
}

std::string start_execution(const command_header& h, std::string_view workflow, uint32_t version,
                            std::string_view input_json) {
  return command(h, fbs::Payload::StartExecution, [&](auto& b) {
    return fbs::CreateStartExecution(b, str(b, workflow), version, str(b, input_json)).Union();
  });
}

std::string signal(const command_header& h, std::string_view name, std::string_view payload) {
  return command(h, fbs::Payload::Signal, [&](auto& b) {
    return fbs::CreateSignal(b, str(b, name), str(b, payload)).Union();
  });
}

std::string cancel(const command_header& h, std::string_view reason) {
  return command(h, fbs::Payload::CancelExecution,
                 [&](auto& b) { return fbs::CreateCancelExecution(b, str(b, reason)).Union(); });
}

std::string move_tenant(const command_header& h, uint32_t to) {
  return command(h, fbs::Payload::MoveTenant,
                 [&](auto& b) { return fbs::CreateMoveTenant(b, to).Union(); });
}

result<void> submit(log& l, std::string_view tenant, std::string bytes) {
  commit_batch b;
  b.add(stream::ingress, std::string(tenant), std::move(bytes));
  auto r = l.commit(tenant_partition(tenant, l.partition_count()), b);
  if (!r) return std::unexpected(r.error());
  return {};
}

}  // namespace auterity::client
