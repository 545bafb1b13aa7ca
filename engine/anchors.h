#pragma once
// Anchored chain heads (docs/anchors.md): a running hash over each partition's `executions`
// records (the partition chain), signed with Ed25519 into an append-only file of anchors, so a
// history rewritten consistently — every checksum and per-execution chain recomputed — before
// an anchor no longer matches it.
//
// Threading: anchor_key and the free functions are thread-safe; an anchor_writer is used by one
// thread at a time (the CLI's run loop).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/log.h"
#include "engine/record.h"
#include "engine/result.h"

namespace auterity {

// ------------------------------------------------------------------------- the partition chain

// The chain over one partition's executions records up to (not including) `end`.
struct partition_head {
  uint32_t partition = 0;
  uint64_t end = 0;   // offset after the last record hashed; 0 with the zero head
  hash256 head = {};  // all zero: nothing hashed yet
  bool operator==(const partition_head&) const = default;
};

// head = SHA-256("auterity-anchor-chain 1" | head | u64 offset | u32 key_len | key |
// SHA-256(value)); end = offset + 1.
void extend_head(partition_head& h, const record& r);

// Extends `h` over the committed executions records of h.partition at offsets in [h.end, end),
// reading at most chain_read_records_max records / chain_read_bytes_max bytes at a time, and
// sets h.end = end. Returns false (h then covers what there is) if the log holds no record at
// or after end - 1 — it ends before `end`, with the embedded log's dense offsets; on Kafka a
// trailing transaction marker may sit there, so callers pass ends the log reported. On Kafka the
// range may hold a transaction still open (the engine's own, or a paused instance's): it first
// waits until every record below the end is decided, at most chain_decided_wait_ms_max, and
// fails with errc::timeout (h unchanged) after that; a head that skipped an open transaction's
// records would not match the log once they commit.
inline constexpr size_t chain_read_records_max = 4096;
inline constexpr size_t chain_read_bytes_max = 8 << 20;
inline constexpr int64_t chain_decided_wait_ms_max = 10'000;
result<bool> extend_head_to(log& l, partition_head& h, uint64_t end);

// ----------------------------------------------------------------------------------- the key

// An Ed25519 key, private (signs and verifies) or public only (verifies).
class anchor_key {
 public:
  // `ref` is "file:/path" or "env:NAME" (engine/secrets.h) holding a PEM key: a private key
  // (PKCS#8, `openssl genpkey -algorithm ed25519`) or, unless `need_private`, a public key.
  // errc::invalid if it is not an Ed25519 key; never puts the key's text in a message.
  static result<anchor_key> load(std::string_view ref, bool need_private);
  // From PEM text directly (tests).
  static result<anchor_key> from_pem(std::string_view pem, bool need_private);

  bool has_private() const { return _private; }
  // Hex SHA-256 of the raw 32-byte public key: the `key` field of an anchor.
  const std::string& fingerprint() const { return _fingerprint; }
  // The 64-byte signature of `message`. Needs the private key.
  result<std::string> sign(std::string_view message) const;
  bool verify(std::string_view message, std::string_view signature) const;

 private:
  anchor_key() = default;
  std::shared_ptr<void> _pkey;  // EVP_PKEY, freed with EVP_PKEY_free
  bool _private = false;
  std::string _fingerprint;
};

// ------------------------------------------------------------------------------- the anchors

struct anchor {
  int64_t time_ms = 0;
  std::string key;                         // fingerprint of the signing key
  std::vector<partition_head> partitions;  // ascending partition
  std::string signature;                   // raw bytes (64)
};

// The text the signature covers (docs/anchors.md).
std::string anchor_signed_text(const anchor& a);
// One line of JSON, no newline.
std::string anchor_to_json(const anchor& a);
// errc::invalid with the reason if `line` is not an anchor.
result<anchor> anchor_from_json(std::string_view line);

// A line of an anchors file, read.
struct anchor_line {
  std::string file;           // the anchors file it is in, as given to read_anchors
  size_t line = 0;            // 1-based
  std::string text;           // as in the file, without the newline
  result<anchor> value;       // the anchor, or why the line is not one
  bool signature_ok = false;  // checked against the key given to read_anchors, if any
};
// Reads every line of `path` (errc::not_found if it does not exist). With a key, checks each
// anchor's signature and that it names that key.
result<std::vector<anchor_line>> read_anchors(const std::string& path, const anchor_key* key);

// Problems `verify_anchors` found, one line each, for the verify report.
struct anchor_check {
  size_t anchors = 0;          // lines with a good signature that were checked
  size_t partition_heads = 0;  // (anchor, partition) pairs compared
  std::vector<std::string> problems;
};
// Recomputes each partition's chain from offset 0 and compares it with every anchored head
// (docs/anchors.md, "Verifying"). `lines` may come from several files (on Kafka each instance
// anchors the partitions it owns in a file of its own): the heads of a partition from all of
// them are compared along one pass over its records; time and end order are checked within each
// file. Lines that are not anchors or fail their signature are problems. Only partitions in
// [0, l.partition_count()) are read; others are problems.
result<anchor_check> verify_anchors(log& l, const std::vector<anchor_line>& lines);

// ------------------------------------------------------------------------------ the writer

struct anchor_writer_options {
  std::string path;  // the anchors file; its directory is created if needed
  // Recompute the chains from offset 0 and compare with every anchor in the file before going
  // on (--verify-on-start); a mismatch fails open() with errc::corrupt.
  bool verify_on_start = false;
};

// Appends anchors of the partitions of `l` to the file. open() resumes each partition's chain
// from the file's last good anchor that holds the partition; write() extends the chains to the
// log's end and appends one line (one write + fdatasync) if anything changed or `force`.
class anchor_writer {
 public:
  // Warnings (a skipped line, a partition whose log is shorter than anchored) go to `warnings`.
  static result<std::unique_ptr<anchor_writer>> open(log& l, anchor_key key,
                                                     anchor_writer_options options,
                                                     std::vector<std::string>* warnings);
  // Returns true if a line was written. `partitions` (each < l.partition_count()):
  // anchor only these — on Kafka the ones the instance owns (docs/anchors.md, "Kafka"); nullopt:
  // every partition. An empty set writes nothing.
  result<bool> write(int64_t now_ms, bool force = false,
                     const std::optional<std::vector<uint32_t>>& partitions = std::nullopt);
  const std::vector<partition_head>& heads() const { return _heads; }

 private:
  anchor_writer(log& l, anchor_key key, anchor_writer_options options);
  log& _log;
  anchor_key _key;
  anchor_writer_options _options;
  std::vector<partition_head> _heads;
  bool _written_any = false;
  bool _needs_newline = false;  // the file ends with a torn line
};

}  // namespace auterity
