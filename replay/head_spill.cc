#include "replay/head_spill.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/core.h>

#include "engine/fixed_int.h"

namespace auterity {

namespace {

constexpr size_t run_buffer_bytes = 64 << 10;   // read-ahead per run while merging
constexpr size_t fixed_bytes = 2 + 4 + 32 + 8;  // key length, count, hash, offset

std::unexpected<error> io_error(const char* what) {
  return fail(errc::io, fmt::format("chain check spill file: {}: {}", what, std::strerror(errno)));
}

}  // namespace

head_spill::head_spill() : _file(std::tmpfile()) {}
head_spill::~head_spill() = default;

result<void> head_spill::add_run(std::vector<ended_history>& batch) {
  if (!_file) return io_error("create");
  std::sort(batch.begin(), batch.end(), [](const auto& a, const auto& b) { return a.key < b.key; });
  std::string bytes;
  for (const ended_history& h : batch) {
    put_fixed<uint16_t>(bytes, static_cast<uint16_t>(h.key.size()));  // ids are <= 128 bytes each
    bytes += h.key;
    put_fixed<uint32_t>(bytes, h.count);
    bytes.append(reinterpret_cast<const char*>(h.last.data()), h.last.size());
    put_fixed<uint64_t>(bytes, h.last_offset);
  }
  if (::pwrite(fileno(_file.get()), bytes.data(), bytes.size(), static_cast<off_t>(_size)) !=
      static_cast<ssize_t>(bytes.size())) {
    return io_error("write");
  }
  _runs.push_back(run{_size, _size + bytes.size(), _size, {}, 0, std::nullopt});
  _size += bytes.size();
  batch.clear();
  return {};
}

// Makes at least `need` unread bytes available in the run's buffer; false at the run's end.
result<bool> head_spill::fill(run& r, size_t need) {
  if (r.buffer.size() - r.used >= need) return true;
  r.buffer.erase(0, r.used);
  r.used = 0;
  const size_t want = std::min<uint64_t>(std::max(need, run_buffer_bytes), r.end - r.pos);
  if (r.buffer.size() + want < need) return false;
  const size_t at = r.buffer.size();
  r.buffer.resize(at + want);
  const ssize_t n =
      ::pread(fileno(_file.get()), r.buffer.data() + at, want, static_cast<off_t>(r.pos));
  if (n != static_cast<ssize_t>(want)) return io_error("read");
  r.pos += want;
  return true;
}

result<void> head_spill::advance(run& r) {
  r.head.reset();
  auto more = fill(r, 2);
  if (!more) return std::unexpected(more.error());
  if (!*more) return {};
  const size_t key_bytes = get_fixed<uint16_t>(r.buffer.data() + r.used);
  more = fill(r, fixed_bytes + key_bytes);
  if (!more) return std::unexpected(more.error());
  if (!*more) return fail(errc::corrupt, "chain check spill file: a record is cut short");
  const char* p = r.buffer.data() + r.used + 2;
  ended_history h;
  h.key.assign(p, key_bytes);
  p += key_bytes;
  h.count = get_fixed<uint32_t>(p);
  std::memcpy(h.last.data(), p + 4, h.last.size());
  h.last_offset = get_fixed<uint64_t>(p + 4 + h.last.size());
  r.used += fixed_bytes + key_bytes;
  r.head = std::move(h);
  return {};
}

result<void> head_spill::start_merge() {
  for (run& r : _runs) {
    if (auto a = advance(r); !a) return a;
  }
  return {};
}

result<std::optional<ended_history>> head_spill::next() {
  // Runs are few (a run holds tens of thousands of histories), so a linear pick is cheap.
  run* best = nullptr;
  for (run& r : _runs) {
    if (r.head && (!best || r.head->key < best->head->key)) best = &r;
  }
  if (!best) return std::optional<ended_history>();
  std::optional<ended_history> out = std::move(best->head);
  if (auto a = advance(*best); !a) return std::unexpected(a.error());
  return out;
}

}  // namespace auterity
