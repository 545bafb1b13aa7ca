// `auterity run --http`, `auterity keys`, and the CLI's commands through a running engine's
// API (api/README.md).

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/core.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "api/node_access.h"
#include "api/replica.h"
#include "api/service.h"
#include "cli/api_commands.h"
#include "engine/http_client.h"
#include "engine/kafka_log.h"
#include "engine/metrics.h"

namespace auterity {

using json = nlohmann::json;

namespace {

std::string endpoint_path(const std::string& data_dir) { return data_dir + "/api/endpoint.json"; }

}  // namespace

void add_http_flags(CLI::App* cmd, http_flags& f) {
  cmd->add_option("--http", f.address,
                  "Serve the HTTP API (api/README.md) on this host:port, e.g. 127.0.0.1:8080 "
                  "(port 0: any free port; default: off)");
  cmd->add_option("--http-threads", f.threads, "Threads serving HTTP connections")
      ->capture_default_str()
      ->check(CLI::Range(1u, 64u));
  cmd->add_option("--http-rate", f.rate_per_s, "Requests per second per credential (429 past it)")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 1e9));
  cmd->add_option("--http-burst", f.burst, "Requests a credential may send at once")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 1e9));
  cmd->add_option("--http-tls-cert", f.tls_cert,
                  "Serve HTTPS with this certificate chain (PEM; with --http-tls-key)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--http-tls-key", f.tls_key, "Private key of --http-tls-cert (PEM)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--jwks", f.jwks,
                  "Accept JWT bearer tokens (RS256, ES256) signed by a key of this JWKS file")
      ->check(CLI::ExistingFile);
  cmd->add_option("--jwt-issuer", f.issuer, "Required iss of JWTs");
  cmd->add_option("--jwt-audience", f.audience, "Required aud of JWTs");
  cmd->add_option("--jwt-tenant-claim", f.tenant_claim, "JWT claim that holds the tenant")
      ->capture_default_str();
  cmd->add_option("--jwt-role-claim", f.role_claim,
                  "JWT claim that holds the role (publisher, auditor, operator, admin)")
      ->capture_default_str();
}

struct api_handle::state {
  std::unique_ptr<node_access> access;
  std::unique_ptr<api_server> server;
  std::string endpoint_file;
};

api_handle::api_handle(std::unique_ptr<state> s) : _s(std::move(s)) {}

api_handle::~api_handle() {
  std::error_code ec;
  std::filesystem::remove(_s->endpoint_file, ec);
  _s->server.reset();
}

uint16_t api_handle::port() const { return _s->server->port(); }

void api_handle::set_ready(bool ready) { _s->access->set_ready(ready); }

result<std::unique_ptr<api_handle>> start_http(node& n, const std::string& data_dir,
                                               const http_flags& f, clock& clk,
                                               scale_board* board) {
  auto s = std::make_unique<api_handle::state>();
  s->access = std::make_unique<node_access>(n, board);
  api_options o;
  o.http.address = f.address;
  o.http.threads = f.threads;
  o.http.tls_cert_file = f.tls_cert;
  o.http.tls_key_file = f.tls_key;
  o.keys_file = key_store::default_path(data_dir);
  o.rate_per_s = f.rate_per_s;
  o.rate_burst = f.burst;
  if (!f.jwks.empty()) {
    jwt_options j;
    j.jwks_file = f.jwks;
    j.issuer = f.issuer;
    j.audience = f.audience;
    j.tenant_claim = f.tenant_claim;
    j.role_claim = f.role_claim;
    o.jwt = j;
  }
  auto server = api_server::start(*s->access, o, clk);
  if (!server) return std::unexpected(server.error());
  s->server = std::move(*server);
  // The local CLI's way in: an admin key that lives as long as this process, in a file only
  // the data directory's owner can read (whoever can read it can write the log anyway).
  const std::string key = s->server->keys().add_ephemeral(any_tenant, api_role::admin, "klocal");
  std::string host = f.address.substr(0, f.address.rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "[::]") host = "127.0.0.1";
  const bool tls = !f.tls_cert.empty();
  json endpoint = {
      {"url", fmt::format("{}://{}:{}", tls ? "https" : "http", host, s->server->port())},
      {"pid", ::getpid()},
      {"key", key}};
  if (tls) endpoint["ca_file"] = std::filesystem::absolute(f.tls_cert).string();
  s->endpoint_file = endpoint_path(data_dir);
  std::error_code ec;
  std::filesystem::create_directories(data_dir + "/api", ec);
  const std::string tmp = s->endpoint_file + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const std::string text = endpoint.dump() + "\n";
  if (fd < 0 || ::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size()) ||
      ::close(fd) != 0 || ::rename(tmp.c_str(), s->endpoint_file.c_str()) != 0) {
    return fail(errc::io, fmt::format("cannot write {}", s->endpoint_file));
  }
  return std::unique_ptr<api_handle>(new api_handle(std::move(s)));
}

// ----------------------------------------------------------------------------- the client

std::optional<local_endpoint> find_endpoint(const std::string& data_dir) {
  std::ifstream in(endpoint_path(data_dir));
  if (!in) return std::nullopt;
  json j = json::parse(in, nullptr, false);
  if (!j.is_object() || !j.contains("url") || !j.contains("pid") || !j.contains("key")) {
    return std::nullopt;
  }
  const auto pid = j["pid"].get<int64_t>();
  // A file left by an engine that was killed: nobody serves.
  if (pid <= 0 || (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)) return std::nullopt;
  return local_endpoint{j["url"].get<std::string>(), j["key"].get<std::string>(),
                        j.value("ca_file", "")};
}

namespace {

// One request to the engine serving the data directory, with its local admin key.
result<http_response> send(const local_endpoint& ep, std::string_view method,
                           const std::string& path, const std::string& body) {
  http_request r;
  r.method = std::string(method);
  r.url = ep.url + path;
  r.headers = {{"Authorization", "Bearer " + ep.key}, {"Content-Type", "application/json"}};
  r.body = body;
  r.deadline_ms = wall_now_ms() + 40'000;
  http_tls_options tls;
  tls.ca_file = ep.ca_file;
  return http_call(r, tls);
}

}  // namespace

int call_api(const local_endpoint& ep, std::string_view method, const std::string& path,
             const std::string& body, std::string_view what) {
  auto resp = send(ep, method, path, body);
  if (!resp) {
    fmt::print(stderr, "auterity: the engine serving this data directory did not answer: {}\n",
               resp.error().message);
    return 2;
  }
  json j = json::parse(resp->body, nullptr, false);
  if (resp->status >= 200 && resp->status < 300) {
    const std::string outcome = j.is_object() ? j.value("outcome", "") : "";
    fmt::print("{} through the running engine's API: {}{}\n", what,
               outcome == "pending" ? "submitted, no decision yet" : outcome,
               j.is_object() && j.contains("version")
                   ? fmt::format(" (version {})", j["version"].dump())
                   : "");
    return 0;
  }
  if (j.is_object() && j.contains("rejection")) {
    const json& rej = j["rejection"];
    fmt::print(stderr, "auterity: rejected: {} (code {}): {}\n", rej.value("name", ""),
               rej.value("code", 0), rej.value("reason", ""));
    return 1;
  }
  fmt::print(stderr, "auterity: the API answered {}: {}\n", resp->status,
             j.is_object() ? j.value("detail", resp->body) : resp->body);
  return 1;
}

namespace {

std::optional<json> parse_arg(const std::string& text, std::string_view what) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) {
    fmt::print(stderr, "auterity: {} is not valid JSON\n", what);
    return std::nullopt;
  }
  return j;
}

constexpr std::string_view wait_query = "?wait_ms=10000";

}  // namespace

int api_publish(const local_endpoint& ep, const std::string& tenant, const std::string& definition,
                const std::string& params) {
  auto d = parse_arg(definition, "the definition");
  if (!d) return 2;
  json body = {{"definition", *d}};
  if (!params.empty()) {
    auto p = parse_arg(params, "--params");
    if (!p) return 2;
    body["params"] = *p;
  }
  return call_api(ep, "POST", fmt::format("/v1/tenants/{}/definitions{}", tenant, wait_query),
                  body.dump(), "publish");
}

int api_policy(const local_endpoint& ep, const std::string& tenant, const std::string& policy) {
  auto p = parse_arg(policy, "the policy");
  if (!p) return 2;
  return call_api(ep, "PUT", fmt::format("/v1/tenants/{}/policy{}", tenant, wait_query), p->dump(),
                  "policy");
}

int api_start(const local_endpoint& ep, const std::string& tenant, const std::string& id,
              const std::string& workflow, uint32_t version, const std::string& input) {
  auto in = parse_arg(input, "--input");
  if (!in) return 2;
  json body = {{"execution_id", id}, {"workflow", workflow}, {"version", version}, {"input", *in}};
  return call_api(ep, "POST", fmt::format("/v1/tenants/{}/executions{}", tenant, wait_query),
                  body.dump(), "start");
}

int api_signal(const local_endpoint& ep, const std::string& tenant, const std::string& id,
               const std::string& name, const std::string& payload) {
  auto p = parse_arg(payload, "--payload");
  if (!p) return 2;
  return call_api(ep, "POST",
                  fmt::format("/v1/tenants/{}/executions/{}/signals{}", tenant, id, wait_query),
                  json{{"name", name}, {"payload", *p}}.dump(), "signal");
}

int api_cancel(const local_endpoint& ep, const std::string& tenant, const std::string& id,
               const std::string& reason) {
  return call_api(ep, "POST",
                  fmt::format("/v1/tenants/{}/executions/{}/cancel{}", tenant, id, wait_query),
                  json{{"reason", reason}}.dump(), "cancel");
}

int api_move(const local_endpoint& ep, const std::string& tenant, uint32_t to, int wait_s) {
  const int rc = call_api(ep, "POST", fmt::format("/v1/tenants/{}/move{}", tenant, wait_query),
                          json{{"to", to}}.dump(), "move");
  if (rc != 0) return rc;
  // Accepted: the source handed the state over in its commit; the target installs it when it
  // reads the chunks (at once, when it runs). Follow it until the tenant is settled there.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait_s);
  json last;
  while (std::chrono::steady_clock::now() < deadline) {
    auto resp = send(ep, "GET", fmt::format("/v1/tenants/{}/placement", tenant), "");
    if (resp && resp->status == 200) {
      last = json::parse(resp->body, nullptr, false);
      if (last.is_object() && last.value("partition", UINT32_MAX) == to &&
          !last.value("moving", true)) {
        fmt::print("moved: tenant {} decides on partition {} (epoch {})\n", tenant, to,
                   last.value("epoch", 0));
        return 0;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  fmt::print(stderr,
             "auterity: tenant {} is not settled on partition {} after {} s (placement: {}); the "
             "move goes on: GET /v1/tenants/{}/placement\n",
             tenant, to, wait_s, last.is_object() ? last.dump() : "not read", tenant);
  return 2;
}

int api_scale(const std::string& data_dir, uint32_t to, int wait_s) {
  auto ep = find_endpoint(data_dir);
  if (!ep) {
    fmt::print(stderr, "auterity: no engine serves {} any more\n", data_dir);
    return 2;
  }
  auto posted = send(*ep, "POST", "/v1/partitions/scale", json{{"to", to}}.dump());
  if (!posted) {
    fmt::print(stderr, "auterity: the engine's API did not answer: {}\n", posted.error().message);
    return 2;
  }
  if (posted->status != 202) {
    json j = json::parse(posted->body, nullptr, false);
    fmt::print(stderr, "auterity: scale refused by the running engine ({}): {}\n", posted->status,
               j.is_object() ? j.value("detail", posted->body) : posted->body);
    return 1;
  }
  fmt::print(stderr,
             "auterity: scale to {} accepted by the running engine: it stops, scales the log and "
             "opens again (its API is down meanwhile)\n",
             to);
  // Followed through each new endpoint file: the API is opened again on the same address (a
  // new port if it was 0).
  const auto began = std::chrono::steady_clock::now();
  const auto deadline = began + std::chrono::seconds(wait_s);
  while (std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto now_ep = find_endpoint(data_dir);
    if (!now_ep) continue;
    auto resp = send(*now_ep, "GET", "/v1/partitions", "");
    if (!resp || resp->status != 200) continue;
    json j = json::parse(resp->body, nullptr, false);
    if (!j.is_object() || !j.contains("scale")) continue;
    const json& sc = j["scale"];
    const std::string state = sc.value("state", "");
    if (sc.value("to", 0u) != to || (state != "done" && state != "failed")) continue;
    fmt::print("{}", sc.value("message", ""));
    if (state == "failed") return 1;
    fmt::print("the engine runs {} partitions again after {:.1f} s\n", j.value("partitions", 0u),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count());
    return 0;
  }
  fmt::print(stderr,
             "auterity: the engine did not report the scale to {} within {} s: GET "
             "/v1/partitions shows it\n",
             to, wait_s);
  return 2;
}

// ----------------------------------------------------------------------------------- keys

command_runner add_keys_commands(CLI::App& app) {
  struct flags {
    std::string data_dir = "auterity-data";
    std::string tenant;
    std::string role;
    std::string name;
    std::string id;
  };
  auto f = std::make_shared<flags>();
  auto* keys = app.add_subcommand(
      "keys",
      "API keys of the HTTP API (api/README.md): create (shown once), list, revoke. Stored as "
      "SHA-256 hashes in <data>/api/keys.jsonl, which is also their audit trail; a running "
      "engine picks changes up within a second");
  keys->require_subcommand(1);
  auto* create = keys->add_subcommand("create", "Create a key and print it (once)");
  auto* list = keys->add_subcommand("list", "List keys (ids, tenants, roles; never secrets)");
  auto* revoke = keys->add_subcommand("revoke", "Revoke a key by id");
  for (CLI::App* c : {create, list, revoke}) {
    c->add_option("--data", f->data_dir, "Data directory")->capture_default_str();
  }
  create->add_option("--tenant", f->tenant, "Tenant id ('*' with --role admin: every tenant)")
      ->required();
  create
      ->add_option("--role", f->role,
                   "publisher (start, signal), auditor (read), operator (everything of its "
                   "tenant), admin")
      ->required()
      ->check(CLI::IsMember({"publisher", "auditor", "operator", "admin"}));
  create->add_option("--name", f->name, "What the key is for (shown by list)");
  list->add_option("--tenant", f->tenant, "Only this tenant's keys");
  revoke->add_option("--id", f->id, "Key id (k...)")->required();
  return [=]() -> std::optional<int> {
    key_store store(key_store::default_path(f->data_dir));
    if (create->parsed()) {
      auto k = store.create(f->tenant, *parse_role(f->role), f->name, wall_now_ms());
      if (!k) {
        fmt::print(stderr, "auterity: {}\n", k.error().message);
        return 2;
      }
      fmt::print("{}\n", *k);
      fmt::print(stderr,
                 "auterity: key for tenant {} with role {}; this is the only time it is shown\n",
                 f->tenant, f->role);
      return 0;
    }
    if (list->parsed()) {
      auto all = store.list();
      if (!all) {
        fmt::print(stderr, "auterity: {}\n", all.error().message);
        return 2;
      }
      for (const key_entry& k : *all) {
        if (!f->tenant.empty() && k.tenant != f->tenant) continue;
        fmt::print("{:<18} {:<16} {:<10} {:<8} {}\n", k.id, k.tenant, role_name(k.role),
                   k.revoked_ms ? "revoked" : "live", k.name);
      }
      return 0;
    }
    if (revoke->parsed()) {
      if (auto r = store.revoke(f->id, wall_now_ms()); !r) {
        fmt::print(stderr, "auterity: {}\n", r.error().message);
        return 1;
      }
      fmt::print("revoked {}\n", f->id);
      return 0;
    }
    return std::nullopt;
  };
}

}  // namespace auterity

// --------------------------------------------------------------------------------- gateway

namespace auterity {

namespace {

// The API over a Kafka log: commands and decisions through `commands`, reads from the replica
// (api/replica.h), or none (503) with --no-reads.
class gateway_access final : public engine_access {
 public:
  // `history`: the reads of timelines and event streams (null: through `commands`).
  gateway_access(std::unique_ptr<log> commands, std::unique_ptr<log> history,
                 std::unique_ptr<log_replica> replica)
      : _log(std::move(commands)), _history(std::move(history)), _replica(std::move(replica)) {}
  log& events() override { return *_log; }
  log& history() override { return _history ? *_history : *_log; }
  uint32_t partitions() const override { return _log->partition_count(); }
  bool with_store(uint32_t p, const std::function<void(const state_store&)>& fn) override {
    return _replica && _replica->with_store(p, fn);
  }
  // Ready for commands at once; for reads once the replica has caught up.
  bool ready() override { return !_replica || _replica->caught_up(); }
  log_replica* replica() { return _replica.get(); }

 private:
  std::unique_ptr<log> _log;
  std::unique_ptr<log> _history;
  std::unique_ptr<log_replica> _replica;
};

// What a start of the replica did with each partition's checkpoint (api/replica.h, Starting).
void print_replica_starts(const std::string& instance, const log_replica& r) {
  std::string resumed;
  for (uint32_t p = 0; p < r.starts().size(); ++p) {
    const replica_partition_start& s = r.starts()[p];
    if (s.how == replica_start::resumed) {
      resumed += fmt::format("{}{} at {}", resumed.empty() ? "" : ", ", p, s.from);
      continue;
    }
    fmt::print(stderr,
               "auterity: gateway {}: read replica: partition {} rebuilt from offset 0 ({}: {})\n",
               instance, p, replica_start_name(s.how), s.detail);
  }
  if (!resumed.empty()) {
    fmt::print(stderr,
               "auterity: gateway {}: read replica: resumed from its checkpoints (partition {}; "
               "checked and opened in {} ms)\n",
               instance, resumed, r.open_ms());
  }
}

std::atomic<bool> g_gateway_stop{false};
void on_gateway_signal(int) { g_gateway_stop = true; }

}  // namespace

command_runner add_gateway_command(CLI::App& app, const kafka_defaults& defaults) {
  struct flags {
    std::string kafka;
    std::string instance = "gateway-1";
    std::string topic_prefix;
    std::string data_dir = "auterity-gateway";
    std::string metrics;  // Prometheus /metrics address; empty: off
    bool no_reads = false;
    std::string config;  // read by main() before parsing (load_effective_config)
    http_flags http;
  };
  auto f = std::make_shared<flags>();
  auto* cmd = app.add_subcommand(
      "gateway",
      "An HTTP API gateway in front of Kafka (api/README.md): commands go to ingress, ?wait_ms= "
      "answers from the executions topic, reads come from a replica of the state built from "
      "the executions topic under --data; run several behind a load balancer, each with its own "
      "--instance");
  cmd->add_option("--kafka", f->kafka, "Bootstrap servers (or kafka.bootstrap in --config)");
  cmd->add_option("--instance", f->instance,
                  "Gateway instance id (transactional.id auterity.<id>; unique per gateway)")
      ->capture_default_str();
  cmd->add_option("--topic-prefix", f->topic_prefix, "Kafka topic name prefix");
  cmd->add_option("--config", f->config,
                  "Configuration file (TOML, cli/README.md; also AUTERITY_CONFIG): "
                  "kafka.bootstrap, kafka.topic_prefix and kafka.properties (SASL/TLS)");
  cmd->add_option("--data", f->data_dir,
                  "Directory of the API key file (api/keys.jsonl) and of the read replica "
                  "(replica/, resumed from its checkpoint at a restart)")
      ->capture_default_str();
  cmd->add_option("--metrics", f->metrics,
                  "Serve Prometheus /metrics (the read replica's) and /ready on this address "
                  "(port 0: any free port; default: off)");
  cmd->add_flag("--no-reads", f->no_reads,
                "Keep no replica: reads of state are answered 503 (commands only)");
  add_http_flags(cmd, f->http);
  return [=, &defaults]() -> std::optional<int> {
    if (!cmd->parsed()) return std::nullopt;
    if (f->http.address.empty()) {
      fmt::print(stderr, "auterity: gateway needs --http host:port\n");
      return 2;
    }
    kafka_log_options k;
    k.bootstrap = f->kafka.empty() ? defaults.bootstrap : f->kafka;
    k.instance_id = f->instance;
    k.topic_prefix = f->topic_prefix.empty() ? defaults.topic_prefix : f->topic_prefix;
    k.client_config = defaults.properties;
    k.appends_only = true;  // commands are independent inputs: no transactions needed
    if (k.bootstrap.empty()) {
      fmt::print(stderr, "auterity: gateway needs --kafka (or kafka.bootstrap in the config)\n");
      return 2;
    }
    auto l = open_kafka_log(k);
    if (!l) {
      fmt::print(stderr, "auterity: {} ({})\n", l.error().message, errc_name(l.error().code));
      return 2;
    }
    // Read-only logs of their own, so no reader seeks another's consumer back and forth: the
    // replica's tail, and the timelines' and event streams' point reads (the decision tail
    // keeps the commands log's). Each costs a consumer per partition it reads.
    kafka_log_options ro = k;
    ro.appends_only = false;
    ro.read_only = true;
    std::unique_ptr<log> history;
    std::unique_ptr<log_replica> replica;
    if (!f->no_reads) {
      auto source = open_kafka_log(ro);
      if (source) {
        auto reads = open_kafka_log(ro);
        if (!reads) source = std::unexpected(reads.error());
        if (reads) history = std::move(*reads);
      }
      if (!source) {
        fmt::print(stderr, "auterity: {} ({})\n", source.error().message,
                   errc_name(source.error().code));
        return 2;
      }
      auto r = log_replica::start(std::move(*source), f->data_dir + "/replica",
                                  fmt::format("kafka topic prefix '{}'", k.topic_prefix));
      if (!r) {
        fmt::print(stderr, "auterity: the read replica: {} ({})\n", r.error().message,
                   errc_name(r.error().code));
        return 2;
      }
      replica = std::move(*r);
      print_replica_starts(f->instance, *replica);
    }
    gateway_access access(std::move(*l), std::move(history), std::move(replica));
    std::unique_ptr<metrics_server> metrics;
    if (metrics_enabled(f->metrics)) {
      auto m = metrics_server::start(
          f->metrics,
          [&access](metrics_writer& w) {
            if (access.replica()) access.replica()->collect(w);
          },
          [&access]() -> std::optional<std::string> {
            if (access.ready()) return std::nullopt;
            return std::string("the read replica is catching up");
          });
      if (!m) {
        fmt::print(stderr, "auterity: --metrics: {} ({})\n", m.error().message,
                   errc_name(m.error().code));
        return 2;
      }
      metrics = std::move(*m);
      fmt::print(stderr, "auterity: gateway {}: Prometheus metrics on port {} (/metrics)\n",
                 f->instance, metrics->port());
    }
    api_options o;
    o.http.address = f->http.address;
    o.http.threads = f->http.threads;
    o.http.tls_cert_file = f->http.tls_cert;
    o.http.tls_key_file = f->http.tls_key;
    o.keys_file = key_store::default_path(f->data_dir);
    o.rate_per_s = f->http.rate_per_s;
    o.rate_burst = f->http.burst;
    if (!f->http.jwks.empty()) {
      o.jwt = jwt_options{f->http.jwks, f->http.issuer, f->http.audience, f->http.tenant_claim,
                          f->http.role_claim};
    }
    system_clock clk;
    auto server = api_server::start(access, o, clk);
    if (!server) {
      fmt::print(stderr, "auterity: {} ({})\n", server.error().message,
                 errc_name(server.error().code));
      return 2;
    }
    std::signal(SIGINT, on_gateway_signal);
    std::signal(SIGTERM, on_gateway_signal);
    fmt::print(stderr, "auterity: gateway {} on Kafka {}: HTTP API on port {} ({} partitions)\n",
               f->instance, k.bootstrap, (*server)->port(), access.partitions());
    const auto started = std::chrono::steady_clock::now();
    bool told = access.replica() == nullptr;
    std::string error_told;
    while (!g_gateway_stop) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      log_replica* r = access.replica();
      if (!r) continue;
      if (!told && r->caught_up()) {
        told = true;
        fmt::print(stderr,
                   "auterity: gateway {}: read replica caught up ({} records in {} ms, {} "
                   "skipped); reads are served\n",
                   f->instance, r->applied(),
                   std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now() - started)
                       .count(),
                   r->skipped());
      }
      if (std::string e = r->last_error(); e != error_told) {
        if (!e.empty())
          fmt::print(stderr, "auterity: gateway {}: read replica: {}\n", f->instance, e);
        error_told = std::move(e);
      }
    }
    server->reset();
    metrics.reset();
    if (log_replica* r = access.replica()) {
      // Its memtables out to table files, so the next start replays no write-ahead log.
      const auto t0 = std::chrono::steady_clock::now();
      if (auto s = r->stop(); !s) {
        fmt::print(stderr, "auterity: gateway {}: read replica: {} (the next start replays it)\n",
                   f->instance, s.error().message);
      } else {
        fmt::print(stderr, "auterity: gateway {}: read replica flushed in {} ms\n", f->instance,
                   std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now() - t0)
                       .count());
      }
    }
    return 0;
  };
}

}  // namespace auterity
