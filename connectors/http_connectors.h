#pragma once
// Connectors that speak HTTP (engine/http_client.h): the `http` step action and the SMS
// (Twilio), WhatsApp (Cloud API), Slack (incoming webhook) and generic webhook notification
// channels. Config keys, input format and error classification: connectors/README.md,
// "Connectors".
//
// Each factory validates its whole config section (unknown keys, missing keys, secrets only
// by reference) and resolves the secrets once, so a bad config stops the start instead of
// failing every command. The connectors are immutable after construction and thread-safe.
//
// Classification of every call: 2xx success; 408, 429, 5xx, timeouts and network errors
// retryable; other statuses permanent; an answer that is not the protocol's JSON retryable,
// saying what was wrong. Error texts name the method and the URL without its query (and for
// secret URLs, such as Slack's, not even the path) and never carry a secret.

#include <cstddef>
#include <cstdint>
#include <memory>

#include <nlohmann/json_fwd.hpp>

#include "engine/http_client.h"
#include "engine/worker_runtime.h"

namespace auterity {

// Limits of the http step (documented in connectors/README.md).
inline constexpr size_t http_step_headers_max = 32;          // headers in one step input
inline constexpr size_t http_error_excerpt_bytes_max = 200;  // response body quoted in errors
// Longest per-call timeout a config may set (`timeout_ms`); the command deadline still applies.
inline constexpr int64_t http_connector_timeout_ms_max = 600'000;

// step.http: {"secrets": {"NAME": "env:VAR" | "file:/path"}, "timeout_ms": N} (both optional).
result<std::unique_ptr<connector>> make_http_step_connector(const nlohmann::json& section,
                                                            const http_tls_options& tls);

// notify.<channel> sections, "api" naming the factory.
result<std::unique_ptr<connector>> make_twilio_connector(const nlohmann::json& section,
                                                         const http_tls_options& tls);
result<std::unique_ptr<connector>> make_whatsapp_connector(const nlohmann::json& section,
                                                           const http_tls_options& tls);
result<std::unique_ptr<connector>> make_slack_connector(const nlohmann::json& section,
                                                        const http_tls_options& tls);
result<std::unique_ptr<connector>> make_webhook_connector(const nlohmann::json& section,
                                                          const http_tls_options& tls);

}  // namespace auterity
