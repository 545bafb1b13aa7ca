#include "connectors/ai_connectors.h"

#include <algorithm>
#include <cctype>
#include <optional>
#include <string>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "engine/clock.h"
#include "engine/secrets.h"

namespace auterity {

using json = nlohmann::json;

namespace {

enum class ai_api { openai, anthropic };

struct ai_config {
  ai_api api = ai_api::openai;
  std::string endpoint;  // the full URL requests go to
  std::string api_key;   // resolved; empty: send none (OpenAI-compatible local servers)
  std::string model;
  int64_t timeout_ms = 0;  // 0: only the command's deadline bounds a call
  int64_t max_tokens = ai_max_tokens_default;
  std::string anthropic_version;
  http_tls_options tls;

  const char* name() const { return api == ai_api::openai ? "openai" : "anthropic"; }
};

struct ai_input {
  std::string prompt;
  std::string system;
  int64_t max_tokens = 0;
  std::optional<double> temperature;
  bool json_answer = false;
};

struct ai_answer {
  std::string text;
  std::string model;
  std::string finish_reason;
  uint32_t input_tokens = 0;
  uint32_t output_tokens = 0;
};

bool icontains(std::string_view haystack, std::string_view needle) {
  auto it = std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end(),
                        [](char a, char b) {
                          return std::tolower(static_cast<unsigned char>(a)) ==
                                 std::tolower(static_cast<unsigned char>(b));
                        });
  return it != haystack.end();
}

// A provider's words go into a reason: cut to size, and never with the key in them (some
// services quote the key they were given back, partly masked or not).
std::string scrub(std::string text, const std::string& key) {
  if (!key.empty()) {
    for (size_t at = text.find(key); at != std::string::npos; at = text.find(key, at)) {
      text.replace(at, key.size(), "[redacted]");
    }
  }
  if (text.size() > ai_error_message_bytes_max) {
    text.resize(ai_error_message_bytes_max);
    // Do not end inside a UTF-8 sequence.
    while (!text.empty() && (static_cast<unsigned char>(text.back()) & 0xC0) == 0x80) {
      text.pop_back();
    }
    if (!text.empty() && static_cast<unsigned char>(text.back()) >= 0xC0) text.pop_back();
    text += "...";
  }
  return text;
}

// ------------------------------------------------------------------------------ configuration

result<int64_t> positive_int(const json& section, const char* key, int64_t max) {
  const json& v = section[key];
  if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > max) {
    return fail(errc::invalid, fmt::format("{}: must be an integer from 1 to {}", key, max));
  }
  return v.get<int64_t>();
}

result<std::string> string_key(const json& section, const char* key) {
  if (!section.contains(key)) return fail(errc::invalid, fmt::format("{}: required", key));
  const json& v = section[key];
  if (!v.is_string() || v.get<std::string>().empty()) {
    return fail(errc::invalid, fmt::format("{}: must be a non-empty string", key));
  }
  return v.get<std::string>();
}

result<ai_config> parse_config(const json& section, ai_api api, const http_tls_options& tls) {
  if (!section.is_object()) return fail(errc::invalid, "must be an object");
  const bool anthropic = api == ai_api::anthropic;
  for (const auto& [k, v] : section.items()) {
    static constexpr std::string_view common[] = {"api",   "base_url",   "api_key",
                                                  "model", "timeout_ms", "max_tokens"};
    const bool known =
        std::ranges::find(common, k) != std::end(common) || (anthropic && k == "anthropic_version");
    if (!known) return fail(errc::invalid, fmt::format("unknown key '{}'", k));
  }
  ai_config c;
  c.api = api;
  c.tls = tls;
  if (section.contains("api") && section["api"] != c.name()) {
    return fail(errc::invalid, fmt::format("api: must be \"{}\"", c.name()));
  }
  auto base = string_key(section, "base_url");
  if (!base) return std::unexpected(base.error());
  if (auto u = parse_url(*base); !u) {
    return fail(errc::invalid, "base_url: " + u.error().message);
  }
  while (base->ends_with('/')) base->pop_back();
  c.endpoint = *base + (anthropic ? "/v1/messages" : "/chat/completions");

  auto model = string_key(section, "model");
  if (!model) return std::unexpected(model.error());
  c.model = *model;

  if (section.contains("api_key")) {
    if (!section["api_key"].is_string()) {
      return fail(errc::invalid,
                  "api_key: must be a secret reference, \"env:NAME\" or "
                  "\"file:/path\"");
    }
    auto key = resolve_secret(section["api_key"].get<std::string>());
    if (!key) return fail(key.error().code, "api_key: " + key.error().message);
    if (key->empty()) return fail(errc::invalid, "api_key: the secret is empty");
    c.api_key = std::move(*key);
  } else if (anthropic) {
    return fail(errc::invalid,
                "api_key: required (a secret reference, e.g. "
                "\"env:ANTHROPIC_API_KEY\")");
  }
  if (section.contains("timeout_ms")) {
    auto t = positive_int(section, "timeout_ms", 3'600'000);
    if (!t) return std::unexpected(t.error());
    c.timeout_ms = *t;
  }
  if (section.contains("max_tokens")) {
    auto t = positive_int(section, "max_tokens", ai_max_tokens_max);
    if (!t) return std::unexpected(t.error());
    c.max_tokens = *t;
  }
  c.anthropic_version = "2023-06-01";
  if (section.contains("anthropic_version")) {
    auto v = string_key(section, "anthropic_version");
    if (!v) return std::unexpected(v.error());
    c.anthropic_version = *v;
  }
  return c;
}

// ------------------------------------------------------------------------------ the request

result<ai_input> parse_input(std::string_view input_json, int64_t default_max_tokens) {
  json in = json::parse(input_json, nullptr, false);
  if (in.is_discarded() || !in.is_object()) {
    return fail(errc::invalid, "AI step input must be a JSON object with a \"prompt\"");
  }
  ai_input r;
  if (!in.contains("prompt") || !in["prompt"].is_string() ||
      in["prompt"].get<std::string>().empty()) {
    return fail(errc::invalid, "AI step input: \"prompt\" must be a non-empty string");
  }
  r.prompt = in["prompt"].get<std::string>();
  if (in.contains("system") && !in["system"].is_null()) {
    if (!in["system"].is_string()) {
      return fail(errc::invalid, "AI step input: \"system\" must be a string");
    }
    r.system = in["system"].get<std::string>();
  }
  if (r.prompt.size() + r.system.size() > ai_prompt_bytes_max) {
    return fail(errc::too_large,
                fmt::format("AI step input: prompt and system are {} bytes, over "
                            "ai_prompt_bytes_max ({})",
                            r.prompt.size() + r.system.size(), ai_prompt_bytes_max));
  }
  r.max_tokens = default_max_tokens;
  if (in.contains("max_tokens") && !in["max_tokens"].is_null()) {
    const json& v = in["max_tokens"];
    if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > ai_max_tokens_max) {
      return fail(errc::invalid, fmt::format("AI step input: \"max_tokens\" must be an integer "
                                             "from 1 to {}",
                                             ai_max_tokens_max));
    }
    r.max_tokens = v.get<int64_t>();
  }
  if (in.contains("temperature") && !in["temperature"].is_null()) {
    if (!in["temperature"].is_number()) {
      return fail(errc::invalid, "AI step input: \"temperature\" must be a number");
    }
    r.temperature = in["temperature"].get<double>();
  }
  if (in.contains("json") && !in["json"].is_null()) {
    if (!in["json"].is_boolean()) {
      return fail(errc::invalid, "AI step input: \"json\" must be true or false");
    }
    r.json_answer = in["json"].get<bool>();
  }
  return r;
}

constexpr std::string_view json_instruction = "Answer with a single JSON object and nothing else.";

std::string openai_body(const ai_input& in, const std::string& model) {
  json messages = json::array();
  std::string system = in.system;
  // OpenAI refuses json_object mode unless the messages mention JSON.
  if (in.json_answer && !icontains(system, "json") && !icontains(in.prompt, "json")) {
    system += (system.empty() ? "" : "\n\n") + std::string(json_instruction);
  }
  if (!system.empty()) messages.push_back({{"role", "system"}, {"content", system}});
  messages.push_back({{"role", "user"}, {"content", in.prompt}});
  json body = {{"model", model}, {"messages", messages}, {"max_tokens", in.max_tokens}};
  if (in.temperature) body["temperature"] = *in.temperature;
  if (in.json_answer) body["response_format"] = {{"type", "json_object"}};
  return body.dump();
}

std::string anthropic_body(const ai_input& in, const std::string& model) {
  std::string system = in.system;
  // The messages API has no JSON mode: ask in the system prompt.
  if (in.json_answer) {
    system += (system.empty() ? "" : "\n\n") + std::string(json_instruction);
  }
  json body = {{"model", model},
               {"max_tokens", in.max_tokens},
               {"messages", json::array({{{"role", "user"}, {"content", in.prompt}}})}};
  if (!system.empty()) body["system"] = system;
  if (in.temperature) body["temperature"] = *in.temperature;
  return body.dump();
}

// ------------------------------------------------------------------------------ the answer

// A JSON pointer-ish path into the answer, for "missing field" reasons.
const json* field(const json& j, std::initializer_list<std::string_view> path) {
  const json* at = &j;
  for (std::string_view p : path) {
    if (!p.empty() && std::isdigit(static_cast<unsigned char>(p[0]))) {
      const size_t i = static_cast<size_t>(std::stoul(std::string(p)));
      if (!at->is_array() || at->size() <= i) return nullptr;
      at = &(*at)[i];
    } else {
      if (!at->is_object()) return nullptr;
      auto it = at->find(std::string(p));
      if (it == at->end()) return nullptr;
      at = &*it;
    }
  }
  return at;
}

result<uint32_t> token_count(const json& j, std::initializer_list<std::string_view> path,
                             std::string_view name) {
  const json* v = field(j, path);
  if (!v || !v->is_number_integer() || v->get<int64_t>() < 0) {
    return fail(errc::invalid, fmt::format("{} missing or not a count", name));
  }
  return static_cast<uint32_t>(std::min<int64_t>(v->get<int64_t>(), UINT32_MAX));
}

std::string string_or(const json* v, std::string fallback) {
  return v && v->is_string() ? v->get<std::string>() : std::move(fallback);
}

// The token counts both APIs report under "usage" (by their own names), and the model that
// answered (`model`, the one asked for, when the answer names none).
result<void> read_usage(const json& j, std::string_view input_key, std::string_view output_key,
                        const std::string& model, ai_answer& a) {
  auto in = token_count(j, {"usage", input_key}, fmt::format("usage.{}", input_key));
  if (!in) return std::unexpected(in.error());
  auto out = token_count(j, {"usage", output_key}, fmt::format("usage.{}", output_key));
  if (!out) return std::unexpected(out.error());
  a.input_tokens = *in;
  a.output_tokens = *out;
  a.model = string_or(field(j, {"model"}), model);
  return {};
}

result<ai_answer> read_openai(const json& j, const std::string& model) {
  ai_answer a;
  const json* content = field(j, {"choices", "0", "message", "content"});
  if (!content || !content->is_string()) {
    const json* refusal = field(j, {"choices", "0", "message", "refusal"});
    if (refusal && refusal->is_string()) {
      return fail(errc::not_found, "the model refused: " + refusal->get<std::string>());
    }
    return fail(errc::invalid, "choices[0].message.content missing");
  }
  a.text = content->get<std::string>();
  if (auto u = read_usage(j, "prompt_tokens", "completion_tokens", model, a); !u) {
    return std::unexpected(u.error());
  }
  a.finish_reason = string_or(field(j, {"choices", "0", "finish_reason"}), "");
  return a;
}

result<ai_answer> read_anthropic(const json& j, const std::string& model) {
  ai_answer a;
  const json* content = field(j, {"content"});
  if (!content || !content->is_array()) return fail(errc::invalid, "content[] missing");
  for (const json& block : *content) {
    if (block.is_object() && block.value("type", "") == "text") {
      const json* t = field(block, {"text"});
      if (!t || !t->is_string()) return fail(errc::invalid, "content[].text missing");
      a.text += t->get<std::string>();
    }
  }
  if (auto u = read_usage(j, "input_tokens", "output_tokens", model, a); !u) {
    return std::unexpected(u.error());
  }
  a.finish_reason = string_or(field(j, {"stop_reason"}), "");
  return a;
}

// The provider's own explanation of an error status: OpenAI {"error":{"message","type",
// "code"}}, Anthropic {"type":"error","error":{"type","message"}}; the body's start otherwise.
std::string provider_message(const http_response& r) {
  json j = json::parse(r.body, nullptr, false);
  if (!j.is_discarded()) {
    const json* message = field(j, {"error", "message"});
    const json* type = field(j, {"error", "code"});
    if (!type || !type->is_string()) type = field(j, {"error", "type"});
    if (message && message->is_string()) {
      std::string s = message->get<std::string>();
      if (type && type->is_string()) s = type->get<std::string>() + ": " + s;
      return s;
    }
    if (const json* e = field(j, {"error"}); e && e->is_string()) return e->get<std::string>();
  }
  std::string s = r.body.substr(0, 200);
  std::ranges::replace_if(
      s, [](char c) { return c == '\r' || c == '\n'; }, ' ');
  return s.empty() ? "(empty body)" : s;
}

bool retryable_status(int status) { return status == 408 || status == 429 || status >= 500; }

// Models often wrap a JSON answer in a Markdown code fence; the object inside is the answer.
std::string_view strip_fence(std::string_view t) {
  auto trim = [](std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
  };
  t = trim(t);
  if (t.starts_with("```") && t.ends_with("```") && t.size() >= 6) {
    t = t.substr(3, t.size() - 6);
    if (t.starts_with("json")) t.remove_prefix(4);
    t = trim(t);
  }
  return t;
}

class ai_connector final : public connector {
 public:
  explicit ai_connector(ai_config c) : _c(std::move(c)) {}

  ack_result execute(const fbs::Envelope& command, const command_context& ctx) override {
    const fbs::CallAi* cmd = command.payload_as_CallAi();
    if (!cmd) return ack_permanent("AI connector: the command is not a CallAi");
    auto in = parse_input(sv(cmd->input_json()), _c.max_tokens);
    if (!in) return ack_permanent(in.error().message);
    const std::string model =
        cmd->model() && cmd->model()->size() ? std::string(sv(cmd->model())) : _c.model;
    http_request req = request(*in, model, ctx.idempotency_key);
    const int64_t start = wall_now_ms();
    const int64_t deadline = call_deadline_ms(ctx, start, _c.timeout_ms);
    if (deadline <= start) {
      return ack_retryable(
          fmt::format("deadline exceeded before calling {} (model {})", _c.name(), model));
    }
    req.deadline_ms = deadline;

    auto resp = http_call(req, _c.tls);
    if (!resp) {
      const error& e = resp.error();
      if (e.code == errc::timeout) {
        return ack_retryable(
            fmt::format("deadline exceeded: {} did not answer within {} ms (model {})", _c.name(),
                        deadline - start, model));
      }
      const std::string why =
          fmt::format("{} call failed: {}", _c.name(), scrub(e.message, _c.api_key));
      return e.code == errc::invalid ? ack_permanent(why) : ack_retryable(why);
    }
    if (resp->status < 200 || resp->status > 299) {
      std::string why = fmt::format("{} HTTP {}: {}", _c.name(), resp->status,
                                    scrub(provider_message(*resp), _c.api_key));
      if (const std::string after = resp->header("retry-after");
          !after.empty() && after.size() < 32) {
        why += fmt::format(" (retry-after {})", after);
      }
      return retryable_status(resp->status) ? ack_retryable(std::move(why))
                                            : ack_permanent(std::move(why));
    }
    return answer(*resp, *in, model);
  }

 private:
  http_request request(const ai_input& in, const std::string& model, std::string_view key) const {
    http_request req;
    req.method = "POST";
    req.url = _c.endpoint;
    req.headers.emplace_back("content-type", "application/json");
    req.headers.emplace_back("accept", "application/json");
    if (!key.empty()) req.headers.emplace_back("idempotency-key", std::string(key));
    if (_c.api == ai_api::openai) {
      if (!_c.api_key.empty()) req.headers.emplace_back("authorization", "Bearer " + _c.api_key);
      req.body = openai_body(in, model);
    } else {
      req.headers.emplace_back("x-api-key", _c.api_key);
      req.headers.emplace_back("anthropic-version", _c.anthropic_version);
      req.body = anthropic_body(in, model);
    }
    return req;
  }

  ack_result answer(const http_response& resp, const ai_input& in, const std::string& model) {
    json j = json::parse(resp.body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      std::string ct = resp.header("content-type");
      return ack_retryable(fmt::format(
          "{} answered HTTP {} with a body that is not JSON ({} bytes{})", _c.name(), resp.status,
          resp.body.size(), ct.empty() ? "" : ", " + scrub(ct, _c.api_key)));
    }
    auto a = _c.api == ai_api::openai ? read_openai(j, model) : read_anthropic(j, model);
    if (!a) {
      if (a.error().code == errc::not_found) {
        return ack_permanent(
            fmt::format("{}: {}", _c.name(), scrub(a.error().message, _c.api_key)));
      }
      return ack_retryable(fmt::format("{} answer is malformed: {}", _c.name(), a.error().message));
    }
    if (a->text.size() > ai_output_text_bytes_max) {
      return ack_permanent(
          fmt::format("{} answer is {} bytes, over ai_output_text_bytes_max ({}); "
                      "ask for fewer max_tokens",
                      _c.name(), a->text.size(), ai_output_text_bytes_max));
    }
    json out = {{"text", a->text}, {"model", a->model}, {"finish_reason", a->finish_reason}};
    if (in.json_answer) {
      json parsed = json::parse(strip_fence(a->text), nullptr, false);
      if (parsed.is_discarded() || !parsed.is_object()) {
        return ack_retryable(
            fmt::format("{} was asked for a JSON object and answered something else "
                        "(finish_reason {})",
                        _c.name(), a->finish_reason.empty() ? "?" : a->finish_reason));
      }
      out["json"] = std::move(parsed);
    }
    ack_result r = ack_success(out.dump(-1, ' ', false, json::error_handler_t::replace));
    r.model = a->model;
    r.input_tokens = a->input_tokens;
    r.output_tokens = a->output_tokens;
    return r;
  }

  const ai_config _c;
};

result<std::unique_ptr<connector>> make(const json& section, ai_api api,
                                        const http_tls_options& tls) {
  auto c = parse_config(section, api, tls);
  if (!c) return std::unexpected(c.error());
  return std::make_unique<ai_connector>(std::move(*c));
}

}  // namespace

result<std::unique_ptr<connector>> make_openai_connector(const json& section,
                                                         const http_tls_options& tls) {
  return make(section, ai_api::openai, tls);
}

result<std::unique_ptr<connector>> make_anthropic_connector(const json& section,
                                                            const http_tls_options& tls) {
  return make(section, ai_api::anthropic, tls);
}

}  // namespace auterity
