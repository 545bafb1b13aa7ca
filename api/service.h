#pragma once
// The HTTP API of the engine (api/README.md; the contract is api/openapi.json): commands go
// to ingress, reads come from the partitions' state stores and the executions stream.
//
//   api_server = http_server (api/http_server.h) + api_service
//   api_service: auth (api/auth.h) -> rate limit -> route -> tenant -> role -> handler
//     commands: ingress_batcher (one commit per partition for many requests), then 202, or
//       with ?wait_ms= the decision_watcher answers once the orchestrator decided
//     reads:    engine_access::with_store (the partition's RocksDB) and the log
//
// Threads: the server's io threads run handlers; one committer thread per partition; one
// watcher thread tails executions for decisions and ends waits at their deadline.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "api/auth.h"
#include "api/http_server.h"
#include "engine/clock.h"
#include "engine/log.h"
#include "engine/state_store.h"

namespace auterity {

// What the API needs of an engine. The node (node/node.h) provides all of it in process.
class engine_access {
 public:
  virtual ~engine_access() = default;
  virtual log& events() = 0;  // ingress appends and executions reads
  // Reads of past executions records (timelines, event streams): events() unless the engine
  // gives them a reader of their own (the gateway: so they do not seek the decision tail's).
  virtual log& history() { return events(); }
  virtual uint32_t partitions() const = 0;
  // Calls fn with partition p's state if this process has it; false if not.
  virtual bool with_store(uint32_t p, const std::function<void(const state_store&)>& fn) = 0;
  virtual bool ready() = 0;  // recovered and running

  // A change of the partition count through the API (POST /v1/partitions/scale; the embedded
  // engine under `run --http`, docs/tenant-moves.md "Moves while the engine runs"): the process
  // serving the engine stops it, scales the log as `partitions scale` does and opens it again.
  struct scale_status {
    std::string state = "none";  // none, requested, running, done, failed
    uint32_t to = 0;             // partitions taking tenants asked for
    std::string message;         // done: the plan and what was published; failed: why
  };
  virtual scale_status scale() { return {}; }
  // errc::invalid: this process cannot (a gateway on Kafka: `partitions scale --kafka`);
  // errc::locked: a scale is requested or running.
  virtual result<void> request_scale(uint32_t to) {
    (void)to;
    return fail(errc::invalid,
                "this process does not scale partitions (on Kafka: auterity partitions scale "
                "--kafka)");
  }
};

struct api_options {
  http_server_options http;
  std::string keys_file;           // key_store path; empty: no API keys
  std::optional<jwt_options> jwt;  // JWT bearer tokens; nullopt: off
  double rate_per_s = 1000;        // requests per second per credential (token bucket)
  double rate_burst = 2000;        // bucket size
};

class api_server {
 public:
  // Starts serving; errc::invalid/io/not_found for a bad address, a taken port or an unreadable
  // JWKS file.
  static result<std::unique_ptr<api_server>> start(engine_access& engine,
                                                   const api_options& options, clock& clk);
  ~api_server();  // stops the listener, the committers and the watcher, in that order
  uint16_t port() const;
  key_store& keys();

  struct impl;

 private:
  explicit api_server(std::unique_ptr<impl> impl);
  std::unique_ptr<impl> _impl;
};

// The OpenAPI 3 document (api/openapi.json, compiled in).
std::string_view openapi_document();

}  // namespace auterity
