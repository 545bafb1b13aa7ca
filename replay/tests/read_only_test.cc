// Audits never change the evidence. On a copy of a real run's data directory with a damaged
// tail, every read-only command — status, dump of each stream, timeline, replay timeline,
// verify and state — leaves every file (list and SHA-256 of each) as it was and names the
// damage; a missing data directory is an error that creates nothing; and the engine's own
// recovery moves a torn tail to a quarantine file, byte for byte, before cutting it.

#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <map>

#include <fmt/core.h>
#include <gtest/gtest.h>

#include "engine/record.h"
#include "replay/tests/history_file.h"

namespace auterity::testing {
namespace {

namespace fs = std::filesystem;

struct outcome {
  int code = -1;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

outcome run_cli(const std::string& args, const std::string& err_file) {
  const std::string cmd = fmt::format("'{}' {} 2>'{}'", AUTERITY_BIN, args, err_file);
  outcome o;
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return o;
  char buf[8192];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) o.out.append(buf, n);
  const int status = ::pclose(p);
  o.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  o.err = slurp(err_file);
  return o;
}

// Every entry under `dir`: directories by name, files by size and SHA-256 of their bytes.
std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string rel = fs::relative(e.path(), dir).string();
    if (e.is_directory()) {
      out[rel] = "dir";
    } else {
      const std::string bytes = slurp(e.path().string());
      out[rel] = fmt::format("{} bytes sha256 {}", bytes.size(), hex(sha256(bytes)));
    }
  }
  return out;
}

std::string last_segment(const std::string& data, uint32_t p) {
  std::string last;
  for (const auto& e : fs::directory_iterator(fmt::format("{}/log/p{:03}", data, p))) {
    if (e.path().extension() == ".seg" && e.path().string() > last) last = e.path().string();
  }
  return last;
}

// The largest partition's last segment: it holds records of several executions.
std::pair<uint32_t, std::string> busiest_segment(const std::string& data) {
  std::pair<uint32_t, std::string> best{0, last_segment(data, 0)};
  for (uint32_t p = 1; p < 4; ++p) {
    const std::string seg = last_segment(data, p);
    if (fs::file_size(seg) > fs::file_size(best.second)) best = {p, seg};
  }
  return best;
}

const std::vector<std::string> streams = {"ingress",     "executions",      "commands.step",
                                          "commands.ai", "commands.notify", "acks",
                                          "definitions", "deadletter"};

// The read-only commands, on data directory `d`.
std::vector<std::string> read_only_commands(const std::string& d) {
  std::vector<std::string> cmds = {
      "status --data " + d,
      "timeline --data " + d + " --tenant acme-motors --id lead-0001",
      "replay timeline --no-progress --data " + d,
      "replay timeline --no-progress --format jsonl --data " + d,
      "replay verify --no-progress --data " + d,
      "replay verify --no-progress --format json --data " + d,
      "replay state --data " + d + " --tenant acme-motors",
      "replay state --data " + d + " --tenant bayside-auto --execution lead-0002 --as-of 10",
  };
  for (const std::string& s : streams) cmds.push_back(fmt::format("dump --data {} {}", d, s));
  return cmds;
}

class read_only : public ::testing::Test {
 protected:
  // One real run: the demo's dealerships, 4 executions on 4 partitions.
  static void SetUpTestSuite() {
    _dir = new dir_guard{scratch_temp_dir("read-only")};
    const outcome o =
        run_cli(fmt::format("demo --quiet --no-fsync --executions 4 --data {}/run", _dir->path),
                _dir->path + "/demo.err");
    ASSERT_EQ(o.code, 0) << o.out << o.err;
  }
  static void TearDownTestSuite() { delete _dir; }

  static std::string copy_of_run(const std::string& name) {
    const std::string to = _dir->path + "/" + name;
    fs::copy(_dir->path + "/run", to, fs::copy_options::recursive);
    return to;
  }
  static std::string err_file() { return _dir->path + "/cmd.err"; }

  // Runs every read-only command on `d`; each must leave `d` as it was and print `expect` on
  // stderr. Returns the outcomes by command.
  static std::map<std::string, outcome> audit(const std::string& d, const std::string& expect) {
    std::map<std::string, outcome> out;
    for (const std::string& cmd : read_only_commands(d)) {
      const auto before = snapshot(d);
      const outcome o = run_cli(cmd, err_file());
      EXPECT_EQ(snapshot(d), before) << "`auterity " << cmd << "` changed the data directory";
      EXPECT_NE(o.err.find(expect), std::string::npos)
          << "`auterity " << cmd << "` did not report the damage: " << o.err;
      out[cmd] = o;
    }
    return out;
  }

  static inline dir_guard* _dir = nullptr;
};

TEST_F(read_only, commands_change_no_byte_of_a_copy_with_7_bytes_cut_off_a_segment) {
  const std::string d = copy_of_run("torn");
  const auto [p, seg] = busiest_segment(d);
  const uint64_t size = fs::file_size(seg);
  fs::resize_file(seg, size - 7);
  const auto results = audit(d, fmt::format("log partition {}: ", p));
  for (const auto& [cmd, o] : results) {
    EXPECT_NE(o.err.find(seg), std::string::npos) << cmd << ": the segment is named: " << o.err;
    EXPECT_NE(o.err.find("a torn tail"), std::string::npos) << cmd << ": " << o.err;
    EXPECT_NE(o.err.find("nothing changed"), std::string::npos) << cmd << ": " << o.err;
  }
  EXPECT_EQ(fs::file_size(seg), size - 7);
  // The cut commit was acknowledged: verify finds its events missing against the state.
  const outcome& v = results.at("replay verify --no-progress --data " + d);
  EXPECT_EQ(v.code, 1) << v.out;
  EXPECT_NE(v.out.find("was removed"), std::string::npos) << v.out;
  EXPECT_NE(v.out.find("  LOG log partition"), std::string::npos) << v.out;
  EXPECT_EQ(results.at("status --data " + d).code, 0);
  EXPECT_EQ(results.at("dump --data " + d + " executions").code, 0);
  EXPECT_EQ(results.at("replay timeline --no-progress --data " + d).code, 0);
}

TEST_F(read_only, commands_change_no_byte_of_a_copy_with_a_flipped_byte_in_committed_data) {
  const std::string d = copy_of_run("flipped");
  const auto [p, seg] = busiest_segment(d);
  const uint64_t at = fs::file_size(seg) / 2;
  {
    std::fstream f(seg, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(at));
    const char c = static_cast<char>(f.get() ^ 0x40);
    f.seekp(static_cast<std::streamoff>(at));
    f.put(c);
  }
  const auto results = audit(d, fmt::format("log partition {}: ", p));
  for (const auto& [cmd, o] : results) {
    EXPECT_NE(o.err.find("DAMAGED COMMITTED DATA"), std::string::npos) << cmd << ": " << o.err;
  }
  const outcome& v = results.at("replay verify --no-progress --data " + d);
  EXPECT_EQ(v.code, 1) << v.out;
  EXPECT_NE(v.out.find("DAMAGED COMMITTED DATA"), std::string::npos) << v.out;
  const outcome& j = results.at("replay verify --no-progress --format json --data " + d);
  EXPECT_EQ(j.code, 1);
  EXPECT_NE(j.out.find("\"ok\":false"), std::string::npos) << j.out;
  // The readable prefix is served: the records before the damage are dumped (the first commit
  // of the partition may hold any of its streams).
  bool prefix_served = false;
  for (const std::string& s : streams) {
    const outcome& dumped = results.at(fmt::format("dump --data {} {}", d, s));
    EXPECT_EQ(dumped.code, 0) << s << ": " << dumped.err;
    prefix_served =
        prefix_served || dumped.out.find(fmt::format("{}/{}/0\t", s, p)) != std::string::npos;
  }
  EXPECT_TRUE(prefix_served) << "no record of partition " << p << " before the damage";
}

TEST_F(read_only, an_intact_copy_is_read_without_a_warning_and_unchanged) {
  const std::string d = copy_of_run("intact");
  for (const std::string& cmd : read_only_commands(d)) {
    const auto before = snapshot(d);
    const outcome o = run_cli(cmd, err_file());
    EXPECT_EQ(snapshot(d), before) << "`auterity " << cmd << "` changed the data directory";
    EXPECT_EQ(o.err.find("warning"), std::string::npos) << cmd << ": " << o.err;
  }
  EXPECT_EQ(run_cli("replay verify --no-progress --data " + d, err_file()).code, 0);
}

TEST_F(read_only, a_missing_data_directory_is_an_error_naming_it_and_is_not_created) {
  const std::string d = _dir->path + "/no-such-dir";
  for (const std::string& cmd : read_only_commands(d)) {
    const outcome o = run_cli(cmd, err_file());
    EXPECT_EQ(o.code, 2) << cmd;
    EXPECT_NE(o.err.find(d), std::string::npos) << cmd << ": " << o.err;
    EXPECT_FALSE(fs::exists(d)) << "`auterity " << cmd << "` created it";
  }
  // A directory without a log: an error too, and nothing is created in it.
  const std::string empty = _dir->path + "/empty";
  fs::create_directory(empty);
  for (const std::string& cmd : read_only_commands(empty)) {
    const outcome o = run_cli(cmd, err_file());
    EXPECT_EQ(o.code, 2) << cmd;
    EXPECT_NE(o.err.find("holds no embedded log"), std::string::npos) << cmd << ": " << o.err;
    EXPECT_TRUE(fs::is_empty(empty)) << "`auterity " << cmd << "` wrote into it";
  }
}

TEST_F(read_only, the_engines_recovery_moves_a_torn_tail_to_quarantine_and_says_so) {
  const std::string d = copy_of_run("quarantine");
  const auto [p, seg] = busiest_segment(d);
  const uint64_t size = fs::file_size(seg);
  // A write torn after 7 bytes: a frame header's first bytes after the last commit.
  const std::string torn("AUTL\x01\x02\x03", 7);
  {
    std::ofstream f(seg, std::ios::binary | std::ios::app);
    f << torn;
  }
  const outcome o =
      run_cli(fmt::format("run --data {} --until-quiet --stats-interval-s 0", d), err_file());
  ASSERT_EQ(o.code, 0) << o.err;
  const std::string quarantined =
      fmt::format("{}/log/quarantine/p{:03}-{}-{}.bin", d, p, fs::path(seg).stem().string(), size);
  EXPECT_NE(o.err.find(fmt::format("log partition {}: 7 bytes after the last commit", p)),
            std::string::npos)
      << o.err;
  EXPECT_NE(o.err.find("moved to " + quarantined + " and cut"), std::string::npos) << o.err;
  ASSERT_TRUE(fs::exists(quarantined));
  EXPECT_EQ(slurp(quarantined), torn) << "the quarantine file holds exactly the bytes cut";
  EXPECT_EQ(fs::file_size(seg), size) << "the log is cut back to its last commit";
  // The engine serves on; the audit of the result finds nothing wrong.
  const outcome v = run_cli("replay verify --no-progress --data " + d, err_file());
  EXPECT_EQ(v.code, 0) << v.out << v.err;
  EXPECT_EQ(v.err.find("warning"), std::string::npos) << v.err;
}

}  // namespace
}  // namespace auterity::testing
