#include "engine/kafka_placement.h"

#include <librdkafka/rdkafka.h>

#include <charconv>
#include <chrono>
#include <memory>

#include <fmt/core.h>

#include "engine/kafka_util.h"

namespace auterity {

namespace {

using rk_ptr = std::unique_ptr<rd_kafka_t, void (*)(rd_kafka_t*)>;

bool parse_u32(std::string_view text, uint32_t& out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc{} && end == text.data() + text.size() && !text.empty();
}

result<rk_ptr> client(rd_kafka_type_t type, std::map<std::string, std::string> conf) {
  auto c = kafka_conf_new(conf);
  if (!c) return std::unexpected(c.error());
  auto rk = kafka_client_new(type, *c, "placement client");
  if (!rk) return std::unexpected(rk.error());
  return rk_ptr(*rk, rd_kafka_destroy);
}

}  // namespace

std::string encode_placement_header(const placement_header& h) {
  std::string t = fmt::format("base {}\n", h.base);
  if (!h.retired.empty()) {
    t += "retired ";
    for (size_t i = 0; i < h.retired.size(); ++i)
      t += fmt::format("{}{}", i ? "," : "", h.retired[i]);
    t += "\n";
  }
  return t;
}

std::optional<placement_header> decode_placement_header(std::string_view t) {
  placement_header h;
  if (!t.starts_with("base ") || !t.ends_with('\n')) return std::nullopt;
  t.remove_prefix(5);
  size_t nl = t.find('\n');
  if (!parse_u32(t.substr(0, nl), h.base) || h.base == 0) return std::nullopt;
  t.remove_prefix(nl + 1);
  if (t.empty()) return h;
  if (!t.starts_with("retired ")) return std::nullopt;
  t.remove_prefix(8);
  nl = t.find('\n');
  if (nl + 1 != t.size()) return std::nullopt;
  std::string_view list = t.substr(0, nl);
  while (!list.empty()) {
    const size_t comma = list.find(',');
    uint32_t r = 0;
    if (!parse_u32(list.substr(0, comma), r)) return std::nullopt;
    if (!h.retired.empty() && r <= h.retired.back()) return std::nullopt;
    h.retired.push_back(r);
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
  }
  return h;
}

result<std::optional<placement_header>> read_kafka_placement(
    const std::map<std::string, std::string>& client_config, const std::string& topic,
    int timeout_ms) {
  std::map<std::string, std::string> conf = client_config;
  conf["group.id"] = "auterity.placement";
  conf["enable.auto.commit"] = "false";
  conf["enable.partition.eof"] = "true";
  conf["isolation.level"] = "read_committed";
  auto rk = client(RD_KAFKA_CONSUMER, conf);
  if (!rk) return std::unexpected(rk.error());
  // Does the topic exist? (Metadata for this topic only; auto-creation is off by default.)
  std::unique_ptr<rd_kafka_topic_t, void (*)(rd_kafka_topic_t*)> t(
      rd_kafka_topic_new(rk->get(), topic.c_str(), nullptr), rd_kafka_topic_destroy);
  const rd_kafka_metadata_t* md = nullptr;
  rd_kafka_resp_err_t err = rd_kafka_metadata(rk->get(), 0, t.get(), &md, timeout_ms);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return fail(errc::io, fmt::format("metadata of {}: {}", topic, rd_kafka_err2str(err)));
  }
  const bool exists = md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
                      md->topics[0].partition_cnt > 0;
  rd_kafka_metadata_destroy(md);
  if (!exists) return std::nullopt;
  int64_t low = 0, high = 0;
  err = rd_kafka_query_watermark_offsets(rk->get(), topic.c_str(), 0, &low, &high, timeout_ms);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return fail(errc::io, fmt::format("end of {}: {}", topic, rd_kafka_err2str(err)));
  }
  if (high <= low) return std::nullopt;
  std::unique_ptr<rd_kafka_topic_partition_list_t, void (*)(rd_kafka_topic_partition_list_t*)> list(
      rd_kafka_topic_partition_list_new(1), rd_kafka_topic_partition_list_destroy);
  rd_kafka_topic_partition_list_add(list.get(), topic.c_str(), 0)->offset = low;
  err = rd_kafka_assign(rk->get(), list.get());
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return fail(errc::io, fmt::format("assign {}: {}", topic, rd_kafka_err2str(err)));
  }
  std::optional<std::string> last;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return fail(errc::io, fmt::format("{}: the placement header was not read within {} ms", topic,
                                        timeout_ms));
    }
    std::unique_ptr<rd_kafka_message_t, void (*)(rd_kafka_message_t*)> m(
        rd_kafka_consumer_poll(rk->get(), 100), rd_kafka_message_destroy);
    if (!m) continue;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) break;
    if (m->err) {
      return fail(errc::io, fmt::format("read {}: {}", topic, rd_kafka_message_errstr(m.get())));
    }
    if (m->key &&
        std::string_view(static_cast<const char*>(m->key), m->key_len) == placement_record_key) {
      last.emplace(static_cast<const char*>(m->payload), m->len);
    }
    if (m->offset + 1 >= high) break;
  }
  rd_kafka_consumer_close(rk->get());
  if (!last) return std::nullopt;
  auto h = decode_placement_header(*last);
  if (!h) return fail(errc::corrupt, fmt::format("{}: the last header record is malformed", topic));
  return h;
}

result<void> write_kafka_placement(const std::map<std::string, std::string>& client_config,
                                   const std::string& topic, const placement_header& h,
                                   int timeout_ms) {
  std::map<std::string, std::string> conf = client_config;
  conf["acks"] = "all";
  conf["enable.idempotence"] = "true";
  auto c = kafka_conf_new(conf);
  if (!c) return std::unexpected(c.error());
  rd_kafka_conf_set_dr_msg_cb(*c, [](rd_kafka_t*, const rd_kafka_message_t* m, void*) {
    *static_cast<rd_kafka_resp_err_t*>(m->_private) = m->err;
  });
  auto made = kafka_client_new(RD_KAFKA_PRODUCER, *c, "placement producer");
  if (!made) return std::unexpected(made.error());
  rk_ptr rk(*made, rd_kafka_destroy);
  const std::string value = encode_placement_header(h);
  rd_kafka_resp_err_t delivered = RD_KAFKA_RESP_ERR__TIMED_OUT;
  rd_kafka_resp_err_t err =
      rd_kafka_producev(rk.get(), RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(0),
                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                        RD_KAFKA_V_KEY(placement_record_key.data(), placement_record_key.size()),
                        RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
                        RD_KAFKA_V_OPAQUE(&delivered), RD_KAFKA_V_END);
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) err = rd_kafka_flush(rk.get(), timeout_ms);
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) err = delivered;
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
    return fail(errc::io,
                fmt::format("write the placement header to {}: {}", topic, rd_kafka_err2str(err)));
  }
  return {};
}

}  // namespace auterity
