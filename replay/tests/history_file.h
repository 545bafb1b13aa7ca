#pragma once
// Test helpers: a history of log records in a small text file (the golden fixture's format,
// described in tests/data/README.md), and writing records into a fresh embedded log — which is
// how the tamper tests rewrite a log "consistently", with valid framing and checksums.

#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "engine/embedded_log.h"
#include "engine/log.h"
#include "engine/state_store.h"

namespace auterity::testing {

struct logged_record {
  stream s = stream::executions;
  uint32_t partition = 0;
  uint64_t offset = 0;
  std::string key;
  std::string value;
};

struct history_file {
  uint32_t partitions = 0;
  std::vector<logged_record> records;  // per (stream, partition) in offset order
};

inline std::string base64_encode(std::string_view in) {
  static constexpr char digits[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    for (int k = 3; k >= 0; --k) out.push_back(digits[(v >> (6 * k)) & 63]);
  }
  if (i < in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    if (i + 1 < in.size()) v |= uint8_t(in[i + 1]) << 8;
    out.push_back(digits[(v >> 18) & 63]);
    out.push_back(digits[(v >> 12) & 63]);
    out.push_back(i + 1 < in.size() ? digits[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

inline std::string base64_decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const int v = value(c);
    if (v < 0) continue;  // '=' padding
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

inline std::string scratch_temp_dir(std::string_view name) {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = fmt::format("{}/auterity-{}-XXXXXX", base && *base ? base : "/tmp", name);
  if (!::mkdtemp(tmpl.data())) return {};
  return tmpl;
}

struct dir_guard {
  std::string path;
  ~dir_guard() {
    std::error_code ec;
    if (!std::getenv("AUTERITY_TEST_KEEP")) std::filesystem::remove_all(path, ec);
  }
};

// "# ..." comments, "partitions N", then one record per line:
//   <stream name> TAB <partition> TAB <offset> TAB <key> TAB <base64 of the value>
inline std::string format_history(const history_file& h, std::string_view comment) {
  std::string out;
  std::istringstream lines{std::string(comment)};
  for (std::string line; std::getline(lines, line);) out += "# " + line + "\n";
  out += fmt::format("partitions {}\n", h.partitions);
  for (const logged_record& r : h.records) {
    out += fmt::format("{}\t{}\t{}\t{}\t{}\n", stream_name(r.s), r.partition, r.offset, r.key,
                       base64_encode(r.value));
  }
  return out;
}

inline result<history_file> read_history(const std::string& path) {
  std::ifstream in(path);
  if (!in) return fail(errc::io, "cannot read " + path);
  history_file h;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    if (line.starts_with("partitions ")) {
      h.partitions = static_cast<uint32_t>(std::stoul(line.substr(11)));
      continue;
    }
    std::vector<std::string> f;
    std::istringstream fields(line);
    for (std::string x; std::getline(fields, x, '\t');) f.push_back(x);
    auto s = f.size() == 5 ? stream_from_name(f[0]) : std::nullopt;
    if (!s) return fail(errc::corrupt, "bad history line: " + line.substr(0, 80));
    h.records.push_back({*s, static_cast<uint32_t>(std::stoul(f[1])), std::stoull(f[2]), f[3],
                         base64_decode(f[4])});
  }
  if (h.partitions == 0) return fail(errc::corrupt, path + " has no 'partitions N' line");
  return h;
}

// Writes the records into a new embedded log in <dir>/log, one commit per record in the order
// given, so each (stream, partition) gets offsets 0, 1, 2, ... in that order.
inline result<std::unique_ptr<log>> write_log(const std::string& dir, uint32_t partitions,
                                              const std::vector<logged_record>& records) {
  embedded_log_options o;
  o.partitions = partitions;
  o.fsync = false;
  auto l = open_embedded_log(dir + "/log", o);
  if (!l) return std::unexpected(l.error());
  for (const logged_record& r : records) {
    commit_batch b;
    b.add(r.s, r.key, r.value);
    auto c = (*l)->commit(r.partition, b);
    if (!c) return std::unexpected(c.error());
  }
  return l;
}

// All records of the given streams of every partition, in offset order per stream.
inline result<std::vector<logged_record>> read_log(log& l, std::vector<stream> streams) {
  std::vector<logged_record> out;
  for (uint32_t p = 0; p < l.partition_count(); ++p) {
    for (stream s : streams) {
      std::vector<record> recs;
      for (uint64_t from = 0; from < *l.end_offset(s, p);) {
        recs.clear();
        auto n = l.read(s, p, from, 1024, 8 << 20, recs);
        if (!n) return std::unexpected(n.error());
        if (*n == 0) break;
        for (record& r : recs)
          out.push_back({s, p, r.offset, std::move(r.key), std::move(r.value)});
        from = out.back().offset + 1;
      }
    }
  }
  return out;
}

}  // namespace auterity::testing
