// Salvage (docs/salvage.md): one flipped byte inside a partition's committed data takes only
// that partition offline — the engine keeps serving the others and says so in its exit code,
// `status` and /metrics — and `auterity repair` quarantines the damaged tail, names who lost
// what, declares the gap that `replay verify` then shows, and the partition runs again.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/core.h>
#include <gtest/gtest.h>

#include "engine/clock.h"
#include "engine/record.h"
#include "node/node.h"
#include "replay/tests/history_file.h"
#include "tests/plain_http.h"

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

void spit(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
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

using testing::http_get;

constexpr std::string_view workflow = R"({"workflow":"two","version":1,"steps":[
  {"id":"a","kind":"task","action":"transform","input":{"text":"hello {{input.name}}"}},
  {"id":"b","kind":"task","action":"transform","after":["a"],
   "input":{"text":"{{steps.a.output.text}}!"}}]})";

// acme lands on partition 0 of 2, globex on partition 1 (tenant_partition).
class salvage : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(tenant_partition("acme", 2), 0u);
    ASSERT_EQ(tenant_partition("globex", 2), 1u);
    dir.path = scratch_temp_dir("salvage");
    data = dir.path + "/data";
    spit(dir.path + "/wf.json", workflow);
    for (const char* t : {"acme", "globex"}) {
      ASSERT_EQ(cli(fmt::format("publish --data {} --partitions 2 --tenant {} {}/wf.json", data, t,
                                dir.path)),
                0);
      for (int i = 1; i <= 2; ++i) {
        ASSERT_EQ(cli(fmt::format("start --data {} --tenant {} --workflow two --id e{} --input "
                                  "'{{\"name\":\"Maria\"}}'",
                                  data, t, i)),
                  0);
      }
    }
    ASSERT_EQ(cli(fmt::format("run --data {} --no-fsync --until-quiet", data)), 0);
    // One flipped byte in the middle of partition 0's committed data.
    const std::string seg = data + "/log/p000/00000000000000000000.seg";
    std::string bytes = slurp(seg);
    ASSERT_GT(bytes.size(), 2000u);
    bytes[bytes.size() / 2] ^= 0x10;
    spit(seg, bytes);
  }

  int cli(const std::string& args, outcome* o = nullptr) {
    outcome r = run_cli(args, dir.path + "/cmd.err");
    if (!o && r.code != 0) ADD_FAILURE() << "auterity " << args << ": " << r.out << r.err;
    if (o) *o = r;
    return r.code;
  }

  dir_guard dir;
  std::string data;
};

TEST_F(salvage, a_damaged_partition_goes_offline_and_the_others_keep_running) {
  outcome o;
  EXPECT_EQ(
      cli(fmt::format("start --data {} --tenant acme --workflow two --id e9 --input '{{}}'", data),
          &o),
      2);
  EXPECT_NE(o.err.find("partition 0 is offline"), std::string::npos) << o.err;
  EXPECT_EQ(cli(fmt::format("start --data {} --tenant globex --workflow two --id e9 --input "
                            "'{{\"name\":\"Ana\"}}'",
                            data)),
            0);
  EXPECT_EQ(cli(fmt::format("run --data {} --no-fsync --until-quiet", data), &o), 5) << o.err;
  EXPECT_NE(o.err.find("partition 0 is OFFLINE"), std::string::npos) << o.err;
  EXPECT_EQ(cli("status --data " + data, &o), 1) << o.out << o.err;
  EXPECT_NE(o.out.find("partition 0 OFFLINE"), std::string::npos) << o.out;
  // globex's new execution ran on the healthy partition.
  EXPECT_NE(o.out.find("hello Ana!"), std::string::npos) << o.out;

  // /metrics of a node open on the damaged directory.
  system_clock clk;
  node_options no;
  no.data_dir = data;
  no.partitions = 2;
  no.fsync = false;
  no.metrics_address = "127.0.0.1:0";
  no.corrupt_partitions_offline = true;
  auto n = node::open(no, clk);
  ASSERT_TRUE(n.has_value()) << n.error().message;
  ASSERT_TRUE((*n)->recover().has_value());
  EXPECT_EQ((*n)->offline_partitions().size(), 1u);
  EXPECT_TRUE((*n)->offline_partitions().contains(0));
  const std::string exposition = http_get((*n)->metrics_port(), "/metrics");
  EXPECT_NE(exposition.find("auterity_partition_offline{partition=\"0\"} 1"), std::string::npos)
      << exposition;
  EXPECT_NE(exposition.find("auterity_partition_offline{partition=\"1\"} 0"), std::string::npos)
      << exposition;
  n->reset();

  // Without the option the open fails, as before (the library's default).
  no.corrupt_partitions_offline = false;
  no.metrics_address.clear();
  auto strict = node::open(no, clk);
  ASSERT_FALSE(strict.has_value());
  EXPECT_EQ(strict.error().code, errc::corrupt);
}

TEST_F(salvage, repair_quarantines_the_tail_reports_the_losses_and_verify_shows_a_declared_gap) {
  outcome o;
  EXPECT_EQ(cli("replay verify --no-progress --data " + data, &o), 1) << o.out;
  const uint64_t size_before = fs::file_size(data + "/log/p000/00000000000000000000.seg");

  ASSERT_EQ(cli(fmt::format("repair --data {} --partition 0 --reason 'ticket 42'", data), &o), 0)
      << o.out << o.err;
  EXPECT_NE(o.out.find("with committed data after it"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("tenant acme execution e"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("its history now ends early"), std::string::npos) << o.out;
  EXPECT_EQ(o.out.find("globex"), std::string::npos) << "partition 1 is not touched: " << o.out;

  // The cut bytes are in quarantine, byte for byte as many as the segment lost.
  const uint64_t size_after = fs::file_size(data + "/log/p000/00000000000000000000.seg");
  ASSERT_LT(size_after, size_before);
  uint64_t quarantined = 0;
  for (const auto& e : fs::directory_iterator(data + "/log/quarantine")) {
    quarantined += e.file_size();
  }
  EXPECT_EQ(quarantined, size_before - size_after);
  // The declaration and the state moved aside.
  size_t declarations = 0;
  for (const auto& e : fs::directory_iterator(data + "/log/repairs")) {
    ++declarations;
    EXPECT_NE(slurp(e.path().string()).find("ticket 42"), std::string::npos);
  }
  EXPECT_EQ(declarations, 1u);
  EXPECT_FALSE(fs::exists(data + "/state/p000"));

  // Verify: the log is consistent again, and the gap is declared, not silent.
  EXPECT_EQ(cli("replay verify --no-progress --data " + data, &o), 0) << o.out << o.err;
  EXPECT_NE(o.out.find("DECLARED GAP"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("reason: ticket 42"), std::string::npos) << o.out;

  // The partition runs again: its executions resume from the cut and finish.
  EXPECT_EQ(cli(fmt::format("run --data {} --no-fsync --until-quiet", data), &o), 0) << o.err;
  EXPECT_EQ(cli("status --data " + data, &o), 0) << o.out << o.err;
  EXPECT_EQ(o.out.find("running"), std::string::npos) << o.out;
  EXPECT_EQ(cli("replay verify --no-progress --data " + data, &o), 0) << o.out << o.err;

  // Nothing left to repair.
  EXPECT_EQ(cli(fmt::format("repair --data {} --partition 0", data), &o), 0);
  EXPECT_NE(o.out.find("no damage"), std::string::npos) << o.out;
}

}  // namespace
}  // namespace auterity::testing
