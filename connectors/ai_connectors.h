#pragma once
// AI provider connectors for commands.ai: one connector per configured provider, speaking the
// OpenAI chat completions API (OpenAI, and the OpenAI-compatible servers: llama.cpp, Ollama's
// /v1, vLLM, LM Studio, ...) or the Anthropic messages API. Configuration keys, what is sent
// and how errors are classified: connectors/README.md, "AI providers".
//
// A CallAi's input_json is the step's rendered input:
//   {"prompt": string (required), "system": string, "max_tokens": int, "temperature": number,
//    "json": bool (ask for a JSON object answer)}
// Success output: {"text", "model", "finish_reason"} (+ "json": the parsed object when asked
// for JSON); ack model / input_tokens / output_tokens from the provider's usage. cost_micros
// stays 0: the orchestrator's AI router prices usage from the tenant's price table.
//
// Classification: 429, 5xx (Anthropic's 529 included), 408, timeouts and connection errors are
// retryable; other statuses (400, 401, 403, 404, ...) permanent, with the HTTP status and the
// provider's own error message in the reason. A 200 that is not the protocol's JSON, or lacks
// a field, is retryable with a reason naming what was missing. The API key never appears in a
// reason. The connectors hold no mutable state: execute() is safe from many threads.

#include <cstddef>
#include <memory>

#include <nlohmann/json_fwd.hpp>

#include "engine/http_client.h"
#include "engine/worker_runtime.h"

namespace auterity {

// Limits (bytes unless named otherwise).
inline constexpr size_t ai_prompt_bytes_max = 64 * 1024;       // prompt + system
inline constexpr size_t ai_output_text_bytes_max = 32 * 1024;  // answer text (fits a step output)
inline constexpr int64_t ai_max_tokens_max = 200'000;          // max_tokens accepted
inline constexpr int64_t ai_max_tokens_default = 1024;         // when neither input nor config says
inline constexpr size_t ai_error_message_bytes_max = 512;      // provider message kept in a reason

// Section keys: api ("openai"), base_url (".../v1"), api_key (secret reference; optional),
// model, timeout_ms, max_tokens. Requests go to {base_url}/chat/completions.
result<std::unique_ptr<connector>> make_openai_connector(const nlohmann::json& section,
                                                         const http_tls_options& tls);

// Section keys: api ("anthropic"), base_url ("https://api.anthropic.com"), api_key (secret
// reference; required), model, timeout_ms, max_tokens, anthropic_version ("2023-06-01").
// Requests go to {base_url}/v1/messages.
result<std::unique_ptr<connector>> make_anthropic_connector(const nlohmann::json& section,
                                                            const http_tls_options& tls);

}  // namespace auterity
