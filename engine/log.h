#pragma once
// The log: partitioned, durable, append-only streams with consumer positions and one atomic
// commit per partition of (appends to several streams + consumer positions).
//
// Two backends implement this interface: the embedded log (engine/embedded_log.h, a data
// directory, the default) and Kafka (a later issue). Semantics both keep:
//   - offsets increase per (stream, partition), starting at 0; the embedded log's are dense,
//     Kafka's have gaps (transaction markers), so a reader advances with last offset + 1;
//   - a reader sees only committed records, in offset order;
//   - commit() is all-or-nothing: after a crash either every append and position of the
//     commit is visible or none is;
//   - all streams have the same partition count and are keyed by tenant (co-partitioned), so a
//     commit never needs more than one partition.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/result.h"

namespace auterity {

enum class stream : uint8_t {
  ingress = 0,
  executions = 1,
  commands_step = 2,
  commands_ai = 3,
  commands_notify = 4,
  acks = 5,
  definitions = 6,
  deadletter = 7,
};
inline constexpr int stream_count = 8;

// Kafka-style names: "ingress", "executions", "commands.step", ...
std::string_view stream_name(stream s);
std::optional<stream> stream_from_name(std::string_view name);

struct record {
  uint64_t offset = 0;
  std::string key;
  std::string value;
};

// What one commit writes. Appends of a stream get consecutive offsets in the order added.
struct commit_batch {
  struct append {
    stream s;
    std::string key;
    std::string value;
    // Another partition than the commit's (forwarding a record to the partition that owns its
    // tenant). Atomic with the commit: Kafka writes it in the same transaction; the embedded
    // log writes it in the commit and delivers it right after, exactly once even across a
    // crash (engine/embedded_log.cc, Forwarding). Its offset in the commit's result is
    // UINT64_MAX on the embedded log (known only in the target's stream).
    std::optional<uint32_t> partition = std::nullopt;
  };
  struct position {
    std::string group;  // consumer group, e.g. "orchestrator", "worker.step"
    stream s;
    uint64_t next_offset;
  };
  std::vector<append> appends;
  std::vector<position> positions;

  void add(stream s, std::string key, std::string value) {
    appends.push_back({s, std::move(key), std::move(value)});
  }
  void add_to(stream s, uint32_t partition, std::string key, std::string value) {
    appends.push_back({s, std::move(key), std::move(value), partition});
  }
  void set_position(std::string group, stream s, uint64_t next_offset) {
    positions.push_back({std::move(group), s, next_offset});
  }
  bool empty() const { return appends.empty() && positions.empty(); }
  void clear() {
    appends.clear();
    positions.clear();
  }
};

// Limits of every backend, named with their unit.
inline constexpr size_t record_bytes_max = 1 << 20;  // key + value of one record

// Where tenants live by default, for the whole deployment (docs/tenant-moves.md, "Scaling the
// partition count"): `base` is the partition count default placement hashes against (the count
// the log was created with; a scale never changes it, so adding partitions moves no tenant), and
// `retired` the partitions that get no tenants (sorted; each < partition_count()).
struct placement_header {
  uint32_t base = 1;
  std::vector<uint32_t> retired;
  bool is_retired(uint32_t p) const;
};

// A commit handed to the log with log::submit() and not yet waited for. wait() blocks until the
// commit is decided and returns what log::commit() returns; it is called once (a second call
// asserts). Moved, never copied. The batch given to submit() must stay alive and unchanged until
// wait() returned: the log may still be reading it (Kafka: producing its records).
class commit_ticket {
 public:
  using outcome = result<std::vector<uint64_t>>;
  commit_ticket() = default;
  // A commit decided before submit() returned (synchronous backends, refused batches).
  static commit_ticket decided(outcome o);
  // A commit decided later: `wait` blocks until then and gives the outcome.
  static commit_ticket pending(std::function<outcome()> wait);
  // True between submit() and wait().
  bool valid() const { return _decided.has_value() || static_cast<bool>(_wait); }
  outcome wait();

 private:
  std::optional<outcome> _decided;
  std::function<outcome()> _wait;
};

class log;
// The partition that decides for a tenant with no placement entry: tenant_partition(tenant,
// l.placement().base). Moved tenants are found from there (docs/tenant-moves.md).
uint32_t home_partition(const log& l, std::string_view tenant);

class log {
 public:
  virtual ~log() = default;

  virtual uint32_t partition_count() const = 0;

  // The placement header, as stored when the log was opened. Backends that do not store one (and
  // logs never scaled) answer {partition_count(), {}}.
  virtual placement_header placement() const { return {partition_count(), {}}; }

  // Atomically appends and moves positions; returns the offset of each append, in the order of
  // batch.appends. Fails with errc::too_large if a record exceeds record_bytes_max; nothing of
  // the batch is then written.
  virtual result<std::vector<uint64_t>> commit(uint32_t partition, const commit_batch& batch) = 0;

  // commit() in two halves: hands the batch to the log and returns, where the backend can,
  // before the commit is decided; the ticket's wait() gives what commit() would have. So a
  // caller can do other work (decide its next batch) while the commit runs
  // (docs/pipelined-transactions.md, step 2). The caller's rule, which keeps a partition's
  // commits in order and never commits one whose predecessor failed: submit a partition's next
  // commit only after the previous one's wait() returned success. The embedded log (and this
  // default) commits before returning, so live and replay keep one apply path; Kafka queues the
  // batch for the partition's committer.
  virtual commit_ticket submit(uint32_t partition, const commit_batch& batch) {
    return commit_ticket::decided(commit(partition, batch));
  }
  // True if submit() returns before the commit is decided (Kafka), so a caller gains by doing
  // other work before wait(); false if it commits before returning (embedded).
  virtual bool background_commits() const { return false; }

  // Appends committed records of (s, partition) at offsets >= `from` to `out`, at most
  // `max_records` records and about `max_bytes` bytes (at least one record if any is there).
  // Returns the number appended; 0 means no committed record at or after `from` yet.
  virtual result<size_t> read(stream s, uint32_t partition, uint64_t from, size_t max_records,
                              size_t max_bytes, std::vector<record>& out) = 0;

  // read() for a range that await_decided() found decided: returns 0 only when no committed
  // record at or after `from` below `end` is left to read (it may also return records at or past
  // `end`). read() may return 0 while a fetch is under way (Kafka: a consumer that reached an
  // earlier end answers from its buffer); a restore that stopped there would decide without
  // events it owns. Kafka fails with errc::io if the records do not arrive within the read wait.
  virtual result<size_t> read_to(stream s, uint32_t partition, uint64_t from, uint64_t end,
                                 size_t max_records, size_t max_bytes, std::vector<record>& out) {
    (void)end;  // synchronous backends: read() already sees every decided record
    return read(s, partition, from, max_records, max_bytes, out);
  }

  // Offset after the last record written to (s, partition), whether its transaction is
  // committed, still open or aborted (embedded: the record count; Kafka: the high watermark,
  // read with read_uncommitted isolation, which may sit past a transaction marker). Fails if
  // the backend cannot tell (Kafka: no broker answer within its request timeout); it never
  // returns a stale value.
  virtual result<uint64_t> end_offset(stream s, uint32_t partition) = 0;

  // Committed next offset of a consumer group; 0 if the group never committed. Stable: on
  // Kafka, while a transaction that holds pending offsets of the group on (s, partition) is
  // open, it waits until that transaction commits or aborts (OffsetFetch require_stable), and
  // fails if that takes longer than the request timeout.
  virtual result<uint64_t> position(std::string_view group, stream s, uint32_t partition) = 0;

  // Waits until every record of (s, partition) below `end` is decided (committed or aborted),
  // so that read() reaches `end`; errc::timeout after `timeout`. The embedded log has no open
  // transactions across processes: it returns at once. Kafka: polls the last stable offset.
  virtual result<void> await_decided(stream s, uint32_t partition, uint64_t end,
                                     std::chrono::milliseconds timeout) = 0;

  // Blocks until a commit touches `partition` after the call began or `timeout` passes.
  // Spurious wake-ups are allowed; callers re-check.
  virtual void wait(uint32_t partition, uint64_t seen_generation,
                    std::chrono::milliseconds timeout) = 0;
  // Increases with every commit to `partition`; read it before checking for work, pass it to
  // wait() so a commit in between is not missed.
  virtual uint64_t generation(uint32_t partition) = 0;
  // The same over all partitions, for consumers that serve every partition (workers).
  virtual void wait_any(uint64_t seen_generation, std::chrono::milliseconds timeout) = 0;
  virtual uint64_t generation_any() = 0;
};

}  // namespace auterity
