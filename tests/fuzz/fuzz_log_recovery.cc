// Recovery of the embedded log (engine/embedded_log.h) from arbitrary bytes in a partition's
// segment files: what a disk, a crash or an attacker can leave. The first input byte holds
// flags, the rest is the partition's bytes:
//   bit 0  recompute the crc32c of every frame header found walking the bytes, so mutations
//          reach the frame bodies (data and commit frames) instead of dying at the checksum;
//   bit 1  cut the bytes into two segments at the position in the second and third bytes;
//   bit 2  and misname the second segment (its name is not the first one's size).
// Properties: neither open crashes or hangs; the read-only open changes no byte of the
// directory; when the writable open recovers, it serves exactly the records and positions the
// read-only open served, has moved every cut byte to a quarantine file, and takes a commit
// that a reopen serves after them.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/core.h>

#include "engine/crc32c.h"
#include "engine/embedded_log.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

namespace fs = std::filesystem;
using namespace auterity;

constexpr size_t header_bytes = 16;

std::string make_temp_root() {
  const char* shm = "/dev/shm";
  std::string base = fs::is_directory(shm) ? shm : fs::temp_directory_path().string();
  std::string tmpl = base + "/auterity-fuzz-log-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  const char* made = ::mkdtemp(buf.data());
  FUZZ_CHECK(made != nullptr, "mkdtemp failed");
  return made;
}

// Removed at exit by the destructor of the static that holds it.
struct temp_dir {
  std::string path = make_temp_root();
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

const std::string& temp_root() {
  static const temp_dir root;
  return root.path;
}

void write_file(const fs::path& path, std::string_view bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  FUZZ_CHECK(f.good(), "cannot write %s", path.c_str());
}

std::string read_file(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Every regular file under `dir` with its bytes.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) out[e.path().string()] = read_file(e.path());
  }
  return out;
}

void fix_crcs(std::string& bytes) {
  size_t pos = 0;
  while (pos + header_bytes <= bytes.size() && bytes.compare(pos, 4, "AUTL") == 0) {
    uint32_t body = 0;
    std::memcpy(&body, bytes.data() + pos + 8, 4);
    if (body > bytes.size() - pos - header_bytes) break;
    const uint32_t crc = crc32c::value(bytes.data() + pos + 8, header_bytes - 8 + body);
    std::memcpy(bytes.data() + pos + 4, &crc, 4);
    pos += header_bytes + body;
  }
}

struct served {
  std::vector<std::vector<record>> streams;
  std::vector<uint64_t> positions;
  bool operator==(const served& o) const {
    auto same = [](const record& a, const record& b) {
      return a.offset == b.offset && a.key == b.key && a.value == b.value;
    };
    if (positions != o.positions || streams.size() != o.streams.size()) return false;
    for (size_t i = 0; i < streams.size(); ++i) {
      if (!std::equal(streams[i].begin(), streams[i].end(), o.streams[i].begin(),
                      o.streams[i].end(), same)) {
        return false;
      }
    }
    return true;
  }
};

served read_everything(log& l) {
  served out;
  for (int i = 0; i < stream_count; ++i) {
    const auto s = static_cast<stream>(i);
    auto end = l.end_offset(s, 0);
    FUZZ_CHECK(end.has_value(), "end_offset failed: %s", end.error().message.c_str());
    std::vector<record> recs;
    for (uint64_t from = 0; from < *end;) {
      auto n = l.read(s, 0, from, 64, 1 << 20, recs);
      FUZZ_CHECK(n.has_value(), "read failed: %s", n.error().message.c_str());
      FUZZ_CHECK(*n > 0, "read returned nothing below the end offset");
      from = recs.back().offset + 1;
    }
    for (size_t k = 0; k < recs.size(); ++k) {
      FUZZ_CHECK(recs[k].offset == k, "embedded log offsets are dense");
    }
    out.streams.push_back(std::move(recs));
    for (const char* g : {"orchestrator", "worker.step"}) {
      auto p = l.position(g, s, 0);
      FUZZ_CHECK(p.has_value(), "position failed: %s", p.error().message.c_str());
      out.positions.push_back(*p);
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t flags = data[0];
  std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (flags & 1) fix_crcs(bytes);
  size_t cut = bytes.size();
  if ((flags & 2) && bytes.size() >= 2) {
    cut = (static_cast<uint8_t>(bytes[0]) | static_cast<uint8_t>(bytes[1]) << 8) % bytes.size();
  }

  const fs::path dir = fs::path(temp_root()) / "log";
  fs::remove_all(dir);
  fs::create_directories(dir / "p000");
  write_file(dir / "meta", "auterity-embedded-log 1\npartitions 1\n");
  write_file(dir / "p000" / fmt::format("{:020}.seg", 0), std::string_view(bytes).substr(0, cut));
  if (cut < bytes.size()) {
    const uint64_t base = (flags & 4) ? cut + 1 : cut;
    write_file(dir / "p000" / fmt::format("{:020}.seg", base), std::string_view(bytes).substr(cut));
  }

  const auto before = snapshot(dir);
  served seen_read_only;
  bool read_only_opened = false;
  {
    embedded_log_options o;
    o.partitions = 0;
    o.read_only = true;
    o.on_damage = [](const log_damage& d) { (void)damage_text(d); };
    auto l = open_embedded_log(dir.string(), o);
    if (l) {
      read_only_opened = true;
      seen_read_only = read_everything(**l);
      commit_batch b;
      b.add(stream::ingress, "k", "v");
      FUZZ_CHECK(!(*l)->commit(0, b).has_value(), "a read-only log took a commit");
    } else {
      FUZZ_CHECK(!l.error().message.empty(), "a failed open without a reason");
    }
  }
  FUZZ_CHECK(snapshot(dir) == before, "the read-only open changed the directory");

  uint64_t damaged_bytes = 0;
  bool committed_damage = false;
  embedded_log_options o;
  o.partitions = 1;
  o.fsync = false;
  o.on_damage = [&](const log_damage& d) {
    damaged_bytes += d.bytes;
    committed_damage = committed_damage || d.committed;
  };
  auto l = open_embedded_log(dir.string(), o);
  if (!l) {
    FUZZ_CHECK(!l.error().message.empty(), "a failed open without a reason");
    return 0;
  }
  FUZZ_CHECK(read_only_opened, "the writable open recovered what the read-only one refused");
  FUZZ_CHECK(!committed_damage, "the writable open cut committed data and went on");
  const served recovered = read_everything(**l);
  FUZZ_CHECK(recovered == seen_read_only,
             "the writable recovery serves other records than the read-only open");
  uint64_t quarantined = 0;
  if (fs::is_directory(dir / "quarantine")) {
    for (const auto& e : fs::directory_iterator(dir / "quarantine")) quarantined += e.file_size();
  }
  FUZZ_CHECK(quarantined == damaged_bytes, "cut %llu bytes, quarantined %llu",
             static_cast<unsigned long long>(damaged_bytes),
             static_cast<unsigned long long>(quarantined));

  commit_batch b;
  b.add(stream::acks, "acme", "after recovery");
  b.set_position("orchestrator", stream::ingress, 1'000'000);
  auto c = (*l)->commit(0, b);
  FUZZ_CHECK(c.has_value(), "commit after recovery failed: %s", c.error().message.c_str());
  l->reset();

  auto again = open_embedded_log(dir.string(), o);
  FUZZ_CHECK(again.has_value(), "reopen after a commit failed: %s", again.error().message.c_str());
  served expected = recovered;
  const size_t acks = static_cast<size_t>(stream::acks);
  expected.streams[acks].push_back({expected.streams[acks].size(), "acme", "after recovery"});
  expected.positions[static_cast<size_t>(stream::ingress) * 2] = 1'000'000;
  FUZZ_CHECK(read_everything(**again) == expected, "the reopened log lost or changed records");
  return 0;
}
