#pragma once
// The placement header on Kafka (engine/log.h, docs/tenant-moves.md "Scaling the partition
// count"): one record, key "header", in the compacted one-partition topic `<prefix>placement`,
// value text "base B\n" and, if any, "retired R1,R2,...\n". The last record wins. Written by
// `topics apply` before it raises the partition count of the co-partitioned topics (so the
// tenants keep their default partitions), read by every Kafka log when it opens. A deployment
// without the topic (never grown) places by its partition count.

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "engine/log.h"
#include "engine/result.h"

namespace auterity {

inline constexpr std::string_view placement_topic_suffix = "placement";
inline constexpr std::string_view placement_record_key = "header";

std::string encode_placement_header(const placement_header& h);
// nullopt if `text` is not a header.
std::optional<placement_header> decode_placement_header(std::string_view text);

// Reads the header from `topic` with a client made of `client_config` (bootstrap and security
// settings): nullopt if the topic does not exist or holds no header; errc::io if the broker does
// not answer within timeout_ms, errc::corrupt if the last record is not a header.
result<std::optional<placement_header>> read_kafka_placement(
    const std::map<std::string, std::string>& client_config, const std::string& topic,
    int timeout_ms);

// Produces `h` to `topic` (which must exist), acks=all, idempotent, and waits for it.
result<void> write_kafka_placement(const std::map<std::string, std::string>& client_config,
                                   const std::string& topic, const placement_header& h,
                                   int timeout_ms);

}  // namespace auterity
