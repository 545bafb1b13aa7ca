#include "engine/kafka_util.h"

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
