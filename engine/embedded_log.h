#pragma once
// The embedded log: the log interface over a data directory, for running on one machine with
// no servers. See engine/README.md for the file format and its crash guarantees.

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "engine/log.h"

namespace auterity {

struct embedded_log_options {
  uint32_t partitions = 4;                 // fixed when the directory is created; checked on open
  bool fsync = true;                       // fdatasync every commit (durable against power loss)
  size_t segment_bytes_max = 64ull << 20;  // a partition's file rolls to a new segment here
  // Test only: when set, commits call it instead of fdatasync(2) (it returns and sets errno as
  // fdatasync does), so a test can hold a flush while others queue, or make it fail.
  std::function<int(int fd)> fdatasync_for_testing;
};

// Opens (creating if needed) the log in `dir`. Takes an exclusive lock on the directory
// (errc::locked if another process holds it). Recovery drops any uncommitted tail.
result<std::unique_ptr<log>> open_embedded_log(const std::string& dir,
                                               const embedded_log_options& options);

// The partition count a data directory was created with; nullopt if it holds no log yet.
result<std::optional<uint32_t>> embedded_log_partitions(const std::string& dir);

}  // namespace auterity
