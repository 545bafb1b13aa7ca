#pragma once
// A gateway's read replica (api/README.md, "On Kafka"): every partition's state rebuilt from the
// executions topic, for the reads of `auterity gateway`, which owns no partition.
//
//   one thread, for each partition in turn: read the committed records of executions after the
//   last one applied (read_committed, a read-only Kafka log of its own), apply them through the
//   processors' appliers (replay/state_replay.h: the code the engine runs, so the replica is
//   the replay of the log, key for key), write them to the partition's RocksDB with the next
//   offset as checkpoint.
//
// Starting: the replica is built from offset 0 into `dir` (emptied first) up to the end of each
// partition seen at start; until every partition got there, with_store() answers false (the API
// answers 503 with Retry-After, and /v1/ready 503). Then it follows the log.
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
// Limits: start time grows with the executions topic (the rebuild applies ~300k events/s,
// replay/README.md); disk as the owners' state stores together; memory as the rebuilder's
// (definitions and running executions).

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/log.h"
#include "engine/state_store.h"

namespace auterity {

class state_rebuilder;

inline constexpr size_t replica_batch_records_max = 512;
inline constexpr size_t replica_batch_bytes_max = 4u << 20;  // bytes per read
inline constexpr int replica_idle_sleep_ms = 20;             // after a pass that found nothing new
inline constexpr int replica_error_sleep_ms = 500;           // after a read that failed

class log_replica {
 public:
  // `source`: a read-only log of the deployment (it is read by the replica's thread only).
  static result<std::unique_ptr<log_replica>> start(std::unique_ptr<log> source,
                                                    const std::string& dir);
  ~log_replica();  // stops the thread

  // Calls fn with partition p's replica once every partition has caught up; false before, and
  // for a partition that does not exist.
  bool with_store(uint32_t p, const std::function<void(const state_store&)>& fn);
  bool caught_up() const { return _caught_up.load(); }
  // Records applied and skipped since start, over all partitions.
  uint64_t applied() const { return _applied.load(); }
  uint64_t skipped() const { return _skipped.load(); }
  // The last read error, if the replica is stuck on one (empty otherwise).
  std::string last_error() const;

 private:
  struct part;
  log_replica() = default;
  void run();
  // Applies what is readable of partition pt (below its start's end while catching up);
  // returns the number of records applied, or -1 on a read error.
  int64_t step(part& pt);

  std::unique_ptr<log> _source;
  std::vector<std::unique_ptr<part>> _parts;
  std::atomic<bool> _stop{false};
  std::atomic<bool> _caught_up{false};
  std::atomic<uint64_t> _applied{0};
  std::atomic<uint64_t> _skipped{0};
  mutable std::mutex _error_mu;
  std::string _error;
  std::thread _thread;
};

}  // namespace auterity
