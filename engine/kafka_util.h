// Small librdkafka helpers shared by the Kafka log, its group membership, the topic catalog and
// their tests and benches: owning handles, and building a client from a settings map without
// leaking the configuration on failure.
#pragma once

#include <librdkafka/rdkafka.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>

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

}  // namespace auterity
