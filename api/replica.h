#pragma once
// A gateway's read replica (api/README.md, "On Kafka"): every partition's state built from the
// executions topic, for the reads of `auterity gateway`, which owns no partition.
//
//   one thread, for each partition in turn: read the committed records of executions after the
//   last one applied (read_committed, a read-only Kafka log of its own), apply them through the
//   processors' appliers (replay/state_replay.h: the code the engine runs, so the replica is
//   the replay of the log, key for key), write them to the partition's RocksDB with the next
//   offset as checkpoint (and the checkpoint's meta: meta_of()).
//
// Starting: each partition resumes from the replica's own checkpoint under `dir` — the state
// in RocksDB, the offset it covers and which log it came from, written in one atomic batch
// after every applied batch (state_rebuilder::open_resumable: the same apply path as a
// rebuild) — so a restart reads only what was appended since. A partition is rebuilt from
// offset 0 instead (its directory emptied first) when its checkpoint is
//   missing          no store (first start, or --data emptied),
//   unreadable       the store does not open, or its checkpoint names no log,
//   another log      written from another log (`identity`: the topic prefix) or partition count,
//   ahead of log     the checkpoint is past the log's end (topics deleted and recreated),
//   not in log       the record the checkpoint ends with is not at its offset any more (topics
//                    recreated and written past the checkpoint, or another cluster);
// starts() says which and why (the gateway prints it and exports it in /metrics). A broker
// that does not answer these checks fails start() (nothing is thrown away for it). Until every
// partition reached the end it saw at start, with_store() answers false (the API answers 503
// with Retry-After, and /v1/ready 503). Then it follows the log.
//
// Stopping: stop() (or the destructor) ends the thread, then writes each partition's memtables
// out to table files (state_store::flush_memtables), so the next start opens the stores without
// replaying their write-ahead logs (up to write_buffer_bytes each; bench/README.md, "Restarting
// a gateway"). A stop that is killed before it finished leaves those logs to the next open.
//
// Crash safety: the checkpoint is written only with the state it covers (one RocksDB write
// batch, not fsynced: a write lost in a crash leaves an older checkpoint with its older state,
// and the records after it are applied again from there), so a replica killed at any point
// resumes consistent. Fault points (engine/fault.h) for the tests of it (api_replica_test):
//   replica.applied   a batch applied in memory, before the write of its state and checkpoint
//   replica.written   after that write returned (in RocksDB's write-ahead log, not fsynced)
//   replica.flushed   at stop, after a partition's memtables were flushed (@n: the n-th)
//
// Consistency: a read answers the state as of the last record the replica applied. It trails
// the owners by the commit-to-read delay plus at most replica_idle_sleep_ms, so a read right
// after a command's decision (?wait_ms=) may not show it yet. Reads never block the tail for
// longer than one batch (replica_batch_records_max records) and the tail never blocks a read
// for longer than one batch's apply.
//
// Failures: a read error is retried after replica_error_sleep_ms (a broker away: the replica
// stops advancing and reads keep answering the last state); a record the appliers refuse is
// skipped and counted (state_rebuilder::skipped()), as in `replay verify`.
//
// Limits: a restart costs the records appended since the last checkpoint (applied at ~300k
// events/s, replay/README.md) plus reading back each partition's definitions and running
// executions; a rebuild costs the whole executions topic. Disk as the owners' state stores
// together; memory as the rebuilder's (definitions and running executions).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "engine/log.h"
#include "engine/state_store.h"

namespace auterity {

class metrics_writer;
class state_rebuilder;

inline constexpr size_t replica_batch_records_max = 512;
inline constexpr size_t replica_batch_bytes_max = 4u << 20;  // bytes per read
inline constexpr int replica_idle_sleep_ms = 20;             // after a pass that found nothing new
inline constexpr int replica_error_sleep_ms = 500;           // after a read that failed

// How a partition's replica started, and why it was rebuilt.
enum class replica_start : uint8_t {
  resumed,       // from its checkpoint
  missing,       // no checkpoint: rebuilt
  unreadable,    // the store does not open or names no log: rebuilt
  another_log,   // another topic prefix or partition count: rebuilt
  ahead_of_log,  // checkpoint past the log's end: rebuilt
  not_in_log,    // the checkpoint's last record is not in the log: rebuilt
};
std::string_view replica_start_name(replica_start s);  // "resumed", "missing", ...

struct replica_partition_start {
  replica_start how = replica_start::missing;
  uint64_t from = 0;   // offset the replica started reading at (0 when rebuilt)
  std::string detail;  // why it was rebuilt, readable (empty when resumed)
};

class log_replica {
 public:
  // `source`: a read-only log of the deployment (it is read by the replica's thread only).
  // `identity`: which log it is, kept with each checkpoint (e.g. "kafka topic prefix 'x.'"); a
  // checkpoint with another identity is not resumed.
  static result<std::unique_ptr<log_replica>> start(std::unique_ptr<log> source,
                                                    const std::string& dir,
                                                    const std::string& identity);
  ~log_replica();  // stop()s

  // Stops the thread and flushes every partition's memtables (see Stopping above); reads still
  // answer the last state. The first flush error, if any (the stores stay consistent: the next
  // open replays their write-ahead logs). Idempotent: a second call does nothing.
  result<void> stop();

  // Calls fn with partition p's replica once every partition has caught up; false before, and
  // for a partition that does not exist.
  bool with_store(uint32_t p, const std::function<void(const state_store&)>& fn);
  bool caught_up() const { return _caught_up.load(); }
  // Records applied and skipped since start, over all partitions.
  uint64_t applied() const { return _applied.load(); }
  uint64_t skipped() const { return _skipped.load(); }
  // How each partition started (index: partition).
  const std::vector<replica_partition_start>& starts() const { return _starts; }
  // Milliseconds start() took to open the partitions (checks and stores), and from start()
  // until caught up (0 before).
  uint64_t open_ms() const { return _open_ms; }
  uint64_t catch_up_ms() const { return _catch_up_ms.load(); }
  // Prometheus samples (api/README.md, "On Kafka"): how each partition started, records
  // applied, the offset reached, caught up.
  void collect(metrics_writer& w) const;
  // The last read error, if the replica is stuck on one (empty otherwise).
  std::string last_error() const;

 private:
  struct part;
  log_replica() = default;
  void run();
  // Applies what is readable of partition pt (below its start's end while catching up);
  // returns the number of records applied, or -1 on a read error.
  int64_t step(part& pt);

  // Opens a partition's replica: resumed from its checkpoint if that one is good, else rebuilt.
  result<replica_partition_start> open_partition(part& pt, const std::string& dir,
                                                 uint32_t partitions);
  std::string meta_of(uint32_t partition, const record& last) const;

  std::unique_ptr<log> _source;
  std::string _identity;
  std::chrono::steady_clock::time_point _started;
  std::vector<std::unique_ptr<part>> _parts;
  std::vector<replica_partition_start> _starts;
  uint64_t _open_ms = 0;
  std::atomic<uint64_t> _catch_up_ms{0};
  std::atomic<bool> _stop{false};
  bool _stopped = false;  // stop() ran
  std::atomic<bool> _caught_up{false};
  std::atomic<uint64_t> _applied{0};
  std::atomic<uint64_t> _skipped{0};
  mutable std::mutex _error_mu;
  std::string _error;
  std::thread _thread;
};

}  // namespace auterity
