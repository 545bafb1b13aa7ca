#include "engine/embedded_log.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/core.h>
#include <gtest/gtest.h>

#include "engine/crc32c.h"

namespace auterity {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

#define ASSERT_OK(expr)                                                       \
  do {                                                                        \
    auto _ok_r = (expr);                                                      \
    ASSERT_TRUE(_ok_r.has_value()) << #expr << ": " << _ok_r.error().message; \
  } while (0)

constexpr stream all_streams[] = {
    stream::ingress,         stream::executions, stream::commands_step, stream::commands_ai,
    stream::commands_notify, stream::acks,       stream::definitions,   stream::deadletter,
};

embedded_log_options fast_options(uint32_t partitions) {
  embedded_log_options o;
  o.partitions = partitions;
  o.fsync = false;  // kill -9 keeps the page cache; fsync only matters for power loss
  o.on_damage = [](const log_damage&) {};  // the kill -9 test tears thousands of tails
  return o;
}

embedded_log_options read_only_options(std::vector<log_damage>* damage = nullptr) {
  embedded_log_options o;
  o.partitions = 0;  // as stored
  o.read_only = true;
  o.on_damage = [damage](const log_damage& d) {
    if (damage) damage->push_back(d);
  };
  return o;
}

// Every file under `dir` with its bytes, to show that a read-only open changed nothing.
std::map<std::string, std::string> tree(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    std::ifstream in(e.path(), std::ios::binary);
    out[e.path().string()] =
        e.is_directory() ? "dir" : std::string(std::istreambuf_iterator<char>(in), {});
  }
  return out;
}

std::unique_ptr<log> open_log(const std::string& dir, const embedded_log_options& o) {
  auto opened = open_embedded_log(dir, o);
  if (!opened) {
    ADD_FAILURE() << "open " << dir << ": " << opened.error().message;
    return nullptr;
  }
  return std::move(*opened);
}

// Every committed record of (s, p), read in chunks of 7 so reads start mid-stream.
std::vector<record> read_all(log& lg, stream s, uint32_t p) {
  std::vector<record> out;
  for (;;) {
    auto n = lg.read(s, p, out.size(), 7, SIZE_MAX, out);
    EXPECT_TRUE(n.has_value()) << n.error().message;
    if (!n || *n == 0) return out;
  }
}

// Everything a user can observe of the log, as text, so two states compare with a readable diff.
std::string dump(log& lg, const std::vector<std::string>& groups) {
  std::string text;
  for (uint32_t p = 0; p < lg.partition_count(); ++p) {
    for (stream s : all_streams) {
      text += fmt::format("p{} s{} end {}\n", p, int(s), *lg.end_offset(s, p));
      for (const record& r : read_all(lg, s, p)) {
        text += fmt::format("  {} {:?} {:?}\n", r.offset, r.key, r.value);
      }
      for (const auto& g : groups) text += fmt::format("  pos {} {}\n", g, *lg.position(g, s, p));
    }
  }
  return text;
}

std::vector<fs::path> segment_files(const std::string& dir, uint32_t p) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(fmt::format("{}/p{:03}", dir, p))) {
    if (e.path().extension() == ".seg") files.push_back(e.path());
  }
  std::ranges::sort(files);
  return files;
}

fs::path last_segment(const std::string& dir, uint32_t p) { return segment_files(dir, p).back(); }

std::string file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const fs::path& path, std::string_view bytes, bool append) {
  std::ofstream out(path, std::ios::binary | (append ? std::ios::app : std::ios::trunc));
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

uint64_t seed_from_env_or_random() {
  if (const char* s = std::getenv("AUTERITY_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}

class embedded_log_test : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "auterity_elog_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    _root = tmpl;
    _dir = _root + "/data";  // open creates it
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(_root, ec);
  }

  std::string _root;
  std::string _dir;
};

// 1 ----------------------------------------------------------------------------------------------

TEST_F(embedded_log_test, offsets_are_dense_per_stream_and_partition_and_values_round_trip) {
  auto lg = open_log(_dir, fast_options(3));
  ASSERT_TRUE(lg);
  std::map<std::pair<stream, uint32_t>, std::vector<std::pair<std::string, std::string>>> model;
  for (int i = 0; i < 30; ++i) {
    uint32_t p = i % 3;
    commit_batch b;
    auto add = [&](stream s, std::string key, std::string value) {
      model[{s, p}].emplace_back(key, value);
      b.add(s, std::move(key), std::move(value));
    };
    add(stream::executions, fmt::format("tenant-{}", i), std::string("bin\0ary", 7) + char(i));
    add(stream::commands_ai, "", fmt::format("ai-{}", i));  // empty key
    if (i % 2 == 0) add(stream::acks, "k", "");             // empty value
    ASSERT_OK(lg->commit(p, b));
  }
  for (uint32_t p = 0; p < 3; ++p) {
    for (stream s : all_streams) {
      const auto& want = model[{s, p}];
      EXPECT_EQ(*lg->end_offset(s, p), want.size());
      auto got = read_all(*lg, s, p);
      ASSERT_EQ(got.size(), want.size());
      for (size_t o = 0; o < got.size(); ++o) {
        EXPECT_EQ(got[o].offset, o);
        EXPECT_EQ(got[o].key, want[o].first);
        EXPECT_EQ(got[o].value, want[o].second);
      }
    }
  }
}

TEST_F(embedded_log_test, read_honours_max_records_and_max_bytes_and_appends_to_out) {
  auto lg = open_log(_dir, fast_options(2));
  ASSERT_TRUE(lg);
  commit_batch b;
  for (int i = 0; i < 6; ++i) b.add(stream::definitions, "k", std::string(99, char('a' + i)));
  ASSERT_OK(lg->commit(1, b));  // six records of key + value = 100 bytes

  std::vector<record> out{record{42, "sentinel", ""}};
  auto n = lg->read(stream::definitions, 1, 2, 3, SIZE_MAX, out);
  ASSERT_OK(n);
  EXPECT_EQ(*n, 3u);
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0].key, "sentinel");
  EXPECT_EQ(out[1].offset, 2u);
  EXPECT_EQ(out[1].value, std::string(99, 'c'));
  EXPECT_EQ(out[3].offset, 4u);

  auto count = [&](size_t max_records, size_t max_bytes) {
    std::vector<record> got;
    auto r = lg->read(stream::definitions, 1, 0, max_records, max_bytes, got);
    EXPECT_TRUE(r.has_value());
    EXPECT_EQ(r.value_or(0), got.size());
    return got.size();
  };
  EXPECT_EQ(count(100, 250), 2u);
  EXPECT_EQ(count(100, 300), 3u);
  EXPECT_EQ(count(100, 1), 1u) << "at least one record when one is there";
  EXPECT_EQ(count(100, SIZE_MAX), 6u);
  EXPECT_EQ(count(0, SIZE_MAX), 0u);
}

TEST_F(embedded_log_test, out_of_range_arguments_are_rejected) {
  auto lg = open_log(_dir, fast_options(2));
  ASSERT_TRUE(lg);
  commit_batch b;
  b.add(stream::executions, "k", "v");
  ASSERT_OK(lg->commit(0, b));

  std::vector<record> out;
  auto at_end = lg->read(stream::executions, 0, 1, 10, SIZE_MAX, out);
  ASSERT_OK(at_end);
  EXPECT_EQ(*at_end, 0u);
  auto past_end = lg->read(stream::executions, 0, 2, 10, SIZE_MAX, out);
  ASSERT_FALSE(past_end);
  EXPECT_EQ(past_end.error().code, errc::invalid);
  auto bad_read_partition = lg->read(stream::executions, 2, 0, 10, SIZE_MAX, out);
  ASSERT_FALSE(bad_read_partition);
  EXPECT_EQ(bad_read_partition.error().code, errc::invalid);
  auto bad_commit_partition = lg->commit(2, b);
  ASSERT_FALSE(bad_commit_partition);
  EXPECT_EQ(bad_commit_partition.error().code, errc::invalid);
  commit_batch bad_stream;
  bad_stream.add(static_cast<stream>(stream_count), "k", "v");
  auto r = lg->commit(0, bad_stream);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(*lg->end_offset(stream::executions, 0), 1u);
}

// 2 ----------------------------------------------------------------------------------------------

TEST_F(embedded_log_test, records_end_offsets_and_positions_survive_reopen) {
  embedded_log_options o;
  o.partitions = 2;  // fsync on: the path production uses
  const std::vector<std::string> groups = {"orchestrator", "worker.step", "never"};
  std::string before;
  {
    auto lg = open_log(_dir, o);
    ASSERT_TRUE(lg);
    commit_batch b;
    b.add(stream::ingress, "t1", "start");
    b.add(stream::executions, "t1", "e0");
    b.set_position("orchestrator", stream::ingress, 1);
    ASSERT_OK(lg->commit(0, b));
    b.clear();
    b.add(stream::commands_step, "t2", "step");
    b.set_position("worker.step", stream::commands_step, 7);
    ASSERT_OK(lg->commit(1, b));
    b.clear();
    b.add(stream::executions, "t1", "e1");
    b.set_position("orchestrator", stream::ingress, 5);  // the later position wins
    ASSERT_OK(lg->commit(0, b));
    b.clear();
    b.set_position("worker.step", stream::commands_step, 4);  // also when it moves back
    ASSERT_OK(lg->commit(1, b));
    before = dump(*lg, groups);
  }
  auto lg = open_log(_dir, o);
  ASSERT_TRUE(lg);
  EXPECT_EQ(dump(*lg, groups), before);
  EXPECT_EQ(*lg->position("orchestrator", stream::ingress, 0), 5u);
  EXPECT_EQ(*lg->position("orchestrator", stream::ingress, 1), 0u);
  EXPECT_EQ(*lg->position("worker.step", stream::commands_step, 1), 4u);
  EXPECT_EQ(*lg->end_offset(stream::executions, 0), 2u);

  commit_batch b;
  b.add(stream::executions, "t1", "e2");
  ASSERT_OK(lg->commit(0, b));
  auto recs = read_all(*lg, stream::executions, 0);
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[2].offset, 2u);
  EXPECT_EQ(recs[2].value, "e2");
}

// 3 ----------------------------------------------------------------------------------------------

TEST_F(embedded_log_test, second_open_of_an_open_dir_fails_with_locked) {
  auto first = open_log(_dir, fast_options(2));
  ASSERT_TRUE(first);
  auto second = open_embedded_log(_dir, fast_options(2));
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, errc::locked);
  EXPECT_NE(second.error().message.find(_dir), std::string::npos) << second.error().message;
  first.reset();
  EXPECT_TRUE(open_log(_dir, fast_options(2))) << "the lock goes with the first log";
}

// 4 ----------------------------------------------------------------------------------------------

TEST_F(embedded_log_test, reopen_with_another_partition_count_fails_with_invalid) {
  {
    auto lg = open_log(_dir, fast_options(2));
    ASSERT_TRUE(lg);
    commit_batch b;
    b.add(stream::ingress, "k", "v");
    ASSERT_OK(lg->commit(1, b));
  }
  auto wrong = open_embedded_log(_dir, fast_options(3));
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, errc::invalid);
  EXPECT_EQ(wrong.error().message,
            fmt::format("data dir {} was created with 2 partitions, asked for 3", _dir));
  auto lg = open_log(_dir, fast_options(2));
  ASSERT_TRUE(lg);
  EXPECT_EQ(*lg->end_offset(stream::ingress, 1), 1u);
}

// 5 ----------------------------------------------------------------------------------------------

const std::vector<std::string> two_commit_groups = {"g", "h"};

struct two_commits {
  uint64_t after_first;    // segment size after the first commit
  uint64_t after_second;   // and after the second
  std::string first_dump;  // what the log showed after the first
};

// Two commits on partition 0 of a fresh log; the second has several records and positions.
two_commits write_two_commits(log& lg, const std::string& dir) {
  two_commits out;
  commit_batch b;
  b.add(stream::executions, "t1", "first");
  b.set_position("g", stream::ingress, 1);
  EXPECT_TRUE(lg.commit(0, b));
  out.after_first = fs::file_size(last_segment(dir, 0));
  out.first_dump = dump(lg, two_commit_groups);
  b.clear();
  b.add(stream::executions, "t1", "second-a");
  b.add(stream::commands_step, "t1", "second-b");
  b.add(stream::executions, "t2", "second-c");
  b.set_position("g", stream::ingress, 2);
  b.set_position("h", stream::acks, 9);
  EXPECT_TRUE(lg.commit(0, b));
  out.after_second = fs::file_size(last_segment(dir, 0));
  return out;
}

TEST_F(embedded_log_test, torn_tail_is_dropped_and_new_commits_follow_the_last_commit) {
  std::mt19937 rng(7);
  std::string garbage(300, '\0');
  for (char& c : garbage) c = char(rng());
  const std::vector<std::string> tails = {"garbage", "partial frame", "zeros", "half commit"};
  for (const auto& tail : tails) {
    SCOPED_TRACE(tail);
    std::string dir = fmt::format("{}/{}", _root, tail);
    auto lg = open_log(dir, fast_options(1));
    ASSERT_TRUE(lg);
    auto [after_first, after_second, ignored] = write_two_commits(*lg, dir);
    std::string committed = dump(*lg, two_commit_groups);
    lg.reset();

    fs::path seg = last_segment(dir, 0);
    std::string second = file_bytes(seg).substr(after_first);  // the second commit's frames
    std::string bytes = tail == "garbage"         ? garbage
                        : tail == "partial frame" ? second.substr(0, 20)
                        : tail == "zeros"         ? std::string(4096, '\0')
                                                  : second.substr(0, second.size() / 2);
    write_bytes(seg, bytes, /*append=*/true);

    lg = open_log(dir, fast_options(1));
    ASSERT_TRUE(lg);
    EXPECT_EQ(dump(*lg, two_commit_groups), committed);
    EXPECT_EQ(fs::file_size(seg), after_second);
    commit_batch b;
    b.add(stream::executions, "t3", "third");
    ASSERT_OK(lg->commit(0, b));
    lg.reset();  // the old log must let go of the lock first
    lg = open_log(dir, fast_options(1));
    ASSERT_TRUE(lg);
    auto recs = read_all(*lg, stream::executions, 0);
    ASSERT_EQ(recs.size(), 4u);
    EXPECT_EQ(recs[3].value, "third");
  }
}

// 6 ----------------------------------------------------------------------------------------------

TEST_F(embedded_log_test, commit_cut_anywhere_shows_exactly_the_previous_commit) {
  two_commits written;
  std::string both_dump;
  {
    auto lg = open_log(_dir, fast_options(1));
    ASSERT_TRUE(lg);
    written = write_two_commits(*lg, _dir);
    both_dump = dump(*lg, two_commit_groups);
  }
  fs::path seg = last_segment(_dir, 0);
  std::string full = file_bytes(seg);
  ASSERT_EQ(full.size(), written.after_second);
  // Every byte inside the second commit: between data frames, inside one, inside the commit
  // frame, one byte short of the end.
  for (uint64_t cut = written.after_first; cut < written.after_second; ++cut) {
    SCOPED_TRACE(fmt::format("cut at byte {} of {}", cut, full.size()));
    write_bytes(seg, std::string_view(full).substr(0, cut), /*append=*/false);
    auto lg = open_log(_dir, fast_options(1));
    ASSERT_TRUE(lg);
    ASSERT_EQ(dump(*lg, two_commit_groups), written.first_dump);
    EXPECT_EQ(fs::file_size(seg), written.after_first);
  }
  write_bytes(seg, full, /*append=*/false);
  auto lg = open_log(_dir, fast_options(1));
  ASSERT_TRUE(lg);
  EXPECT_EQ(dump(*lg, two_commit_groups), both_dump) << "uncut, the second commit is there";
  EXPECT_NE(both_dump, written.first_dump);
}

// 7 ----------------------------------------------------------------------------------------------

// The child's loop: commit n appends k records "n/i/k" to executions and to commands.step and
// sets position("g", ingress) to n. `acked` is shared memory: the last commit that returned.
[[noreturn]] void commit_until_killed(const std::string& dir, const embedded_log_options& o,
                                      uint64_t seed, std::atomic<uint64_t>* acked) {
  auto opened = open_embedded_log(dir, o);
  if (!opened) {
    fmt::print(stderr, "child open: {}\n", opened.error().message);
    ::_exit(2);
  }
  log& lg = **opened;
  std::mt19937_64 rng(seed);
  for (uint64_t n = *lg.position("g", stream::ingress, 0) + 1;; ++n) {
    int k = 1 + int(rng() % 5);
    commit_batch b;
    for (int i = 0; i < k; ++i) {
      b.add(stream::executions, fmt::format("c{}", n), fmt::format("{}/{}/{}", n, i, k));
      b.add(stream::commands_step, fmt::format("c{}", n), fmt::format("{}/{}/{}", n, i, k));
    }
    b.set_position("g", stream::ingress, n);
    if (auto r = lg.commit(0, b); !r) {
      fmt::print(stderr, "child commit: {}\n", r.error().message);
      ::_exit(3);
    }
    acked->store(n);
  }
}

// Checks that the stream holds whole commits 1, 2, ... n in order; returns n.
uint64_t whole_commits(log& lg, stream s) {
  auto recs = read_all(lg, s, 0);
  uint64_t commits = 0;
  for (size_t at = 0; at < recs.size();) {
    unsigned long long n = 0;
    int i = -1, k = 0;
    std::sscanf(recs[at].value.c_str(), "%llu/%d/%d", &n, &i, &k);
    EXPECT_EQ(n, commits + 1) << "offset " << at;
    EXPECT_TRUE(k >= 1 && at + k <= recs.size()) << "commit " << n << " is incomplete";
    if (n != commits + 1 || k < 1 || at + k > recs.size()) return commits;
    for (int j = 0; j < k; ++j) {
      EXPECT_EQ(recs[at + j].value, fmt::format("{}/{}/{}", n, j, k));
      EXPECT_EQ(recs[at + j].offset, at + j);
    }
    at += k;
    commits = n;
  }
  return commits;
}

TEST_F(embedded_log_test, kill_9_loses_no_acknowledged_commit_and_shows_no_partial_one) {
  const uint64_t seed = seed_from_env_or_random();
  fmt::print("kill -9 test seed: {} (rerun with AUTERITY_TEST_SEED={})\n", seed, seed);
  SCOPED_TRACE(fmt::format("seed {}", seed));
  std::mt19937_64 rng(seed);
  auto* acked = static_cast<std::atomic<uint64_t>*>(::mmap(nullptr, sizeof(std::atomic<uint64_t>),
                                                           PROT_READ | PROT_WRITE,
                                                           MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(acked, MAP_FAILED);
  new (acked) std::atomic<uint64_t>(0);
  embedded_log_options o = fast_options(1);
  o.segment_bytes_max = 16 << 10;  // roll under fire too

  uint64_t commits = 0;
  for (int round = 0; round < 5; ++round) {
    SCOPED_TRACE(fmt::format("round {}", round));
    o.fsync = round % 2 == 1;
    uint64_t child_seed = rng();
    auto run_ms = std::chrono::milliseconds(20 + rng() % 181);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) commit_until_killed(_dir, o, child_seed, acked);
    std::this_thread::sleep_for(run_ms);
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "the child stopped on its own, status " << status;

    auto lg = open_log(_dir, o);
    ASSERT_TRUE(lg);
    uint64_t in_executions = whole_commits(*lg, stream::executions);
    uint64_t in_steps = whole_commits(*lg, stream::commands_step);
    EXPECT_EQ(in_executions, in_steps);
    EXPECT_EQ(*lg->end_offset(stream::executions, 0), *lg->end_offset(stream::commands_step, 0));
    EXPECT_EQ(*lg->position("g", stream::ingress, 0), in_executions);
    uint64_t last_acked = acked->load();
    EXPECT_GE(in_executions, last_acked) << "an acknowledged commit was lost";
    EXPECT_LE(in_executions, last_acked + 1) << "at most the commit in flight may survive";
    EXPECT_GE(in_executions, commits) << "commits went backwards";
    commits = in_executions;
  }
  EXPECT_GT(commits, 0u);
  fmt::print("kill -9 test: {} commits over 5 rounds\n", commits);
  ::munmap(acked, sizeof(std::atomic<uint64_t>));
}

// 8 ----------------------------------------------------------------------------------------------

TEST_F(embedded_log_test, segments_roll_at_segment_bytes_max_and_read_back_in_order) {
  embedded_log_options o = fast_options(2);
  o.segment_bytes_max = 4096;
  const stream used[] = {stream::executions, stream::acks, stream::deadletter};
  std::map<std::pair<stream, uint32_t>, std::vector<std::string>> model;
  std::mt19937 rng(11);
  const std::vector<std::string> groups = {"g"};
  std::string before;
  {
    auto lg = open_log(_dir, o);
    ASSERT_TRUE(lg);
    for (int i = 0; i < 400; ++i) {
      uint32_t p = i % 2;
      commit_batch b;
      // One commit larger than the limit: it gets a segment of its own.
      int records = i == 200 ? 3 : 1 + int(rng() % 4);
      size_t value_bytes_max = i == 200 ? 3000 : 400;
      for (int r = 0; r < records; ++r) {
        stream s = used[rng() % 3];
        std::string value(rng() % value_bytes_max, char('a' + i % 26));
        value += fmt::format("#{}", i);
        model[{s, p}].push_back(value);
        b.add(s, "k", std::move(value));
      }
      b.set_position("g", stream::executions, i);
      ASSERT_OK(lg->commit(p, b));
    }
    before = dump(*lg, groups);
  }
  for (uint32_t p = 0; p < 2; ++p) {
    auto files = segment_files(_dir, p);
    EXPECT_GT(files.size(), 10u);
    size_t oversized = 0;
    for (const auto& f : files) oversized += fs::file_size(f) > 4096;
    EXPECT_EQ(oversized, p == 0 ? 1u : 0u) << "only the big commit's segment may exceed 4 KiB";
  }
  auto lg = open_log(_dir, o);
  ASSERT_TRUE(lg);
  EXPECT_EQ(dump(*lg, groups), before);
  for (const auto& [sp, values] : model) {
    auto recs = read_all(*lg, sp.first, sp.second);
    ASSERT_EQ(recs.size(), values.size());
    for (size_t i = 0; i < recs.size(); ++i) EXPECT_EQ(recs[i].value, values[i]);
  }
  EXPECT_EQ(*lg->position("g", stream::executions, 0), 398u);
  EXPECT_EQ(*lg->position("g", stream::executions, 1), 399u);
}

// 9 ----------------------------------------------------------------------------------------------

TEST_F(embedded_log_test, oversize_record_fails_with_too_large_and_writes_nothing) {
  auto lg = open_log(_dir, fast_options(1));
  ASSERT_TRUE(lg);
  uint64_t size_before = fs::file_size(last_segment(_dir, 0));
  uint64_t generation_before = lg->generation(0);
  commit_batch b;
  b.add(stream::executions, "small", "fine");
  b.add(stream::ingress, "key", std::string(record_bytes_max - 2, 'x'));  // 1 byte too many
  b.set_position("g", stream::ingress, 1);
  auto r = lg->commit(0, b);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::too_large);
  EXPECT_EQ(*lg->end_offset(stream::executions, 0), 0u);
  EXPECT_EQ(*lg->end_offset(stream::ingress, 0), 0u);
  EXPECT_EQ(*lg->position("g", stream::ingress, 0), 0u);
  EXPECT_EQ(lg->generation(0), generation_before);
  EXPECT_EQ(fs::file_size(last_segment(_dir, 0)), size_before);

  commit_batch exact;
  exact.add(stream::ingress, "key", std::string(record_bytes_max - 3, 'y'));
  ASSERT_OK(lg->commit(0, exact));
  lg.reset();  // the old log must let go of the lock first
  lg = open_log(_dir, fast_options(1));
  ASSERT_TRUE(lg);
  auto recs = read_all(*lg, stream::ingress, 0);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].value.size(), record_bytes_max - 3);
}

// 10 ---------------------------------------------------------------------------------------------

TEST_F(embedded_log_test, wait_wakes_on_a_commit_from_another_thread) {
  auto lg = open_log(_dir, fast_options(2));
  ASSERT_TRUE(lg);
  uint64_t seen = lg->generation(1);
  std::chrono::steady_clock::duration waited{};
  std::thread waiter([&] {
    auto start = std::chrono::steady_clock::now();
    lg->wait(1, seen, 20s);
    waited = std::chrono::steady_clock::now() - start;
  });
  std::this_thread::sleep_for(50ms);
  commit_batch b;
  b.add(stream::acks, "k", "v");
  ASSERT_OK(lg->commit(1, b));
  waiter.join();
  EXPECT_LT(waited, 10s) << "woken by the commit, not by the timeout";
  EXPECT_GT(lg->generation(1), seen);
  EXPECT_EQ(lg->generation(0), 0u) << "a commit to partition 1 is not one to partition 0";
}

TEST_F(embedded_log_test, wait_does_not_miss_a_commit_made_before_it_and_times_out_otherwise) {
  auto lg = open_log(_dir, fast_options(1));
  ASSERT_TRUE(lg);
  uint64_t seen = lg->generation(0);
  commit_batch b;
  b.add(stream::acks, "k", "v");
  ASSERT_OK(lg->commit(0, b));
  auto start = std::chrono::steady_clock::now();
  lg->wait(0, seen, 20s);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);

  start = std::chrono::steady_clock::now();
  lg->wait(0, lg->generation(0), 100ms);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 90ms);
}

// Beyond the list: concurrency, corruption, checksum ---------------------------------------------

TEST_F(embedded_log_test, concurrent_readers_never_see_part_of_a_commit) {
  auto lg = open_log(_dir, fast_options(1));
  ASSERT_TRUE(lg);
  constexpr uint64_t commits = 20000;
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (uint64_t i = 0; i < commits; ++i) {
      commit_batch b;
      b.add(stream::commands_step, "k", std::to_string(i));
      b.add(stream::executions, "k", std::to_string(i));
      b.set_position("g", stream::executions, i + 1);
      EXPECT_TRUE(lg->commit(0, b));
    }
    done = true;
  });
  auto reader = [&] {
    std::vector<record> out;
    while (!done) {
      // Read in this order: a later call sees at least what an earlier one saw.
      uint64_t pos = *lg->position("g", stream::executions, 0);
      uint64_t steps = *lg->end_offset(stream::commands_step, 0);
      uint64_t execs = *lg->end_offset(stream::executions, 0);
      ASSERT_LE(pos, steps);
      ASSERT_LE(steps, execs);
      if (execs == 0) continue;
      out.clear();
      auto n = lg->read(stream::executions, 0, execs - 1, 10, SIZE_MAX, out);
      ASSERT_TRUE(n.has_value()) << n.error().message;
      ASSERT_GE(*n, 1u);
      EXPECT_EQ(out[0].value, std::to_string(execs - 1));
    }
  };
  std::thread r1(reader), r2(reader);
  writer.join();
  r1.join();
  r2.join();
  EXPECT_EQ(*lg->end_offset(stream::executions, 0), commits);
}

TEST_F(embedded_log_test, damage_before_the_last_commit_fails_with_corrupt_naming_the_file) {
  uint64_t after_first = 0;
  {
    auto lg = open_log(_dir, fast_options(1));
    ASSERT_TRUE(lg);
    after_first = write_two_commits(*lg, _dir).after_first;
  }
  fs::path seg = last_segment(_dir, 0);
  std::string bytes = file_bytes(seg);
  bytes[after_first / 2] ^= 0x40;  // inside the first commit
  write_bytes(seg, bytes, /*append=*/false);
  auto r = open_embedded_log(_dir, fast_options(1));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::corrupt);
  EXPECT_NE(r.error().message.find(seg.filename().string()), std::string::npos)
      << r.error().message;
  EXPECT_EQ(fs::file_size(seg), bytes.size()) << "committed data is not truncated away";
}

// Read-only opens (the audits' path) -----------------------------------------------------------

TEST_F(embedded_log_test, read_only_open_of_a_missing_dir_fails_with_not_found_and_creates_none) {
  auto r = open_embedded_log(_dir, read_only_options());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::not_found);
  EXPECT_NE(r.error().message.find(_dir), std::string::npos) << r.error().message;
  EXPECT_FALSE(fs::exists(_dir));
  fs::create_directory(_dir);
  r = open_embedded_log(_dir, read_only_options());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::not_found);
  EXPECT_EQ(r.error().message,
            fmt::format("{} holds no embedded log ({}/meta is missing)", _dir, _dir));
  EXPECT_TRUE(fs::is_empty(_dir));
}

TEST_F(embedded_log_test, read_only_opens_share_the_dir_with_each_other_but_not_with_a_writer) {
  {
    auto lg = open_log(_dir, fast_options(2));
    ASSERT_TRUE(lg);
    auto reader = open_embedded_log(_dir, read_only_options());
    ASSERT_FALSE(reader) << "a reader beside the running engine";
    EXPECT_EQ(reader.error().code, errc::locked);
    EXPECT_NE(reader.error().message.find("read-only commands read a stopped engine's directory"),
              std::string::npos)
        << reader.error().message;
  }
  auto a = open_log(_dir, read_only_options());
  auto b = open_log(_dir, read_only_options());
  ASSERT_TRUE(a && b) << "readers share the lock";
  EXPECT_EQ(a->partition_count(), 2u) << "the stored count";
  auto writer = open_embedded_log(_dir, fast_options(2));
  ASSERT_FALSE(writer) << "the engine does not start under an audit";
  EXPECT_EQ(writer.error().code, errc::locked);
  commit_batch batch;
  batch.add(stream::ingress, "k", "v");
  auto c = a->commit(0, batch);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, errc::invalid);
}

TEST_F(embedded_log_test,
       read_only_open_reports_a_torn_tail_serves_the_commits_and_changes_nothing) {
  two_commits w;
  {
    auto lg = open_log(_dir, fast_options(1));
    ASSERT_TRUE(lg);
    w = write_two_commits(*lg, _dir);
  }
  fs::path seg = last_segment(_dir, 0);
  const std::string second = file_bytes(seg).substr(w.after_first);
  // The second commit torn: its first frame and a half.
  fs::resize_file(seg, w.after_first + second.size() / 2);
  const auto before = tree(_dir);
  std::vector<log_damage> damage;
  auto lg = open_log(_dir, read_only_options(&damage));
  ASSERT_TRUE(lg);
  EXPECT_EQ(dump(*lg, two_commit_groups), w.first_dump);
  lg.reset();
  EXPECT_EQ(tree(_dir), before) << "a read-only open changed the directory";
  ASSERT_EQ(damage.size(), 1u);
  const log_damage& d = damage[0];
  EXPECT_EQ(d.partition, 0u);
  EXPECT_EQ(d.segment, seg.string());
  EXPECT_EQ(d.file_pos, w.after_first);
  EXPECT_EQ(d.bytes, second.size() / 2);
  EXPECT_FALSE(d.committed);
  EXPECT_TRUE(d.quarantine.empty());
  EXPECT_NE(damage_text(d).find(fmt::format("log partition 0: {} bytes after the last commit ({} "
                                            "at byte {}): a torn tail",
                                            second.size() / 2, seg.string(), w.after_first)),
            std::string::npos)
      << damage_text(d);
}

TEST_F(embedded_log_test, read_only_open_reports_damaged_committed_data_and_serves_the_prefix) {
  two_commits w;
  {
    auto lg = open_log(_dir, fast_options(1));
    ASSERT_TRUE(lg);
    w = write_two_commits(*lg, _dir);
  }
  fs::path seg = last_segment(_dir, 0);
  std::string bytes = file_bytes(seg);
  bytes[w.after_first + 20] ^= 0x40;               // inside the second commit's first frame
  bytes += file_bytes(seg).substr(w.after_first);  // and a third commit after it
  write_bytes(seg, bytes, /*append=*/false);
  const auto before = tree(_dir);
  std::vector<log_damage> damage;
  auto lg = open_log(_dir, read_only_options(&damage));
  ASSERT_TRUE(lg);
  EXPECT_EQ(dump(*lg, two_commit_groups), w.first_dump);
  lg.reset();
  EXPECT_EQ(tree(_dir), before);
  ASSERT_EQ(damage.size(), 1u);
  EXPECT_TRUE(damage[0].committed);
  EXPECT_EQ(damage[0].file_pos, w.after_first);
  EXPECT_EQ(damage[0].bytes, bytes.size() - w.after_first);
  EXPECT_EQ(damage[0].problem, "frame crc mismatch");
  EXPECT_NE(damage_text(damage[0]).find("DAMAGED COMMITTED DATA"), std::string::npos);
  // The writable open still refuses it (salvage is a decision, not a side effect of opening).
  auto writable = open_embedded_log(_dir, fast_options(1));
  ASSERT_FALSE(writable);
  EXPECT_EQ(writable.error().code, errc::corrupt);
}

TEST_F(embedded_log_test, recovery_moves_a_torn_tail_to_a_quarantine_file_before_cutting_it) {
  two_commits w;
  {
    auto lg = open_log(_dir, fast_options(1));
    ASSERT_TRUE(lg);
    w = write_two_commits(*lg, _dir);
  }
  fs::path seg = last_segment(_dir, 0);
  const std::string cut = file_bytes(seg).substr(w.after_first, 29);
  fs::resize_file(seg, w.after_first + cut.size());
  const uint64_t bytes_before = embedded_log_quarantined_bytes();
  const uint64_t files_before = embedded_log_quarantined_files();
  for (int round = 0; round < 2; ++round) {  // the same tear twice: a second, free name
    SCOPED_TRACE(round);
    std::vector<log_damage> damage;
    embedded_log_options o = fast_options(1);
    o.on_damage = [&](const log_damage& d) { damage.push_back(d); };
    auto lg = open_log(_dir, o);
    ASSERT_TRUE(lg);
    EXPECT_EQ(dump(*lg, two_commit_groups), w.first_dump);
    ASSERT_EQ(damage.size(), 1u);
    const std::string expected =
        fmt::format("{}/quarantine/p000-{}-{}{}.bin", _dir, seg.stem().string(), w.after_first,
                    round == 0 ? "" : ".1");
    EXPECT_EQ(damage[0].quarantine, expected);
    EXPECT_EQ(file_bytes(expected), cut) << "the quarantine file holds exactly the bytes cut";
    EXPECT_EQ(fs::file_size(seg), w.after_first);
    EXPECT_NE(damage_text(damage[0]).find("moved to " + expected + " and cut"), std::string::npos)
        << damage_text(damage[0]);
    lg.reset();
    write_bytes(seg, cut, /*append=*/true);
  }
  EXPECT_EQ(embedded_log_quarantined_bytes() - bytes_before, 2 * cut.size());
  EXPECT_EQ(embedded_log_quarantined_files() - files_before, 2u);
}

TEST_F(embedded_log_test, last_commit_with_a_hole_is_dropped_as_never_acknowledged) {
  // Pages of an unsynced write can reach the disk out of order: the commit frame made it, a
  // data frame before it did not.
  uint64_t after_first = 0;
  {
    auto lg = open_log(_dir, fast_options(1));
    ASSERT_TRUE(lg);
    after_first = write_two_commits(*lg, _dir).after_first;
  }
  fs::path seg = last_segment(_dir, 0);
  std::string bytes = file_bytes(seg);
  std::fill(bytes.begin() + after_first + 4, bytes.begin() + after_first + 30, '\0');
  write_bytes(seg, bytes, /*append=*/false);
  auto lg = open_log(_dir, fast_options(1));
  ASSERT_TRUE(lg);
  EXPECT_EQ(*lg->end_offset(stream::executions, 0), 1u);
  EXPECT_EQ(*lg->end_offset(stream::commands_step, 0), 0u);
  EXPECT_EQ(*lg->position("g", stream::ingress, 0), 1u);
  EXPECT_EQ(fs::file_size(seg), after_first);
}

// Group commit ----------------------------------------------------------------------------------

// Stands in for fdatasync(2) through embedded_log_options::fdatasync_for_testing: counts the
// flushes, records the file size each one covers, can hold the next flush until released, make
// flushes fail from a given one on, or make them slow so commits queue behind them.
class flush_control {
 public:
  int sync(int fd) {
    std::unique_lock lock(_mu);
    struct stat st {};
    ::fstat(fd, &st);
    _sizes.push_back(static_cast<uint64_t>(st.st_size));
    size_t call = _sizes.size();
    if (_hold_next) {
      _hold_next = false;
      _held = true;
      _cv.notify_all();
      _cv.wait(lock, [&] { return !_held; });
    }
    if (call >= _fail_from) {
      errno = EIO;
      return -1;
    }
    if (_delay_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(_delay_us));
    return 0;
  }

  embedded_log_options options(uint32_t partitions) {
    embedded_log_options o;
    o.partitions = partitions;
    o.fsync = true;
    o.fdatasync_for_testing = [this](int fd) { return sync(fd); };
    return o;
  }

  void hold_next() {
    std::lock_guard lock(_mu);
    _hold_next = true;
  }
  void wait_until_held() {
    std::unique_lock lock(_mu);
    _cv.wait(lock, [&] { return _held; });
  }
  void release() {
    std::lock_guard lock(_mu);
    _held = false;
    _cv.notify_all();
  }
  void fail_from_call(size_t n) {
    std::lock_guard lock(_mu);
    _fail_from = n;
  }
  void set_delay_us(int us) {
    std::lock_guard lock(_mu);
    _delay_us = us;
  }
  std::vector<uint64_t> sizes() {
    std::lock_guard lock(_mu);
    return _sizes;
  }

 private:
  std::mutex _mu;
  std::condition_variable _cv;
  bool _hold_next = false;
  bool _held = false;
  size_t _fail_from = SIZE_MAX;
  int _delay_us = 0;
  std::vector<uint64_t> _sizes;  // file size at each flush, in call order
};

struct held_flush_run {
  result<std::vector<uint64_t>> first;
  std::vector<result<std::vector<uint64_t>>> queued;
};

// Commits `first` and holds its flush; meanwhile commits each of `queued` from a thread of its
// own, waits until they are all inside commit() (plus 100 ms to reach the queue), releases the
// flush. The queued ones then normally form one group behind `first`; callers check the flush
// count to know.
held_flush_run commit_behind_a_held_flush(log& lg, flush_control& flush, const commit_batch& first,
                                          const std::vector<commit_batch>& queued) {
  held_flush_run run{std::vector<uint64_t>(), {}};
  run.queued.resize(queued.size(), std::vector<uint64_t>());
  flush.hold_next();
  std::thread leader([&] { run.first = lg.commit(0, first); });
  flush.wait_until_held();
  std::atomic<size_t> calling{0};
  std::vector<std::thread> threads;
  for (size_t i = 0; i < queued.size(); ++i) {
    threads.emplace_back([&, i] {
      ++calling;
      run.queued[i] = lg.commit(0, queued[i]);
    });
  }
  while (calling < queued.size()) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(100ms);
  flush.release();
  leader.join();
  for (auto& t : threads) t.join();
  return run;
}

// Three commits with records on two streams and positions of their own and a shared one.
std::vector<commit_batch> three_queued_commits() {
  std::vector<commit_batch> out(3);
  for (int i = 0; i < 3; ++i) {
    out[i].add(stream::executions, fmt::format("q{}", i), fmt::format("queued-{}-a", i));
    out[i].add(stream::acks, fmt::format("q{}", i), fmt::format("queued-{}-b", i));
    out[i].set_position(fmt::format("w{}", i), stream::commands_step, 10 + i);
    out[i].set_position("g", stream::ingress, 100 + i);
  }
  return out;
}

commit_batch leader_commit() {
  commit_batch b;
  b.add(stream::executions, "lead", "leader");
  b.set_position("g", stream::ingress, 1);
  return b;
}

const std::vector<std::string> group_test_groups = {"g", "w0", "w1", "w2"};

// One try at queueing three_queued_commits() behind leader_commit()'s held flush, in a fresh log
// under <root>/attempt<n> whose flushes fail from call `fail_from_call` on (never by default).
// The queued commits can miss the group if a thread is not scheduled for 100 ms, so the tests
// retry, at most group_attempts_max times.
struct group_attempt {
  group_attempt(const std::string& root, int n, size_t fail_from_call = SIZE_MAX)
      : dir(fmt::format("{}/attempt{}", root, n)), lg(open_log(dir, flush.options(1))) {
    if (!lg) return;
    flush.fail_from_call(fail_from_call);
    run = commit_behind_a_held_flush(*lg, flush, leader_commit(), three_queued_commits());
  }
  std::string dir;
  flush_control flush;
  std::unique_ptr<log> lg;  // null if the log did not open
  held_flush_run run;
};

constexpr int group_attempts_max = 5;

TEST_F(embedded_log_test, concurrent_committers_get_dense_increasing_offsets_and_share_flushes) {
  for (bool fsync : {true, false}) {
    SCOPED_TRACE(fmt::format("fsync {}", fsync));
    std::string dir = fmt::format("{}/fsync{}", _root, fsync);
    flush_control flush;
    flush.set_delay_us(300);  // a flush long enough for the others to queue behind it
    embedded_log_options o = flush.options(1);
    o.fsync = fsync;
    o.segment_bytes_max = 64 << 10;  // groups roll segments too
    auto lg = open_log(dir, o);
    ASSERT_TRUE(lg);
    constexpr int threads = 4, commits_per_thread = 300;
    // offsets[t][i]: what commit i of thread t got; its records are "t/i/j" on executions.
    std::vector<std::vector<std::vector<uint64_t>>> offsets(threads);
    std::vector<std::thread> committers;
    for (int t = 0; t < threads; ++t) {
      committers.emplace_back([&, t] {
        std::string group = fmt::format("w{}", t);
        for (int i = 0; i < commits_per_thread; ++i) {
          commit_batch b;
          for (int j = 0; j < 1 + (i + t) % 3; ++j) {
            b.add(stream::executions, group, fmt::format("{}/{}/{}", t, i, j));
          }
          b.set_position(group, stream::acks, i + 1);
          auto r = lg->commit(0, b);
          ASSERT_TRUE(r.has_value()) << r.error().message;
          // Visible when commit() returns: its records and its position.
          EXPECT_GE(*lg->end_offset(stream::executions, 0), r->back() + 1);
          EXPECT_EQ(*lg->position(group, stream::acks, 0), uint64_t(i + 1));
          offsets[t].push_back(std::move(*r));
        }
      });
    }
    for (auto& c : committers) c.join();

    std::map<uint64_t, std::string> expected;  // offset -> value
    for (int t = 0; t < threads; ++t) {
      uint64_t last = 0;
      for (int i = 0; i < commits_per_thread; ++i) {
        const auto& got = offsets[t][i];
        ASSERT_EQ(got.size(), size_t(1 + (i + t) % 3));
        for (size_t j = 0; j < got.size(); ++j) {
          if (i > 0 || j > 0) {
            EXPECT_GT(got[j], last) << "thread " << t << " commit " << i;
          }
          if (j > 0) {
            EXPECT_EQ(got[j], got[j - 1] + 1) << "a commit's records are consecutive";
          }
          last = got[j];
          EXPECT_TRUE(expected.emplace(got[j], fmt::format("{}/{}/{}", t, i, j)).second)
              << "offset " << got[j] << " given twice";
        }
      }
    }
    auto check = [&](log& l) {
      auto recs = read_all(l, stream::executions, 0);
      ASSERT_EQ(recs.size(), expected.size());
      for (size_t o = 0; o < recs.size(); ++o) {
        ASSERT_EQ(recs[o].offset, o);
        ASSERT_TRUE(expected.contains(o)) << "offsets are not dense: " << o << " missing";
        EXPECT_EQ(recs[o].value, expected[o]) << "offset " << o;
      }
      for (int t = 0; t < threads; ++t) {
        EXPECT_EQ(*l.position(fmt::format("w{}", t), stream::acks, 0),
                  uint64_t(commits_per_thread));
      }
    };
    check(*lg);
    EXPECT_EQ(lg->generation(0), uint64_t(threads * commits_per_thread));
    if (fsync) {
      size_t flushes = flush.sizes().size();
      fmt::print("{} commits from {} threads in {} flushes\n", threads * commits_per_thread,
                 threads, flushes);
      EXPECT_LT(flushes * 10, size_t(threads * commits_per_thread) * 9)
          << "concurrent commits should share flushes";
    }
    lg.reset();
    lg = open_log(dir, fast_options(1));
    ASSERT_TRUE(lg);
    check(*lg);  // the same after recovery
  }
}

TEST_F(embedded_log_test, failed_flush_fails_every_commit_of_its_group_and_shows_none) {
  for (int attempt = 0;; ++attempt) {
    ASSERT_LT(attempt, group_attempts_max) << "the queued commits never formed one group";
    // The leader's flush succeeds, the group's after it fails.
    group_attempt a(_root, attempt, /*fail_from_call=*/2);
    auto& [dir, flush, lg, run] = a;
    ASSERT_TRUE(lg);
    ASSERT_TRUE(run.first.has_value()) << run.first.error().message;
    for (const auto& r : run.queued) ASSERT_FALSE(r.has_value()) << "committed past a failed flush";
    // A queued commit that missed the group is refused by the broken log instead; retry then.
    if (std::ranges::any_of(run.queued, [](const auto& r) {
          return r.error().message.find("refused") != std::string::npos;
        })) {
      continue;
    }
    EXPECT_EQ(flush.sizes().size(), 2u) << "the leader's flush and the group's";
    for (const auto& r : run.queued) {
      EXPECT_EQ(r.error().code, errc::io);
      EXPECT_NE(r.error().message.find("fdatasync"), std::string::npos) << r.error().message;
      EXPECT_EQ(r.error().message, run.queued[0].error().message) << "one flush, one error";
    }
    // Only the leader's commit shows; the failed group's records, positions and wake-ups don't.
    EXPECT_EQ(*lg->end_offset(stream::executions, 0), 1u);
    EXPECT_EQ(*lg->end_offset(stream::acks, 0), 0u);
    EXPECT_EQ(*lg->position("g", stream::ingress, 0), 1u);
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(*lg->position(fmt::format("w{}", i), stream::commands_step, 0), 0u);
    }
    EXPECT_EQ(lg->generation(0), 1u);
    std::vector<record> out;
    auto n = lg->read(stream::executions, 0, 1, 10, SIZE_MAX, out);
    ASSERT_TRUE(n.has_value()) << n.error().message;
    EXPECT_EQ(*n, 0u);
    // As before group commit: after a failed flush the log refuses commits until reopened.
    commit_batch later;
    later.add(stream::executions, "k", "later");
    auto refused = lg->commit(0, later);
    ASSERT_FALSE(refused.has_value());
    EXPECT_NE(refused.error().message.find("refused"), std::string::npos)
        << refused.error().message;
    EXPECT_EQ(flush.sizes().size(), 2u) << "a refused commit writes nothing";
    return;
  }
}

TEST_F(embedded_log_test, group_cut_anywhere_shows_exactly_the_commit_before_it) {
  std::vector<uint64_t> sizes;
  std::string grouped_dump;
  uint64_t last_g = 0;
  for (int attempt = 0;; ++attempt) {
    ASSERT_LT(attempt, group_attempts_max) << "the queued commits never formed one group";
    group_attempt a(_root, attempt);
    auto& [dir, flush, lg, run] = a;
    ASSERT_TRUE(lg);
    ASSERT_TRUE(run.first.has_value()) << run.first.error().message;
    for (const auto& r : run.queued) ASSERT_TRUE(r.has_value()) << r.error().message;
    sizes = flush.sizes();
    if (sizes.size() != 2) continue;  // the queued commits were flushed apart
    grouped_dump = dump(*lg, group_test_groups);
    // The group is one commit on disk, its positions in queue order: as in memory, the last
    // queued commit's position of "g" wins.
    auto last = std::ranges::max_element(run.queued, {}, [](const auto& r) { return r->front(); });
    last_g = 100 + uint64_t(last - run.queued.begin());
    EXPECT_EQ(*lg->position("g", stream::ingress, 0), last_g);
    lg.reset();
    fs::rename(dir, _dir);
    break;
  }
  fs::path seg = last_segment(_dir, 0);
  std::string full = file_bytes(seg);
  ASSERT_EQ(full.size(), sizes[1]);
  write_bytes(seg, std::string_view(full).substr(0, sizes[0]), /*append=*/false);
  std::string leader_only;
  {
    auto lg = open_log(_dir, fast_options(1));
    ASSERT_TRUE(lg);
    leader_only = dump(*lg, group_test_groups);
    EXPECT_EQ(*lg->end_offset(stream::executions, 0), 1u);
    EXPECT_EQ(*lg->end_offset(stream::acks, 0), 0u);
    EXPECT_EQ(*lg->position("g", stream::ingress, 0), 1u);
  }
  // Every byte inside the group, including right after a queued commit's last data frame.
  for (uint64_t cut = sizes[0] + 1; cut < sizes[1]; ++cut) {
    SCOPED_TRACE(fmt::format("cut at byte {} of {}", cut, full.size()));
    write_bytes(seg, std::string_view(full).substr(0, cut), /*append=*/false);
    auto lg = open_log(_dir, fast_options(1));
    ASSERT_TRUE(lg);
    ASSERT_EQ(dump(*lg, group_test_groups), leader_only);
    EXPECT_EQ(fs::file_size(seg), sizes[0]);
  }
  write_bytes(seg, full, /*append=*/false);
  auto lg = open_log(_dir, fast_options(1));
  ASSERT_TRUE(lg);
  EXPECT_EQ(dump(*lg, group_test_groups), grouped_dump) << "uncut, the whole group is there";
  EXPECT_EQ(*lg->position("g", stream::ingress, 0), last_g);
}

TEST(crc32c_test, matches_known_values_in_both_implementations) {
  std::string digits = "123456789";
  std::string zeros(32, '\0'), ones(32, '\xff'), ascending(32, '\0');
  for (int i = 0; i < 32; ++i) ascending[i] = char(i);
  const std::pair<const std::string*, uint32_t> known[] = {
      {&digits, 0xE3069283}, {&zeros, 0x8A9136AA}, {&ones, 0x62A8AB43}, {&ascending, 0x46DD794E}};
  for (const auto& [text, crc] : known) {
    EXPECT_EQ(crc32c::value(text->data(), text->size()), crc);
    EXPECT_EQ(crc32c::detail::extend_table(0, text->data(), text->size()), crc);
  }
  std::mt19937 rng(3);
  std::string data(1000, '\0');
  for (char& c : data) c = char(rng());
  for (size_t start : {0, 1, 3, 7}) {
    for (size_t n : {0, 1, 7, 8, 9, 63, 500, 993}) {
      uint32_t whole = crc32c::detail::extend_table(0, data.data() + start, n);
      if (crc32c::detail::hardware_available()) {
        EXPECT_EQ(crc32c::detail::extend_hardware(0, data.data() + start, n), whole);
      }
      uint32_t half = crc32c::value(data.data() + start, n / 2);
      EXPECT_EQ(crc32c::extend(half, data.data() + start + n / 2, n - n / 2), whole);
    }
  }
}

// Forwarding -------------------------------------------------------------------------------------

// The values of (s, p), in offset order.
std::vector<std::string> values(log& lg, stream s, uint32_t p) {
  std::vector<std::string> out;
  for (const record& r : read_all(lg, s, p)) out.push_back(r.value);
  return out;
}

TEST_F(embedded_log_test, appends_to_another_partition_are_delivered_once_in_order) {
  auto lg = open_log(_dir, fast_options(3));
  ASSERT_TRUE(lg);
  for (int i = 0; i < 5; ++i) {
    commit_batch b;
    b.add(stream::executions, "t", fmt::format("e{}", i));
    b.add_to(stream::ingress, 1, "t", fmt::format("to1-{}", i));
    b.add_to(stream::acks, 2, "t", fmt::format("to2-{}", i));
    b.set_position("g", stream::ingress, i + 1);
    auto offsets = lg->commit(0, b);
    ASSERT_OK(offsets);
    EXPECT_EQ((*offsets)[0], uint64_t(i));
    // Visible when commit() returns.
    EXPECT_EQ(*lg->end_offset(stream::ingress, 1), uint64_t(i + 1));
  }
  EXPECT_EQ(values(*lg, stream::ingress, 1),
            (std::vector<std::string>{"to1-0", "to1-1", "to1-2", "to1-3", "to1-4"}));
  EXPECT_EQ(values(*lg, stream::acks, 2),
            (std::vector<std::string>{"to2-0", "to2-1", "to2-2", "to2-3", "to2-4"}));
  EXPECT_TRUE(values(*lg, stream::ingress, 0).empty()) << "nothing lands on the source";
  const std::string before = dump(*lg, {"g"});
  lg.reset();
  lg = open_log(_dir, fast_options(3));
  ASSERT_TRUE(lg);
  EXPECT_EQ(dump(*lg, {"g"}), before) << "a reopen delivers nothing twice";
}

// A crash after the source's commit and before the delivery (or a torn delivery): the next
// open delivers what is missing, once, in order, and a later open delivers nothing more.
TEST_F(embedded_log_test, forwards_lost_between_the_two_commits_are_delivered_by_the_next_open) {
  for (int lost : {1, 2}) {
    SCOPED_TRACE(fmt::format("{} deliveries cut", lost));
    const std::string dir = fmt::format("{}/lost{}", _root, lost);
    std::vector<uint64_t> target_sizes;  // p001's bytes before each commit
    {
      auto lg = open_log(dir, fast_options(2));
      ASSERT_TRUE(lg);
      for (int i = 0; i < 4; ++i) {
        target_sizes.push_back(fs::file_size(last_segment(dir, 1)));
        commit_batch b;
        b.add(stream::executions, "t", fmt::format("e{}", i));
        b.add_to(stream::ingress, 1, "t", fmt::format("f{}", i));
        ASSERT_OK(lg->commit(0, b));
      }
      commit_batch own;  // the target's own record after the forwards
      own.add(stream::ingress, "u", "own");
      if (lost == 1) ASSERT_OK(lg->commit(1, own));
    }
    // Cut the target back to before the last `lost` deliveries (for lost == 1, the target's own
    // commit after them goes too: a crash loses both).
    fs::resize_file(last_segment(dir, 1), target_sizes[4 - lost]);
    for (int reopen = 0; reopen < 2; ++reopen) {
      auto lg = open_log(dir, fast_options(2));
      ASSERT_TRUE(lg);
      EXPECT_EQ(values(*lg, stream::ingress, 1),
                (std::vector<std::string>{"f0", "f1", "f2", "f3"}));
      EXPECT_EQ(values(*lg, stream::executions, 0).size(), 4u);
    }
  }
}

TEST_F(embedded_log_test, read_only_open_delivers_nothing_and_writes_nothing) {
  {
    auto lg = open_log(_dir, fast_options(2));
    ASSERT_TRUE(lg);
    commit_batch b;
    b.add_to(stream::ingress, 1, "t", "f");
    ASSERT_OK(lg->commit(0, b));
  }
  fs::resize_file(last_segment(_dir, 1), 0);  // the delivery is lost
  const auto files = tree(_dir);
  {
    auto lg = open_log(_dir, read_only_options());
    ASSERT_TRUE(lg);
    EXPECT_TRUE(values(*lg, stream::ingress, 1).empty());
  }
  EXPECT_EQ(tree(_dir), files);
  auto lg = open_log(_dir, fast_options(2));
  ASSERT_TRUE(lg);
  EXPECT_EQ(values(*lg, stream::ingress, 1), std::vector<std::string>{"f"});
}

TEST_F(embedded_log_test, append_to_a_partition_the_log_does_not_have_is_refused) {
  auto lg = open_log(_dir, fast_options(2));
  ASSERT_TRUE(lg);
  commit_batch b;
  b.add_to(stream::ingress, 2, "t", "f");
  auto r = lg->commit(0, b);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid);
  EXPECT_NE(r.error().message.find("partition 2"), std::string::npos) << r.error().message;
}
}  // namespace
}  // namespace auterity
