#pragma once
// Where a replay reads from: a log (through the `log` interface only) and, where they are on
// this machine, the engine's state stores (for state comparison and chain ends).
//
// Today: the embedded log of a data directory. Kafka mode (see README.md, "Kafka") plugs in
// here: a read-only Kafka log plus the state stores of the engine node that ran the partitions.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/embedded_log.h"
#include "engine/log.h"
#include "engine/state_store.h"

namespace auterity {

struct replay_source {
  std::unique_ptr<log> events;
  std::vector<std::unique_ptr<state_store>> stores;  // by partition; null where there is none
  // Embedded log: bytes after a partition's last valid commit (a torn tail, or damage inside
  // committed data), left as they are; the records before them are what `events` serves.
  std::vector<log_damage> damage;

  std::vector<state_store*> store_ptrs() const;
};

// Opens <data_dir>/log read-only (engine/embedded_log.h: nothing is created, repaired or
// written; a shared lock, so the engine must not be running on it, errc::locked) and, with
// `with_state`, the state stores <data_dir>/state/pNNN that exist, read-only (RocksDB's
// OpenForReadOnly) — never creating one. Fails with errc::not_found naming the path if the
// directory does not exist or holds no log. Damage found is in `damage`, not on stderr.
result<replay_source> open_embedded_source(const std::string& data_dir, bool with_state);

// Opens the topics on a Kafka cluster read-only (no producer: a replay never fences the
// engine; read_committed: aborted and open transactions are not history) and, with
// `with_state`, the state stores under <data_dir>/state that exist, read-only (copies or the
// stores of the node that ran the partitions; without them the chain check still runs).
// `properties`: the operator's librdkafka settings (security: SASL/TLS), as the engine gets them.
result<replay_source> open_kafka_source(const std::string& bootstrap,
                                        const std::string& topic_prefix,
                                        const std::string& data_dir, bool with_state,
                                        const std::map<std::string, std::string>& properties = {});

}  // namespace auterity
