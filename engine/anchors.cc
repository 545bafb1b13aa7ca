#include "engine/anchors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include <fmt/core.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <nlohmann/json.hpp>

#include "engine/assert.h"
#include "engine/secrets.h"

namespace auterity {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view chain_domain = "auterity-anchor-chain 1";
constexpr std::string_view anchor_magic = "auterity-anchor 1";
constexpr size_t ed25519_signature_bytes = 64;
constexpr size_t ed25519_public_bytes = 32;
constexpr size_t anchor_line_bytes_max = 1 << 20;  // an anchor of 1000 partitions is ~100 KiB

template <typename T>
void put_le(std::string& out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::optional<std::string> unhex(std::string_view s) {
  if (s.size() % 2) return std::nullopt;
  std::string out;
  out.reserve(s.size() / 2);
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < s.size(); i += 2) {
    const int hi = digit(s[i]), lo = digit(s[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return out;
}

std::string hex_of(std::string_view bytes) {
  return hex(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

}  // namespace

// ------------------------------------------------------------------------- the partition chain

void extend_head(partition_head& h, const record& r) {
  std::string buf;
  buf.reserve(chain_domain.size() + 32 + 8 + 4 + r.key.size() + 32);
  buf.append(chain_domain);
  buf.append(reinterpret_cast<const char*>(h.head.data()), h.head.size());
  put_le<uint64_t>(buf, r.offset);
  put_le<uint32_t>(buf, static_cast<uint32_t>(r.key.size()));
  buf.append(r.key);
  const hash256 value = sha256(r.value);
  buf.append(reinterpret_cast<const char*>(value.data()), value.size());
  h.head = sha256(buf);
  h.end = r.offset + 1;
}

result<bool> extend_head_to(log& l, partition_head& h, uint64_t end) {
  auto log_end = l.end_offset(stream::executions, h.partition);
  if (!log_end) return std::unexpected(log_end.error());
  const uint64_t target = std::min(end, *log_end);
  if (h.end < target) {
    if (auto d = l.await_decided(stream::executions, h.partition, target,
                                 std::chrono::milliseconds(chain_decided_wait_ms_max));
        !d) {
      return std::unexpected(d.error());
    }
  }
  std::vector<record> batch;
  while (h.end < target) {
    batch.clear();
    auto n = l.read_to(stream::executions, h.partition, h.end, target, chain_read_records_max,
                       chain_read_bytes_max, batch);
    if (!n) return std::unexpected(n.error());
    if (*n == 0) break;
    for (const record& r : batch) {
      if (r.offset >= target) break;
      extend_head(h, r);
    }
    if (batch.back().offset >= target) break;
  }
  h.end = std::max(h.end, target);
  return *log_end >= end;
}

// ----------------------------------------------------------------------------------- the key

namespace {
EVP_PKEY* pkey_of(const std::shared_ptr<void>& p) { return static_cast<EVP_PKEY*>(p.get()); }
}  // namespace

result<anchor_key> anchor_key::from_pem(std::string_view pem, bool need_private) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  if (!bio) return fail(errc::io, "OpenSSL: cannot allocate a buffer");
  anchor_key k;
  EVP_PKEY* pkey = PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr);
  k._private = pkey != nullptr;
  if (!pkey && !need_private) {
    BIO_reset(bio.get());
    pkey = PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr);
  }
  if (!pkey) {
    return fail(errc::invalid, need_private ? "not a PEM private key" : "not a PEM key");
  }
  k._pkey.reset(pkey, [](void* p) { EVP_PKEY_free(static_cast<EVP_PKEY*>(p)); });
  if (EVP_PKEY_get_id(pkey) != EVP_PKEY_ED25519) return fail(errc::invalid, "not an Ed25519 key");
  uint8_t raw[ed25519_public_bytes];
  size_t len = sizeof raw;
  if (EVP_PKEY_get_raw_public_key(pkey, raw, &len) != 1 || len != sizeof raw) {
    return fail(errc::invalid, "cannot read the Ed25519 public key");
  }
  k._fingerprint = hex(sha256(std::string_view(reinterpret_cast<const char*>(raw), len)));
  return k;
}

result<anchor_key> anchor_key::load(std::string_view ref, bool need_private) {
  auto pem = resolve_secret(ref);
  if (!pem) return std::unexpected(pem.error());
  auto k = from_pem(*pem, need_private);
  if (!k) return fail(k.error().code, fmt::format("anchor key {}: {}", ref, k.error().message));
  return k;
}

result<std::string> anchor_key::sign(std::string_view message) const {
  if (!_private) return fail(errc::invalid, "anchor key: signing needs the private key");
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  std::string sig(ed25519_signature_bytes, '\0');
  size_t len = sig.size();
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, pkey_of(_pkey)) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1 ||
      len != ed25519_signature_bytes) {
    return fail(errc::io, "OpenSSL: Ed25519 signing failed");
  }
  return sig;
}

bool anchor_key::verify(std::string_view message, std::string_view signature) const {
  if (signature.size() != ed25519_signature_bytes) return false;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  return ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey_of(_pkey)) == 1 &&
         EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
                          signature.size(), reinterpret_cast<const unsigned char*>(message.data()),
                          message.size()) == 1;
}

// ------------------------------------------------------------------------------- the anchors

std::string anchor_signed_text(const anchor& a) {
  std::string out = fmt::format("{}\ntime_ms {}\nkey {}\n", anchor_magic, a.time_ms, a.key);
  for (const partition_head& h : a.partitions) {
    out += fmt::format("partition {} end {} head {}\n", h.partition, h.end, hex(h.head));
  }
  return out;
}

std::string anchor_to_json(const anchor& a) {
  std::string out =
      fmt::format(R"({{"anchor":1,"time_ms":{},"key":"{}","partitions":[)", a.time_ms, a.key);
  for (size_t i = 0; i < a.partitions.size(); ++i) {
    const partition_head& h = a.partitions[i];
    out += fmt::format(R"({}{{"p":{},"end":{},"head":"{}"}})", i ? "," : "", h.partition, h.end,
                       hex(h.head));
  }
  out += fmt::format(R"(],"signature":"{}"}})", hex_of(a.signature));
  return out;
}

result<anchor> anchor_from_json(std::string_view line) {
  using json = nlohmann::json;
  if (line.size() > anchor_line_bytes_max) {
    return fail(errc::too_large, fmt::format("longer than {} bytes", anchor_line_bytes_max));
  }
  const json j = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  auto bad = [](std::string_view why) { return fail(errc::invalid, std::string(why)); };
  if (!j.is_object()) return bad("not a JSON object");
  if (!j.contains("anchor") || j["anchor"] != 1) return bad("not a version 1 anchor");
  anchor a;
  if (!j.contains("time_ms") || !j["time_ms"].is_number_integer()) return bad("no time_ms");
  a.time_ms = j["time_ms"].get<int64_t>();
  if (!j.contains("key") || !j["key"].is_string()) return bad("no key");
  a.key = j["key"].get<std::string>();
  if (!j.contains("signature") || !j["signature"].is_string()) return bad("no signature");
  auto sig = unhex(j["signature"].get<std::string>());
  if (!sig) return bad("signature is not hex");
  a.signature = std::move(*sig);
  if (!j.contains("partitions") || !j["partitions"].is_array()) return bad("no partitions");
  for (const json& p : j["partitions"]) {
    if (!p.is_object() || !p.contains("p") || !p["p"].is_number_unsigned() || !p.contains("end") ||
        !p["end"].is_number_unsigned() || !p.contains("head") || !p["head"].is_string()) {
      return bad("a partition entry lacks p, end or head");
    }
    partition_head h;
    const uint64_t part = p["p"].get<uint64_t>();
    if (part > UINT32_MAX) return bad("partition out of range");
    h.partition = static_cast<uint32_t>(part);
    h.end = p["end"].get<uint64_t>();
    auto head = unhex(p["head"].get<std::string>());
    if (!head || head->size() != h.head.size()) return bad("head is not 32 bytes of hex");
    std::memcpy(h.head.data(), head->data(), h.head.size());
    if (!a.partitions.empty() && a.partitions.back().partition >= h.partition) {
      return bad("partitions not in ascending order");
    }
    a.partitions.push_back(h);
  }
  return a;
}

result<std::vector<anchor_line>> read_anchors(const std::string& path, const anchor_key* key) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return fail(errc::not_found, fmt::format("cannot read anchors file {}", path));
  std::vector<anchor_line> out;
  std::string text;
  size_t n = 0;
  while (std::getline(f, text)) {
    ++n;
    if (text.empty()) continue;
    anchor_line l{path, n, text, anchor_from_json(text), false};
    if (key && l.value) {
      l.signature_ok = l.value->key == key->fingerprint() &&
                       key->verify(anchor_signed_text(*l.value), l.value->signature);
    }
    out.push_back(std::move(l));
  }
  if (f.bad()) return fail(errc::io, fmt::format("reading anchors file {}", path));
  return out;
}

result<anchor_check> verify_anchors(log& l, const std::vector<anchor_line>& lines) {
  anchor_check c;
  struct expected_head {
    uint64_t end;
    hash256 head;
    const anchor_line* line;
  };
  auto where = [](const anchor_line& line) {
    return fmt::format("anchors {} line {}", line.file, line.line);
  };
  std::map<uint32_t, std::vector<expected_head>> by_partition;
  // Order is checked within each file: files of different instances interleave in time.
  std::map<std::string, int64_t> last_time;
  std::map<std::pair<std::string, uint32_t>, uint64_t> last_end;
  for (const anchor_line& line : lines) {
    if (!line.value) {
      c.problems.push_back(
          fmt::format("{}: UNREADABLE: {}", where(line), line.value.error().message));
      continue;
    }
    if (!line.signature_ok) {
      c.problems.push_back(
          fmt::format("{}: BAD SIGNATURE: not signed with the given key (key {})", where(line),
                      line.value->key));
      continue;
    }
    ++c.anchors;
    auto [t, first] = last_time.try_emplace(line.file, line.value->time_ms);
    if (!first && line.value->time_ms < t->second) {
      c.problems.push_back(fmt::format(
          "{}: OUT OF ORDER: its time is before the previous anchor's", where(line)));
    }
    t->second = std::max(t->second, line.value->time_ms);
    for (const partition_head& h : line.value->partitions) {
      if (h.partition >= l.partition_count()) {
        c.problems.push_back(fmt::format("{}: partition {} is not in the log ({})", where(line),
                                         h.partition, l.partition_count()));
        continue;
      }
      uint64_t& end = last_end[{line.file, h.partition}];
      if (h.end < end) {
        c.problems.push_back(
            fmt::format("{}: partition {}: OUT OF ORDER: end {} is before an earlier anchor's {}",
                        where(line), h.partition, h.end, end));
      }
      end = std::max(end, h.end);
      by_partition[h.partition].push_back({h.end, h.head, &line});
    }
  }
  for (auto& [p, heads] : by_partition) {
    std::stable_sort(heads.begin(), heads.end(),
                     [](const expected_head& a, const expected_head& b) { return a.end < b.end; });
    partition_head h{p, 0, {}};
    uint64_t matched = 0;  // end of the last anchored head the chain matched
    bool rewritten = false;
    for (const expected_head& e : heads) {
      ++c.partition_heads;
      auto reached = extend_head_to(l, h, e.end);
      if (!reached) return std::unexpected(reached.error());
      if (!*reached) {
        c.problems.push_back(fmt::format(
            "{}: partition {}: TRUNCATED: the log's executions end at offset {}, the anchor "
            "covers offsets up to {}",
            where(*e.line), p, h.end, e.end));
        break;
      }
      if (h.head != e.head && !rewritten) {
        rewritten = true;  // later anchors of the partition then differ too: name the first
        c.problems.push_back(fmt::format(
            "{}: partition {}: REWRITTEN: executions [0, {}) hash to {}, anchored {}: a record "
            "at an offset in [{}, {}) was changed, removed, reordered or inserted{}",
            where(*e.line), p, e.end, hex(h.head), hex(e.head), matched, e.end,
            matched ? fmt::format(" (the chain matches the anchor at offset {})", matched)
                    : std::string()));
      }
      if (!rewritten) matched = e.end;
    }
  }
  return c;
}

// ------------------------------------------------------------------------------ the writer

anchor_writer::anchor_writer(log& l, anchor_key key, anchor_writer_options options)
    : _log(l), _key(std::move(key)), _options(std::move(options)) {}

result<std::unique_ptr<anchor_writer>> anchor_writer::open(log& l, anchor_key key,
                                                           anchor_writer_options options,
                                                           std::vector<std::string>* warnings) {
  if (!key.has_private()) return fail(errc::invalid, "anchor key: writing needs the private key");
  std::unique_ptr<anchor_writer> w(new anchor_writer(l, std::move(key), std::move(options)));
  const uint32_t parts = l.partition_count();
  for (uint32_t p = 0; p < parts; ++p) w->_heads.push_back({p, 0, {}});
  auto warn = [&](std::string s) {
    if (warnings) warnings->push_back(std::move(s));
  };

  std::error_code ec;
  if (fs::exists(w->_options.path, ec)) {
    auto lines = read_anchors(w->_options.path, &w->_key);
    if (!lines) return std::unexpected(lines.error());
    std::ifstream f(w->_options.path, std::ios::binary | std::ios::ate);
    if (f.tellg() > 0) {
      f.seekg(-1, std::ios::end);
      w->_needs_newline = f.get() != '\n';
    }
    if (w->_options.verify_on_start) {
      auto check = verify_anchors(l, *lines);
      if (!check) return std::unexpected(check.error());
      if (!check->problems.empty()) {
        return fail(errc::corrupt,
                    fmt::format("anchors {} do not match the log: {}{}", w->_options.path,
                                check->problems.front(),
                                check->problems.size() > 1
                                    ? fmt::format(" (and {} more)", check->problems.size() - 1)
                                    : ""));
      }
    }
    // Each partition resumes from the last anchor that holds it: on Kafka an anchor holds only
    // the partitions the instance owned when it wrote it.
    for (const anchor_line& line : *lines) {
      if (!line.value || !line.signature_ok) {
        warn(fmt::format(
            "anchors {} line {}: skipped: {}", w->_options.path, line.line,
            line.value ? "not signed with this engine's key" : line.value.error().message));
        continue;
      }
      for (const partition_head& h : line.value->partitions) {
        if (h.partition < parts) w->_heads[h.partition] = h;
      }
      w->_written_any = true;
    }
  }
  for (uint32_t p = 0; p < parts; ++p) {
    auto end = l.end_offset(stream::executions, p);
    if (!end) return std::unexpected(end.error());
    if (*end < w->_heads[p].end) {
      warn(
          fmt::format("partition {}: the log's executions end at offset {}, before the last "
                      "anchor's end {}: records were removed (a repair, docs/salvage.md?); its "
                      "chain starts again from offset 0, and the earlier anchors keep showing "
                      "the cut (replay verify --anchors: TRUNCATED)",
                      p, *end, w->_heads[p].end));
      w->_heads[p] = partition_head{p, 0, {}};
    }
  }
  return w;
}

result<bool> anchor_writer::write(int64_t now_ms, bool force,
                                  const std::optional<std::vector<uint32_t>>& partitions) {
  std::vector<uint32_t> chosen;
  if (partitions) {
    chosen = *partitions;
    std::sort(chosen.begin(), chosen.end());
    chosen.erase(std::unique(chosen.begin(), chosen.end()), chosen.end());
  } else {
    for (const partition_head& h : _heads) chosen.push_back(h.partition);
  }
  if (chosen.empty()) return false;
  bool changed = !_written_any;
  anchor a;
  for (uint32_t p : chosen) {
    if (p >= _heads.size()) {
      return fail(errc::invalid, fmt::format("anchor of partition {} of {}", p, _heads.size()));
    }
    // Extended on a copy: a failed extension (an open transaction past
    // chain_decided_wait_ms_max) leaves the head where the file has it.
    partition_head h = _heads[p];
    auto end = _log.end_offset(stream::executions, p);
    if (!end) return std::unexpected(end.error());
    if (*end != h.end) {
      auto reached = extend_head_to(_log, h, *end);
      if (!reached) return std::unexpected(reached.error());
      changed = true;
    }
    a.partitions.push_back(h);
  }
  if (!changed && !force) return false;

  a.time_ms = now_ms;
  a.key = _key.fingerprint();
  auto sig = _key.sign(anchor_signed_text(a));
  if (!sig) return std::unexpected(sig.error());
  a.signature = std::move(*sig);
  std::string line = (_needs_newline ? "\n" : "") + anchor_to_json(a) + "\n";

  const fs::path path(_options.path);
  const bool created = !fs::exists(path);
  if (created && path.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    if (ec)
      return fail(errc::io,
                  fmt::format("creating {}: {}", path.parent_path().string(), ec.message()));
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return fail(errc::io, fmt::format("opening {}: {}", path.string(), std::strerror(errno)));
  const ssize_t n = ::write(fd, line.data(), line.size());
  const int saved = errno;
  const bool synced = n == static_cast<ssize_t>(line.size()) && ::fdatasync(fd) == 0;
  ::close(fd);
  if (!synced) {
    _needs_newline = true;  // a partial line may be there: start the next one on a line of its own
    return fail(errc::io,
                fmt::format("writing {}: {}", path.string(), std::strerror(n < 0 ? saved : errno)));
  }
  if (created && path.has_parent_path()) {
    const int dfd = ::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void)::fsync(dfd);
      ::close(dfd);
    }
  }
  _needs_newline = false;
  _written_any = true;
  for (const partition_head& h : a.partitions) _heads[h.partition] = h;
  return true;
}

}  // namespace auterity
