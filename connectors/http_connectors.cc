#include "connectors/http_connectors.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cctype>
#include <expected>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "engine/clock.h"
#include "engine/secrets.h"
#include "processors/limits.h"

namespace auterity {

using json = nlohmann::json;

namespace {

// The http step's output is a step output: the orchestrator's payload limit applies.
constexpr size_t http_step_output_bytes_max = limits::payload_bytes_max;
// Secret values shorter than this are not redacted from answers (they would mangle the text
// and are not secrets worth the name).
constexpr size_t secret_redact_bytes_min = 4;
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

ack_result success(const json& output) { return ack_success(dump(output)); }

// Replaces every known secret value in text that came from outside (answers may echo what was
// sent), so no secret reaches an ack.
class redactor {
 public:
  void add(std::string value) {
    if (value.size() >= secret_redact_bytes_min) _values.push_back(std::move(value));
  }
  std::string operator()(std::string text) const {
    for (const std::string& v : _values) {
      for (size_t at = text.find(v); at != std::string::npos; at = text.find(v, at)) {
        text.replace(at, v.size(), "[redacted]");
        at += 10;
      }
    }
    return text;
  }

 private:
  std::vector<std::string> _values;
};

// A short, printable, valid UTF-8 quote of an answer body for an error message.
std::string excerpt(std::string_view body) {
  std::string out;
  size_t i = 0;
  while (i < body.size() && out.size() < http_error_excerpt_bytes_max) {
    const auto c = static_cast<unsigned char>(body[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool valid = len > 0 && i + len <= body.size();
    for (size_t k = 1; valid && k < len; ++k) {
      valid = (static_cast<unsigned char>(body[i + k]) >> 6) == 2;
    }
    if (!valid) {
      out += '?';
      ++i;
    } else if (len == 1) {
      out += c < 0x20 || c == 0x7f ? ' ' : static_cast<char>(c);
      ++i;
    } else {
      out.append(body.substr(i, len));
      i += len;
    }
  }
  if (i < body.size()) out += "...";
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out.empty() ? "(empty body)" : out;
}

// The URL as error messages show it: no query or fragment (tokens travel there).
std::string shown_url(std::string_view url) {
  return std::string(url.substr(0, url.find_first_of("?#")));
}

int64_t call_deadline(const command_context& ctx, int64_t timeout_ms) {
  return call_deadline_ms(ctx, wall_now_ms(), timeout_ms);
}

// The call, classified: the response, or the ack for a call that got none.
std::expected<http_response, ack_result> send(const http_request& request,
                                              const http_tls_options& tls, std::string_view what) {
  auto response = http_call(request, tls);
  if (response) return std::move(*response);
  std::string message = response.error().message;
  // The client names scheme://host:port; `what` already says where.
  if (const size_t colon = message.find(": ");
      message.starts_with("http") && colon != message.npos) {
    message = message.substr(colon + 2);
  }
  switch (response.error().code) {
    case errc::timeout:
      return std::unexpected(
          ack_retryable(fmt::format("deadline exceeded: {}: {}", what, message)));
    case errc::io:
      return std::unexpected(ack_retryable(fmt::format("{}: {}", what, message)));
    default:
      return std::unexpected(ack_permanent(fmt::format("{}: {}", what, message)));
  }
}

bool retryable_status(int status) { return status == 408 || status == 429 || status >= 500; }

// A non-success status: retryable or permanent by the status, with the reason given.
ack_result status_failure(std::string_view what, const http_response& r, std::string_view reason) {
  std::string why = fmt::format("{}: HTTP {}: {}", what, r.status, reason);
  if (r.status == 429 && !r.header("retry-after").empty()) {
    why += fmt::format(" (retry after {} s)", excerpt(r.header("retry-after")));
  }
  return retryable_status(r.status) ? ack_retryable(std::move(why)) : ack_permanent(std::move(why));
}

bool is_json_type(std::string_view content_type) {
  const std::string t = ascii_lower(content_type.substr(0, content_type.find(';')));
  return t.find("json") != std::string::npos;
}

// ----------------------------------------------------------------------- configuration

// Reads one config section; every error names the key.
class section_reader {
 public:
  explicit section_reader(const json& s) : _s(s) {}

  result<void> only(std::initializer_list<std::string_view> allowed) const {
    if (!_s.is_object()) return fail(errc::invalid, "must be a JSON object");
    for (const auto& [key, value] : _s.items()) {
      if (std::ranges::find(allowed, key) == allowed.end()) {
        std::string names;
        for (auto a : allowed) names += fmt::format("{}{}", names.empty() ? "" : ", ", a);
        return fail(errc::invalid, fmt::format("unknown key '{}' (known: {})", key, names));
      }
    }
    return {};
  }

  result<std::string> text(std::string_view key, std::string fallback = {},
                           bool required = false) const {
    const auto it = _s.find(key);
    if (it == _s.end()) {
      if (required) return fail(errc::invalid, fmt::format("{}: required", key));
      return fallback;
    }
    if (!it->is_string() || it->get_ref<const std::string&>().empty()) {
      return fail(errc::invalid, fmt::format("{}: must be a non-empty string", key));
    }
    return it->get<std::string>();
  }

  // A base URL: valid http(s), no trailing slash.
  result<std::string> url(std::string_view key, std::string fallback, bool required,
                          bool base) const {
    auto u = text(key, std::move(fallback), required);
    if (!u) return u;
    if (auto p = parse_url(*u); !p) {
      return fail(errc::invalid, fmt::format("{}: {}", key, p.error().message));
    }
    if (base) {
      if (u->find_first_of("?#") != std::string::npos) {
        return fail(errc::invalid, fmt::format("{}: a base URL has no query", key));
      }
      while (u->ends_with('/')) u->pop_back();
    }
    return u;
  }

  // A secret given by reference, resolved now; errors name the reference, never a value.
  result<std::string> secret(std::string_view key, bool required) const {
    const auto it = _s.find(key);
    if (it == _s.end()) {
      if (required) {
        return fail(errc::invalid,
                    fmt::format("{}: required (a reference, \"env:NAME\" or \"file:/path\")", key));
      }
      return std::string();
    }
    if (!it->is_string()) {
      return fail(
          errc::invalid,
          fmt::format("{}: must be a reference string, \"env:NAME\" or \"file:/path\"", key));
    }
    auto value = resolve_secret(it->get<std::string>());
    if (!value) return fail(value.error().code, fmt::format("{}: {}", key, value.error().message));
    if (value->empty()) {
      return fail(errc::invalid,
                  fmt::format("{}: secret {} is empty", key, it->get<std::string>()));
    }
    return value;
  }

  result<int64_t> timeout_ms() const {
    const auto it = _s.find("timeout_ms");
    if (it == _s.end()) return 0;
    if (!it->is_number_integer() || it->get<int64_t>() < 1 ||
        it->get<int64_t>() > http_connector_timeout_ms_max) {
      return fail(errc::invalid, fmt::format("timeout_ms: must be an integer from 1 to {}",
                                             http_connector_timeout_ms_max));
    }
    return it->get<int64_t>();
  }

 private:
  const json& _s;
};

#define AUTERITY_TRY(var, expr) \
  auto var = (expr);            \
  if (!var) return std::unexpected(std::move(var).error())

// ----------------------------------------------------------------------------- http step

class http_step_connector final : public connector {
 public:
  http_step_connector(std::map<std::string, std::string, std::less<>> secrets, int64_t timeout_ms,
                      http_tls_options tls)
      : _secrets(std::move(secrets)), _timeout_ms(timeout_ms), _tls(std::move(tls)) {}

  ack_result execute(const fbs::Envelope& command, const command_context& ctx) override {
    const auto* cmd = command.payload_as_RunStep();
    json in = json::parse(sv(cmd->input_json()), nullptr, false);
    if (in.is_discarded() || !in.is_object()) {
      return ack_permanent("http step: the input must be a JSON object with at least \"url\"");
    }
    try {
      return run(in, ctx);
    } catch (const json::exception& e) {
      return ack_permanent(fmt::format("http step: bad input: {}", e.what()));
    }
  }

 private:
  ack_result run(const json& in, const command_context& ctx) const {
    static const std::set<std::string, std::less<>> known = {"method", "url", "headers", "body",
                                                             "expect"};
    for (const auto& [key, v] : in.items()) {
      if (!known.contains(key)) {
        return ack_permanent(fmt::format(
            "http step: unknown input key '{}' (known: method, url, headers, body, expect)", key));
      }
    }
    if (!in.contains("url") || !in["url"].is_string() ||
        in["url"].get_ref<const std::string&>().empty()) {
      return ack_permanent("http step: input.url is required (a string)");
    }
    const std::string url_template = in["url"].get<std::string>();
    const bool has_body = in.contains("body") && !in["body"].is_null();
    std::string method = has_body ? "POST" : "GET";
    if (in.contains("method")) {
      if (!in["method"].is_string()) {
        return ack_permanent("http step: input.method must be a string");
      }
      method = in["method"].get<std::string>();
      std::ranges::transform(method, method.begin(), [](char c) {
        return static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      });
      static constexpr std::string_view methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
      if (std::ranges::find(methods, method) == std::end(methods)) {
        return ack_permanent(
            fmt::format("http step: method '{}' is not supported (GET, POST, PUT, PATCH, DELETE)",
                        excerpt(in["method"].get<std::string>())));
      }
    }
    const std::string what = fmt::format("{} {}", method, shown_url(url_template));

    // Secrets are substituted here, in the worker: the event holds only ${secret:NAME}.
    redactor redact;
    auto lookup = [&](std::string_view name) -> std::string {
      auto it = _secrets.find(name);
      if (it == _secrets.end()) return "";
      if (auto v = resolve_secret(it->second); v) redact.add(std::move(*v));
      return it->second;
    };
    http_request request;
    request.method = method;
    auto url = substitute_secrets(url_template, lookup);
    if (!url) return ack_permanent(fmt::format("{}: {}", what, url.error().message));
    request.url = std::move(*url);
    if (auto p = parse_url(request.url); !p) {
      return ack_permanent(fmt::format("http step: input.url: {}", p.error().message));
    }

    bool has_key = false, has_type = false;
    if (in.contains("headers")) {
      const json& h = in["headers"];
      if (!h.is_object()) return ack_permanent("http step: input.headers must be an object");
      if (h.size() > http_step_headers_max) {
        return ack_permanent(
            fmt::format("http step: {} headers, more than http_step_headers_max ({})", h.size(),
                        http_step_headers_max));
      }
      for (const auto& [name, v] : h.items()) {
        if (!v.is_string()) {
          return ack_permanent(fmt::format("http step: header {} must be a string", excerpt(name)));
        }
        auto value = substitute_secrets(v.get<std::string>(), lookup);
        if (!value) {
          return ack_permanent(
              fmt::format("{}: header {}: {}", what, excerpt(name), value.error().message));
        }
        const std::string l = ascii_lower(name);
        has_key |= l == "idempotency-key";
        has_type |= l == "content-type";
        request.headers.emplace_back(name, std::move(*value));
      }
    }
    if (!has_key) request.headers.emplace_back("Idempotency-Key", std::string(ctx.idempotency_key));
    if (has_body) {
      const json& b = in["body"];
      request.body = b.is_string() ? b.get<std::string>() : dump(b);
      if (!has_type) {
        request.headers.emplace_back(
            "Content-Type", b.is_string() ? "text/plain; charset=utf-8" : "application/json");
      }
    }
    std::vector<int> expect;
    if (in.contains("expect")) {
      const json& e = in["expect"];
      if (!e.is_array()) return ack_permanent("http step: input.expect must be a list of statuses");
      for (const json& s : e) {
        if (!s.is_number_integer() || s.get<int>() < 100 || s.get<int>() > 599) {
          return ack_permanent("http step: input.expect must hold statuses from 100 to 599");
        }
        expect.push_back(s.get<int>());
      }
    }
    request.deadline_ms = call_deadline(ctx, _timeout_ms);

    auto response = send(request, _tls, what);
    if (!response) {
      response.error().error = redact(std::move(response.error().error));
      return response.error();
    }
    const bool ok = expect.empty() ? response->status / 100 == 2
                                   : std::ranges::find(expect, response->status) != expect.end();
    const std::string body = redact(std::move(response->body));
    if (!ok) {
      if (!expect.empty() && response->status / 100 == 2) {
        return ack_permanent(fmt::format("{}: HTTP {} is not one of the expected statuses {}", what,
                                         response->status, dump(json(expect))));
      }
      return status_failure(what, *response, excerpt(body));
    }
    json out = {{"status", response->status}, {"headers", json::object()}};
    json parsed = is_json_type(response->header("content-type")) ? json::parse(body, nullptr, false)
                                                                 : json(json::value_t::discarded);
    out["body"] = parsed.is_discarded() ? json(body) : std::move(parsed);
    for (const char* name : {"content-type", "location"}) {
      if (auto v = response->header(name); !v.empty()) out["headers"][name] = redact(v);
    }
    std::string text = dump(out);
    if (text.size() > http_step_output_bytes_max) {
      return ack_permanent(
          fmt::format("{}: the answer ({} bytes as a step output) exceeds the step "
                      "output limit of {} bytes",
                      what, text.size(), http_step_output_bytes_max));
    }
    return ack_success(std::move(text));
  }

  const std::map<std::string, std::string, std::less<>> _secrets;  // name -> reference
  const int64_t _timeout_ms;
  const http_tls_options _tls;
};

// ---------------------------------------------------------------------- notifications

std::string percent_encode(std::string_view s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += ch;
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string base64(std::string_view s) {
  std::string out(4 * ((s.size() + 2) / 3), '\0');
  const int n =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                      reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string hmac_sha256_hex(std::string_view key, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &len);
  std::string out;
  for (unsigned int i = 0; i < len; ++i) out += fmt::format("{:02x}", mac[i]);
  return out;
}

struct notification {
  std::string_view channel, to, subject, body, step;
};

notification read_notification(const fbs::Envelope& command) {
  const auto* n = command.payload_as_SendNotification();
  return {sv(n->channel()), sv(n->to()), sv(n->subject()), sv(n->body()), sv(n->step())};
}

// Parses an answer that must be a JSON object; nullopt-like discarded value otherwise.
json parse_object(std::string_view body) {
  json j = json::parse(body, nullptr, false);
  return j.is_object() ? j : json(json::value_t::discarded);
}

std::string string_field(const json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end()) return "";
  return it->is_string() ? it->get<std::string>() : it->is_null() ? "" : dump(*it);
}

class twilio_connector final : public connector {
 public:
  twilio_connector(std::string base_url, std::string sid, std::string token, std::string from,
                   int64_t timeout_ms, http_tls_options tls)
      : _url(fmt::format("{}/2010-04-01/Accounts/{}/Messages.json", base_url, sid)),
        _auth("Basic " + base64(sid + ":" + token)),
        _from(std::move(from)),
        _timeout_ms(timeout_ms),
        _tls(std::move(tls)) {
    _redact.add(token);
    _redact.add(_auth.substr(6));
  }

  ack_result execute(const fbs::Envelope& command, const command_context& ctx) override {
    const notification n = read_notification(command);
    if (n.to.empty()) return ack_permanent("sms: the notification has no recipient (to)");
    if (n.body.empty() && n.subject.empty()) {
      return ack_permanent("sms: the notification has no body");
    }
    std::string text = n.subject.empty() ? std::string(n.body)
                       : n.body.empty()  ? std::string(n.subject)
                                         : fmt::format("{}\n{}", n.subject, n.body);
    http_request r;
    r.method = "POST";
    r.url = _url;
    r.body = fmt::format("To={}&From={}&Body={}", percent_encode(n.to), percent_encode(_from),
                         percent_encode(text));
    r.headers = {{"Authorization", _auth},
                 {"Content-Type", "application/x-www-form-urlencoded"},
                 {"Accept", "application/json"},
                 {"I-Twilio-Idempotency-Token", std::string(ctx.idempotency_key)}};
    r.deadline_ms = call_deadline(ctx, _timeout_ms);
    const std::string what = "sms: POST " + _url;
    auto response = send(r, _tls, what);
    if (!response) return response.error();
    const json answer = parse_object(response->body);
    if (response->status / 100 != 2) {
      if (answer.is_discarded()) {
        return status_failure(what, *response, _redact(excerpt(response->body)));
      }
      return status_failure(what, *response,
                            _redact(fmt::format("Twilio error {}: {}", string_field(answer, "code"),
                                                excerpt(string_field(answer, "message")))));
    }
    if (answer.is_discarded() || string_field(answer, "sid").empty()) {
      return ack_retryable(
          fmt::format("{}: HTTP {} but the answer is not a Twilio message (no JSON "
                      "with a sid): {}",
                      what, response->status, _redact(excerpt(response->body))));
    }
    return success({{"channel", "sms"},
                    {"sid", string_field(answer, "sid")},
                    {"status", string_field(answer, "status")}});
  }

 private:
  const std::string _url, _auth, _from;
  const int64_t _timeout_ms;
  const http_tls_options _tls;
  redactor _redact;
};

// Graph API error codes that mean "slow down" or "try again", whatever the HTTP status.
bool whatsapp_transient(const std::string& code) {
  static const std::set<std::string, std::less<>> codes = {"1",      "2",      "4",      "80007",
                                                           "130429", "131048", "131056", "131000"};
  return codes.contains(code);
}

class whatsapp_connector final : public connector {
 public:
  whatsapp_connector(std::string base_url, std::string phone_number_id, std::string token,
                     int64_t timeout_ms, http_tls_options tls)
      : _url(fmt::format("{}/{}/messages", base_url, phone_number_id)),
        _auth("Bearer " + token),
        _timeout_ms(timeout_ms),
        _tls(std::move(tls)) {
    _redact.add(token);
  }

  ack_result execute(const fbs::Envelope& command, const command_context& ctx) override {
    const notification n = read_notification(command);
    if (n.to.empty()) return ack_permanent("whatsapp: the notification has no recipient (to)");
    if (n.body.empty() && n.subject.empty()) {
      return ack_permanent("whatsapp: the notification has no body");
    }
    std::string text =
        n.subject.empty() ? std::string(n.body) : fmt::format("*{}*\n{}", n.subject, n.body);
    http_request r;
    r.method = "POST";
    r.url = _url;
    r.body = dump({{"messaging_product", "whatsapp"},
                   {"recipient_type", "individual"},
                   {"to", n.to},
                   {"type", "text"},
                   {"text", {{"body", text}}}});
    r.headers = {{"Authorization", _auth},
                 {"Content-Type", "application/json"},
                 {"Idempotency-Key", std::string(ctx.idempotency_key)}};
    r.deadline_ms = call_deadline(ctx, _timeout_ms);
    const std::string what = "whatsapp: POST " + _url;
    auto response = send(r, _tls, what);
    if (!response) return response.error();
    const json answer = parse_object(response->body);
    if (response->status / 100 != 2) {
      if (answer.is_discarded() || !answer.contains("error") || !answer["error"].is_object()) {
        return status_failure(what, *response, _redact(excerpt(response->body)));
      }
      const json& e = answer["error"];
      const std::string code = string_field(e, "code");
      std::string reason =
          _redact(fmt::format("WhatsApp error {}: {}", code, excerpt(string_field(e, "message"))));
      if (whatsapp_transient(code) && !retryable_status(response->status)) {
        return ack_retryable(fmt::format("{}: HTTP {}: {} (a transient error code)", what,
                                         response->status, reason));
      }
      return status_failure(what, *response, reason);
    }
    std::string id;
    if (!answer.is_discarded() && answer.contains("messages") && answer["messages"].is_array() &&
        !answer["messages"].empty() && answer["messages"][0].is_object()) {
      id = string_field(answer["messages"][0], "id");
    }
    if (id.empty()) {
      return ack_retryable(
          fmt::format("{}: HTTP {} but the answer is not a WhatsApp send result (no "
                      "messages[0].id): {}",
                      what, response->status, _redact(excerpt(response->body))));
    }
    return success({{"channel", "whatsapp"}, {"message_id", id}});
  }

 private:
  const std::string _url, _auth;
  const int64_t _timeout_ms;
  const http_tls_options _tls;
  redactor _redact;
};

class slack_connector final : public connector {
 public:
  slack_connector(std::string webhook_url, int64_t timeout_ms, http_tls_options tls)
      : _url(std::move(webhook_url)), _timeout_ms(timeout_ms), _tls(std::move(tls)) {
    // The whole URL is the secret: messages show only its origin.
    const url_parts parts = *parse_url(_url);
    const bool default_port = parts.port == (parts.tls ? "443" : "80");
    _what = fmt::format("slack: POST {}://{}{}/...", parts.tls ? "https" : "http", parts.host,
                        default_port ? "" : ":" + parts.port);
    _redact.add(_url);
    _redact.add(parts.target);
  }

  ack_result execute(const fbs::Envelope& command, const command_context& ctx) override {
    const notification n = read_notification(command);
    if (n.body.empty() && n.subject.empty())
      return ack_permanent("slack: the notification has no body");
    std::string text =
        n.subject.empty() ? std::string(n.body) : fmt::format("*{}*\n{}", n.subject, n.body);
    http_request r;
    r.method = "POST";
    r.url = _url;
    r.body = dump({{"text", text}});
    r.headers = {{"Content-Type", "application/json"},
                 {"Idempotency-Key", std::string(ctx.idempotency_key)}};
    r.deadline_ms = call_deadline(ctx, _timeout_ms);
    auto response = send(r, _tls, _what);
    if (!response) return response.error();
    if (response->status / 100 != 2) {
      return status_failure(_what, *response, _redact("Slack answered " + excerpt(response->body)));
    }
    return success({{"channel", "slack"}, {"status", response->status}});
  }

 private:
  const std::string _url;
  std::string _what;
  const int64_t _timeout_ms;
  const http_tls_options _tls;
  redactor _redact;
};

class webhook_connector final : public connector {
 public:
  webhook_connector(std::string url, std::string signing_secret, int64_t timeout_ms,
                    http_tls_options tls)
      : _url(std::move(url)),
        _secret(std::move(signing_secret)),
        _timeout_ms(timeout_ms),
        _tls(std::move(tls)) {
    _redact.add(_secret);
  }

  ack_result execute(const fbs::Envelope& command, const command_context& ctx) override {
    const notification n = read_notification(command);
    http_request r;
    r.method = "POST";
    r.url = _url;
    r.body = dump({{"id", ctx.idempotency_key},
                   {"tenant", sv(command.tenant_id())},
                   {"execution", sv(command.execution_id())},
                   {"step", n.step},
                   {"channel", n.channel},
                   {"to", n.to},
                   {"subject", n.subject},
                   {"body", n.body}});
    r.headers = {{"Content-Type", "application/json"},
                 {"Idempotency-Key", std::string(ctx.idempotency_key)}};
    if (!_secret.empty()) {
      r.headers.emplace_back("X-Auterity-Signature", "sha256=" + hmac_sha256_hex(_secret, r.body));
    }
    r.deadline_ms = call_deadline(ctx, _timeout_ms);
    const std::string what = "webhook: POST " + shown_url(_url);
    auto response = send(r, _tls, what);
    if (!response) return response.error();
    if (response->status / 100 != 2) {
      return status_failure(what, *response, _redact(excerpt(response->body)));
    }
    return success({{"channel", n.channel}, {"status", response->status}});
  }

 private:
  const std::string _url, _secret;
  const int64_t _timeout_ms;
  const http_tls_options _tls;
  redactor _redact;
};

}  // namespace

result<std::unique_ptr<connector>> make_http_step_connector(const json& section,
                                                            const http_tls_options& tls) {
  const json empty = json::object();
  const json& sec = section.is_null() ? empty : section;
  const section_reader s(sec);
  if (auto ok = s.only({"secrets", "timeout_ms"}); !ok) return std::unexpected(ok.error());
  AUTERITY_TRY(timeout, s.timeout_ms());
  std::map<std::string, std::string, std::less<>> secrets;
  if (sec.contains("secrets")) {
    const json& m = sec["secrets"];
    if (!m.is_object()) {
      return fail(errc::invalid,
                  "secrets: must be an object of NAME: \"env:VAR\" | \"file:/path\"");
    }
    for (const auto& [name, ref] : m.items()) {
      if (!ref.is_string()) {
        return fail(errc::invalid, fmt::format("secrets.{}: must be a reference string", name));
      }
      // Resolved once now so a missing one stops the start; again per call, so a rotated
      // file is picked up.
      if (auto v = resolve_secret(ref.get<std::string>()); !v) {
        return fail(v.error().code, fmt::format("secrets.{}: {}", name, v.error().message));
      }
      secrets.emplace(name, ref.get<std::string>());
    }
  }
  return std::make_unique<http_step_connector>(std::move(secrets), *timeout, tls);
}

result<std::unique_ptr<connector>> make_twilio_connector(const json& section,
                                                         const http_tls_options& tls) {
  const section_reader s(section);
  if (auto ok = s.only({"api", "base_url", "account_sid", "auth_token", "from", "timeout_ms"}); !ok)
    return std::unexpected(ok.error());
  AUTERITY_TRY(base, s.url("base_url", "https://api.twilio.com", false, true));
  AUTERITY_TRY(sid, s.text("account_sid", "", true));
  if (!std::ranges::all_of(*sid,
                           [](char c) { return std::isalnum(static_cast<unsigned char>(c)); })) {
    return fail(errc::invalid, "account_sid: must be letters and digits (AC...)");
  }
  AUTERITY_TRY(from, s.text("from", "", true));
  AUTERITY_TRY(token, s.secret("auth_token", true));
  AUTERITY_TRY(timeout, s.timeout_ms());
  return std::make_unique<twilio_connector>(*base, *sid, *token, *from, *timeout, tls);
}

result<std::unique_ptr<connector>> make_whatsapp_connector(const json& section,
                                                           const http_tls_options& tls) {
  const section_reader s(section);
  if (auto ok = s.only({"api", "base_url", "phone_number_id", "token", "timeout_ms"}); !ok)
    return std::unexpected(ok.error());
  AUTERITY_TRY(base, s.url("base_url", "https://graph.facebook.com/v19.0", false, true));
  AUTERITY_TRY(id, s.text("phone_number_id", "", true));
  if (!std::ranges::all_of(*id,
                           [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
    return fail(errc::invalid, "phone_number_id: must be digits");
  }
  AUTERITY_TRY(token, s.secret("token", true));
  AUTERITY_TRY(timeout, s.timeout_ms());
  return std::make_unique<whatsapp_connector>(*base, *id, *token, *timeout, tls);
}

result<std::unique_ptr<connector>> make_slack_connector(const json& section,
                                                        const http_tls_options& tls) {
  const section_reader s(section);
  if (auto ok = s.only({"api", "webhook_url", "timeout_ms"}); !ok)
    return std::unexpected(ok.error());
  AUTERITY_TRY(url, s.secret("webhook_url", true));
  if (auto p = parse_url(*url); !p) {
    // The message of parse_url never quotes the URL, which is the secret here.
    return fail(errc::invalid, fmt::format("webhook_url: {}", p.error().message));
  }
  AUTERITY_TRY(timeout, s.timeout_ms());
  return std::make_unique<slack_connector>(*url, *timeout, tls);
}

result<std::unique_ptr<connector>> make_webhook_connector(const json& section,
                                                          const http_tls_options& tls) {
  const section_reader s(section);
  if (auto ok = s.only({"api", "url", "signing_secret", "timeout_ms"}); !ok)
    return std::unexpected(ok.error());
  AUTERITY_TRY(url, s.url("url", "", true, false));
  AUTERITY_TRY(secret, s.secret("signing_secret", false));
  AUTERITY_TRY(timeout, s.timeout_ms());
  return std::make_unique<webhook_connector>(*url, *secret, *timeout, tls);
}

}  // namespace auterity
