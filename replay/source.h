#pragma once
// Where a replay reads from: a log (through the `log` interface only) and, where they are on
// this machine, the engine's state stores (for state comparison and chain ends).
//
// Today: the embedded log of a data directory. Kafka mode (see README.md, "Kafka") plugs in
// here: a read-only Kafka log plus the state stores of the engine node that ran the partitions.

#include <memory>
#include <string>
#include <vector>

#include "engine/log.h"
#include "engine/state_store.h"

namespace auterity {

struct replay_source {
  std::unique_ptr<log> events;
  std::vector<std::unique_ptr<state_store>> stores;  // by partition; null where there is none

  std::vector<state_store*> store_ptrs() const;
};

// Opens <data_dir>/log (the embedded log takes the directory's lock: the engine must not be
// running on it) and, with `with_state`, the state stores <data_dir>/state/pNNN that exist —
// never creating one. Fails with errc::not_found if there is no log in the directory.
result<replay_source> open_embedded_source(const std::string& data_dir, bool with_state);

// Opens the topics on a Kafka cluster read-only (no producer: a replay never fences the
// engine; read_committed: aborted and open transactions are not history) and, with
// `with_state`, the state stores under <data_dir>/state that exist (copies or the stores of the
// node that ran the partitions; without them the chain check still runs).
result<replay_source> open_kafka_source(const std::string& bootstrap,
                                        const std::string& topic_prefix,
                                        const std::string& data_dir, bool with_state);

}  // namespace auterity
