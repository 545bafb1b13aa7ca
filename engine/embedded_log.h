#pragma once
// The embedded log: the log interface over a data directory, for running on one machine with
// no servers. See engine/README.md for the file format and its crash guarantees.

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "engine/log.h"

namespace auterity {

// Bytes of a partition that an open found after the last valid commit frame (see
// engine/README.md, "Crash guarantees and damage").
struct log_damage {
  uint32_t partition = 0;
  std::string segment;      // the segment file where the readable prefix ends
  uint64_t file_pos = 0;    // where it ends in that file: the end of the last valid commit
  uint64_t bytes = 0;       // bytes after it, in that segment and any later one
  std::string bad_segment;  // the segment holding the first bytes that are not a valid frame
  uint64_t bad_pos = 0;     // where they are in it
  std::string problem;      // what is wrong with them ("truncated frame body", ...)
  bool committed = false;   // committed data follows: damage, not a torn write
  std::string quarantine;   // writable open: the file now holding the cut bytes
};

// One line for an operator: partition, segment, offset, bytes and what was done.
std::string damage_text(const log_damage& d);

struct embedded_log_options {
  uint32_t partitions = 4;                 // fixed when the directory is created; checked on open
  bool fsync = true;                       // fdatasync every commit (durable against power loss)
  size_t segment_bytes_max = 64ull << 20;  // a partition's file rolls to a new segment here
  // Test only: when set, commits call it instead of fdatasync(2) (it returns and sets errno as
  // fdatasync does), so a test can hold a flush while others queue, or make it fail.
  std::function<int(int fd)> fdatasync_for_testing;
  // Read-only: creates, truncates, repairs and writes nothing. The directory must hold a log
  // (errc::not_found naming the path otherwise); `partitions` 0 takes the stored count. Takes a
  // shared lock, so readers run beside each other but not beside a writer (errc::locked either
  // way). A torn or damaged tail is reported through on_damage and the prefix before it is
  // served; commit() fails with errc::invalid.
  bool read_only = false;
  // Writable: a partition whose committed data is damaged does not fail the open; it is opened
  // as a read-only open would (the records before the damage served, nothing cut or written),
  // its commits fail with errc::corrupt, and on_damage reports it with committed = true. The
  // engine then serves the other partitions (docs/salvage.md).
  bool corrupt_partitions_offline = false;
  // Called during open for each partition with bytes after its last valid commit: read-only,
  // they are left as they are; writable, a torn tail has been moved to a quarantine file and
  // cut (damage inside committed data fails the open with errc::corrupt instead). Unset: the
  // damage_text() line is printed on stderr.
  std::function<void(const log_damage&)> on_damage;
};

// Opens the log in `dir`, creating it if needed (unless read_only). Writable, it takes an
// exclusive lock on the directory (errc::locked if another process holds it) and recovery moves
// any uncommitted tail to <dir>/quarantine/ before cutting it.
result<std::unique_ptr<log>> open_embedded_log(const std::string& dir,
                                               const embedded_log_options& options);

// The partition count a data directory was created with; nullopt if it holds no log yet.
result<std::optional<uint32_t>> embedded_log_partitions(const std::string& dir);

// Changes the placement header of the log in `dir` (docs/tenant-moves.md, "Scaling the
// partition count"), with no log open on it (it takes the directory's lock: errc::locked while
// an engine runs): grows the log to `partitions` (new, empty partition directories; never
// fewer than it has) and records `retired` (each < partitions, not all of them). The base is
// kept. The meta file is replaced by a rename, so a crash leaves the old header or the new one.
// Returns the new header.
result<placement_header> scale_embedded_log(const std::string& dir, uint32_t partitions,
                                            std::vector<uint32_t> retired);

// Salvage of a partition whose committed data is damaged (docs/salvage.md): everything after
// the last valid commit before the first bad frame is cut, as recovery cuts a torn tail — the
// commits after the bad frame too, since offsets are dense and the bad frame's records cannot be
// rebuilt. The cut bytes go to a quarantine file first.
struct lost_record {
  stream s;
  uint64_t offset;
  std::string key;
  std::string value;
};
struct partition_repair {
  uint32_t partition = 0;
  std::optional<log_damage> damage;           // none: nothing after the last commit, nothing done
  std::array<uint64_t, stream_count> kept{};  // records kept per stream: the new end offsets
  std::vector<lost_record> lost;  // the valid data frames in the cut bytes, in file order
  uint64_t cut_bytes = 0;
  uint64_t unreadable_bytes = 0;  // cut bytes in no valid frame: what they held is unknown
};

// Takes the directory's exclusive lock (errc::locked while the engine runs), finds the damage
// as a read-only open does, calls `before_cut` (if set) with the plan — the caller records the
// gap durably there; an error stops the repair before anything changed — then quarantines
// (fsynced) and cuts. A crash before the cut leaves the log as it was (a quarantine copy may
// remain); running the repair again redoes it.
result<partition_repair> repair_embedded_partition(
    const std::string& dir, uint32_t partition,
    const std::function<result<void>(const partition_repair&)>& before_cut = {});

// Bytes this process's writable opens moved to quarantine files, and how many files (for
// /metrics: auterity_log_quarantined_bytes_total, auterity_log_quarantined_files_total).
uint64_t embedded_log_quarantined_bytes();
uint64_t embedded_log_quarantined_files();

}  // namespace auterity
