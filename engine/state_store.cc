#include "engine/state_store.h"

#include <algorithm>
#include <cstdarg>
#include <filesystem>
#include <utility>

#include <fmt/core.h>
#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include "engine/assert.h"

namespace auterity {

namespace {

// Sized for a small write-heavy machine (2 cores): see make_options.
constexpr int write_buffers_max = 2;
constexpr int background_jobs_max = 2;
constexpr int bloom_bits_per_key = 10;
constexpr uint64_t metadata_block_bytes = 4096;  // a filter or index partition
constexpr uint64_t bytes_per_sync = 1ull << 20;
constexpr size_t info_log_files_max = 5;
constexpr size_t checkpoint_value_bytes = 8;
// get_sorted: Next() steps tried before a Seek(); wanted keys are often neighbours, and a step
// is cheaper than a seek through every level.
constexpr int sorted_read_steps_max = 4;

rocksdb::Slice to_slice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }
std::string_view to_view(const rocksdb::Slice& s) { return std::string_view(s.data(), s.size()); }

std::string encode_checkpoint(uint64_t checkpoint) {
  std::string out(checkpoint_value_bytes, '\0');
  for (size_t i = 0; i < checkpoint_value_bytes; ++i) {
    out[checkpoint_value_bytes - 1 - i] = static_cast<char>(checkpoint >> (8 * i));
  }
  return out;
}

uint64_t decode_checkpoint(std::string_view bytes) {
  uint64_t value = 0;
  for (unsigned char c : bytes) value = (value << 8) | c;
  return value;
}

// RocksDB reports a held LOCK file as an IOError: "While lock file: <dir>/LOCK: Resource
// temporarily unavailable" when another process holds it, "lock hold by current process ..."
// when this process already has the directory open.
bool is_lock_error(const rocksdb::Status& status) {
  if (!status.IsIOError()) return false;
  const std::string text = status.ToString();
  return text.find("While lock file") != std::string::npos ||
         text.find("lock hold by current process") != std::string::npos;
}

std::unexpected<error> rocksdb_error(const std::string& dir, std::string_view op,
                                     const rocksdb::Status& status) {
  if (is_lock_error(status)) {
    return fail(errc::locked,
                fmt::format("state store {}: {}: the directory is already open by another state "
                            "store (in this or another process): {}",
                            dir, op, status.ToString()));
  }
  return fail(errc::rocksdb, fmt::format("state store {}: {}: {}", dir, op, status.ToString()));
}

// The smallest key greater than every key starting with `prefix`, or "" if there is none
// (prefix empty or all 0xff). Lets RocksDB stop at the prefix end instead of stepping over
// tombstones past it.
std::string prefix_upper_bound(std::string_view prefix) {
  std::string bound(prefix);
  while (!bound.empty() && static_cast<unsigned char>(bound.back()) == 0xff) bound.pop_back();
  if (!bound.empty()) {
    bound.back() = static_cast<char>(static_cast<unsigned char>(bound.back()) + 1);
  }
  return bound;
}

rocksdb::Options make_options(const state_store_options& opts) {
  rocksdb::Options options;
  options.create_if_missing = opts.create_if_missing;

  // Two cores shared with the engine: one flush and one compaction at a time at most.
  options.max_background_jobs = background_jobs_max;
  options.max_subcompactions = 1;

  // Level compaction bounds read and space amplification; dynamic level sizing keeps the
  // space amplification near 1.1x whatever the database size.
  options.compaction_style = rocksdb::kCompactionStyleLevel;
  options.level_compaction_dynamic_level_bytes = true;

  // state_store_options::write_buffer_bytes (32 MiB by default).
  options.write_buffer_size = opts.write_buffer_bytes;
  options.allow_fallocate = opts.preallocate;
  options.max_file_opening_threads = opts.file_opening_threads;
  options.max_write_buffer_number = write_buffers_max;

  // Write SST files in steady 1 MiB steps instead of one burst at file close.
  options.bytes_per_sync = bytes_per_sync;

  // Unsynced WAL: after a crash, recover the longest consistent prefix of the log; the
  // checkpoint in that prefix says where to resume replaying the executions stream.
  options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  options.manual_wal_flush = false;  // each write reaches the OS: a process crash loses nothing

  options.keep_log_file_num = info_log_files_max;

  // LZ4 costs little CPU; fall back to RocksDB's default if this build lacks it.
  const auto supported = rocksdb::GetSupportedCompressions();
  if (std::find(supported.begin(), supported.end(), rocksdb::kLZ4Compression) != supported.end()) {
    options.compression = rocksdb::kLZ4Compression;
  }

  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(opts.block_cache_bytes);
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(bloom_bits_per_key));
  // Index and filter blocks count against the cache so memory stays bounded by the options;
  // L0's are pinned because every read consults them.
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  // Partitioned: a point read loads one 4 KiB filter (and index) partition, found through a
  // small pinned top level, instead of the whole filter of an SST (~1.25 bytes per key: 0.45
  // MB for a 7 MB SST, ~2 MB for a 64 MB one). Whole filters are cached in one shard of the
  // block cache (1 MiB of the 64 MiB), so once the state outgrows the cache they were evicted
  // by data blocks and read again, checksum included, by nearly every point read (each start
  // looks its id up): the reopen with 300k timers took 40 s, and the step rate at 1M running
  // executions halved (bench/README.md, "Scale of state").
  table.index_type = rocksdb::BlockBasedTableOptions::kTwoLevelIndexSearch;
  table.partition_filters = true;
  table.metadata_block_size = metadata_block_bytes;
  table.pin_top_level_index_and_filter = true;
  table.cache_index_and_filter_blocks_with_high_priority = true;
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return options;
}

// RocksDB's info log for read-only opens, which must not create a LOG file.
class discard_logger final : public rocksdb::Logger {
 public:
  using rocksdb::Logger::Logv;
  void Logv(const char*, va_list) override {}
};

rocksdb::WriteOptions write_options() {
  rocksdb::WriteOptions options;
  options.sync = false;  // the log is the source of truth, see state_store::write
  options.disableWAL = false;
  return options;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// state_batch

struct state_batch::impl {
  rocksdb::WriteBatch batch;
};

state_batch::state_batch() : _impl(std::make_unique<impl>()) {}
state_batch::~state_batch() = default;
state_batch::state_batch(state_batch&&) noexcept = default;
state_batch& state_batch::operator=(state_batch&&) noexcept = default;

void state_batch::put(std::string_view key, std::string_view value) {
  vassert(_impl, "state_batch used after move");
  // WriteBatch only fails past its max_bytes limit, which is unset (unlimited).
  auto status = _impl->batch.Put(to_slice(key), to_slice(value));
  vassert(status.ok(), "WriteBatch::Put: {}", status.ToString());
}

void state_batch::del(std::string_view key) {
  vassert(_impl, "state_batch used after move");
  auto status = _impl->batch.Delete(to_slice(key));
  vassert(status.ok(), "WriteBatch::Delete: {}", status.ToString());
}

void state_batch::delete_range(std::string_view begin, std::string_view end) {
  vassert(_impl, "state_batch used after move");
  vassert(begin <= end, "state_batch::delete_range: begin sorts after end ({} > {} bytes)",
          begin.size(), end.size());
  auto status = _impl->batch.DeleteRange(to_slice(begin), to_slice(end));
  vassert(status.ok(), "WriteBatch::DeleteRange: {}", status.ToString());
}

size_t state_batch::count() const {
  vassert(_impl, "state_batch used after move");
  return _impl->batch.Count();
}

size_t state_batch::bytes() const {
  vassert(_impl, "state_batch used after move");
  return _impl->batch.GetDataSize();
}

void state_batch::clear() {
  vassert(_impl, "state_batch used after move");
  _impl->batch.Clear();
}

// ---------------------------------------------------------------------------------------------
// state_store

struct state_store::impl {
  std::string dir;
  std::unique_ptr<rocksdb::DB> db;

  ~impl() {
    // A failed close leaves nothing to undo: unflushed writes are in the WAL, and the log
    // replays anything the WAL lost.
    if (db) db->Close().PermitUncheckedError();
  }
};

state_store::state_store(std::unique_ptr<impl> store, uint64_t checkpoint)
    : _impl(std::move(store)), _checkpoint(checkpoint) {}

state_store::~state_store() = default;

result<std::unique_ptr<state_store>> state_store::open(const std::string& dir,
                                                       const state_store_options& options) {
  std::error_code exists_ec;
  if (options.read_only && !std::filesystem::exists(dir + "/CURRENT", exists_ec)) {
    return fail(errc::not_found, fmt::format("state store {}: no RocksDB there ({}/CURRENT is "
                                             "missing)",
                                             dir, dir));
  }
  if (options.create_if_missing && !options.read_only) {
    // RocksDB creates only the last path component; partitions live deeper (data/<p>/state).
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return fail(errc::io, fmt::format("state store {}: create: {}", dir, ec.message()));
  }
  auto store = std::make_unique<impl>();
  store->dir = dir;
  rocksdb::DB* db = nullptr;
  rocksdb::Options db_options = make_options(options);
  rocksdb::Status status;
  if (options.read_only) {
    db_options.create_if_missing = false;
    // The info log would be a new file in the directory: discard it instead.
    db_options.info_log = std::make_shared<discard_logger>();
    status = rocksdb::DB::OpenForReadOnly(db_options, dir, &db);
  } else {
    status = rocksdb::DB::Open(db_options, dir, &db);
  }
  if (!status.ok()) return rocksdb_error(dir, "open", status);
  store->db.reset(db);

  std::string value;
  status = store->db->Get(rocksdb::ReadOptions(), to_slice(checkpoint_key), &value);
  uint64_t checkpoint = 0;
  if (status.ok()) {
    if (value.size() != checkpoint_value_bytes) {
      return fail(errc::corrupt, fmt::format("state store {}: checkpoint value has {} bytes, "
                                             "expected {}",
                                             dir, value.size(), checkpoint_value_bytes));
    }
    checkpoint = decode_checkpoint(value);
  } else if (!status.IsNotFound()) {
    return rocksdb_error(dir, "read checkpoint", status);
  }
  return std::unique_ptr<state_store>(new state_store(std::move(store), checkpoint));
}

result<std::optional<std::string>> state_store::get(std::string_view key) const {
  std::string value;
  auto status = _impl->db->Get(rocksdb::ReadOptions(), to_slice(key), &value);
  if (status.IsNotFound()) return std::optional<std::string>();
  if (!status.ok()) return rocksdb_error(_impl->dir, "get", status);
  return std::optional<std::string>(std::move(value));
}

result<void> state_store::get_sorted(
    std::span<const std::string> keys,
    const std::function<void(size_t i, std::string_view value)>& fn) const {
  if (keys.empty()) return {};
  std::unique_ptr<rocksdb::Iterator> it(_impl->db->NewIterator(rocksdb::ReadOptions()));
  it->Seek(to_slice(keys[0]));
  for (size_t i = 0; i < keys.size(); ++i) {
    const rocksdb::Slice target = to_slice(keys[i]);
    if (i > 0) {
      vassert(keys[i - 1] < keys[i], "state_store::get_sorted: key {} not above the one before", i);
      // Forward only: the iterator stands at or past keys[i - 1].
      int steps = 0;
      while (it->Valid() && it->key().compare(target) < 0 && steps++ < sorted_read_steps_max) {
        it->Next();
      }
      if (it->Valid() && it->key().compare(target) < 0) it->Seek(target);
    }
    if (!it->Valid()) break;  // past the last key: the rest are absent
    if (it->key() == target) fn(i, to_view(it->value()));
  }
  if (!it->status().ok()) return rocksdb_error(_impl->dir, "get_sorted", it->status());
  return {};
}

result<void> state_store::scan_prefix(
    std::string_view prefix,
    const std::function<bool(std::string_view key, std::string_view value)>& fn) const {
  const std::string upper = prefix_upper_bound(prefix);
  const rocksdb::Slice upper_slice = to_slice(upper);
  rocksdb::ReadOptions read;
  if (!upper.empty()) read.iterate_upper_bound = &upper_slice;

  std::unique_ptr<rocksdb::Iterator> it(_impl->db->NewIterator(read));
  for (it->Seek(to_slice(prefix)); it->Valid(); it->Next()) {
    const std::string_view key = to_view(it->key());
    if (!key.starts_with(prefix)) break;
    if (!fn(key, to_view(it->value()))) break;
  }
  if (!it->status().ok()) return rocksdb_error(_impl->dir, "scan_prefix", it->status());
  return {};
}

uint64_t state_store::approximate_bytes(std::string_view begin, std::string_view end) const {
  const std::string last(64, '\xff');  // above every key the processors write
  rocksdb::Range range(to_slice(begin), end.empty() ? rocksdb::Slice(last) : to_slice(end));
  uint64_t size = 0;
  rocksdb::SizeApproximationOptions options;
  options.include_memtables = true;
  options.include_files = true;
  auto status =
      _impl->db->GetApproximateSizes(options, _impl->db->DefaultColumnFamily(), &range, 1, &size);
  return status.ok() ? size : 0;
}

result<void> state_store::write(state_batch& batch, uint64_t checkpoint) {
  rocksdb::WriteBatch& wb = batch.get().batch;
  // On failure the batch goes back to what the caller built, so it can be retried or dropped.
  wb.SetSavePoint();
  auto status = wb.Put(to_slice(checkpoint_key), encode_checkpoint(checkpoint));
  if (status.ok()) status = _impl->db->Write(write_options(), &wb);
  if (!status.ok()) {
    wb.RollbackToSavePoint().PermitUncheckedError();
    return rocksdb_error(_impl->dir, fmt::format("write (checkpoint {})", checkpoint), status);
  }
  _checkpoint = checkpoint;
  wb.Clear();
  return {};
}

result<void> state_store::flush_memtables() {
  rocksdb::FlushOptions options;
  options.wait = true;
  options.allow_write_stall = true;  // nothing else writes: a stop waits for its own flush
  auto status = _impl->db->Flush(options);
  if (!status.ok()) return rocksdb_error(_impl->dir, "flush", status);
  return {};
}

result<void> state_store::delete_range(std::string_view begin, std::string_view end) {
  if (begin > end) {
    return fail(errc::invalid,
                fmt::format("state store {}: delete_range: begin sorts after end", _impl->dir));
  }
  if (begin <= checkpoint_key && checkpoint_key < end) {
    // Dropping the checkpoint would make the next open replay from offset 0 over live state.
    return fail(errc::invalid, fmt::format("state store {}: delete_range: the range covers the "
                                           "checkpoint key",
                                           _impl->dir));
  }
  if (begin == end) return {};
  rocksdb::WriteBatch wb;
  auto status = wb.DeleteRange(to_slice(begin), to_slice(end));
  if (status.ok()) status = _impl->db->Write(write_options(), &wb);
  if (!status.ok()) return rocksdb_error(_impl->dir, "delete_range", status);
  return {};
}

result<void> state_store::scan_all(
    const std::function<bool(std::string_view key, std::string_view value)>& fn) const {
  rocksdb::ReadOptions read;
  read.fill_cache = false;  // a full scan for verification would evict the working set
  std::unique_ptr<rocksdb::Iterator> it(_impl->db->NewIterator(read));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const std::string_view key = to_view(it->key());
    if (key == checkpoint_key) continue;
    if (!fn(key, to_view(it->value()))) break;
  }
  if (!it->status().ok()) return rocksdb_error(_impl->dir, "scan_all", it->status());
  return {};
}

}  // namespace auterity
