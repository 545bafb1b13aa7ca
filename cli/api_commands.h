#pragma once
// The HTTP API in the CLI (cli/api_commands.cc): `run --http`, `keys`, and the client side of
// publish/policy/start/signal/cancel when an engine serves the data directory.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "cli/cli.h"
#include "engine/clock.h"
#include "engine/result.h"

namespace auterity {

class node;
class scale_board;

struct http_flags {
  std::string address;  // empty: no API
  unsigned threads = 2;
  double rate_per_s = 1000;
  double burst = 2000;
  std::string tls_cert, tls_key;  // PEM; both set: HTTPS
  std::string jwks, issuer, audience;
  std::string tenant_claim = "tenant";
  std::string role_claim = "role";
};
void add_http_flags(CLI::App* cmd, http_flags& f);

// The API serving a node, and <data>/api/endpoint.json (URL, pid and a local admin key, mode
// 0600) while it runs, which the CLI on the same data directory finds.
class api_handle {
 public:
  struct state;
  explicit api_handle(std::unique_ptr<state> s);
  ~api_handle();  // stops serving, removes the endpoint file
  uint16_t port() const;
  void set_ready(bool ready);

 private:
  std::unique_ptr<state> _s;
};
// `board`: where POST /v1/partitions/scale puts its request for `run` (none: refused).
result<std::unique_ptr<api_handle>> start_http(node& n, const std::string& data_dir,
                                               const http_flags& f, clock& clk,
                                               scale_board* board = nullptr);

struct local_endpoint {
  std::string url;
  std::string key;
  std::string ca_file;  // HTTPS: the engine's certificate, trusted for this call
};
// The engine serving data_dir's API, if one runs.
std::optional<local_endpoint> find_endpoint(const std::string& data_dir);
// One command through the API with ?wait_ms: prints the engine's decision; exit 0 accepted,
// 1 rejected or refused, 2 no answer.
int call_api(const local_endpoint& ep, std::string_view method, const std::string& path,
             const std::string& body, std::string_view what);

// The CLI's commands through the API; JSON arguments that do not parse are refused here.
int api_publish(const local_endpoint& ep, const std::string& tenant, const std::string& definition,
                const std::string& params);
int api_policy(const local_endpoint& ep, const std::string& tenant, const std::string& policy);
int api_start(const local_endpoint& ep, const std::string& tenant, const std::string& id,
              const std::string& workflow, uint32_t version, const std::string& input);
int api_signal(const local_endpoint& ep, const std::string& tenant, const std::string& id,
               const std::string& name, const std::string& payload);
int api_cancel(const local_endpoint& ep, const std::string& tenant, const std::string& id,
               const std::string& reason);

// `tenants move` through the API: the move's decision (accepted, or rejected with the reason),
// then the tenant's placement until it is settled on `to` (at most wait_s). Exit 0 moved, 1
// rejected or refused, 2 no answer or not settled in time (the move goes on in the engine).
int api_move(const local_endpoint& ep, const std::string& tenant, uint32_t to, int wait_s);

// `partitions scale --to N` while an engine serves data_dir: POST /v1/partitions/scale, then
// GET /v1/partitions (through each new endpoint file while the engine stops and opens again)
// until the scale is done or failed; prints the engine's plan and outcome. Exit 0 done, 1
// refused or failed, 2 no answer within wait_s.
int api_scale(const std::string& data_dir, uint32_t to, int wait_s);

command_runner add_keys_commands(CLI::App& app);
// `auterity gateway --kafka B --http ADDR`: the API in front of Kafka, with a read replica of
// the state (api/replica.h). `defaults`: the configuration's Kafka settings, filled in after
// the command is declared and before it runs (flags win).
command_runner add_gateway_command(CLI::App& app, const kafka_defaults& defaults);

}  // namespace auterity
