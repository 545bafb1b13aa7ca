#pragma once
// The hash-chain check of one partition's executions stream, fed one record at a time in
// offset order, with memory for the open chains only.
//
// Every event of an execution carries prev_hash = SHA-256 of the previous event's bytes and
// record id "<execution>#<seq>"; tenant-level events chain per tenant ("tenant:<t>#<seq>").
// For each chain the checker reports the FIRST bad event, classified:
//   altered    an event's bytes changed: the next event's prev_hash no longer matches it (or
//              its own record id / start is wrong). One event of look-ahead tells an altered
//              event from an altered link: if the event after the break links to the breaking
//              event, the event before the break is the altered one.
//   removed    events are missing: the sequence number jumps and the link is broken.
//   reordered  an event comes before one it should follow (or appears twice).
//   truncated / appended   the chain's end differs from the engine's own record of it (its
//              state store holds each execution's event count and last hash: `heads`); without
//              heads, the newest events of a history cannot be vouched for — nothing follows
//              them.
//   undecodable a record that is not a valid envelope.
//
// Memory: one entry per open chain (an execution that has not ended, or a tenant's definition
// chain): its key, last hash, count and last offset, ~150 bytes. An execution's entry is
// dropped at its terminal event, so memory is bounded by the executions running at once, not
// by the log's length; ended histories wait for their end comparison in a bounded batch
// (head_spill.h). Threading: one checker per partition, used by one thread.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/record.h"
#include "engine/result.h"
#include "replay/head_spill.h"

namespace auterity {

enum class chain_problem_kind { altered, removed, reordered, truncated, appended, undecodable };
std::string_view chain_problem_kind_name(chain_problem_kind k);

struct chain_problem {
  uint32_t partition = 0;
  std::string tenant;
  std::string execution;  // empty: the tenant's definition chain
  chain_problem_kind kind = chain_problem_kind::altered;
  // Where the first bad event is in executions[partition]; for `removed`, the offset of the
  // event that follows the gap; for `truncated`, the chain's last remaining event.
  uint64_t offset = 0;
  std::string record_id;  // the first bad event (for removed/truncated: the first missing one)
  std::string detail;     // readable explanation

  // "executions/1@57 acme-motors/lead-0003: altered: event lead-0003#4 ..."
  std::string text() const;
};

// The engine's own record of a chain's end (from its state store).
struct chain_head {
  uint32_t event_count = 0;
  hash256 last_hash{};
};
// Returns the head the engine holds for (tenant, execution) — execution empty: the tenant
// chain — or nullopt if it holds none.
using head_lookup = std::function<result<std::optional<chain_head>>(std::string_view tenant,
                                                                    std::string_view execution)>;
// Calls fn with the head of every execution of `tenant` the engine holds, in execution id
// (byte) order, until fn returns false.
using head_scan = std::function<result<void>(
    std::string_view tenant,
    const std::function<bool(std::string_view execution, const chain_head& head)>& fn)>;

struct chain_check_options {
  head_lookup heads;  // empty: the ends of histories are not compared
  head_scan scan;     // the same heads in key order, for ended histories in bulk
  // The heads reflect the executions records below this offset (the state's checkpoint), so a
  // history with a later event is not compared with them (the engine has not applied it yet).
  uint64_t heads_cover = UINT64_MAX;
  std::string tenant;  // check only this tenant's records (empty: all)
  // Ended histories wait for their comparison in a sorted batch this big; more are spilled to
  // a temporary file in sorted runs and merged with one scan of the heads at the end.
  size_t ended_batch_max = 32768;
};

class chain_checker {
 public:
  explicit chain_checker(uint32_t partition, chain_check_options options = {});

  // Feeds the next executions record. Returns false if the record should not be trusted for
  // replay (it is undecodable or belongs to a chain with a problem so far).
  result<bool> add(uint64_t offset, std::string_view bytes);
  // The end of the stream: resolves pending look-aheads and compares open chains' heads.
  result<void> finish();

  // True if the (tenant, execution) chain has a problem so far (execution empty: the tenant).
  bool broken(std::string_view tenant, std::string_view execution) const;

  uint64_t events() const { return _events; }
  uint64_t chains() const { return _chains_started; }
  size_t open_chains_peak() const { return _open_peak; }
  // The first problems_listed_max problems, sorted by offset after finish(); all are counted.
  const std::vector<chain_problem>& problems() const { return _problems; }
  uint64_t problems_total() const { return _problems_total; }
  static constexpr size_t problems_listed_max = 100'000;

 private:
  enum class suspect : uint8_t { none, link, gap };
  struct chain {
    hash256 last{};
    uint64_t last_offset = 0;
    uint32_t count = 0;  // events verified: the next expected sequence number
    bool broken = false;
    suspect pending = suspect::none;  // waiting for the chain's next event to classify
    uint32_t pending_seq = 0;
    uint64_t pending_offset = 0;
    hash256 pending_hash{};
    std::optional<hash256> pending_prev;  // the breaking event's prev_hash, if it has one
  };
  struct event_view {
    uint64_t offset;
    std::optional<uint32_t> seq;
    hash256 hash;
    const flatbuffers::Vector<uint8_t>* prev;
    const fbs::Envelope* env;
  };
  struct string_hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using chain_map = std::unordered_map<std::string, chain, string_hash, std::equal_to<>>;

  void moved_in(std::string_view tenant, const fbs::TenantStateChunk& chunk);
  void first_event(chain& c, std::string_view key, const event_view& e);
  void next_event(chain& c, std::string_view key, const event_view& e);
  void resolve(chain& c, std::string_view key, const event_view* next);
  void suspect_break(chain& c, suspect what, const event_view& e);
  bool appended_after_end(const chain& c, std::string_view key) const;
  result<void> compare_head(chain& c, std::string_view key);
  void check_end(const ended_history& e, const std::optional<chain_head>& head);
  result<void> end_chain(const chain& c, std::string_view key);
  result<void> compare_ended_by_lookup();
  result<void> compare_ended_by_scan();
  result<void> scan_tenant(std::optional<ended_history>& cur);
  void accept(chain& c, const event_view& e);
  void report(chain& c, std::string_view key, chain_problem_kind kind, uint64_t offset,
              std::string record_id, std::string detail);
  void report(std::string_view key, chain_problem_kind kind, uint64_t offset, std::string record_id,
              std::string detail);
  void add_problem(chain_problem p);
  std::string seq_id(std::string_view key, uint32_t seq) const;

  uint32_t _partition;
  chain_check_options _o;
  chain_map _chains;
  std::string _key;  // reused buffer: tenant '\0' execution
  uint64_t _events = 0;
  uint64_t _chains_started = 0;
  size_t _open_peak = 0;
  // Up to this many ends are compared by point reads; more by one sequential scan.
  static constexpr size_t lookups_max = 1024;
  std::vector<ended_history> _ended;
  std::unique_ptr<head_spill> _spill;
  std::vector<chain_problem> _problems;
  uint64_t _problems_total = 0;
};

}  // namespace auterity
