#pragma once
// The connector workers' configuration: one JSON file (`auterity run|demo --connectors FILE`)
// naming the step, AI and notification connectors and where their secrets are. Format and
// examples: connectors/README.md, "Connector configuration".
//
// Routing inside each worker:
//   commands.step    action "http" -> the HTTP step connector; any other action -> the local
//                    actions (transform, lead_score, flaky, fail)
//   commands.ai      CallAi.provider (chosen by the tenant's AI routing policy) -> that
//                    provider; empty -> ai.default; no provider configured -> a permanent
//                    failure, so the workflow takes its fallback
//   commands.notify  SendNotification.channel -> the connector configured for the channel;
//                    a channel with none configured (or "outbox") -> the outbox file
//                    <data>/outbox/notifications.jsonl

#include <memory>
#include <string>

#include "engine/worker_runtime.h"

namespace auterity {

struct connector_set {
  std::unique_ptr<connector> step;
  std::unique_ptr<connector> ai;
  std::unique_ptr<connector> notify;
};

// `config_json` is the file's text ("" = nothing configured: local actions, no AI, outbox).
// Errors name the key at fault ("notify.sms.auth_token: ..."); secrets are resolved here, so a
// missing one stops the start with a clear message instead of failing every command later.
result<connector_set> make_connectors(std::string_view config_json, const std::string& outbox_dir);

// Reads the file and calls make_connectors; errors say which file.
result<connector_set> load_connectors(const std::string& path, const std::string& outbox_dir);

// Limit: the configuration file's size.
inline constexpr size_t connector_config_bytes_max = 1 << 20;

}  // namespace auterity
