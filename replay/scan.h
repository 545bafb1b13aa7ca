#pragma once
// Reading the log for replay: in batches (memory does not grow with the log), one partition
// per thread (partitions are independent: every tenant lives in one), and across several
// streams of a partition in time order.
//
// Everything here goes through the `log` interface only, so the same code reads the embedded
// log and Kafka. It advances by each record's own offset (last + 1), never by counting, so a
// backend whose offsets have gaps (Kafka's transaction markers) reads correctly.

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "engine/log.h"
#include "engine/record.h"

namespace auterity {

class progress;

// Limits of one read, with their units: at most this much of one stream is in memory at once.
inline constexpr size_t scan_batch_records_max = 4096;
inline constexpr size_t scan_batch_bytes_max = 8 << 20;

// Reads [from, end) of one stream of one partition, a batch at a time.
class stream_reader {
 public:
  stream_reader(log& l, stream s, uint32_t partition, uint64_t from, uint64_t end,
                progress* p = nullptr);

  // The next batch; empty at the end.
  result<std::span<const record>> next();
  stream which() const { return _s; }

 private:
  log& _log;
  stream _s;
  uint32_t _partition;
  uint64_t _next;
  uint64_t _end;
  progress* _progress;
  std::vector<record> _batch;
};

// One record of a merged scan. `env` is null when the record does not decode (`why` says why).
struct scanned_record {
  stream s;
  uint32_t partition;
  const record* rec;
  const fbs::Envelope* env;
  const std::string* why;
};

// Several streams of one partition merged into one sequence ordered by (timestamp, stream,
// offset): a timeline of what entered and left the partition. Within one millisecond a record
// whose cause is at the head of another stream comes after it. Each stream stays in offset
// order; a record that does not decode keeps its place after its stream's previous record.
class merged_reader {
 public:
  merged_reader(log& l, uint32_t partition, std::span<const stream> streams, progress* p = nullptr);

  // The next record; nullopt at the end. The record stays valid until the next call.
  result<std::optional<scanned_record>> next();

 private:
  struct cursor {
    stream_reader reader;
    std::span<const record> batch;
    size_t pos = 0;
    bool done = false;
    const fbs::Envelope* env = nullptr;
    int64_t ts = INT64_MIN;
    std::string why;
  };
  result<void> fill(cursor& c);
  size_t pull_cause(size_t chosen) const;

  uint32_t _partition;
  std::vector<cursor> _cursors;
  size_t _current = SIZE_MAX;
};

// Runs fn(partition) for every partition in `partitions` on min(threads, partitions) threads
// (threads 0: the machine's cores); each partition runs on one thread, start to end. Returns
// the error of the lowest partition that failed, after every thread finished.
result<void> for_each_partition(std::span<const uint32_t> partitions, unsigned threads,
                                const std::function<result<void>(uint32_t partition)>& fn);

// min(partitions, cores), at least 1.
unsigned default_threads(size_t partitions);

}  // namespace auterity
