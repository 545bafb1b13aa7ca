// Small librdkafka helpers shared by the Kafka log, its group membership, the topic catalog and
// their tests and benches: owning handles, and building a client from a settings map without
// leaking the configuration on failure.
#pragma once

#include <librdkafka/rdkafka.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/result.h"

namespace auterity {

// Frees a librdkafka object with its own destroy function.
template <auto destroy>
struct kafka_deleter {
  template <typename T>
  void operator()(T* p) const {
    destroy(p);
  }
};
// e.g. kafka_handle<rd_kafka_queue_t, rd_kafka_queue_destroy>
template <typename T, auto destroy>
using kafka_handle = std::unique_ptr<T, kafka_deleter<destroy>>;

// A configuration holding every one of `settings`. The caller owns it until rd_kafka_new (or
// kafka_client_new) takes it. Fails with errc::invalid naming the setting librdkafka rejects.
result<rd_kafka_conf_t*> kafka_conf_new(const std::map<std::string, std::string>& settings);

// rd_kafka_new(type, conf). On success the client owns `conf`; on failure `conf` is destroyed
// and the error (errc::io) reads "<what>: <librdkafka's reason>".
result<rd_kafka_t*> kafka_client_new(rd_kafka_type_t type, rd_kafka_conf_t* conf,
                                     std::string_view what);

// --- Settings from the operator (security, tuning) ---------------------------------------
//
// The engine passes librdkafka properties from its configuration file to every client it makes
// (`kafka_log_options::client_config`): security.protocol, sasl.*, ssl.*, client.id, socket and
// fetch tuning. Some properties carry the engine's guarantees and are set by the engine alone.

// Why `key` is the engine's own (e.g. "the engine's transactions: each instance's
// transactional.id fences its predecessor"), or nullopt if an operator may set it.
std::optional<std::string_view> kafka_engine_owned(std::string_view key);

// Whether `key` holds a secret (sasl.password, ssl.key.password, ssl.key.pem, ...): its value in
// a configuration file must be a reference, "env:NAME" or "file:/path" (engine/secrets.h), and is
// never printed.
bool kafka_secret_setting(std::string_view key);

// What a client can fail on before it does any work, checked at start so that a misconfigured
// engine exits naming the cause instead of retrying forever (librdkafka reconnects on an
// authentication or TLS failure without end).
struct kafka_preflight_options {
  std::map<std::string, std::string> settings;  // bootstrap.servers and client_config
  std::vector<std::string> topics;              // each must be described (Describe ACL)
  std::string group;        // the committed offsets of this group are read (Describe on the group)
  int timeout_ms = 30'000;  // longest wait for the cluster's first answer
};

// Connects and asks for the topics' metadata and the group's committed offsets. Fails with
// errc::unauthorized (authentication failed, a certificate not trusted or refused, a topic or
// group the principal may not use; the message names which and what to check) or errc::timeout
// (no broker answered within timeout_ms; the message says which transport error was seen).
// A missing topic is not its business: open_kafka_log reports it.
result<void> kafka_preflight(const kafka_preflight_options& options);

}  // namespace auterity
