#include "connectors/connector_config.h"

#include <fstream>
#include <map>
#include <sstream>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "connectors/ai_connectors.h"
#include "connectors/connectors.h"
#include "connectors/http_connectors.h"
#include "connectors/smtp_connector.h"
#include "engine/http_client.h"

namespace auterity {

using json = nlohmann::json;

namespace {

std::string names_of(const std::map<std::string, std::unique_ptr<connector>, std::less<>>& m) {
  std::string out;
  for (const auto& [name, c] : m) out += (out.empty() ? "" : ", ") + name;
  return out.empty() ? "none" : out;
}

class step_router final : public connector {
 public:
  step_router(std::unique_ptr<connector> http, std::unique_ptr<connector> local)
      : _http(std::move(http)), _local(std::move(local)) {}
  ack_result execute(const fbs::Envelope& command, const command_context& ctx) override {
    if (sv(command.payload_as_RunStep()->action()) == "http") return _http->execute(command, ctx);
    return _local->execute(command, ctx);
  }

 private:
  std::unique_ptr<connector> _http, _local;
};

class ai_router final : public connector {
 public:
  ai_router(std::map<std::string, std::unique_ptr<connector>, std::less<>> providers,
            std::string fallback)
      : _providers(std::move(providers)), _default(std::move(fallback)) {}
  ack_result execute(const fbs::Envelope& command, const command_context& ctx) override {
    std::string_view provider = sv(command.payload_as_CallAi()->provider());
    if (provider.empty()) provider = _default;
    if (provider.empty()) {
      return ack_permanent(
          "no AI provider is configured on this worker (connector config \"ai\"); the "
          "workflow takes its fallback path");
    }
    auto it = _providers.find(provider);
    if (it == _providers.end()) {
      return ack_permanent(
          fmt::format("AI provider '{}' is not configured on this worker "
                      "(configured: {})",
                      provider, names_of(_providers)));
    }
    return it->second->execute(command, ctx);
  }

 private:
  std::map<std::string, std::unique_ptr<connector>, std::less<>> _providers;
  std::string _default;
};

class notify_router final : public connector {
 public:
  notify_router(std::map<std::string, std::unique_ptr<connector>, std::less<>> channels,
                std::unique_ptr<connector> outbox)
      : _channels(std::move(channels)), _outbox(std::move(outbox)) {}
  ack_result execute(const fbs::Envelope& command, const command_context& ctx) override {
    auto it = _channels.find(sv(command.payload_as_SendNotification()->channel()));
    if (it == _channels.end()) return _outbox->execute(command, ctx);
    return it->second->execute(command, ctx);
  }

 private:
  std::map<std::string, std::unique_ptr<connector>, std::less<>> _channels;
  std::unique_ptr<connector> _outbox;
};

using factory = result<std::unique_ptr<connector>> (*)(const json&, const http_tls_options&);

result<std::unique_ptr<connector>> build(std::string_view where, const json& section,
                                         const std::map<std::string, factory>& apis,
                                         const http_tls_options& tls) {
  if (!section.is_object()) return fail(errc::invalid, fmt::format("{}: must be an object", where));
  const auto api = section.find("api");
  if (api == section.end() || !api->is_string()) {
    std::string known;
    for (const auto& [name, f] : apis) known += (known.empty() ? "" : ", ") + name;
    return fail(errc::invalid, fmt::format("{}.api: required, one of {}", where, known));
  }
  auto f = apis.find(api->get<std::string>());
  if (f == apis.end()) {
    return fail(errc::invalid,
                fmt::format("{}.api: unknown api '{}'", where, api->get<std::string>()));
  }
  auto c = f->second(section, tls);
  if (!c) return fail(c.error().code, fmt::format("{}: {}", where, c.error().message));
  return c;
}

result<void> only_keys(std::string_view where, const json& j,
                       std::initializer_list<std::string_view> allowed) {
  if (!j.is_object()) return fail(errc::invalid, fmt::format("{}: must be an object", where));
  for (const auto& [k, v] : j.items()) {
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
      return fail(errc::invalid, fmt::format("{}: unknown key '{}'", where, k));
    }
  }
  return {};
}

result<connector_set> build_all(const json& cfg, const std::string& outbox_dir) {
  if (auto r = only_keys("connector config", cfg, {"tls", "step", "ai", "notify"}); !r)
    return std::unexpected(r.error());
  http_tls_options tls;
  if (cfg.contains("tls")) {
    const json& t = cfg["tls"];
    if (auto r = only_keys("tls", t, {"ca_file", "verify"}); !r) return std::unexpected(r.error());
    if (t.contains("ca_file")) tls.ca_file = t["ca_file"].get<std::string>();
    if (t.contains("verify")) tls.verify = t["verify"].get<bool>();
  }
  connector_set set;
  // step
  json http_section = json::object();
  if (cfg.contains("step")) {
    if (auto r = only_keys("step", cfg["step"], {"http"}); !r) return std::unexpected(r.error());
    if (cfg["step"].contains("http")) http_section = cfg["step"]["http"];
  }
  auto http = make_http_step_connector(http_section, tls);
  if (!http) return fail(http.error().code, "step.http: " + http.error().message);
  set.step = std::make_unique<step_router>(std::move(*http), make_local_step_connector());
  // ai
  std::map<std::string, std::unique_ptr<connector>, std::less<>> providers;
  std::string fallback;
  if (cfg.contains("ai")) {
    const json& ai = cfg["ai"];
    if (auto r = only_keys("ai", ai, {"default", "providers"}); !r)
      return std::unexpected(r.error());
    const std::map<std::string, factory> apis = {{"openai", make_openai_connector},
                                                 {"anthropic", make_anthropic_connector}};
    if (ai.contains("providers")) {
      if (!ai["providers"].is_object())
        return fail(errc::invalid, "ai.providers: must be an object of name: provider");
      for (const auto& [name, section] : ai["providers"].items()) {
        auto c = build("ai.providers." + name, section, apis, tls);
        if (!c) return std::unexpected(c.error());
        providers.emplace(name, std::move(*c));
      }
    }
    if (ai.contains("default")) {
      fallback = ai["default"].get<std::string>();
      if (!providers.contains(fallback)) {
        return fail(errc::invalid, fmt::format("ai.default: '{}' is not one of ai.providers ({})",
                                               fallback, names_of(providers)));
      }
    } else if (providers.size() == 1) {
      fallback = providers.begin()->first;
    }
  }
  set.ai = std::make_unique<ai_router>(std::move(providers), std::move(fallback));
  // notify
  std::map<std::string, std::unique_ptr<connector>, std::less<>> channels;
  if (cfg.contains("notify")) {
    const json& notify = cfg["notify"];
    if (!notify.is_object()) return fail(errc::invalid, "notify: must be an object");
    const std::map<std::string, factory> apis = {{"twilio", make_twilio_connector},
                                                 {"whatsapp", make_whatsapp_connector},
                                                 {"smtp", make_smtp_connector},
                                                 {"slack", make_slack_connector},
                                                 {"webhook", make_webhook_connector}};
    for (const auto& [channel, section] : notify.items()) {
      if (channel == "outbox") return fail(errc::invalid, "notify.outbox: the outbox is built in");
      auto c = build("notify." + channel, section, apis, tls);
      if (!c) return std::unexpected(c.error());
      channels.emplace(channel, std::move(*c));
    }
  }
  auto outbox = outbox_connector::open(outbox_dir);
  if (!outbox) return std::unexpected(outbox.error());
  set.notify = std::make_unique<notify_router>(std::move(channels), std::move(*outbox));
  return set;
}

}  // namespace

result<connector_set> make_connectors(std::string_view config_json, const std::string& outbox_dir) {
  json cfg = json::object();
  if (!config_json.empty()) {
    try {
      cfg = json::parse(config_json);
    } catch (const json::exception& e) {
      return fail(errc::invalid, fmt::format("connector config is not JSON: {}", e.what()));
    }
  }
  try {
    return build_all(cfg, outbox_dir);
  } catch (const json::exception& e) {
    // A value of the wrong type (a number where a string belongs, ...).
    return fail(errc::invalid, fmt::format("connector config: {}", e.what()));
  }
}

result<connector_set> load_connectors(const std::string& path, const std::string& outbox_dir) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(errc::not_found, fmt::format("cannot read connector config {}", path));
  std::ostringstream s;
  s << in.rdbuf();
  if (s.str().size() > connector_config_bytes_max) {
    return fail(errc::too_large, fmt::format("connector config {} is over {} bytes", path,
                                             connector_config_bytes_max));
  }
  auto set = make_connectors(s.str(), outbox_dir);
  if (!set) return fail(set.error().code, fmt::format("{}: {}", path, set.error().message));
  return set;
}

}  // namespace auterity
