#pragma once
// The Kafka log: the log interface over an Apache Kafka cluster, exactly-once.
//
//   commit()   one Kafka transaction: the appends (to topic = stream name, same partition)
//              and the consumer positions (send_offsets_to_transaction) commit together, or
//              not at all. Partition p's commits go through committer p mod committers, which
//              runs one transaction at a time, taking turns on its transactional producers;
//              different committers' transactions run at the same time. The transactional
//              ids are per engine instance ("auterity.<id>", "auterity.<id>.1", ...), so a
//              restarted instance fences its predecessor (init_transactions on each bumps its
//              epoch) and a stale instance cannot commit (docs/pipelined-transactions.md).
//   read()     read_committed consumers: aborted and open transactions are never seen.
//   position() the consumer group's committed offset (group "auterity.<group>"), stable: it
//              waits for an open transaction that holds pending offsets of the group.
//   end_offset() the log end (read_uncommitted high watermark); await_decided() polls the last
//              stable offset. A new owner's restore uses both: docs/ownership-handover.md.
//
// See engine/README.md ("Kafka backend") for threading and costs.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "engine/log.h"

namespace auterity {

// Where the time of a Kafka log's transactions goes, summed over all transactions (microseconds),
// for benchmarks and diagnosis (bench/KAFKA.md), summed over all committers. A transaction is
// one group commit of one committer: every batch queued for it while its previous one ran.
//   queue_us    per batch: from commit() to the start of the transaction that carries it
//   produce_us  produce calls (local enqueue; blocks only when the local queue is full)
//   offsets_us  send_offsets_to_transaction: AddOffsetsToTxn, then TxnOffsetCommit, each one
//               round trip, retried while the previous transaction's markers are written
//   flush_us    flush: until every record of the transaction is acknowledged (acks=all),
//               which includes AddPartitionsToTxn for its partitions
//   end_us      commit_transaction after the flush: EndTxn
struct kafka_commit_probe {
  std::atomic<uint64_t> transactions{0};
  std::atomic<uint64_t> batches{0};
  std::atomic<uint64_t> queue_us{0};
  std::atomic<uint64_t> produce_us{0};
  std::atomic<uint64_t> offsets_us{0};
  std::atomic<uint64_t> flush_us{0};
  std::atomic<uint64_t> end_us{0};
};

inline constexpr int transactional_producers_max = 2;
inline constexpr int kafka_committers_max = 8;

struct kafka_log_options {
  std::string bootstrap;                 // host:port[,host:port...]
  std::string instance_id = "engine-1";  // transactional.id "auterity.<instance_id>"[".<i>"]
  std::string topic_prefix;              // topic = prefix + stream name
  // The broker aborts a transaction left open this long. It bounds how long a paused or dead
  // instance's open transaction holds up a new owner's restore and every read_committed reader
  // of the partitions it wrote (docs/ownership-handover.md); Kafka Streams uses 10 s too.
  int transaction_timeout_ms = 10'000;
  // Transactional producers whose transactions take turns, one transaction at a time, 1 to
  // transactional_producers_max. With one, every transaction waits for the previous one's
  // markers (~20 ms with librdkafka 2.0.2: bench/KAFKA.md, "Where the commit time goes"); 1
  // keeps the single transactional id "auterity.<instance_id>" (e.g. for a literal
  // TransactionalId ACL).
  int transactional_producers = 2;
  // Committer threads, 1 to kafka_committers_max. Committer c commits the batches of the
  // partitions p with p mod committers == c (orchestrator and workers alike, so a partition's
  // commits keep their order), each with its own transactional_producers producers: committer
  // c's producer s is transactional id index c * transactional_producers + s ("auterity.<id>"
  // for 0, "auterity.<id>.<i>" above). Transactions of different committers run at the same
  // time; with one, every partition's transaction waits for the others' (bench/KAFKA.md,
  // "Concurrent committers"). Each costs its producers (threads, a connection per broker) and
  // their init_transactions at open; more than the partitions a process owns buys nothing.
  int committers = 2;
  int request_timeout_ms = 30'000;      // longest wait for one broker answer
  int topic_metadata_wait_ms = 10'000;  // how long missing topics are looked for at open
  int read_wait_ms_max = 10'000;        // longest a read waits for its first fetch answer
  // librdkafka properties for every client the engine makes (its producer, readers and group
  // members): security (security.protocol, sasl.*, ssl.*) and tuning, from the operator's
  // configuration. The engine's own settings (kafka_engine_owned() in engine/kafka_util.h) are
  // applied after them and win; the configuration loader refuses them with the reason.
  std::map<std::string, std::string> client_config;
  std::map<std::string, std::string> producer_config;  // extra librdkafka settings (tests)
  std::map<std::string, std::string> consumer_config;
  // Live group metadata for a logical group (kafka_membership::group_metadata_copy()), or
  // nullptr: offsets are then committed without a member, with no fencing by generation.
  std::function<void*(std::string_view group)> group_metadata;
  // Tools that only read (timeline, status, replay) open without a producer, so they can never
  // fence a running engine; commit() then fails with errc::invalid.
  bool read_only = false;
  // Processes that only append independent inputs and move no position (the API gateway): one
  // idempotent producer (enable.idempotence, acks=all), no transactions. commit() of a batch
  // with positions fails with errc::invalid; a commit returns once its records are acknowledged,
  // and read_committed readers see them at once (no transaction holds the stable offset). What
  // is lost against transactions: a batch is not atomic (a failed commit may have written part
  // of it) — as with a transactional commit whose outcome is unknown, callers answer "try
  // again", and the engine deduplicates a repeated start by its execution id. No transactional
  // id, so nothing fences a second process with the same instance id (it appends the same way).
  bool appends_only = false;
  // Filled with the phases of every transaction if set (shared: it may outlive the log).
  std::shared_ptr<kafka_commit_probe> probe;
};

// Connects, checks that all topics exist and are co-partitioned (same partition count), and
// initialises every committer's transactional producers (fencing any earlier producer of the
// same instance under those ids).
result<std::unique_ptr<log>> open_kafka_log(const kafka_log_options& options);

// Kafka consumer group id for a logical group ("orchestrator" -> "auterity.orchestrator").
std::string kafka_group_id(std::string_view group);

}  // namespace auterity
