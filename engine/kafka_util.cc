#include "engine/kafka_util.h"

#include <algorithm>
#include <chrono>
#include <mutex>

#include <fmt/core.h>

namespace auterity {

result<rd_kafka_conf_t*> kafka_conf_new(const std::map<std::string, std::string>& settings) {
  rd_kafka_conf_t* c = rd_kafka_conf_new();
  char err[512];
  for (const auto& [k, v] : settings) {
    if (rd_kafka_conf_set(c, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(c);
      return fail(errc::invalid, fmt::format("kafka setting {}={}: {}", k, v, err));
    }
  }
  return c;
}

result<rd_kafka_t*> kafka_client_new(rd_kafka_type_t type, rd_kafka_conf_t* conf,
                                     std::string_view what) {
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(type, conf, err, sizeof err);
  if (!rk) {
    rd_kafka_conf_destroy(conf);  // rd_kafka_new takes the configuration only on success
    return fail(errc::io, fmt::format("{}: {}", what, err));
  }
  return rk;
}

}  // namespace auterity

namespace auterity {

namespace {

struct owned_setting {
  std::string_view key;
  std::string_view why;
};

constexpr std::string_view why_txn =
    "the engine's transactions: one transactional id per instance fences its predecessor "
    "(set --instance), and the timeout bounds a handover (docs/ownership-handover.md)";
constexpr std::string_view why_eos = "exactly-once: the engine's producer is idempotent, acks=all";
constexpr std::string_view why_read =
    "exactly-once: the engine reads committed records only and keeps its positions in its own "
    "transactions";
constexpr std::string_view why_group =
    "the engine's group membership (static members, range assignment, a 6 s session: "
    "docs/ownership-handover.md)";

constexpr owned_setting owned_settings[] = {
    {"bootstrap.servers", "set kafka.bootstrap (or --kafka) instead"},
    {"metadata.broker.list", "set kafka.bootstrap (or --kafka) instead"},
    {"transactional.id", why_txn},
    {"transaction.timeout.ms", why_txn},
    {"enable.idempotence", why_eos},
    {"enable.gapless.guarantee", why_eos},
    {"acks", why_eos},
    {"request.required.acks", why_eos},
    {"isolation.level", why_read},
    {"enable.auto.commit", why_read},
    {"enable.auto.offset.store", why_read},
    {"auto.commit.interval.ms", why_read},
    {"auto.offset.reset", why_read},
    {"enable.partition.eof", why_read},
    {"partitioner",
     "tenant placement: the engine places every record on its tenant's partition "
     "itself (murmur2, docs/design-notes.md point 1)"},
    {"group.id", why_group},
    {"group.instance.id", why_group},
    {"group.protocol", why_group},
    {"group.protocol.type", why_group},
    {"partition.assignment.strategy", why_group},
    {"session.timeout.ms", why_group},
    {"heartbeat.interval.ms", why_group},
    {"message.max.bytes", "the engine's record_bytes_max (engine/log.h)"},
};

// The first failure that settles the question, reported by librdkafka's error callback.
struct preflight_sink {
  std::mutex mu;
  std::optional<error> fatal;  // authentication or TLS: no retry will help
  std::string last_transport;  // connection failures: only the timeout ends them
};

void on_preflight_error(rd_kafka_t*, int err, const char* reason, void* opaque) {
  auto* sink = static_cast<preflight_sink*>(opaque);
  std::lock_guard lock(sink->mu);
  const auto code = static_cast<rd_kafka_resp_err_t>(err);
  if (code == RD_KAFKA_RESP_ERR__AUTHENTICATION) {
    if (!sink->fatal) {
      sink->fatal = error{errc::unauthorized,
                          fmt::format("Kafka authentication failed: {} (check sasl.username, "
                                      "sasl.password and sasl.mechanism)",
                                      reason)};
    }
  } else if (code == RD_KAFKA_RESP_ERR__SSL) {
    if (!sink->fatal) {
      sink->fatal = error{errc::unauthorized,
                          fmt::format("Kafka TLS handshake failed: {} (check ssl.ca.location for "
                                      "the broker's CA, and the client certificate and key)",
                                      reason)};
    }
  } else if (std::string_view(reason).find("SSL routines") != std::string_view::npos) {
    // A TLS alert after the handshake started: the broker refused our certificate (or none).
    if (!sink->fatal) {
      sink->fatal = error{errc::unauthorized,
                          fmt::format("Kafka TLS handshake refused: {} (the broker did not accept "
                                      "the client certificate: check ssl.certificate.location, "
                                      "ssl.key.location and that the broker trusts its CA)",
                                      reason)};
    }
  } else {
    sink->last_transport = reason;
  }
}

std::optional<error> preflight_failure(rd_kafka_t* rk, preflight_sink& sink) {
  rd_kafka_poll(rk, 0);  // serves the error callback
  std::lock_guard lock(sink.mu);
  return sink.fatal;
}

}  // namespace

std::optional<std::string_view> kafka_engine_owned(std::string_view key) {
  for (const owned_setting& s : owned_settings) {
    if (s.key == key) return s.why;
  }
  return std::nullopt;
}

bool kafka_secret_setting(std::string_view key) {
  return key.ends_with("password") || key.ends_with("secret") || key == "ssl.key.pem" ||
         key == "sasl.oauthbearer.config";
}

result<void> kafka_preflight(const kafka_preflight_options& options) {
  auto sink = std::make_unique<preflight_sink>();
  std::map<std::string, std::string> settings = options.settings;
  settings["group.id"] = options.group;
  settings["enable.auto.commit"] = "false";
  // The offset fetch below only checks permissions. read_committed would ask with
  // require_stable and wait while a transaction holding the group's offsets is open (a paused
  // predecessor's: docs/ownership-handover.md), delaying this instance's join until it ends.
  settings["isolation.level"] = "read_uncommitted";
  // librdkafka logs each failed connection attempt itself; the error callback is what we report.
  settings["log_level"] = "0";
  auto conf = kafka_conf_new(settings);
  if (!conf) return std::unexpected(conf.error());
  rd_kafka_conf_set_error_cb(*conf, on_preflight_error);
  rd_kafka_conf_set_opaque(*conf, sink.get());
  auto made = kafka_client_new(RD_KAFKA_CONSUMER, *conf, "kafka client");
  if (!made) return std::unexpected(made.error());
  kafka_handle<rd_kafka_t, rd_kafka_destroy> rk(*made);

  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(options.timeout_ms);
  constexpr int slice_ms = 250;  // how often the error callback is served while waiting
  for (const std::string& t : options.topics) {
    while (true) {
      kafka_handle<rd_kafka_topic_t, rd_kafka_topic_destroy> rkt(
          rd_kafka_topic_new(rk.get(), t.c_str(), nullptr));
      const rd_kafka_metadata_t* md = nullptr;
      const rd_kafka_resp_err_t err = rd_kafka_metadata(rk.get(), 0, rkt.get(), &md, slice_ms);
      if (auto f = preflight_failure(rk.get(), *sink)) return std::unexpected(*f);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const rd_kafka_resp_err_t topic_err =
            md->topic_cnt > 0 ? md->topics[0].err : RD_KAFKA_RESP_ERR_NO_ERROR;
        rd_kafka_metadata_destroy(md);
        if (topic_err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
          return fail(errc::unauthorized,
                      fmt::format("Kafka refused to describe topic {}: the principal lacks "
                                  "Describe, Read and Write on it (README.md, \"Kafka "
                                  "permissions\")",
                                  t));
        }
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        std::lock_guard lock(sink->mu);
        return fail(errc::timeout,
                    fmt::format("no Kafka broker answered within {} ms ({}{})", options.timeout_ms,
                                rd_kafka_err2str(err),
                                sink->last_transport.empty() ? "" : "; " + sink->last_transport));
      }
    }
  }
  if (options.topics.empty() || options.group.empty()) return {};
  kafka_handle<rd_kafka_topic_partition_list_t, rd_kafka_topic_partition_list_destroy> parts(
      rd_kafka_topic_partition_list_new(1));
  rd_kafka_topic_partition_list_add(parts.get(), options.topics.front().c_str(), 0);
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  rd_kafka_resp_err_t err =
      rd_kafka_committed(rk.get(), parts.get(), std::max<int>(slice_ms, int(left.count())));
  if (auto f = preflight_failure(rk.get(), *sink)) return std::unexpected(*f);
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) err = parts->elems[0].err;
  if (err == RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED) {
    return fail(errc::unauthorized,
                fmt::format("Kafka refused the consumer group {}: the principal lacks Read and "
                            "Describe on it (README.md, \"Kafka permissions\")",
                            options.group));
  }
  if (err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
    return fail(errc::unauthorized,
                fmt::format("Kafka refused the committed offsets of {} on {}: the principal "
                            "lacks Describe on the topic (README.md, \"Kafka permissions\")",
                            options.group, options.topics.front()));
  }
  return {};  // other answers (e.g. no offsets yet) are the engine's to handle
}

}  // namespace auterity
