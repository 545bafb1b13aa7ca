#pragma once
// Durable per-partition state in RocksDB (one database per partition, like a Kafka Streams
// task), with the checkpoint — the executions-stream offset the state reflects — written in
// the same atomic batch as the state.
//
// Key layout is the processors' business; the store only promises that keys sort bytewise, so
// a tenant's keys under one prefix ("T<tenant>\0...") can be scanned and range-deleted.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "engine/result.h"

namespace auterity {

// Buffered puts and deletes, applied atomically by state_store::write.
class state_batch {
 public:
  state_batch();
  ~state_batch();
  state_batch(state_batch&&) noexcept;
  state_batch& operator=(state_batch&&) noexcept;

  void put(std::string_view key, std::string_view value);
  void del(std::string_view key);
  void delete_range(std::string_view begin, std::string_view end);  // [begin, end)
  size_t count() const;
  size_t bytes() const;
  void clear();

  struct impl;
  impl& get() { return *_impl; }

 private:
  std::unique_ptr<impl> _impl;
};

struct state_store_options {
  bool create_if_missing = true;
  // RocksDB's read-only open (DB::OpenForReadOnly): no file or directory is created or
  // changed, the WAL is replayed in memory only, and no lock is taken. The store must exist
  // (errc::not_found naming the directory otherwise); write() and delete_range() fail.
  bool read_only = false;
  size_t block_cache_bytes = 64ull << 20;
  // One memtable: large enough to absorb write bursts, small enough that two of them per
  // partition fit a small machine.
  size_t write_buffer_bytes = 32ull << 20;
  // RocksDB reserves file space ahead (fallocate: each WAL at ~1.1x write_buffer_bytes, the
  // MANIFEST 4 MiB). On tmpfs that is memory zeroed and freed at every open and close: the
  // simulator (tests/sim), which opens thousands of small stores there, turns it off.
  bool preallocate = true;
  // Threads RocksDB starts at each open to open the table files (its default, 16): the
  // simulator, which opens a store every few milliseconds, takes 1.
  int file_opening_threads = 16;
};

class state_store {
 public:
  static result<std::unique_ptr<state_store>> open(const std::string& dir,
                                                   const state_store_options& options = {});
  ~state_store();

  result<std::optional<std::string>> get(std::string_view key) const;

  // Reads many keys in one ordered pass: calls fn(i, value) for each keys[i] present, in order.
  // `keys` must be sorted bytewise, without duplicates (asserted). For loading many keys at once
  // (the executions of every timer when a partition opens): one iterator that steps or seeks
  // forward reads each data block once and never consults the bloom filters, whereas a get() per
  // key reads each SST's filter block, which a block cache smaller than the state evicts between
  // reads (bench/README.md, "Scale of state").
  result<void> get_sorted(std::span<const std::string> keys,
                          const std::function<void(size_t i, std::string_view value)>& fn) const;

  // Calls fn for every key starting with `prefix`, in key order, until fn returns false.
  result<void> scan_prefix(
      std::string_view prefix,
      const std::function<bool(std::string_view key, std::string_view value)>& fn) const;

  // RocksDB's estimate of the bytes the keys of [begin, end) take (end empty: to the last key),
  // in its files and memtables: cheap (no key is read), approximate — it may be 0 for a few
  // small keys still in a memtable, and counts overwritten values until a compaction. For
  // /metrics; exact sizes need a scan.
  uint64_t approximate_bytes(std::string_view begin, std::string_view end) const;

  // The executions offset the stored state reflects: the next executions record to apply.
  uint64_t checkpoint() const { return _checkpoint; }

  // Writes the batch and the new checkpoint atomically. Not fsynced: the log is the source of
  // truth, and a lost tail is replayed from the older checkpoint it leaves behind.
  result<void> write(state_batch& batch, uint64_t checkpoint);

  // Writes the memtables out to table files and waits for it, so the next open has no
  // write-ahead log to replay (RocksDB replays it and writes it out again at open otherwise: up
  // to write_buffer_bytes of state). For a clean stop; nothing depends on it for safety (a
  // store closed without it reopens to the same state). errc::io if the flush failed.
  result<void> flush_memtables();

  // Deletes every key of [begin, end) (used to drop a tenant's prefix).
  result<void> delete_range(std::string_view begin, std::string_view end);

  // Every key and value except the checkpoint, in key order: used by the replay-equivalence
  // test and by verification to compare two stores byte for byte.
  result<void> scan_all(
      const std::function<bool(std::string_view key, std::string_view value)>& fn) const;

  // Key of the checkpoint; kept out of the processors' key space (processors use 'T'/'R').
  static constexpr std::string_view checkpoint_key = std::string_view("\x00checkpoint", 11);

 private:
  struct impl;
  explicit state_store(std::unique_ptr<impl> impl, uint64_t checkpoint);
  std::unique_ptr<impl> _impl;
  uint64_t _checkpoint = 0;
};

}  // namespace auterity
