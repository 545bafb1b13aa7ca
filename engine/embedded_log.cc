// The embedded log: the log interface over one data directory.
//
// Layout of a data directory:
//   <dir>/LOCK     flock(LOCK_EX | LOCK_NB), held while the log is open: one writing process
//                  per dir. A read-only open takes LOCK_SH instead (readers share the dir with
//                  each other, not with a writer) and never creates the file.
//   <dir>/quarantine/pNNN-<segment>-<offset>.bin
//                  bytes a writable recovery cut off a partition's torn tail, kept (see below).
//   <dir>/meta     text: "auterity-embedded-log 1\npartitions N\n", and after a scale (see
//                  scale_embedded_log) "base B\n" and "retired R1,R2,...\n" lines: the placement
//                  header (engine/log.h). Written last at creation (after the partition
//                  directories), so a crash while creating just retries; replaced by a rename.
//   <dir>/pNNN/    one directory per partition: p000, p001, ...
//   <dir>/pNNN/<20 digits>.seg
//                  A partition is ONE append-only logical file holding the records of all
//                  streams interleaved, cut into segment files. A segment is named by the
//                  logical byte position where it starts, so the next segment's name is this
//                  one's name + its size (recovery checks this). Rolling happens between
//                  commits: a commit never spans two segments.
//
// Frames (integers little-endian, the host order; see the static_assert):
//   header  u32 magic "AUTL" | u32 crc32c of bytes [8, 16 + body_len) of the frame
//           | u32 body_len | u8 type | 3 zero bytes
//   data    type 1: u8 stream | u64 offset | u32 key_len | key | value (the rest of the body)
//   commit  type 2: u64 commit_start (logical position of the commit's first frame)
//           | u32 data frames in the commit | u32 position count
//           | count x (u8 stream | u64 next_offset | u16 group_len | group)
// A commit is its data frames followed by one commit frame, written with one pwrite (and one
// fdatasync if options.fsync). Readers see its records and positions only after that succeeded.
// Group commit: concurrent commit() calls on a partition are written together as ONE commit on
// disk: the data frames of all of them, in queue order, then one commit frame counting all
// those frames and carrying all their positions in the same order (a later one wins, as across
// commit frames). So a group is as atomic on disk as a single commit: recovery keeps all of it
// or none, and never has to tell apart several unacknowledged commit frames after a tear.
//
//   forward type 3: u8 stream | u32 target partition | u32 key_len | key | value
//           An append to another partition's stream (commit_batch::append::partition), counted
//           among the commit's data frames. It has no offset in this partition.
//
// Forwarding: a commit of partition p with appends to partition q writes them as forward frames
// in p's commit (atomic with everything else of it), then delivers them: one commit of q with
// the records and the position of consumer group "forwarded.pNNN" (p) on (ingress, q) = how many
// of p's forwards to q are delivered, counted in p's commit order. Delivery happens before the
// commit() that wrote them returns, so a reader sees them a moment after p's records. A crash
// (or a failed write) between the two commits leaves forwards that the count says are not
// delivered: the next writable open delivers them before anything else runs. So each is
// delivered exactly once and in order per (p, q), as on Kafka, where one transaction spans both
// partitions. A read-only open delivers nothing: undelivered forwards are not visible there.
//
// Recovery (open): every segment is scanned in order. The committed end is the end of the last
// valid commit frame; what follows (a torn write, half a commit) is cut off. A bad frame
// followed by a later valid commit frame means committed data is damaged: errc::corrupt. One
// exception: if that commit frame is the only one and belongs to the commit right after the
// committed end, its pages reached the disk out of order before its fdatasync returned; it was
// never acknowledged, so it is dropped like any torn tail. (With options.fsync off, a power loss
// can tear several commits; that is reported as corrupt rather than guessed at.) Before cutting,
// the writable recovery copies the bytes it cuts to a quarantine file, fsynced, and reports
// them (options.on_damage, else stderr). A read-only open cuts nothing and writes nothing: it
// reports the bytes after the committed end (a torn tail, or damage inside committed data,
// which it does not fail on) and serves the records before them.
//
// Memory: each record costs 16 bytes of index (segment, frame size, position in the file), so
// read() needs no scan; 10 million records in a partition cost 160 MB. Every segment file stays
// open (one descriptor each); there is no retention yet.
//
// Threading, per partition (leader/follower group commit, as LevelDB's write queue): commit()
// queues its batch under `queue_mu` and waits. The commit at the front of the queue is the
// leader: it takes itself and the commits queued behind it (at most group_commit_batches_max
// of them and group_commit_bytes_max bytes), releases `queue_mu`, assigns offsets in queue
// order, writes the group with one pwrite and one fdatasync, publishes it, then pops the group
// and wakes each follower with its own result and the next front to lead. Commits arriving
// meanwhile queue for the next group. If the write or the sync fails, every commit of the group
// gets that error and none of it is published. `write_mu` is taken only by the leader (so never
// waited for): it guards what the leader owns (`broken`, the file, the active segment).
// `index_mu` guards what readers see; the leader takes it exclusively once per group to
// publish, so a reader sees all of a commit or none of it. Readers copy the index entries they
// need under a shared lock and read the files without it. `wait_mu` + `wait_cv` carry the
// generation.

#include "engine/embedded_log.h"
#include "engine/kafka_placement.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <system_error>
#include <utility>

#include <fmt/core.h>

#include "engine/assert.h"
#include "engine/crc32c.h"
#include "engine/fixed_int.h"

// Returns the error of a failed result<...> from the enclosing function.
#define ELOG_TRY(expr)                                           \
  do {                                                           \
    if (auto _elog_r = (expr); !_elog_r) {                       \
      return std::unexpected<error>(std::move(_elog_r.error())); \
    }                                                            \
  } while (0)

namespace auterity {
namespace {

namespace fs = std::filesystem;

static_assert(std::endian::native == std::endian::little, "frames are stored in host order");

constexpr uint32_t frame_magic = 0x4c545541;  // the bytes "AUTL" on disk
constexpr std::string_view frame_magic_bytes = "AUTL";
constexpr size_t frame_header_bytes = 16;
constexpr size_t frame_crc_from = 8;  // the crc covers the header after itself, then the body
constexpr size_t data_fixed_bytes = 1 + 8 + 4;
constexpr size_t forward_fixed_bytes = 1 + 4 + 4;
constexpr size_t commit_fixed_bytes = 8 + 4 + 4;
constexpr size_t position_fixed_bytes = 1 + 8 + 2;
constexpr size_t frame_body_bytes_max = UINT32_MAX;  // the body_len field
constexpr size_t group_bytes_max = 1024;             // a consumer group's name
constexpr uint32_t partitions_max = 1000;            // pNNN directory names
constexpr size_t read_chunk_bytes_max = 4 << 20;     // one pread of adjacent frames
constexpr std::string_view meta_magic = "auterity-embedded-log 1";
// One group commit (see Threading above): bytes of the commits one leader writes at once, and
// how many commits. They bound the leader's buffer and its followers' wait; a single commit
// larger than group_commit_bytes_max still goes, in a group of its own. Commits past either
// limit wait for the next group.
constexpr size_t group_commit_bytes_max = 4 << 20;
constexpr size_t group_commit_batches_max = 64;

enum class frame_type : uint8_t { data = 1, commit = 2, forward = 3 };

// What writable opens of this process moved to quarantine (embedded_log_quarantined_bytes()).
std::atomic<uint64_t> g_quarantined_bytes{0};
std::atomic<uint64_t> g_quarantined_files{0};

size_t idx(stream s) { return static_cast<size_t>(s); }
bool valid_stream(stream s) { return idx(s) < stream_count; }

// ---------------------------------------------------------------------------------------------
// Encoding

// Starts a frame; finish_frame() fills in length and crc once the body is appended.
size_t start_frame(std::string& buf, frame_type type) {
  size_t at = buf.size();
  put_fixed<uint32_t>(buf, frame_magic);
  put_fixed<uint32_t>(buf, 0);  // crc
  put_fixed<uint32_t>(buf, 0);  // body_len
  put_fixed<uint8_t>(buf, static_cast<uint8_t>(type));
  buf.append(3, '\0');
  return at;
}

void finish_frame(std::string& buf, size_t at) {
  auto body_len = static_cast<uint32_t>(buf.size() - at - frame_header_bytes);
  std::memcpy(buf.data() + at + 8, &body_len, 4);
  uint32_t crc = crc32c::value(buf.data() + at + frame_crc_from, buf.size() - at - frame_crc_from);
  std::memcpy(buf.data() + at + 4, &crc, 4);
}

void append_data_frame(std::string& buf, const commit_batch::append& a, uint64_t offset) {
  size_t at = start_frame(buf, frame_type::data);
  put_fixed<uint8_t>(buf, static_cast<uint8_t>(a.s));
  put_fixed<uint64_t>(buf, offset);
  put_fixed<uint32_t>(buf, static_cast<uint32_t>(a.key.size()));
  buf.append(a.key);
  buf.append(a.value);
  finish_frame(buf, at);
}

// An append to another partition (forwarding): no offset here; the log delivers it to the
// target partition after the commit (see "Forwarding" at the top).
void append_forward_frame(std::string& buf, const commit_batch::append& a) {
  size_t at = start_frame(buf, frame_type::forward);
  put_fixed<uint8_t>(buf, static_cast<uint8_t>(a.s));
  put_fixed<uint32_t>(buf, *a.partition);
  put_fixed<uint32_t>(buf, static_cast<uint32_t>(a.key.size()));
  buf.append(a.key);
  buf.append(a.value);
  finish_frame(buf, at);
}

// One commit frame for the batches of a group, in order: their data frame count and positions.
void append_commit_frame(std::string& buf, uint64_t commit_start,
                         std::span<const commit_batch* const> batches) {
  size_t frames = 0, positions = 0;
  for (const commit_batch* b : batches) {
    frames += b->appends.size();
    positions += b->positions.size();
  }
  vassert(frames <= UINT32_MAX && positions <= UINT32_MAX, "group of {} frames, {} positions",
          frames, positions);
  size_t at = start_frame(buf, frame_type::commit);
  put_fixed<uint64_t>(buf, commit_start);
  put_fixed<uint32_t>(buf, static_cast<uint32_t>(frames));
  put_fixed<uint32_t>(buf, static_cast<uint32_t>(positions));
  for (const commit_batch* b : batches) {
    for (const auto& p : b->positions) {
      put_fixed<uint8_t>(buf, static_cast<uint8_t>(p.s));
      put_fixed<uint64_t>(buf, p.next_offset);
      put_fixed<uint16_t>(buf, static_cast<uint16_t>(p.group.size()));
      buf.append(p.group);
    }
  }
  vassert(buf.size() - at - frame_header_bytes <= frame_body_bytes_max, "commit frame of {} bytes",
          buf.size() - at);
  finish_frame(buf, at);
}

// Bytes of the frame an append takes in the commit's partition `p`.
size_t data_frame_bytes(const commit_batch::append& a, uint32_t p) {
  const bool foreign = a.partition && *a.partition != p;
  return frame_header_bytes + (foreign ? forward_fixed_bytes : data_fixed_bytes) + a.key.size() +
         a.value.size();
}

size_t commit_frame_body_bytes(const commit_batch& batch) {
  size_t n = commit_fixed_bytes;
  for (const auto& p : batch.positions) n += position_fixed_bytes + p.group.size();
  return n;
}

// What the batch takes on disk as a commit of its own.
size_t commit_bytes(const commit_batch& batch, uint32_t p) {
  size_t n = frame_header_bytes + commit_frame_body_bytes(batch);
  for (const auto& a : batch.appends) n += data_frame_bytes(a, p);
  return n;
}

// Bytes a group takes: one commit frame's header and fixed fields for all its batches.
size_t group_bytes(size_t sum_of_commit_bytes, size_t batches) {
  return sum_of_commit_bytes - (batches - 1) * (frame_header_bytes + commit_fixed_bytes);
}

// ---------------------------------------------------------------------------------------------
// Decoding. Bytes come from disk, so every length is checked against what is there.

// Reads fields off a frame body; ok() turns false for good once a field runs past the end.
class body_reader {
 public:
  explicit body_reader(std::string_view body) : _rest(body) {}

  template <typename T>
  T num() {
    if (_rest.size() < sizeof(T)) return fail_read<T>();
    T v = get_fixed<T>(_rest.data());
    _rest.remove_prefix(sizeof(T));
    return v;
  }

  std::string_view bytes(size_t n) {
    if (_rest.size() < n) return fail_read<std::string_view>();
    std::string_view v = _rest.substr(0, n);
    _rest.remove_prefix(n);
    return v;
  }

  std::string_view rest() { return bytes(_rest.size()); }
  bool ok() const { return _ok; }
  bool done() const { return _rest.empty(); }

 private:
  template <typename T>
  T fail_read() {
    _ok = false;
    _rest = {};
    return T{};
  }

  std::string_view _rest;
  bool _ok = true;
};

struct frame_view {
  frame_type type;
  std::string_view body;
  size_t bytes;  // header + body
};

// A frame, or why the bytes at that position are not one (for error messages).
struct frame_check {
  std::optional<frame_view> frame;
  const char* problem = nullptr;
};

// `buf` starts where the frame should be and runs to the end of what was read.
frame_check check_frame(std::string_view buf) {
  if (buf.size() < frame_header_bytes) return {std::nullopt, "truncated frame header"};
  if (get_fixed<uint32_t>(buf.data()) != frame_magic) return {std::nullopt, "bad frame magic"};
  uint32_t body_len = get_fixed<uint32_t>(buf.data() + 8);
  if (buf.size() - frame_header_bytes < body_len) return {std::nullopt, "truncated frame body"};
  size_t bytes = frame_header_bytes + body_len;
  uint32_t crc = crc32c::value(buf.data() + frame_crc_from, bytes - frame_crc_from);
  if (get_fixed<uint32_t>(buf.data() + 4) != crc) return {std::nullopt, "frame crc mismatch"};
  auto type = static_cast<frame_type>(buf[12]);
  if (type != frame_type::data && type != frame_type::commit && type != frame_type::forward) {
    return {std::nullopt, "unknown frame type"};
  }
  return {frame_view{type, buf.substr(frame_header_bytes, body_len), bytes}};
}

struct data_frame {
  stream s;
  uint64_t offset;
  std::string_view key;
  std::string_view value;
};

std::optional<data_frame> decode_data(std::string_view body) {
  body_reader r(body);
  auto s = r.num<uint8_t>();
  auto offset = r.num<uint64_t>();
  auto key = r.bytes(r.num<uint32_t>());
  if (!r.ok() || s >= stream_count) return std::nullopt;
  return data_frame{static_cast<stream>(s), offset, key, r.rest()};
}

struct forward_frame {
  stream s;
  uint32_t target;
  std::string_view key;
  std::string_view value;
};

std::optional<forward_frame> decode_forward(std::string_view body) {
  body_reader r(body);
  auto s = r.num<uint8_t>();
  auto target = r.num<uint32_t>();
  auto key = r.bytes(r.num<uint32_t>());
  if (!r.ok() || s >= stream_count) return std::nullopt;
  return forward_frame{static_cast<stream>(s), target, key, r.rest()};
}

struct position_update {
  stream s;
  uint64_t next_offset;
  std::string_view group;
};

struct commit_frame {
  uint64_t commit_start = 0;
  uint32_t data_frames = 0;
  std::vector<position_update> positions;
};

std::optional<commit_frame> decode_commit(std::string_view body) {
  body_reader r(body);
  commit_frame c;
  c.commit_start = r.num<uint64_t>();
  c.data_frames = r.num<uint32_t>();
  auto count = r.num<uint32_t>();
  // No reserve(count): count is checked only by the body actually holding that many entries.
  for (uint32_t i = 0; i < count && r.ok(); ++i) {
    auto s = r.num<uint8_t>();
    auto next_offset = r.num<uint64_t>();
    auto group = r.bytes(r.num<uint16_t>());
    if (s >= stream_count) return std::nullopt;
    c.positions.push_back({static_cast<stream>(s), next_offset, group});
  }
  if (!r.ok() || !r.done()) return std::nullopt;
  return c;
}

// ---------------------------------------------------------------------------------------------
// Files

std::unexpected<error> fail_io(std::string_view what, const std::string& path, int err = errno) {
  return fail(errc::io, fmt::format("{} {}: {}", what, path, std::generic_category().message(err)));
}

class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) : _fd(fd) {}
  unique_fd(unique_fd&& o) noexcept : _fd(std::exchange(o._fd, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) {
      reset();
      _fd = std::exchange(o._fd, -1);
    }
    return *this;
  }
  ~unique_fd() { reset(); }

  int get() const { return _fd; }
  void reset() {
    if (_fd >= 0) ::close(_fd);
    _fd = -1;
  }

 private:
  int _fd = -1;
};

result<unique_fd> open_file(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) return fail_io("open", path);
  return unique_fd(fd);
}

result<void> pwrite_all(int fd, std::string_view buf, uint64_t pos, const std::string& path) {
  while (!buf.empty()) {
    ssize_t n = ::pwrite(fd, buf.data(), buf.size(), static_cast<off_t>(pos));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_io("write", path);
    buf.remove_prefix(static_cast<size_t>(n));
    pos += static_cast<uint64_t>(n);
  }
  return {};
}

// A file shorter than asked is corruption: the caller knows the bytes were written.
result<void> pread_all(int fd, std::span<char> buf, uint64_t pos, const std::string& path) {
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::pread(fd, buf.data() + done, buf.size() - done, static_cast<off_t>(pos + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail_io("read", path);
    if (n == 0) {
      return fail(errc::corrupt, fmt::format("{} ends at byte {}, {} bytes short", path, pos + done,
                                             buf.size() - done));
    }
    done += static_cast<size_t>(n);
  }
  return {};
}

result<uint64_t> file_size(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) < 0) return fail_io("stat", path);
  return static_cast<uint64_t>(st.st_size);
}

result<std::string> read_whole_file(const std::string& path) {
  auto fd = open_file(path, O_RDONLY);
  if (!fd) return std::unexpected(fd.error());
  auto size = file_size(fd->get(), path);
  if (!size) return std::unexpected(size.error());
  std::string buf(*size, '\0');
  ELOG_TRY(pread_all(fd->get(), buf, 0, path));
  return buf;
}

result<void> sync_file(int fd, const std::string& path) {
  if (::fdatasync(fd) < 0) return fail_io("fdatasync", path);
  return {};
}

// Makes created, renamed and deleted names in `dir` durable.
result<void> sync_dir(const std::string& dir) {
  auto fd = open_file(dir, O_RDONLY | O_DIRECTORY);
  if (!fd) return std::unexpected(fd.error());
  if (::fsync(fd->get()) < 0) return fail_io("fsync", dir);
  return {};
}

std::string partition_dir(const std::string& dir, uint32_t p) {
  return fmt::format("{}/p{:03}", dir, p);
}

std::string segment_path(const std::string& pdir, uint64_t base) {
  return fmt::format("{}/{:020}.seg", pdir, base);
}

std::optional<uint64_t> parse_segment_name(std::string_view name) {
  constexpr size_t digits = 20;
  if (name.size() != digits + 4 || !name.ends_with(".seg")) return std::nullopt;
  uint64_t base = 0;
  auto [end, ec] = std::from_chars(name.data(), name.data() + digits, base);
  if (ec != std::errc{} || end != name.data() + digits) return std::nullopt;
  return base;
}

struct segment_file {
  uint64_t base;
  std::string path;
};

// The partition's segment files, oldest first. Other files in the directory are ignored.
result<std::vector<segment_file>> list_segments(const std::string& pdir) {
  std::vector<segment_file> files;
  std::error_code ec;
  for (fs::directory_iterator it(pdir, ec), end; !ec && it != end; it.increment(ec)) {
    if (auto base = parse_segment_name(it->path().filename().string())) {
      files.push_back({*base, it->path().string()});
    }
  }
  if (ec) return fail(errc::io, fmt::format("list {}: {}", pdir, ec.message()));
  std::ranges::sort(files, {}, &segment_file::base);
  return files;
}

// ---------------------------------------------------------------------------------------------
// Data directory: lock and meta

result<unique_fd> lock_dir(const std::string& dir) {
  std::string path = dir + "/LOCK";
  auto fd = open_file(path, O_RDWR | O_CREAT);
  if (!fd) return fd;
  if (::flock(fd->get(), LOCK_EX | LOCK_NB) == 0) return fd;
  if (errno == EWOULDBLOCK) {
    return fail(errc::locked,
                fmt::format("data dir {} is in use by another auterity process (or by a log "
                            "already open in this one): {} is locked",
                            dir, path));
  }
  return fail_io("flock", path);
}

// A read-only open's lock: shared, so readers run beside each other but not beside a writer
// (whose exclusive lock conflicts with it both ways). No LOCK file means no writer ever opened
// the directory; the reader does not create one, so it reads unlocked.
result<std::optional<unique_fd>> lock_dir_shared(const std::string& dir) {
  std::string path = dir + "/LOCK";
  int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw < 0 && errno == ENOENT) return std::optional<unique_fd>();
  if (raw < 0) return fail_io("open", path);
  unique_fd fd(raw);
  if (::flock(fd.get(), LOCK_SH | LOCK_NB) == 0) return std::optional<unique_fd>(std::move(fd));
  if (errno == EWOULDBLOCK) {
    return fail(errc::locked,
                fmt::format("data dir {} is in use by a running auterity process ({} is locked); "
                            "read-only commands read a stopped engine's directory or a copy of it",
                            dir, path));
  }
  return fail_io("flock", path);
}

struct meta_info {
  uint32_t partitions = 0;
  placement_header placement;  // base == partitions and nothing retired unless scaled
};

std::string meta_text(const meta_info& m) {
  std::string t = fmt::format("{}\npartitions {}\n", meta_magic, m.partitions);
  if (m.placement.base != m.partitions || !m.placement.retired.empty()) {
    t += encode_placement_header(m.placement);  // the lines the Kafka header record holds
  }
  return t;
}

// The meta file of <dir>; nullopt if the directory is new. An older binary refuses a meta with
// the placement lines (its exact-text check fails): it would route tenants by the wrong count.
result<std::optional<meta_info>> read_meta_info(const std::string& dir) {
  std::string path = dir + "/meta";
  std::error_code ec;
  if (!fs::exists(path, ec) && !ec) return std::nullopt;
  auto text = read_whole_file(path);
  if (!text) return std::unexpected(text.error());
  auto bad = [&] {
    return fail(errc::corrupt, fmt::format("{} is not an embedded log meta file", path));
  };
  std::string_view t = *text;
  const std::string head = fmt::format("{}\npartitions ", meta_magic);
  if (!t.starts_with(head)) return bad();
  t.remove_prefix(head.size());
  const size_t nl = t.find('\n');
  if (nl == std::string_view::npos) return bad();
  meta_info m;
  auto [end, parse_ec] = std::from_chars(t.data(), t.data() + nl, m.partitions);
  if (parse_ec != std::errc{} || end != t.data() + nl) return bad();
  t.remove_prefix(nl + 1);
  if (t.empty()) {
    m.placement.base = m.partitions;
  } else if (auto h = decode_placement_header(t)) {
    m.placement = std::move(*h);
  } else {
    return bad();
  }
  if (m.partitions == 0 || m.partitions > partitions_max) return bad();
  if (m.placement.base == 0 || m.placement.base > m.partitions ||
      !std::ranges::is_sorted(m.placement.retired) ||
      std::ranges::adjacent_find(m.placement.retired) != m.placement.retired.end() ||
      (!m.placement.retired.empty() && m.placement.retired.back() >= m.partitions) ||
      m.placement.retired.size() >= m.partitions) {
    return bad();
  }
  return m;
}

// The partition count stored in <dir>/meta; nullopt if the directory is new.
result<std::optional<uint32_t>> read_meta(const std::string& dir) {
  auto m = read_meta_info(dir);
  if (!m) return std::unexpected(m.error());
  if (!*m) return std::nullopt;
  return (*m)->partitions;
}

// Written to a temporary name and renamed, so a crash leaves either the old meta or the new.
result<void> write_meta(const std::string& dir, const meta_info& m) {
  std::string tmp = dir + "/meta.tmp";
  auto fd = open_file(tmp, O_WRONLY | O_CREAT | O_TRUNC);
  if (!fd) return std::unexpected(fd.error());
  ELOG_TRY(pwrite_all(fd->get(), meta_text(m), 0, tmp));
  ELOG_TRY(sync_file(fd->get(), tmp));
  if (::rename(tmp.c_str(), (dir + "/meta").c_str()) < 0) return fail_io("rename", tmp);
  return sync_dir(dir);
}

result<void> make_partition_dirs(const std::string& dir, uint32_t partitions) {
  bool created = false;
  for (uint32_t p = 0; p < partitions; ++p) {
    std::string pdir = partition_dir(dir, p);
    if (::mkdir(pdir.c_str(), 0755) == 0) {
      created = true;
    } else if (errno != EEXIST) {
      return fail_io("mkdir", pdir);
    }
  }
  if (created) return sync_dir(dir);
  return {};
}

result<void> prepare_layout(const std::string& dir, uint32_t partitions) {
  auto stored = read_meta(dir);
  if (!stored) return std::unexpected(stored.error());
  if (*stored && **stored != partitions) {
    return fail(errc::invalid,
                fmt::format("data dir {} was created with {} partitions, asked for {}", dir,
                            **stored, partitions));
  }
  ELOG_TRY(make_partition_dirs(dir, partitions));
  if (!*stored) return write_meta(dir, meta_info{partitions, {partitions, {}}});
  return {};
}

// ---------------------------------------------------------------------------------------------
// In-memory state of a partition

struct index_entry {
  uint32_t segment;      // into partition_data::segments
  uint32_t frame_bytes;  // header + body
  uint64_t file_pos;     // of the frame in its segment file
};
static_assert(sizeof(index_entry) == 16, "the memory cost per record is documented as 16 bytes");

using stream_index = std::array<std::vector<index_entry>, stream_count>;  // entry per offset
using group_positions = std::map<std::string, std::array<uint64_t, stream_count>, std::less<>>;

struct segment {
  std::string path;
  unique_fd fd;
  uint64_t base = 0;  // logical position of its first byte in the partition
  uint64_t size = 0;  // bytes of whole commits in it
};

// A committed forward frame (an append to another partition), found by recovery.
struct forward_ref {
  uint32_t target;
  uint32_t segment;
  uint32_t frame_bytes;
  uint64_t file_pos;
};

struct partition_data {
  std::vector<segment> segments;  // commits append to the last one
  stream_index index;
  group_positions positions;
  std::vector<forward_ref> forwards;  // recovery only: redelivery of undelivered forwards
};

// ---------------------------------------------------------------------------------------------
// Recovery of one partition (see the top of the file)

class partition_recovery {
 public:
  // Writable: cuts an uncommitted tail after moving it to `quarantine_dir`. Read-only: changes
  // nothing, and damage inside committed data is reported rather than failing.
  partition_recovery(std::string pdir, uint32_t partition, bool read_only,
                     std::string quarantine_dir)
      : _dir(std::move(pdir)),
        _partition(partition),
        _read_only(read_only),
        _quarantine_dir(std::move(quarantine_dir)) {}

  result<partition_data> run() {
    auto files = list_segments(_dir);
    if (!files) return std::unexpected(files.error());
    _files = std::move(*files);
    for (uint32_t i = 0; i < _files.size() && !_bad; ++i) ELOG_TRY(scan_segment(i));
    bool committed_damage = false;
    if (_bad) {
      auto committed = damage_is_committed();
      if (!committed) return std::unexpected(committed.error());
      committed_damage = *committed;
    }
    if (committed_damage && !_read_only) {
      return corrupt(_bad->segment, _bad->file_pos,
                     fmt::format("{}, and committed data follows it", _bad->problem));
    }
    ELOG_TRY(find_damage(committed_damage));
    if (_read_only) return build_read_only();
    if (_damage) ELOG_TRY(quarantine());
    ELOG_TRY(cut_tail());
    return build();
  }

  // Bytes after the last valid commit frame, if any; set by run().
  const std::optional<log_damage>& damage() const { return _damage; }

  // Repair (after a read-only run() that found damage): quarantines every byte after the
  // committed end — committed data past a bad frame included — and cuts it, as a writable
  // recovery cuts a torn tail. Returns the bytes cut.
  result<std::string> salvage() {
    vassert(_damage.has_value(), "salvage of {} without damage", _dir);
    ELOG_TRY(quarantine());
    ELOG_TRY(cut_tail());
    return std::move(_cut);
  }

 private:
  struct bad_frame {
    uint32_t segment;
    uint64_t file_pos;
    std::string problem;
  };

  std::unexpected<error> corrupt(uint32_t seg, uint64_t file_pos, std::string_view why) const {
    return fail(errc::corrupt, fmt::format("{} at byte {}: {}", _files[seg].path, file_pos, why));
  }

  result<void> scan_segment(uint32_t seg) {
    if (_files[seg].base != _scanned_end) {
      return corrupt(seg, 0, fmt::format("segment should start at logical byte {}", _scanned_end));
    }
    auto buf = read_whole_file(_files[seg].path);
    if (!buf) return std::unexpected(buf.error());
    std::string_view view = *buf;
    for (uint64_t pos = 0; pos < view.size();) {
      frame_check c = check_frame(view.substr(pos));
      std::string problem = c.problem ? c.problem : "";
      if (c.frame && c.frame->type == frame_type::data) {
        if (const char* p = apply_data(*c.frame, seg, pos)) problem = p;
      } else if (c.frame && c.frame->type == frame_type::forward) {
        if (const char* p = apply_forward(*c.frame, seg, pos)) problem = p;
      } else if (c.frame) {
        auto applied = apply_commit(*c.frame, seg, pos);
        if (!applied && !_read_only) return std::unexpected(applied.error());
        if (!applied) {
          // A whole, checksummed commit frame that does not fit: committed data is damaged.
          _bad = bad_frame{seg, pos, applied.error().message};
          _bad_is_committed = true;
          return {};
        }
      }
      if (!problem.empty()) {
        _bad = bad_frame{seg, pos, std::move(problem)};
        return {};
      }
      pos += c.frame->bytes;
    }
    _scanned_end += view.size();
    return {};
  }

  // Data frames wait in `_pending` until their commit frame shows the commit is whole. A data
  // frame that does not fit is treated like a torn one: only a commit frame after it would make
  // it committed, and damage_is_committed() looks for that. Returns the problem, if any.
  const char* apply_data(const frame_view& f, uint32_t seg, uint64_t file_pos) {
    auto d = decode_data(f.body);
    if (!d || f.bytes > UINT32_MAX) return "undecodable data frame";
    if (d->offset != _index[idx(d->s)].size() + _pending[idx(d->s)].size()) {
      return "data frame out of offset order";
    }
    _pending[idx(d->s)].push_back({seg, static_cast<uint32_t>(f.bytes), file_pos});
    ++_pending_frames;
    return nullptr;
  }

  const char* apply_forward(const frame_view& f, uint32_t seg, uint64_t file_pos) {
    auto d = decode_forward(f.body);
    if (!d || f.bytes > UINT32_MAX) return "undecodable forward frame";
    if (d->target == _partition) return "forward frame to its own partition";
    _pending_forwards.push_back({d->target, seg, static_cast<uint32_t>(f.bytes), file_pos});
    ++_pending_frames;
    return nullptr;
  }

  result<void> apply_commit(const frame_view& f, uint32_t seg, uint64_t file_pos) {
    auto c = decode_commit(f.body);
    if (!c) return corrupt(seg, file_pos, "undecodable commit frame");
    if (c->commit_start != _committed_end || c->data_frames != _pending_frames) {
      return corrupt(seg, file_pos, "commit frame does not match the frames before it");
    }
    for (size_t s = 0; s < stream_count; ++s) {
      _index[s].insert(_index[s].end(), _pending[s].begin(), _pending[s].end());
      _pending[s].clear();
    }
    _pending_frames = 0;
    _forwards.insert(_forwards.end(), _pending_forwards.begin(), _pending_forwards.end());
    _pending_forwards.clear();
    for (const auto& p : c->positions) {
      auto it = _positions.try_emplace(std::string(p.group)).first;
      it->second[idx(p.s)] = p.next_offset;  // the last commit frame wins
    }
    _committed_end = _files[seg].base + file_pos + f.bytes;
    return {};
  }

  // After a bad frame, frames can only be found again by searching for the magic. A valid
  // commit frame found that way means the damage is inside committed data, except a single one
  // that belongs to the commit right after the committed end (never acknowledged: see the top).
  result<bool> damage_is_committed() {
    if (_bad_is_committed) return true;
    auto starts = commit_starts_after_bad();
    if (!starts) return std::unexpected(starts.error());
    if (starts->empty()) return false;
    return !(starts->size() == 1 && starts->front() == _committed_end);
  }

  // commit_start of every valid commit frame after the bad frame, in this and later segments.
  result<std::vector<uint64_t>> commit_starts_after_bad() {
    std::vector<uint64_t> starts;
    for (uint32_t seg = _bad->segment; seg < _files.size(); ++seg) {
      auto buf = read_whole_file(_files[seg].path);
      if (!buf) return std::unexpected(buf.error());
      size_t from = seg == _bad->segment ? _bad->file_pos + 1 : 0;
      find_commit_frames(*buf, from, starts);
    }
    return starts;
  }

  static void find_commit_frames(std::string_view buf, size_t at, std::vector<uint64_t>& starts) {
    while ((at = buf.find(frame_magic_bytes, at)) != std::string_view::npos) {
      frame_check c = check_frame(buf.substr(at));
      if (!c.frame) {
        ++at;
        continue;
      }
      if (c.frame->type == frame_type::commit) {
        if (auto commit = decode_commit(c.frame->body)) starts.push_back(commit->commit_start);
      }
      at += c.frame->bytes;
    }
  }

  // The segment where the committed end lies: the last one starting at or before it (a segment
  // starting exactly there holds only what follows).
  size_t end_segment() const {
    size_t seg = 0;
    while (seg + 1 < _files.size() && _files[seg + 1].base <= _committed_end) ++seg;
    return seg;
  }

  // What follows the committed end, in the segment holding it and every later one.
  result<void> find_damage(bool committed) {
    if (_files.empty()) return {};
    const size_t seg = end_segment();
    uint64_t bytes = 0;
    for (size_t i = seg; i < _files.size(); ++i) {
      std::error_code ec;
      const uint64_t size = fs::file_size(_files[i].path, ec);
      if (ec) return fail(errc::io, fmt::format("stat {}: {}", _files[i].path, ec.message()));
      const uint64_t from = i == seg ? _committed_end - _files[seg].base : 0;
      if (size > from) bytes += size - from;
    }
    if (bytes == 0) return {};
    log_damage d;
    d.partition = _partition;
    d.segment = _files[seg].path;
    d.file_pos = _committed_end - _files[seg].base;
    d.bytes = bytes;
    d.committed = committed;
    if (_bad) {
      d.bad_segment = _files[_bad->segment].path;
      d.bad_pos = _bad->file_pos;
      d.problem = _bad->problem;
    } else {
      d.bad_segment = d.segment;
      d.bad_pos = d.file_pos;
      d.problem = "data frames with no commit frame after them";
    }
    _damage = std::move(d);
    return {};
  }

  // Copies the bytes after the committed end to <log>/quarantine/pNNN-<segment>-<offset>.bin
  // (".1", ".2", ... if that name is taken), durably, before cut_tail() removes them. A crash in
  // between quarantines them again on the next open, under the next free name.
  result<void> quarantine() {
    const size_t seg = end_segment();
    std::string bytes;
    for (size_t i = seg; i < _files.size(); ++i) {
      auto buf = read_whole_file(_files[i].path);
      if (!buf) return std::unexpected(buf.error());
      const uint64_t from = i == seg ? _committed_end - _files[seg].base : 0;
      if (buf->size() > from) bytes.append(*buf, from);
    }
    if (::mkdir(_quarantine_dir.c_str(), 0755) < 0 && errno != EEXIST) {
      return fail_io("mkdir", _quarantine_dir);
    }
    const std::string stem = fmt::format("{}/p{:03}-{:020}-{}", _quarantine_dir, _partition,
                                         _files[seg].base, _damage->file_pos);
    std::string path = stem + ".bin";
    std::error_code ec;
    for (int n = 1; fs::exists(path, ec); ++n) path = fmt::format("{}.{}.bin", stem, n);
    const std::string tmp = path + ".tmp";
    auto fd = open_file(tmp, O_WRONLY | O_CREAT | O_TRUNC);
    if (!fd) return std::unexpected(fd.error());
    ELOG_TRY(pwrite_all(fd->get(), bytes, 0, tmp));
    ELOG_TRY(sync_file(fd->get(), tmp));
    if (::rename(tmp.c_str(), path.c_str()) < 0) return fail_io("rename", tmp);
    ELOG_TRY(sync_dir(_quarantine_dir));
    _damage->quarantine = path;
    _cut = bytes;
    g_quarantined_bytes.fetch_add(bytes.size(), std::memory_order_relaxed);
    g_quarantined_files.fetch_add(1, std::memory_order_relaxed);
    return {};
  }

  // Drops everything after the committed end. Later segments go first, newest first, so a crash
  // in the middle leaves contiguous segments and the next recovery gets the same result.
  // Segments after a bad frame were never scanned frame by frame, but the search for commit
  // frames found none in them: they go too.
  result<void> cut_tail() {
    size_t keep_max = _bad ? _bad->segment + 1 : _files.size();
    bool removed = false;
    while (_files.size() > 1 && (_files.size() > keep_max || _files.back().base > _committed_end)) {
      if (::unlink(_files.back().path.c_str()) < 0) return fail_io("unlink", _files.back().path);
      _files.pop_back();
      removed = true;
    }
    if (removed) ELOG_TRY(sync_dir(_dir));
    if (_files.empty()) return {};
    vassert(_committed_end >= _files.back().base, "segment {} starts after the committed end {}",
            _files.back().path, _committed_end);
    return truncate_last(_committed_end - _files.back().base);
  }

  result<void> truncate_last(uint64_t keep) {
    const std::string& path = _files.back().path;
    auto fd = open_file(path, O_RDWR);
    if (!fd) return std::unexpected(fd.error());
    auto size = file_size(fd->get(), path);
    if (!size) return std::unexpected(size.error());
    if (*size == keep) return {};
    if (::ftruncate(fd->get(), static_cast<off_t>(keep)) < 0) return fail_io("truncate", path);
    return sync_file(fd->get(), path);
  }

  result<partition_data> build() {
    partition_data d;
    if (_files.empty()) {
      _files.push_back({0, segment_path(_dir, 0)});
      auto fd = open_file(_files[0].path, O_RDWR | O_CREAT);
      if (!fd) return std::unexpected(fd.error());
      ELOG_TRY(sync_dir(_dir));
    }
    for (const auto& f : _files) {
      auto fd = open_file(f.path, O_RDWR);
      if (!fd) return std::unexpected(fd.error());
      auto size = file_size(fd->get(), f.path);
      if (!size) return std::unexpected(size.error());
      d.segments.push_back(segment{f.path, std::move(*fd), f.base, *size});
    }
    d.index = std::move(_index);
    d.positions = std::move(_positions);
    d.forwards = std::move(_forwards);
    return d;
  }

  // The segments up to the committed end, opened for reading; each one's size is what is
  // committed in it. A partition with no segment file has no segment (commit() is refused).
  result<partition_data> build_read_only() {
    partition_data d;
    const size_t keep = _files.empty() ? 0 : end_segment() + 1;
    for (size_t i = 0; i < keep; ++i) {
      auto fd = open_file(_files[i].path, O_RDONLY);
      if (!fd) return std::unexpected(fd.error());
      const uint64_t end = i + 1 < keep ? _files[i + 1].base : _committed_end;
      d.segments.push_back(
          segment{_files[i].path, std::move(*fd), _files[i].base, end - _files[i].base});
    }
    d.index = std::move(_index);
    d.positions = std::move(_positions);
    return d;
  }

  std::string _dir;
  uint32_t _partition;
  bool _read_only;
  std::string _quarantine_dir;
  std::vector<segment_file> _files;
  stream_index _index;
  stream_index _pending;  // data frames after the last commit frame
  std::vector<forward_ref> _pending_forwards;
  std::vector<forward_ref> _forwards;  // committed
  uint32_t _pending_frames = 0;
  group_positions _positions;
  uint64_t _committed_end = 0;  // logical position after the last valid commit frame
  uint64_t _scanned_end = 0;    // logical position after the last fully scanned segment
  std::optional<bad_frame> _bad;
  bool _bad_is_committed = false;  // the bad frame is a whole commit frame that does not fit
  std::optional<log_damage> _damage;
  std::string _cut;  // what quarantine() copied
};

// ---------------------------------------------------------------------------------------------
// The log

// A commit() waiting in its partition's queue, on the caller's stack. The leader that takes it
// fills `outcome`, then sets `done` and signals `cv` with queue_mu held (so the caller cannot
// return and free it before the signal).
struct queued_commit {
  queued_commit(const commit_batch& b, uint32_t p) : batch(&b), bytes(commit_bytes(b, p)) {}

  const commit_batch* batch;
  size_t bytes;  // commit_bytes(*batch)
  std::condition_variable cv;
  bool done = false;  // guarded by queue_mu
  result<std::vector<uint64_t>> outcome = std::vector<uint64_t>();
};

struct partition {
  std::string dir;

  std::mutex queue_mu;
  std::deque<queued_commit*> queue;  // guarded by queue_mu; the front one leads

  std::mutex write_mu;                // held by a group's leader only (never contended)
  std::optional<std::string> broken;  // guarded by write_mu; why commits are refused
  bool offline = false;  // committed data damaged (corrupt_partitions_offline); set at open

  // segments, index and positions change only with write_mu held and index_mu exclusive, so a
  // writer may read them holding write_mu alone.
  std::shared_mutex index_mu;
  partition_data data;

  std::mutex wait_mu;
  std::condition_variable wait_cv;
  std::atomic<uint64_t> generation{0};  // changes with wait_mu held so no waiter misses it

  // Forwarding (see the top): committed appends to other partitions not yet delivered, in
  // commit order, each with its ordinal among this partition's forwards to its target.
  struct outbox_entry {
    commit_batch::append a;
    uint64_t ordinal;
  };
  std::mutex outbox_mu;
  std::deque<outbox_entry> outbox;         // guarded by outbox_mu
  std::map<uint32_t, uint64_t> forwarded;  // by target: next ordinal; guarded by write_mu
  std::mutex deliver_mu;                   // one delivery at a time from this partition
  std::map<uint32_t, uint64_t> delivered;  // by target: ordinals below are delivered;
                                           // guarded by deliver_mu
};

// A group encoded for the active segment, with the index entries it will publish and the
// offsets of each of its commits.
struct encoded_group {
  std::string bytes;
  stream_index entries;
  std::vector<commit_batch::append> forwards;  // appends to other partitions, in order
  std::vector<std::vector<uint64_t>> offsets;  // per commit, in the order of its appends
};

// Where a read finds one frame; copied out under the shared lock, read without it.
struct frame_ref {
  int fd;
  uint64_t segment_base;
  uint64_t file_pos;
  uint32_t bytes;
};

class embedded_log final : public log {
 public:
  embedded_log(std::string dir, const embedded_log_options& options, unique_fd lock)
      : _dir(std::move(dir)), _options(options), _lock(std::move(lock)) {}

  result<void> recover() {
    for (uint32_t p = 0; p < _options.partitions; ++p) {
      auto part = std::make_unique<partition>();
      part->dir = partition_dir(_dir, p);
      partition_recovery recovery(part->dir, p, _options.read_only, _dir + "/quarantine");
      auto data = recovery.run();
      if (!data && data.error().code == errc::corrupt && !_options.read_only &&
          _options.corrupt_partitions_offline) {
        // Offline: served as the read-only open serves it, commits refused.
        partition_recovery offline(part->dir, p, /*read_only=*/true, _dir + "/quarantine");
        auto prefix = offline.run();
        if (!prefix) return std::unexpected(prefix.error());
        if (offline.damage()) report(*offline.damage());
        part->broken = fmt::format(
            "partition {} is offline: {}; run `auterity repair --partition "
            "{}` (docs/salvage.md)",
            p, data.error().message, p);
        part->offline = true;
        part->data = std::move(*prefix);
        _parts.push_back(std::move(part));
        continue;
      }
      if (!data) return std::unexpected(data.error());
      if (recovery.damage()) report(*recovery.damage());
      part->data = std::move(*data);
      _parts.push_back(std::move(part));
    }
    return {};
  }

  uint32_t partition_count() const override { return _options.partitions; }
  placement_header placement() const override { return _placement; }
  void set_placement(placement_header p) { _placement = std::move(p); }

  result<std::vector<uint64_t>> commit(uint32_t p, const commit_batch& batch) override {
    if (_options.read_only) {
      return fail(errc::invalid, fmt::format("commit to the log in {}, opened read-only", _dir));
    }
    ELOG_TRY(check_batch(p, batch));
    if (batch.empty()) return std::vector<uint64_t>();  // nothing to make durable or visible
    auto outcome = commit_local(p, batch);
    if (!outcome) return outcome;
    const bool forwards =
        std::any_of(batch.appends.begin(), batch.appends.end(),
                    [&](const auto& a) { return a.partition && *a.partition != p; });
    // Committed: a failed delivery is retried by the next commit of p or the next open, but the
    // caller hears of it (its forwards are not visible yet).
    if (forwards) ELOG_TRY(deliver(p));
    return outcome;
  }

  // Delivers what recovery found committed but not delivered (writable opens only).
  result<void> redeliver() {
    for (uint32_t p = 0; p < partition_count(); ++p) {
      partition& part = *_parts[p];
      for (const forward_ref& f : part.data.forwards) {
        if (f.target >= partition_count()) {
          return fail(errc::corrupt, fmt::format("{}: a forward to partition {}; the log has {}",
                                                 part.dir, f.target, partition_count()));
        }
        const uint64_t ordinal = part.forwarded[f.target]++;
        const uint64_t delivered = delivered_from(p, f.target);
        part.delivered[f.target] = delivered;
        if (ordinal < delivered) continue;
        const segment& seg = part.data.segments[f.segment];
        std::string buf(f.frame_bytes, '\0');
        ELOG_TRY(pread_all(seg.fd.get(), buf, f.file_pos, seg.path));
        frame_check c = check_frame(buf);
        std::optional<forward_frame> d;
        if (c.frame && c.frame->type == frame_type::forward) d = decode_forward(c.frame->body);
        if (!d) {
          return fail(errc::corrupt,
                      fmt::format("{} at byte {}: not a forward frame ({})", seg.path, f.file_pos,
                                  c.problem ? c.problem : "wrong frame"));
        }
        part.outbox.push_back(
            {commit_batch::append{d->s, std::string(d->key), std::string(d->value), d->target},
             ordinal});
      }
      part.data.forwards = {};
      // A target that holds more than this partition has (its tail was lost with fsync off):
      // later forwards are numbered after what the target has, so none counts as delivered.
      for (auto& [target, next] : part.forwarded) next = std::max(next, part.delivered[target]);
      for (uint32_t q = 0; q < partition_count(); ++q) {
        if (q == p || part.forwarded.contains(q)) continue;
        const uint64_t delivered = delivered_from(p, q);
        if (delivered > 0) part.forwarded[q] = part.delivered[q] = delivered;
      }
    }
    for (uint32_t p = 0; p < partition_count(); ++p) ELOG_TRY(deliver(p));
    return {};
  }

  result<size_t> read(stream s, uint32_t p, uint64_t from, size_t max_records, size_t max_bytes,
                      std::vector<record>& out) override {
    if (p >= partition_count() || !valid_stream(s)) {
      return fail(errc::invalid, fmt::format("read of stream {} partition {}; the log has {} "
                                             "partitions",
                                             idx(s), p, partition_count()));
    }
    auto refs = plan_read(*_parts[p], s, from, max_records, max_bytes);
    if (!refs) return std::unexpected(refs.error());
    size_t before = out.size();
    auto n = read_frames(_parts[p]->dir, *refs, s, from, out);
    if (!n) out.resize(before);  // no half answers
    return n;
  }

  result<uint64_t> end_offset(stream s, uint32_t p) override {
    partition& part = checked(s, p);
    std::shared_lock lock(part.index_mu);
    return part.data.index[idx(s)].size();
  }

  result<uint64_t> position(std::string_view group, stream s, uint32_t p) override {
    partition& part = checked(s, p);
    std::shared_lock lock(part.index_mu);
    auto it = part.data.positions.find(group);
    return it == part.data.positions.end() ? 0 : it->second[idx(s)];
  }

  // One process per data directory, and a commit is visible when commit() returns: every
  // record below the end is decided.
  result<void> await_decided(stream s, uint32_t p, uint64_t, std::chrono::milliseconds) override {
    (void)checked(s, p);
    return {};
  }

  void wait(uint32_t p, uint64_t seen_generation, std::chrono::milliseconds timeout) override {
    partition& part = checked(p);
    std::unique_lock lock(part.wait_mu);
    part.wait_cv.wait_for(lock, timeout, [&] { return part.generation != seen_generation; });
  }

  uint64_t generation(uint32_t p) override { return checked(p).generation; }

  void wait_any(uint64_t seen_generation, std::chrono::milliseconds timeout) override {
    std::unique_lock lock(_any_mu);
    _any_cv.wait_for(lock, timeout, [&] { return _any_generation != seen_generation; });
  }

  uint64_t generation_any() override { return _any_generation; }

 private:
  void report(const log_damage& d) const {
    if (_options.on_damage) return _options.on_damage(d);
    fmt::print(stderr, "auterity: {}\n", damage_text(d));
  }

  // Group commit of one partition's batch (foreign appends become forward frames).
  result<std::vector<uint64_t>> commit_local(uint32_t p, const commit_batch& batch) {
    partition& part = *_parts[p];
    queued_commit me(batch, p);
    std::unique_lock lock(part.queue_mu);
    part.queue.push_back(&me);
    me.cv.wait(lock, [&] { return me.done || part.queue.front() == &me; });
    if (me.done) return std::move(me.outcome);  // a leader committed it
    std::vector<queued_commit*> group = take_group(part);
    lock.unlock();
    commit_group(p, part, group);
    lock.lock();
    for (queued_commit* c : group) {
      vassert(part.queue.front() == c, "group commit queue of {} out of order", part.dir);
      part.queue.pop_front();
      c->done = true;
      if (c != &me) c->cv.notify_one();
    }
    if (!part.queue.empty()) part.queue.front()->cv.notify_one();  // the next leader
    return std::move(me.outcome);
  }

  // The consumer group whose position on (ingress, q) counts p's forwards delivered to q.
  static std::string forward_group(uint32_t p) { return fmt::format("forwarded.p{:03}", p); }

  uint64_t delivered_from(uint32_t p, uint32_t q) {
    partition& target = *_parts[q];
    std::shared_lock lock(target.index_mu);
    auto it = target.data.positions.find(forward_group(p));
    return it == target.data.positions.end() ? 0 : it->second[idx(stream::ingress)];
  }

  // Delivers p's undelivered forwards: per target, one commit of the target's partition with
  // the records and the new count of what is delivered, so a crash between p's commit and this
  // one (or a failed delivery) is delivered again by the next open, and never twice.
  result<void> deliver(uint32_t p) {
    partition& part = *_parts[p];
    std::lock_guard deliver_lock(part.deliver_mu);
    std::map<uint32_t, std::pair<commit_batch, uint64_t>> by_target;  // batch, next delivered
    {
      std::lock_guard lock(part.outbox_mu);
      for (const auto& e : part.outbox) {
        const uint32_t q = *e.a.partition;
        if (e.ordinal < part.delivered[q]) continue;
        auto& [b, next] = by_target[q];
        b.add(e.a.s, e.a.key, e.a.value);
        next = e.ordinal + 1;
      }
    }
    for (auto& [q, todo] : by_target) {
      auto& [b, next] = todo;
      b.set_position(forward_group(p), stream::ingress, next);
      ELOG_TRY(commit_local(q, b));
      part.delivered[q] = next;
    }
    std::lock_guard lock(part.outbox_mu);
    while (!part.outbox.empty() &&
           part.outbox.front().ordinal < part.delivered[*part.outbox.front().a.partition]) {
      part.outbox.pop_front();
    }
    return {};
  }

  // For calls with no error channel: an out-of-range argument is a caller bug.
  partition& checked(uint32_t p) {
    vassert(p < partition_count(), "partition {} of a log with {} partitions", p,
            partition_count());
    return *_parts[p];
  }

  partition& checked(stream s, uint32_t p) {
    vassert(valid_stream(s), "stream {}", idx(s));
    return checked(p);
  }

  result<void> check_batch(uint32_t p, const commit_batch& batch) const {
    if (p >= partition_count()) {
      return fail(errc::invalid, fmt::format("commit to partition {}; the log has {} partitions", p,
                                             partition_count()));
    }
    for (const auto& a : batch.appends) {
      if (a.partition && *a.partition >= partition_count()) {
        return fail(errc::invalid, fmt::format("append to partition {}; the log has {} partitions",
                                               *a.partition, partition_count()));
      }
      ELOG_TRY(check_append(a));
    }
    for (const auto& pos : batch.positions) ELOG_TRY(check_position(pos));
    if (batch.appends.size() > UINT32_MAX ||
        commit_frame_body_bytes(batch) > frame_body_bytes_max) {
      return fail(errc::too_large, "commit batch too large for one commit frame");
    }
    return {};
  }

  static result<void> check_append(const commit_batch::append& a) {
    if (!valid_stream(a.s)) {
      return fail(errc::invalid, fmt::format("append to stream {}", idx(a.s)));
    }
    size_t bytes = a.key.size() + a.value.size();
    if (bytes > record_bytes_max) {
      return fail(errc::too_large,
                  fmt::format("record of {} bytes (key {} + value {}) for stream {} exceeds "
                              "record_bytes_max {}",
                              bytes, a.key.size(), a.value.size(), idx(a.s), record_bytes_max));
    }
    return {};
  }

  static result<void> check_position(const commit_batch::position& pos) {
    if (!valid_stream(pos.s)) {
      return fail(errc::invalid, fmt::format("position of stream {}", idx(pos.s)));
    }
    if (pos.group.size() > group_bytes_max) {
      return fail(errc::too_large, fmt::format("consumer group name of {} bytes exceeds "
                                               "group_bytes_max {}",
                                               pos.group.size(), group_bytes_max));
    }
    return {};
  }

  // Rolls before a commit that would take the active segment past segment_bytes_max. An empty
  // segment takes any commit, so a commit larger than the limit gets a segment of its own.
  result<void> roll_if_needed(partition& part, size_t bytes) {
    const segment& active = part.data.segments.back();
    if (active.size == 0 || active.size + bytes <= _options.segment_bytes_max) return {};
    vassert(part.data.segments.size() < UINT32_MAX, "too many segments in {}", part.dir);
    uint64_t base = active.base + active.size;
    std::string path = segment_path(part.dir, base);
    // O_TRUNC, not O_EXCL: a file left by a failed roll holds nothing committed.
    auto fd = open_file(path, O_RDWR | O_CREAT | O_TRUNC);
    if (!fd) return std::unexpected(fd.error());
    if (_options.fsync) ELOG_TRY(sync_dir(part.dir));  // the name must outlive a power loss too
    std::unique_lock lock(part.index_mu);
    part.data.segments.push_back(segment{std::move(path), std::move(*fd), base, 0});
    return {};
  }

  // The front of the queue and the commits behind it, up to the group limits; called with
  // queue_mu held. The commits stay queued until the leader pops them.
  static std::vector<queued_commit*> take_group(const partition& part) {
    std::vector<queued_commit*> group{part.queue.front()};
    size_t bytes = group[0]->bytes;
    for (size_t i = 1; i < part.queue.size() && group.size() < group_commit_batches_max; ++i) {
      if (bytes + part.queue[i]->bytes > group_commit_bytes_max) break;
      bytes += part.queue[i]->bytes;
      group.push_back(part.queue[i]);
    }
    return group;
  }

  // Writes, syncs and publishes the group, and sets every commit's outcome. noexcept: the
  // followers wait for their outcome, so the leader must not leave by an exception.
  void commit_group(uint32_t p, partition& part, std::span<queued_commit* const> group) noexcept {
    std::lock_guard write_lock(part.write_mu);
    auto written = write_group(p, part, group);
    if (!written) {
      for (queued_commit* c : group) c->outcome = std::unexpected(written.error());
      return;
    }
    publish(part, *written, group);
    for (size_t i = 0; i < group.size(); ++i) group[i]->outcome = std::move(written->offsets[i]);
  }

  result<encoded_group> write_group(uint32_t p, partition& part,
                                    std::span<queued_commit* const> group) {
    if (part.broken) return fail(part.offline ? errc::corrupt : errc::io, *part.broken);
    size_t sum = 0;
    std::vector<const commit_batch*> batches;
    batches.reserve(group.size());
    for (const queued_commit* c : group) {
      sum += c->bytes;
      batches.push_back(c->batch);
    }
    ELOG_TRY(roll_if_needed(part, group_bytes(sum, group.size())));
    encoded_group g = encode(p, part.data, batches, group_bytes(sum, group.size()));
    vassert(g.bytes.size() == group_bytes(sum, group.size()), "group of {} bytes, expected {}",
            g.bytes.size(), group_bytes(sum, group.size()));
    ELOG_TRY(write_commit(part, g.bytes));
    return g;
  }

  // Offsets are dense and follow the queue: the index sizes change only under write_mu, which
  // the leader holds, and each append takes the next offset of its stream.
  static encoded_group encode(uint32_t p, const partition_data& d,
                              std::span<const commit_batch* const> batches, size_t bytes) {
    const segment& active = d.segments.back();
    auto seg = static_cast<uint32_t>(d.segments.size() - 1);
    encoded_group g;
    g.bytes.reserve(bytes);
    g.offsets.reserve(batches.size());
    for (const commit_batch* b : batches) {
      auto& offsets = g.offsets.emplace_back();
      offsets.reserve(b->appends.size());
      for (const auto& a : b->appends) {
        if (a.partition && *a.partition != p) {
          append_forward_frame(g.bytes, a);
          g.forwards.push_back(a);
          offsets.push_back(UINT64_MAX);  // known once delivered, in the target's stream
          continue;
        }
        auto& entries = g.entries[idx(a.s)];
        uint64_t offset = d.index[idx(a.s)].size() + entries.size();
        size_t at = g.bytes.size();
        append_data_frame(g.bytes, a, offset);
        entries.push_back({seg, static_cast<uint32_t>(g.bytes.size() - at), active.size + at});
        offsets.push_back(offset);
      }
    }
    append_commit_frame(g.bytes, active.base + active.size, batches);
    return g;
  }

  result<void> write_commit(partition& part, const std::string& bytes) {
    segment& active = part.data.segments.back();
    if (auto w = pwrite_all(active.fd.get(), bytes, active.size, active.path); !w) {
      // Cut the partial frames so the next commit does not land behind garbage.
      if (::ftruncate(active.fd.get(), static_cast<off_t>(active.size)) < 0) {
        part.broken = fmt::format("{} (and cutting the partial write failed)", w.error().message);
      }
      return w;
    }
    if (!_options.fsync) return {};
    auto synced = sync_segment(active);
    if (!synced) {
      // After a failed fdatasync the page cache cannot be trusted (the kernel may have dropped
      // the dirty pages): whether this group survives is up to recovery on the next open.
      part.broken =
          fmt::format("{}; commits are refused until the log is reopened", synced.error().message);
    }
    return synced;
  }

  result<void> sync_segment(const segment& active) {
    if (!_options.fdatasync_for_testing) return sync_file(active.fd.get(), active.path);
    if (_options.fdatasync_for_testing(active.fd.get()) < 0) {
      return fail_io("fdatasync", active.path);
    }
    return {};
  }

  // Makes the group visible at once, its positions applied in queue order; the generations
  // count every commit of it.
  void publish(partition& part, const encoded_group& g, std::span<queued_commit* const> group) {
    {
      std::unique_lock lock(part.index_mu);
      for (size_t s = 0; s < stream_count; ++s) {
        auto& index = part.data.index[s];
        index.insert(index.end(), g.entries[s].begin(), g.entries[s].end());
      }
      for (const queued_commit* c : group) {
        for (const auto& pos : c->batch->positions) {
          part.data.positions[pos.group][idx(pos.s)] = pos.next_offset;
        }
      }
      part.data.segments.back().size += g.bytes.size();
    }
    if (!g.forwards.empty()) {
      std::lock_guard lock(part.outbox_mu);
      for (const auto& a : g.forwards) {
        part.outbox.push_back({a, part.forwarded[*a.partition]++});
      }
    }
    {
      std::lock_guard lock(part.wait_mu);
      part.generation += group.size();
    }
    part.wait_cv.notify_all();
    {
      std::lock_guard lock(_any_mu);
      _any_generation += group.size();
    }
    _any_cv.notify_all();
  }

  static result<std::vector<frame_ref>> plan_read(partition& part, stream s, uint64_t from,
                                                  size_t max_records, size_t max_bytes) {
    std::shared_lock lock(part.index_mu);
    const auto& index = part.data.index[idx(s)];
    if (from > index.size()) {
      return fail(errc::invalid,
                  fmt::format("read from offset {} of stream {} in {}, whose end offset is {}",
                              from, idx(s), part.dir, index.size()));
    }
    std::vector<frame_ref> refs;
    size_t bytes = 0;
    for (uint64_t o = from; o < index.size() && refs.size() < max_records; ++o) {
      const index_entry& e = index[o];
      size_t payload = e.frame_bytes - frame_header_bytes - data_fixed_bytes;  // key + value
      if (!refs.empty() && bytes + payload > max_bytes) break;
      bytes += payload;
      const segment& seg = part.data.segments[e.segment];
      refs.push_back({seg.fd.get(), seg.base, e.file_pos, e.frame_bytes});
    }
    return refs;
  }

  // End of the run of frames from refs[i] that sit back to back in one file: one pread.
  static size_t run_end(const std::vector<frame_ref>& refs, size_t i) {
    uint64_t bytes = refs[i].bytes;
    size_t j = i + 1;
    for (; j < refs.size(); ++j) {
      const frame_ref& prev = refs[j - 1];
      bool adjacent = refs[j].fd == prev.fd && refs[j].file_pos == prev.file_pos + prev.bytes;
      if (!adjacent || bytes + refs[j].bytes > read_chunk_bytes_max) break;
      bytes += refs[j].bytes;
    }
    return j;
  }

  static result<size_t> read_frames(const std::string& pdir, const std::vector<frame_ref>& refs,
                                    stream s, uint64_t from, std::vector<record>& out) {
    std::string buf;
    for (size_t i = 0, j = 0; i < refs.size(); i = j) {
      j = run_end(refs, i);
      const frame_ref& first = refs[i];
      std::string path = segment_path(pdir, first.segment_base);
      buf.resize(refs[j - 1].file_pos + refs[j - 1].bytes - first.file_pos);
      ELOG_TRY(pread_all(first.fd, buf, first.file_pos, path));
      for (size_t k = i; k < j; ++k) {
        std::string_view frame(buf.data() + (refs[k].file_pos - first.file_pos), refs[k].bytes);
        ELOG_TRY(decode_record(frame, s, from + k, path, refs[k].file_pos, out));
      }
    }
    return refs.size();
  }

  // Checks the crc again: bytes can rot on disk after recovery looked at them.
  static result<void> decode_record(std::string_view frame, stream s, uint64_t offset,
                                    const std::string& path, uint64_t file_pos,
                                    std::vector<record>& out) {
    frame_check c = check_frame(frame);
    std::optional<data_frame> d;
    if (c.frame && c.frame->type == frame_type::data) d = decode_data(c.frame->body);
    if (!d || d->s != s || d->offset != offset) {
      return fail(errc::corrupt,
                  fmt::format("{} at byte {}: not record {} of stream {} ({})", path, file_pos,
                              offset, idx(s), c.problem ? c.problem : "wrong frame"));
    }
    out.push_back(record{offset, std::string(d->key), std::string(d->value)});
    return {};
  }

  std::string _dir;
  embedded_log_options _options;
  unique_fd _lock;  // declared before _parts: released after every segment file is closed
                    // (read-only: shared, or none if the directory has no LOCK file)
  std::vector<std::unique_ptr<partition>> _parts;
  placement_header _placement;  // from meta, read at open
  std::mutex _any_mu;
  std::condition_variable _any_cv;
  std::atomic<uint64_t> _any_generation{0};  // every commit of every partition
};

result<void> check_options(const embedded_log_options& options) {
  if (options.partitions == 0 || options.partitions > partitions_max) {
    return fail(errc::invalid, fmt::format("partitions must be 1..{}, got {}", partitions_max,
                                           options.partitions));
  }
  return {};
}

// Opens `dir` as it is: no directory, meta, partition, segment, LOCK or quarantine file is
// created, truncated or written.
result<std::unique_ptr<log>> open_read_only(const std::string& dir, embedded_log_options options) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return fail(errc::not_found, fmt::format("{}: no such directory (no embedded log there)", dir));
  }
  auto stored = read_meta_info(dir);
  if (!stored) return std::unexpected(stored.error());
  if (!*stored) {
    return fail(errc::not_found,
                fmt::format("{} holds no embedded log ({}/meta is missing)", dir, dir));
  }
  if (options.partitions != 0 && options.partitions != (*stored)->partitions) {
    return fail(errc::invalid,
                fmt::format("data dir {} was created with {} partitions, asked for {}", dir,
                            (*stored)->partitions, options.partitions));
  }
  options.partitions = (*stored)->partitions;
  auto lock = lock_dir_shared(dir);
  if (!lock) return std::unexpected(lock.error());
  for (uint32_t p = 0; p < options.partitions; ++p) {
    if (!fs::is_directory(partition_dir(dir, p), ec)) {
      return fail(errc::corrupt, fmt::format("{} is missing: {}/meta says the log has {} "
                                             "partitions",
                                             partition_dir(dir, p), dir, options.partitions));
    }
  }
  auto opened =
      std::make_unique<embedded_log>(dir, options, *lock ? std::move(**lock) : unique_fd());
  opened->set_placement((*stored)->placement);
  ELOG_TRY(opened->recover());
  return std::unique_ptr<log>(std::move(opened));
}

}  // namespace

std::string damage_text(const log_damage& d) {
  std::string where =
      fmt::format("log partition {}: {} bytes after the last commit ({} at byte {})", d.partition,
                  d.bytes, d.segment, d.file_pos);
  std::string what = d.bad_segment == d.segment && d.bad_pos == d.file_pos
                         ? d.problem
                         : fmt::format("{} at byte {} of {}", d.problem, d.bad_pos, d.bad_segment);
  if (!d.quarantine.empty()) {
    return fmt::format("{}: a torn tail ({}); moved to {} and cut", where, what, d.quarantine);
  }
  if (d.committed) {
    return fmt::format(
        "{}: DAMAGED COMMITTED DATA ({}); read-only, nothing changed; only the "
        "records before it are read",
        where, what);
  }
  return fmt::format(
      "{}: a torn tail ({}), as a crash during a commit leaves it; read-only, "
      "nothing changed; the engine's next start moves it to quarantine",
      where, what);
}

result<partition_repair> repair_embedded_partition(
    const std::string& dir, uint32_t partition,
    const std::function<result<void>(const partition_repair&)>& before_cut) {
  auto stored = read_meta(dir);
  if (!stored) return std::unexpected(stored.error());
  if (!*stored) {
    return fail(errc::not_found,
                fmt::format("{} holds no embedded log ({}/meta is missing)", dir, dir));
  }
  if (partition >= **stored) {
    return fail(errc::invalid, fmt::format("partition {}: the log in {} has partitions 0..{}",
                                           partition, dir, **stored - 1));
  }
  auto lock = lock_dir(dir);
  if (!lock) return std::unexpected(lock.error());
  partition_recovery recovery(partition_dir(dir, partition), partition, /*read_only=*/true,
                              dir + "/quarantine");
  auto data = recovery.run();
  if (!data) return std::unexpected(data.error());
  partition_repair r;
  r.partition = partition;
  for (size_t s = 0; s < stream_count; ++s) r.kept[s] = data->index[s].size();
  if (!recovery.damage()) return r;
  r.damage = *recovery.damage();
  // What the cut bytes hold, read before anything changes (the same bytes salvage() cuts).
  std::string cut;
  {
    const log_damage& d = *r.damage;
    std::vector<std::string> segs;
    auto files = list_segments(partition_dir(dir, partition));
    if (!files) return std::unexpected(files.error());
    bool from_here = false;
    for (const auto& f : *files) {
      if (f.path == d.segment) from_here = true;
      if (!from_here) continue;
      auto buf = read_whole_file(f.path);
      if (!buf) return std::unexpected(buf.error());
      const uint64_t from = f.path == d.segment ? d.file_pos : 0;
      if (buf->size() > from) cut.append(*buf, from);
    }
  }
  for (size_t pos = 0; pos < cut.size();) {
    frame_check c = check_frame(std::string_view(cut).substr(pos));
    if (c.frame) {
      if (c.frame->type == frame_type::data) {
        if (auto d = decode_data(c.frame->body)) {
          r.lost.push_back({d->s, d->offset, std::string(d->key), std::string(d->value)});
        }
      }
      pos += c.frame->bytes;
      continue;
    }
    size_t next = cut.find(frame_magic_bytes, pos + 1);
    if (next == std::string::npos) next = cut.size();
    r.unreadable_bytes += next - pos;
    pos = next;
  }
  r.cut_bytes = cut.size();
  if (before_cut) ELOG_TRY(before_cut(r));
  auto salvaged = recovery.salvage();
  if (!salvaged) return std::unexpected(salvaged.error());
  vassert(salvaged->size() == cut.size(), "repair of partition {}: cut {} bytes, planned {}",
          partition, salvaged->size(), cut.size());
  r.damage = *recovery.damage();  // now names the quarantine file
  return r;
}

uint64_t embedded_log_quarantined_bytes() { return g_quarantined_bytes.load(); }
uint64_t embedded_log_quarantined_files() { return g_quarantined_files.load(); }

result<std::unique_ptr<log>> open_embedded_log(const std::string& dir,
                                               const embedded_log_options& options) {
  if (options.read_only) return open_read_only(dir, options);
  ELOG_TRY(check_options(options));
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return fail(errc::io, fmt::format("create {}: {}", dir, ec.message()));
  auto lock = lock_dir(dir);
  if (!lock) return std::unexpected(lock.error());
  ELOG_TRY(prepare_layout(dir, options.partitions));
  auto meta = read_meta_info(dir);
  if (!meta) return std::unexpected(meta.error());
  auto opened = std::make_unique<embedded_log>(dir, options, std::move(*lock));
  opened->set_placement((*meta)->placement);
  ELOG_TRY(opened->recover());
  ELOG_TRY(opened->redeliver());
  return std::unique_ptr<log>(std::move(opened));
}

result<std::optional<uint32_t>> embedded_log_partitions(const std::string& dir) {
  return read_meta(dir);
}

result<placement_header> scale_embedded_log(const std::string& dir, uint32_t partitions,
                                            std::vector<uint32_t> retired) {
  auto lock = lock_dir(dir);
  if (!lock) return std::unexpected(lock.error());
  auto stored = read_meta_info(dir);
  if (!stored) return std::unexpected(stored.error());
  if (!*stored) {
    return fail(errc::not_found,
                fmt::format("{} holds no embedded log ({}/meta is missing)", dir, dir));
  }
  meta_info m = **stored;
  if (partitions < m.partitions || partitions > partitions_max) {
    return fail(errc::invalid,
                fmt::format("the log in {} has {} partitions: it can grow to at most {}, and "
                            "never shrinks (retire partitions instead); asked for {}",
                            dir, m.partitions, partitions_max, partitions));
  }
  std::ranges::sort(retired);
  retired.erase(std::unique(retired.begin(), retired.end()), retired.end());
  if ((!retired.empty() && retired.back() >= partitions) || retired.size() >= partitions) {
    return fail(errc::invalid,
                fmt::format("retired partitions must be some of 0..{}, not all", partitions - 1));
  }
  // The directories first: a crash before the meta's rename leaves empty ones, reused.
  ELOG_TRY(make_partition_dirs(dir, partitions));
  m.partitions = partitions;
  m.placement.retired = std::move(retired);
  ELOG_TRY(write_meta(dir, m));
  return m.placement;
}

}  // namespace auterity
